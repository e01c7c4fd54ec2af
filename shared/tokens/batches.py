"""Counting many examples a batch at a time, in background threads (ExampleCounter)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from shared.tokens.cache import _MIN_PARALLEL_STRINGS, TokenLengths, token_lengths
from shared.tokens.counting import (
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    _counted_messages,
    example_parts,
)
from shared.tokens.selection import default_threads

# Sequences of roles whose fixed tokens an ExampleCounter keeps at hand.
_ROLES_KEPT = 256


Ticket = tuple[int, list[str]]


class Submitted:
    """A batch of distinct strings handed to the tokenizer (see `ExampleCounter.submit`): their
    counts, or the futures of its interleaved slices."""

    def __init__(
        self,
        texts: list[str],
        counts: list[int] | None = None,
        futures: list[Future[list[int]]] | None = None,
    ) -> None:
        self.texts = texts
        self._counts = counts
        self._futures = futures or []

    def counts(self) -> list[int]:
        if self._counts is None:
            parts = [future.result() for future in self._futures]
            if len(parts) == 1:
                self._counts = parts[0]
            else:
                self._counts = [0] * len(self.texts)
                for i, part in enumerate(parts):
                    self._counts[i :: len(parts)] = part
        return self._counts


class ExampleCounter:
    """Token counts of many training examples, a batch at a time, with the figures of
    `count_training_example` whatever the number of threads.

    1. `add(example)` returns a ticket: the fixed tokens plus the lengths that the
       cache knows, and the strings still to count; those join the batch's distinct strings,
       unless the batch before it is counting them already. For many plain examples at once,
       `add_texts` takes their distinct contents instead (no ticket and no step per example).
    2. `submit()` closes the batch and starts counting its strings in `threads - 1` background
       threads, with calls that hold no GIL for the whole slice (tiktoken on the texts joined by
       <|endoftext|>, quicktok's native batch), and returns at once: the caller reads and checks
       the next batch meanwhile, which is where the time goes in a one-pass pipeline. A backend
       without such a call is run over `threads` threads (the calling one included), one string
       per call, and the call returns when they are counted; `threads=1` counts in the caller.
    3. `wait(submitted)` takes the counts (into the cache too); then `tokens(ticket)` is the count
       of every example of that batch. Batches must be waited for in the order they were
       submitted, each before the one after the next is submitted.

    `close()` (or `with`) stops the threads."""

    def __init__(
        self,
        encoding_name: str,
        threads: int | None = None,
        lengths: TokenLengths | None = None,
        tokenizer: str | None = None,
    ) -> None:
        self.lengths = lengths or token_lengths(encoding_name, tokenizer)
        self.backend = self.lengths.backend
        self.threads = max(1, threads if threads is not None else default_threads())
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, None] = {}
        self._counting: dict[str, None] = {}  # the strings of the last batch submitted
        self._resolved: dict[str, int] = {}  # the last batch waited for
        self._previous: dict[str, int] = {}  # the one before it
        self._role_tokens: dict[tuple[str, ...], int] = {}  # the fixed tokens of a sequence of roles
        self.chars = 0  # characters in the examples added since the last submit

    def __enter__(self) -> ExampleCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def add(self, example: Mapping[str, Any]) -> Ticket:
        fixed, texts = example_parts(_counted_messages(example))
        return self._lookup(fixed, texts)

    def fixed_tokens(self, roles: tuple[str, ...]) -> int:
        """The tokens of messages with these roles apart from their contents (role names, the
        per-message overhead and the reply priming)."""
        fixed = self._role_tokens.get(roles)
        if fixed is None:
            fixed = REPLY_PRIMING_TOKENS + sum(TOKENS_PER_MESSAGE + self.lengths(role) for role in roles)
            if len(self._role_tokens) < _ROLES_KEPT:
                self._role_tokens[roles] = fixed
        return fixed

    def add_texts(self, texts: Collection[str]) -> tuple[dict[str, int], list[str]]:
        """For a batch of plain examples counted together, their distinct contents: the lengths
        the cache knows (a dict of the caller's), and the strings the batch before is counting
        already; the others join this batch to count. Once this batch is waited for,
        `completed(known, deferred)` has them all. No ticket per example: an example's count is
        `fixed_tokens(roles)` plus its contents' lengths."""
        lengths, counting = self.lengths, self._counting
        pending: dict[str, None] = self._pending
        known: dict[str, int] = {}
        deferred: list[str] = []
        for text in texts:
            found = lengths._young.get(text)
            if found is None:
                found = lengths._old.get(text)
                if found is None:
                    if text in counting:
                        deferred.append(text)
                    else:
                        pending[text] = None
                    continue
                lengths.put(text, found)
            known[text] = found
        return known, deferred

    def completed(self, known: dict[str, int], deferred: list[str]) -> dict[str, int]:
        """`add_texts`'s lengths, complete once its batch has been waited for."""
        previous = self._previous
        for text in deferred:
            known[text] = previous[text]
        known.update(self._resolved)
        return known

    def _lookup(self, fixed: int, texts: Collection[str]) -> Ticket:
        lengths = self.lengths
        young, old = lengths._young, lengths._old
        pending, counting = self._pending, self._counting
        unknown: list[str] = []
        self.chars += sum(map(len, texts))
        for text in texts:
            found = young.get(text)
            if found is None:
                found = old.get(text)
                if found is None:
                    unknown.append(text)
                    if text not in counting:
                        pending[text] = None
                    continue
                lengths.put(text, found)  # `lengths.get`, inlined: the hit moves to the young side
                young, old = lengths._young, lengths._old
            fixed += found
        return fixed, unknown

    def submit(self) -> Submitted:
        texts = list(self._pending)
        self._pending = {}
        self._counting = dict.fromkeys(texts)
        self.chars = 0
        backend = self.backend
        if not texts or self.threads < 2:
            return Submitted(texts, backend.count_all(texts))
        workers = self.threads - 1  # the calling thread has Python work of its own
        if backend.count_detached is not None:
            pool = self._executor(workers)
            if backend.native_threads or workers == 1 or len(texts) < _MIN_PARALLEL_STRINGS:
                return Submitted(texts, futures=[pool.submit(backend.count_detached, texts, workers)])
            slices = [texts[i::workers] for i in range(workers)]
            return Submitted(texts, futures=[pool.submit(backend.count_detached, part, 1) for part in slices])
        if backend.parallel and len(texts) >= _MIN_PARALLEL_STRINGS:
            return Submitted(texts, self.lengths.count_all(texts, self._executor(workers), self.threads))
        return Submitted(texts, backend.count_all(texts))

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tokenize")
        return self._pool

    def wait(self, submitted: Submitted) -> None:
        resolved = dict(zip(submitted.texts, submitted.counts(), strict=True))
        self.lengths.put_all(resolved)
        self._previous, self._resolved = self._resolved, resolved

    def resolve(self) -> None:
        """Submit and wait at once."""
        self.wait(self.submit())

    def tokens(self, ticket: Ticket) -> int:
        fixed, unknown = ticket
        if unknown:
            resolved, previous = self._resolved, self._previous
            fixed += sum([resolved[text] if text in resolved else previous[text] for text in unknown])
        return fixed
