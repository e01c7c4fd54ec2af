"""Token lengths of strings through a bounded two-generation cache."""

from __future__ import annotations

from concurrent.futures import Executor
from functools import cache

from shared.tokens.backends import _Backend
from shared.tokens.selection import _backend, _choice, tokenizer_backend

# Each distinct string is tokenized once while it stays in a bounded cache: role names and a
# shared system prompt repeat on every row, unique answers age out. The cache keeps two generations
# of at most _CACHE_SIZE strings and _CACHE_GENERATION_CHARS characters each (a hit moves a string
# to the young one), so its memory is bounded whatever the data; strings over _CACHE_MAX_CHARS are
# not kept at all.
_CACHE_SIZE = 8192
_CACHE_MAX_CHARS = 4096
_CACHE_GENERATION_CHARS = 1 << 20
# Below this many strings a batch is tokenized in the calling thread: handing work to a thread
# costs more than it saves.
_MIN_PARALLEL_STRINGS = 64


class TokenLengths:
    """Token lengths of strings in one encoding, through the bounded cache (see the constants above).

    `lengths(text)` counts one string; `count_all(texts, pool)` counts a batch of distinct strings,
    split over the pool's threads when the backend releases the GIL. Only the thread that owns this
    object touches the cache; worker threads only run the tokenizer."""

    def __init__(self, encoding_name: str, backend: _Backend | None = None) -> None:
        self.encoding_name = encoding_name
        self.backend = backend or tokenizer_backend(encoding_name)
        self._young: dict[str, int] = {}
        self._old: dict[str, int] = {}
        self._chars = 0

    def get(self, text: str) -> int | None:
        found = self._young.get(text)
        if found is None:
            found = self._old.get(text)
            if found is not None:
                self.put(text, found)
        return found

    def put(self, text: str, length: int) -> None:
        size = len(text)
        if size > _CACHE_MAX_CHARS:
            return
        young = self._young
        young[text] = length
        self._chars += size
        if len(young) >= _CACHE_SIZE or self._chars >= _CACHE_GENERATION_CHARS:
            self._old, self._young, self._chars = young, {}, 0

    def put_all(self, lengths: dict[str, int]) -> None:
        """`put` for many strings at once (one dict update when none is too long to keep)."""
        if not lengths:
            return
        if max(map(len, lengths)) > _CACHE_MAX_CHARS:
            lengths = {text: n for text, n in lengths.items() if len(text) <= _CACHE_MAX_CHARS}
        young = self._young
        young.update(lengths)
        self._chars += sum(map(len, lengths))
        if len(young) >= _CACHE_SIZE or self._chars >= _CACHE_GENERATION_CHARS:
            self._old, self._young, self._chars = young, {}, 0

    def __call__(self, text: str) -> int:
        found = self.get(text)
        if found is None:
            found = self.backend.count_all([text])[0]
            self.put(text, found)
        return found

    def count_all(self, texts: list[str], pool: Executor | None = None, threads: int = 1) -> list[int]:
        """Token lengths of `texts`, in order (not cached here; see `ExampleCounter`)."""
        backend = self.backend
        if pool is None or threads < 2 or not backend.parallel or len(texts) < _MIN_PARALLEL_STRINGS:
            return backend.count_all(texts)
        # Interleaved slices balance long and short strings; the calling thread takes the first.
        slices = [texts[i::threads] for i in range(threads)]
        futures = [pool.submit(backend.count_all, part) for part in slices[1:]]
        results = [backend.count_all(slices[0])] + [future.result() for future in futures]
        counts = [0] * len(texts)
        for i, part in enumerate(results):
            counts[i::threads] = part
        return counts


def token_lengths(encoding_name: str, tokenizer: str | None = None) -> TokenLengths:
    """The process-wide cached lengths for `encoding_name`, counted by `tokenizer_backend`."""
    return _lengths(encoding_name, _choice(tokenizer))


@cache
def _lengths(encoding_name: str, choice: str) -> TokenLengths:
    return TokenLengths(encoding_name, _backend(encoding_name, choice))
