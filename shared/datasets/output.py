"""Where a run's valid examples go: their JSON lines, to train or to validation, written a batch at
a time, and their statistics (token counts, role coverage)."""

from __future__ import annotations

import hashlib
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, BinaryIO

import orjson

from shared.datasets.presets import question_key
from shared.datasets.report import DatasetReport, TokenStats
from shared.tokens import example_messages_for_stats

_json_line = partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


def _validation_side(key: str, seed: int, fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


class Output:
    """`validation_fraction`: each example goes to validation when a seeded hash of its normalised
    first user message falls below the fraction (`presets.question_key`), so duplicate questions
    never straddle the split."""

    def __init__(
        self,
        train_out: BinaryIO,
        validation_out: BinaryIO,
        report: DatasetReport,
        validation_fraction: float,
        seed: int,
    ) -> None:
        self.train_out = train_out
        self.validation_out = validation_out
        self.report = report
        self.fraction = validation_fraction
        self.seed = seed
        self.train_tokens = TokenStats()
        self.no_system = 0
        self.no_user = 0
        self.train_lines: list[bytes] = []
        self.validation_lines: list[bytes] = []
        self._writer: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def write(
        self, examples: list[dict[str, Any]], counts: list[int], roles: list[tuple[str, ...] | None]
    ) -> None:
        """Queue the examples' lines for their split (`flush` writes them) and count them.
        `roles`: each example's roles when the caller has them (plain examples), else None."""
        lines = list(map(_json_line, examples))
        shapes = Counter(roles)  # a few distinct role sequences: checked once each
        for shape, n in shapes.items():
            if shape is not None:
                self.no_system += n * ("system" not in shape)
                self.no_user += n * ("user" not in shape)
        if None in shapes:
            for example, shape in zip(examples, roles, strict=True):
                if shape is None:
                    found = {m.get("role") for m in example_messages_for_stats(example)}
                    self.no_system += "system" not in found
                    self.no_user += "user" not in found
        report = self.report
        if self.fraction <= 0.0:
            self.train_lines += lines
            report.train_examples += len(lines)
            self.train_tokens.add_many(counts)
            return
        for line, example, tokens in zip(lines, examples, counts, strict=True):
            if _validation_side(question_key(example), self.seed, self.fraction):
                self.validation_lines.append(line)
                report.validation_examples += 1
                report.validation_tokens += tokens
            else:
                self.train_lines.append(line)
                report.train_examples += 1
                self.train_tokens.add(tokens)

    def flush(self) -> None:
        """Hand the queued lines to a writer thread, one write per output and batch (a system
        call per 8 KiB line buffer costs as much as the JSON encoding). Joining and writing a
        batch (a copy into the page cache, a tenth of the main thread's time at 2 M rows) then
        runs beside the next batch, without the GIL for the system call. One batch is in
        flight at a time, so the order is kept and memory bounded."""
        train, validation = self.train_lines, self.validation_lines
        if not train and not validation:
            return
        self.train_lines, self.validation_lines = [], []
        self._wait()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="dataset-write")
        self._writing = self._writer.submit(self._write, train, validation)

    def _write(self, train: list[bytes], validation: list[bytes]) -> None:
        if train:
            self.train_out.write(b"".join(train))
        if validation:
            self.validation_out.write(b"".join(validation))

    def _wait(self) -> None:
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()  # a failed write (a full disk) fails the run

    def close(self) -> None:
        """Wait for the last write; call it before the outputs are closed or read."""
        try:
            self._wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
