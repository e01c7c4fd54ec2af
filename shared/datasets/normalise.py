"""The normalised form of a string for dedup: NFKC, case-folded, only letters and digits.

`normalise_text` is the definition (one string at a time). `normalise_many` gives the same
result for a batch of strings, as UTF-16 bytes, with numpy (installed by the `[fast]` extra): the
batch is one array of UTF-16 code units, and deleting non-word characters and case folding are
one table lookup over it, instead of a few Python calls and a per-character case fold for every
string. The table covers the Basic Multilingual Plane and only characters whose treatment does not
depend on their neighbours: a string with any other word character (one outside the BMP, one that
NFKC changes, a case fold into several characters, a Hangul jamo that may compose) is worked out
by `normalise_text` instead, so the two always agree. (A normalised string holds no surrogates,
so its UTF-16 bytes stand for it one to one.)
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from functools import cache
from itertools import accumulate
from operator import itemgetter
from typing import Any

try:
    import numpy as np
except ImportError:  # the default install: strings are normalised one at a time
    np = None

_WORDS = re.compile(r"[^\W_]+")

# The separators that make up nearly all of the non-word characters of real text, Chinese and
# English, commonest first; `_words` deletes these with str.replace (a C loop each) and needs the
# regex only for what is left, if anything.
_COMMON_SEPARATORS = tuple("，。 ？.,、！：?!；:\n;\"'“”()（）-")

UTF16 = "utf-16-le"
# A UTF-16 code unit no string keeps (U+FFFF is not a character), so `_table` can mark with it.
_HARD = 0xFFFF
_BMP = 0x10000
# Conjoining Hangul jamo (and their extensions): a vowel or final jamo composes with the syllable
# before it under NFKC, so a string's normal form depends on their neighbours.
_HANGUL_JAMO = ((0x1100, 0x1200), (0xA960, 0xA980), (0xD7B0, 0xD800))
# Code points per numpy pass: the arrays of one pass stay a few MiB whatever the batch.
_CHUNK_CHARS = 1 << 18


def _words(text: str) -> str:
    """The letters and digits of `text`, as `_WORDS` finds them; two to three times faster than the
    regex on typical text, because the common separators go first and the regex runs only when
    something else is left."""
    if text.isalnum():
        return text
    for separator in _COMMON_SEPARATORS:
        if separator in text:
            text = text.replace(separator, "")
            if text.isalnum():
                return text
    if not text:
        return text
    return "".join(_WORDS.findall(text))


def normalise_text(text: str) -> str:
    """NFKC, case-folded, only letters and digits: '头痛怎么办？' == '头痛怎么办?', 'Ｈｉ!' == 'hi'.

    Punctuation goes first, so the costly NFKC runs only on the rare text still not in NFKC
    without it (full-width letters, ligatures); about 1 µs for 130 Chinese characters."""
    if text.isascii():
        return _words(text).lower()
    text = _words(text)
    if not unicodedata.is_normalized("NFKC", text):
        text = _words(unicodedata.normalize("NFKC", text))
    return text.casefold()


def normalise_text_reference(text: str) -> str:
    """`normalise_text` with the regex alone, for tests."""
    if text.isascii():
        return "".join(_WORDS.findall(text)).lower()
    text = "".join(_WORDS.findall(text))
    if not unicodedata.is_normalized("NFKC", text):
        text = "".join(_WORDS.findall(unicodedata.normalize("NFKC", text)))
    return text.casefold()


def batched() -> bool:
    """Whether `normalise_many` can work a batch at a time (numpy is installed)."""
    return np is not None


def _encode(text: str) -> bytes:
    return normalise_text(text).encode(UTF16, "surrogatepass")


@cache
def _table() -> Any:
    """What each UTF-16 code unit becomes: 0 (not a word character: deleted), `_HARD` (a word
    character whose string `normalise_text` must work out, and surrogates, the halves of
    characters beyond the BMP), or its case fold. About 50 ms, once per process."""
    chars = "".join(map(chr, range(_BMP)))
    word = np.fromiter(map(str.isalnum, chars), dtype=bool, count=_BMP)
    # One C call each over the whole plane (but '\x00', no word character): '\x00' is a starter
    # that NFKC leaves alone and no character folds or normalises into, so the pieces line up
    # with the code points.
    folds = ["\x00", *"\x00".join(chars[1:]).casefold().split("\x00")]
    normal = ["\x00", *unicodedata.normalize("NFKC", "\x00".join(chars[1:])).split("\x00")]
    if not len(folds) == len(normal) == _BMP:
        raise RuntimeError("the case fold or NFKC table does not line up with the code points")
    single = np.fromiter(map(len, folds), dtype=np.int64, count=_BMP) == 1
    folded = np.fromiter(map(ord, map(itemgetter(0), folds)), dtype=np.int64, count=_BMP)
    unchanged = np.fromiter(map(str.__eq__, normal, chars), dtype=bool, count=_BMP)
    starter = np.fromiter(map(unicodedata.combining, chars), dtype=np.int64, count=_BMP) == 0
    simple = word & single & unchanged & starter & (folded > 0) & (folded < _HARD)
    for start, end in _HANGUL_JAMO:
        simple[start:end] = False
    table = np.where(simple, folded, np.where(word, _HARD, 0)).astype(np.uint16)
    table[0xD800:0xE000] = _HARD
    return table


def normalise_many(texts: Sequence[str]) -> list[bytes]:
    """`[normalise_text(t).encode("utf-16-le") for t in texts]`, a batch at a time (see the
    module docstring). Needs numpy (`batched()`)."""
    lengths = list(map(len, texts))
    if sum(lengths) <= _CHUNK_CHARS:
        return _normalise_chunk(texts, lengths)
    out: list[bytes] = []
    start = 0
    ends = list(accumulate(lengths))
    while start < len(texts):
        base = ends[start - 1] if start else 0
        end = max(start + 1, bisect_right(ends, base + _CHUNK_CHARS, lo=start))
        out += _normalise_chunk(texts[start:end], lengths[start:end])
        start = end
    return out


def _normalise_chunk(texts: Sequence[str], lengths: list[int]) -> list[bytes]:
    table = _table()
    joined = "".join(texts)
    units = np.frombuffer(joined.encode(UTF16, "surrogatepass"), dtype=np.uint16)
    if len(units) != len(joined):  # characters beyond the BMP take two units each
        lengths = [len(text.encode(UTF16, "surrogatepass")) // 2 for text in texts]
    sizes = np.array(lengths, dtype=np.int64)
    mapped = table.take(units)
    keep = mapped != 0
    kept = mapped[keep]
    # How many units each string keeps, summed per string: reduceat needs increasing starts
    # inside the array, so empty strings (keeping nothing) are left out of it.
    counts = np.zeros(len(texts), dtype=np.int64)
    filled = np.flatnonzero(sizes)
    if len(filled):
        starts = np.cumsum(sizes) - sizes
        counts[filled] = np.add.reduceat(keep.view(np.uint8), starts[filled], dtype=np.int64)
    kept_bounds = np.zeros(len(texts) + 1, dtype=np.int64)  # where each string starts in `kept`
    np.cumsum(counts, out=kept_bounds[1:])
    edges = (kept_bounds * 2).tolist()
    data = kept.tobytes()
    result = [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    hard = np.flatnonzero(kept == _HARD)
    if len(hard):
        for i in set((np.searchsorted(kept_bounds, hard, side="right") - 1).tolist()):
            result[i] = _encode(texts[i])
    return result
