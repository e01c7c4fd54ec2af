"""Duplicate examples, exact and normalised, in memory that grows by bytes per example, not by rows.

Each example leaves two 64-bit fingerprints (Python's keyed SipHash of its key bytes) in one
open-addressing table of unsigned 64-bit ints (`array('Q')`, at most half full): 16 to 32 bytes per
unique example, so 2 million examples need 64 MiB at most (a Python set of ints would need about
4 times that). Two different examples share a fingerprint with probability about n²/2⁶⁵: for 10⁷
examples, under 3 in a million.

- exact: the example as JSON with sorted keys (so key order does not matter) is identical.
- normalised: identical after every string value is NFKC-normalised, case-folded and stripped of
  whitespace, punctuation and symbols (normalise.py; the split's question key does the same), so
  "头痛怎么办？" and "头痛怎么办?", or "Hello, world" and "hello world", are the same example. Keys and
  roles are kept.
The first occurrence is kept; later ones are counted and dropped.

Examples of the common shape (`plain_messages`) can be classified a batch at a time
(`duplicates_of_plain`): with numpy, their strings are normalised together (normalise.py) and
their fingerprints kept in sorted runs (sorted_runs.py: 16 bytes an example, looked up a batch at
a time).
"""

from __future__ import annotations

from array import array
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson

from shared.datasets import normalise
from shared.datasets.normalise import normalise_text, np

if np is not None:
    from shared.datasets.sorted_runs import SortedRuns

__all__ = ["Deduplicator", "FingerprintMap", "FingerprintSet", "Plain", "normalise_text", "plain_messages"]

_EMPTY = 0


def _zeros(size: int) -> array[int]:
    # Repeating a one-item array allocates the table once (no temporary zero bytes beside it).
    return array("Q", [_EMPTY]) * size


class FingerprintSet:
    """A set of non-zero 64-bit ints with linear probing; `add` says whether the value was new."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        size = 1
        while size < capacity:
            size <<= 1
        self._table = _zeros(size)
        self._mask = size - 1
        self.count = 0

    @property
    def nbytes(self) -> int:
        return len(self._table) * self._table.itemsize

    def __contains__(self, value: int) -> bool:
        table, mask = self._table, self._mask
        slot = value & mask
        while True:
            current = table[slot]
            if current == value:
                return True
            if current == _EMPTY:
                return False
            slot = (slot + 1) & mask

    def add(self, value: int) -> bool:
        if value == _EMPTY:
            raise ValueError("0 marks an empty slot")
        table, mask = self._table, self._mask
        slot = value & mask
        while True:
            current = table[slot]
            if current == value:
                return False
            if current == _EMPTY:
                break
            slot = (slot + 1) & mask
        table[slot] = value
        self.count += 1
        if 2 * self.count > len(table):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        self._table = _zeros(2 * len(old))
        self._mask = len(self._table) - 1
        table, mask = self._table, self._mask
        for value in old:
            if value != _EMPTY:
                slot = value & mask
                while table[slot] != _EMPTY:
                    slot = (slot + 1) & mask
                table[slot] = value


class FingerprintMap:
    """Non-zero 64-bit keys, each with a 64-bit value, in open-addressing tables of unsigned 64-bit
    ints (key and value side by side, at most half the pairs used): one probe finds both.

    The keys are spread over 16 tables by their top 4 bits, each growing on its own, so that a
    growth copies a sixteenth of the map: the old and the new table side by side would otherwise
    add half again to the peak memory (96 MiB instead of 64 at 2 million examples)."""

    _SHARD_BITS = 4

    def __init__(self, capacity: int = 1 << 12) -> None:
        shards = 1 << self._SHARD_BITS
        size = 1
        while size * shards < capacity:
            size <<= 1
        self._tables = [_zeros(2 * size) for _ in range(shards)]
        self._masks = [2 * size - 2] * shards  # each masks an even index: the key of a pair
        self._counts = [0] * shards
        self._shift = 64 - self._SHARD_BITS
        self.count = 0

    @property
    def nbytes(self) -> int:
        return sum(len(table) * table.itemsize for table in self._tables)

    def setdefault(self, key: int, value: int) -> int:
        """The value stored with `key`; when the key is new, it is stored with `value` and 0 is
        returned (so values should be non-zero)."""
        if key == _EMPTY:
            raise ValueError("0 marks an empty slot")
        shard = key >> self._shift
        table, mask = self._tables[shard], self._masks[shard]
        index = (key << 1) & mask
        while True:
            current = table[index]
            if current == key:
                return table[index + 1]
            if current == _EMPTY:
                break
            index = (index + 2) & mask
        table[index] = key
        table[index + 1] = value
        self.count += 1
        self._counts[shard] += 1
        if 4 * self._counts[shard] > len(table):
            self._grow(shard)
        return _EMPTY

    def _grow(self, shard: int) -> None:
        old = self._tables[shard]
        self._tables[shard] = table = _zeros(2 * len(old))
        self._masks[shard] = mask = len(table) - 2
        for index in range(0, len(old), 2):
            key = old[index]
            if key != _EMPTY:
                new = (key << 1) & mask
                while table[new] != _EMPTY:
                    new = (new + 2) & mask
                table[new] = key
                table[new + 1] = old[index + 1]


_MASK64 = (1 << 64) - 1
# Salts keep the kinds of fingerprint apart.
_NORMALISED_SALT = 0x9E3779B97F4A7C15
_PLAIN_SALT = 0xC2B2AE3D27D4EB4F
_PLAIN_NORMALISED_SALT = 0x165667B19E3779F9
_CACHE_SIZE = 4096
_CACHE_MAX_CHARS = 1024
_CACHE_GENERATION_CHARS = 1 << 19


def _fingerprint(data: bytes, salt: int = 0) -> int:
    # Python's own 64-bit SipHash of bytes: keyed per process (so not predictable from outside),
    # and 8 times cheaper than BLAKE2b here; fingerprints never leave the process.
    return ((hash(data) ^ salt) & _MASK64) or 1


def _normalised_key(example: dict[str, Any]) -> bytes:
    return orjson.dumps(_normalised(example), option=orjson.OPT_SORT_KEYS)


# An example in the common shape, as (roles, contents); see `plain_messages`.
Plain = tuple[tuple[str, ...], tuple[str, ...]]


def plain_messages(example: dict[str, Any]) -> Plain | None:
    """(roles, contents) for the common shape, `{"messages": [...]}` whose every message is exactly
    a string role and a string content; None for anything else. Whether an example has this shape
    depends on its value alone (not on key order), so equal examples always take the same road."""
    messages = example.get("messages")
    if len(example) != 1 or type(messages) is not list:
        return None
    roles: list[str] = []
    contents: list[str] = []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role = message.get("role")
        content = message.get("content")
        if type(role) is not str or type(content) is not str:
            return None
        roles.append(role)
        contents.append(content)
    return tuple(roles), tuple(contents)


def _normalised(value: Any) -> Any:
    if isinstance(value, str):
        return normalise_text(value)
    if isinstance(value, dict):
        return {k: (v if k == "role" else _normalised(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


class Deduplicator:
    """First occurrences are kept. Each unique example leaves one pair in `first`: its normalised
    fingerprint and its exact one; an example that is a normalised copy of an earlier one but not
    an exact copy of any leaves its exact fingerprint in `variants` (rare), so a later exact copy of
    it still counts as exact.

    `batched`: normalise the strings of plain examples a batch at a time with numpy (default:
    when numpy is installed); the answers are the same either way."""

    def __init__(self, batched: bool | None = None) -> None:
        self.first = FingerprintMap()
        self.variants = FingerprintSet()
        self.exact = 0
        self.normalised = 0
        self.batched = normalise.batched() if batched is None else batched
        self.plain_first = SortedRuns() if self.batched else None
        # Normalised text of recent strings (a shared system prompt repeats on every row), in two
        # bounded generations like the token-length cache; one string at a time only.
        self._young: dict[str, str] = {}
        self._old: dict[str, str] = {}
        self._chars = 0

    @property
    def nbytes(self) -> int:
        runs = self.plain_first.nbytes if self.plain_first is not None else 0
        return self.first.nbytes + self.variants.nbytes + runs

    def duplicate(self, example: dict[str, Any]) -> str | None:
        """None for a new example (now remembered), else "exact" or "normalised"."""
        return self.duplicate_of(example, plain_messages(example))

    def duplicate_of(self, example: dict[str, Any], plain: Plain | None) -> str | None:
        """`duplicate` for a caller that has the example's `plain_messages` already."""
        if plain is not None:
            return self.duplicates_of_plain([plain])[0]
        exact = _fingerprint(orjson.dumps(example, option=orjson.OPT_SORT_KEYS))
        normalised = _fingerprint(_normalised_key(example), _NORMALISED_SALT)
        return self._classify(exact, normalised)

    def duplicates_of_plain(self, plains: list[Plain], texts: list[str] | None = None) -> list[str | None]:
        """`duplicate_of` for examples of the common shape, given as their `plain_messages`, in
        order (`texts`: their distinct contents, when the caller has them). They are fingerprinted
        from their strings' own (keyed) hashes, without writing them out as JSON; the salts keep
        these apart from the byte fingerprints."""
        if self.batched:
            return self._batch_of_plain(plains, texts)
        young, normalise_one = self._young, self._normalise

        def normalised_of(text: str) -> str:
            # ("" is falsy, so an empty normalisation is simply worked out again.)
            return young.get(text) or normalise_one(text)

        classify, verdicts = self._classify, []
        for plain in plains:
            exact = ((hash(plain) ^ _PLAIN_SALT) & _MASK64) or 1
            key = (plain[0], tuple(map(normalised_of, plain[1])))
            verdicts.append(classify(exact, ((hash(key) ^ _PLAIN_NORMALISED_SALT) & _MASK64) or 1))
        return verdicts

    def _batch_of_plain(self, plains: list[Plain], texts: list[str] | None) -> list[str | None]:
        """`duplicates_of_plain` with numpy: the batch's strings normalised together, and its
        fingerprints looked up and added together (sorted_runs.py); only the rare duplicates
        take a step each, in input order. Plain examples are never duplicates of other shapes,
        so they keep their own table (`plain_first`)."""
        if texts is None:
            texts = list(dict.fromkeys(chain.from_iterable(map(itemgetter(1), plains))))
        normalised_of = dict(zip(texts, normalise.normalise_many(texts), strict=True)).__getitem__
        exact = np.array([((hash(plain) ^ _PLAIN_SALT) & _MASK64) or 1 for plain in plains], dtype=np.uint64)
        normalised = np.array(
            [
                ((hash((roles, tuple(map(normalised_of, contents)))) ^ _PLAIN_NORMALISED_SALT) & _MASK64) or 1
                for roles, contents in plains
            ],
            dtype=np.uint64,
        )
        # The distinct fingerprints come out sorted, which makes the lookups cache-friendly.
        distinct, first_index, inverse = np.unique(normalised, return_index=True, return_inverse=True)
        held, held_exact = self.plain_first.lookup(distinct)
        first_in_batch = first_index[inverse]
        self.plain_first.add(distinct[~held], exact[first_index[~held]])
        new = ~held[inverse] & (first_in_batch == np.arange(len(plains)))
        verdicts: list[str | None] = [None] * len(plains)
        for i in np.flatnonzero(~new).tolist():
            first = held_exact[inverse[i]] if held[inverse[i]] else exact[first_in_batch[i]]
            verdicts[i] = self._verdict(int(first), int(exact[i]))
        return verdicts

    def _verdict(self, first: int, exact: int) -> str:
        """A repeat of a normalised fingerprint whose first occurrence had `first`."""
        if first == exact or not self.variants.add(exact):
            self.exact += 1
            return "exact"
        self.normalised += 1
        return "normalised"

    def _classify(self, exact: int, normalised: int) -> str | None:
        first = self.first.setdefault(normalised, exact)
        if first == _EMPTY:
            return None
        return self._verdict(first, exact)

    def _normalise(self, text: str) -> str:
        """`normalise_text` through the cache, for a string the young generation lacks."""
        found = self._old.get(text)
        if found is None:
            found = normalise_text(text)
        if len(text) <= _CACHE_MAX_CHARS:
            young = self._young
            young[text] = found
            self._chars += len(text)
            if len(young) >= _CACHE_SIZE or self._chars >= _CACHE_GENERATION_CHARS:
                self._old, self._young, self._chars = young, {}, 0
        return found

    def to_dict(self) -> dict[str, int]:
        return {"exact": self.exact, "normalised": self.normalised}

    def warning(self) -> dict[str, str] | None:
        total = self.exact + self.normalised
        if not total:
            return None
        return {
            "code": "duplicates_dropped",
            "message": f"{total} duplicate example(s) were dropped ({self.exact} exact, {self.normalised} "
            "equal after normalising case, width, spacing and punctuation)",
        }
