"""Ways to count the tokens of strings: tiktoken's, one call per text or one joined call."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import tiktoken

from shared.tokens.encodings import get_encoding
from shared.tokens.probes import _PROBES


class _Backend:
    """A way to count the tokens of strings in one encoding.

    - `count_all(texts)`: the counts, one call per text, in the calling thread.
    - `parallel`: `count_all` releases the GIL while it tokenizes each text, so a batch is worth
      splitting over threads that each run their own `count_all` (tiktoken).
    - `count_detached(texts, threads)`: the counts of a whole slice from one call that releases
      the GIL until it is done (tiktoken's joined encode, quicktok's native batch), so slices can
      be counted in background threads while the caller goes on with Python work; None when
      there is none. A thread that needs the GIL back after every short text would wait for the
      busy caller each time (up to the 5 ms switch interval), which is why the one-call form
      matters. `native_threads`: the call itself can use several threads.
    """

    def __init__(
        self,
        name: str,
        count_all: Callable[[list[str]], list[int]],
        *,
        parallel: bool = False,
        count_detached: Callable[[list[str], int], list[int]] | None = None,
        native_threads: bool = False,
    ) -> None:
        self.name = name
        self.count_all = count_all
        self.parallel = parallel
        self.count_detached = count_detached
        self.native_threads = native_threads


@cache
def _tiktoken_backend(encoding_name: str) -> _Backend:
    encoding = get_encoding(encoding_name)
    encode = encoding.encode_ordinary

    def count_all(texts: list[str]) -> list[int]:
        # encode_ordinary: a user's text that happens to contain "<|endoftext|>" is text, not a
        # special token, and must not make tiktoken raise.
        return [len(encode(text)) for text in texts]

    joined = _joined_counter(encoding, count_all)
    return _Backend("tiktoken", count_all, parallel=True, count_detached=joined)


def _joined_counter(
    encoding: tiktoken.Encoding, count_all: Callable[[list[str]], list[int]]
) -> Callable[[list[str], int], list[int]] | None:
    """Counts of a whole batch in one tiktoken call that holds no GIL: the texts joined by the
    end-of-text token, encoded with that one special token allowed. tiktoken runs its split
    pattern on the text between allowed special tokens separately, so each text gets exactly the
    tokens it gets alone; the counts are the runs between the separators. Texts that contain the
    separator's own spelling are counted alone. None (one call per text then) when this tiktoken
    has no buffer call or the trick does not reproduce `count_all` on the probes."""
    separator = "<|endoftext|>"
    core = getattr(encoding, "_core_bpe", None)
    if separator not in encoding.special_tokens_set or not hasattr(core, "encode_to_tiktoken_buffer"):
        return None
    allowed = {separator}
    mark = encoding.encode_single_token(separator).to_bytes(4, "little")

    def count_joined(texts: list[str], threads: int = 1) -> list[int]:
        alone = [i for i, text in enumerate(texts) if separator in text]
        batch = [text for text in texts if separator not in text] if alone else texts
        try:
            data = memoryview(core.encode_to_tiktoken_buffer(separator.join(batch) + separator, allowed))
            tokens = data.tobytes()
        except (UnicodeError, ValueError, TypeError):  # lone surrogates: encode_ordinary copes
            return count_all(texts)
        counts: list[int] = []
        find = tokens.find
        start = 0
        for _ in batch:
            end = find(mark, start)
            while end & 3:  # the mark's bytes straddling two tokens
                end = find(mark, end + 1)
            counts.append((end - start) >> 2)
            start = end + 4
        if alone:
            singles = count_all([texts[i] for i in alone])
            for i, n in zip(alone, singles, strict=True):
                counts.insert(i, n)
        return counts

    try:
        probes = [*_PROBES, "a" + separator + "b", separator]
        if count_joined(probes) != count_all(probes):
            return None
    except Exception:  # noqa: BLE001 - an internal call that changed: one call per text then
        return None
    return count_joined
