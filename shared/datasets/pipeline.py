"""The pure dataset transform: JSONL in, train/validation JSONL and a report out. No DB, no HTTP.

One streaming pass. Without `sample_size`, every example is written as soon as it is checked
(memory does not grow with the file); with it, a seeded reservoir keeps `sample_size` examples
and writes them at the end, in input order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any, BinaryIO

import orjson

from shared.datasets.presets import (
    CHAT_TOP_LEVEL_KEYS,
    MAPPERS,
    PRESETS,
    RowRejected,
    detect_preset,
    question_key,
)
from shared.datasets.report import DatasetReport, ErrorLog, TokenStats, too_few_error
from shared.errors import InvalidInput
from shared.pricing import quote, resolve_model, validate_n_epochs
from shared.tokens import count_example_tokens, encoding_for_model, example_token_upper_bound

_BOM = b"\xef\xbb\xbf"
# A line longer than this is rejected without being held in memory whole (DESIGN §11).
MAX_LINE_BYTES = 16 * 1024 * 1024
# A file whose first lines hold no usable row is not a dataset; stop instead of reading gigabytes.
_GIVE_UP_AFTER_LINES = 1000
_SHUTDOWN_WARNING_DAYS = 90
_CHAT_KEYS = frozenset(CHAT_TOP_LEVEL_KEYS)


class DatasetInvalid(InvalidInput):
    """The upload is not a dataset at all (empty, binary, not JSONL, no recognisable rows)."""

    code = "invalid_dataset"


def prepare(
    source: BinaryIO,
    *,
    train_out: BinaryIO,
    validation_out: BinaryIO,
    preset: str = "auto",
    system_prompt: str | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    validation_fraction: float = 0.0,
    target_model: str = "gpt-4o-mini-2024-07-18",
    n_epochs: int | None = None,
    error_limit: int = 100,
) -> DatasetReport:
    """Turn a JSONL upload into chat-format train/validation JSONL and return the report.

    Input: UTF-8 JSONL, with or without a BOM, LF or CRLF; blank lines are skipped. Bad rows
    never raise: each is rejected with a 1-based line number and a code (`invalid_json`,
    `not_an_object`, `missing_field`, `invalid_field_type`, `empty_content`, `line_too_long`, the
    cookbook's seven chat checks, `invalid_weight`, `too_many_tokens` above the target model's
    per-example limit) and counted in `skipped`.

    `preset="auto"` picks `chat` or `huatuo` from the first object row with a known key.
    `system_prompt` is added to huatuo rows, and to chat rows that have no system message.
    `sample_size`: seeded reservoir sample of the valid examples, written in input order.
    `validation_fraction`: each example goes to validation when a seeded hash of its normalised
    first user message falls below the fraction, so duplicate questions never straddle the split
    (the realised share is therefore close to, not exactly, the fraction).

    Raises `InvalidInput` for bad arguments (unknown preset or model, n_epochs, sample_size,
    validation_fraction) before reading, and `DatasetInvalid` when the file holds no data at all
    (then whatever was written to the outputs must be discarded). Fewer than 10 training
    examples does not raise: the report comes back with `error.code == "too_few_examples"`
    (`report.ok` is False) so the caller can fail the dataset and still keep the report.
    """
    if preset not in PRESETS:
        raise InvalidInput(
            f"Unknown preset '{preset}'; supported presets: {', '.join(PRESETS)}",
            code="unknown_preset",
            param="preset",
        )
    if sample_size is not None and (isinstance(sample_size, bool) or sample_size < 1):
        raise InvalidInput(
            "sample_size must be a positive integer", code="invalid_sample_size", param="sample_size"
        )
    if not 0.0 <= validation_fraction < 1.0:
        raise InvalidInput(
            "validation_fraction must be at least 0 and below 1",
            code="invalid_validation_fraction",
            param="validation_fraction",
        )
    if n_epochs is not None:
        validate_n_epochs(n_epochs)
    if error_limit < 0:
        raise ValueError("error_limit must be >= 0")
    run = _Run(
        train_out=train_out,
        validation_out=validation_out,
        preset=preset,
        system_prompt=(system_prompt or "").strip() or None,
        sample_size=sample_size,
        seed=seed,
        validation_fraction=validation_fraction,
        target_model=target_model,
        error_limit=error_limit,
    )
    run.consume(source)
    return run.finish(n_epochs)


def dataset_problem(report: DatasetReport) -> tuple[str, str] | None:
    """(code, message) when the report says the dataset cannot be used, else None."""
    if report.error is None:
        return None
    return report.error["code"], report.error["message"]


def _lines(source: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, bytes) per physical line; None for a line over MAX_LINE_BYTES."""
    number = 0
    while True:
        chunk = source.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > MAX_LINE_BYTES:
            while chunk and not chunk.endswith(b"\n"):
                chunk = source.readline(MAX_LINE_BYTES)
            yield number, None
            continue
        yield number, chunk


def _validation_side(key: str, seed: int, fraction: float) -> bool:
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


class _Run:
    def __init__(
        self,
        *,
        train_out: BinaryIO,
        validation_out: BinaryIO,
        preset: str,
        system_prompt: str | None,
        sample_size: int | None,
        seed: int,
        validation_fraction: float,
        target_model: str,
        error_limit: int,
    ) -> None:
        self.train_out = train_out
        self.validation_out = validation_out
        self.preset = preset
        self.system_prompt = system_prompt
        self.sample_size = sample_size
        self.seed = seed
        self.fraction = validation_fraction
        self.model = resolve_model(target_model)
        self.encoding = encoding_for_model(self.model.name)
        self.limit = self.model.max_tokens_per_example
        self.rng = random.Random(seed)
        self.reservoir: list[tuple[int, dict[str, Any], int | None]] = []
        self.errors = ErrorLog(error_limit)
        self.train_tokens = TokenStats()
        self.report = DatasetReport(preset=preset)
        self.objects = 0
        self.no_system = 0
        self.no_user = 0
        self.dropped_keys = 0

    def consume(self, source: BinaryIO) -> None:
        report = self.report
        for number, raw in _lines(source):
            if raw is not None and number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw is not None and not raw.strip():
                report.blank_lines += 1
                continue
            report.rows_read += 1
            if raw is None:
                self.errors.add(number, "line_too_long", f"Line is longer than {MAX_LINE_BYTES} bytes")
            else:
                self._row(number, raw)
            if report.rows_read == _GIVE_UP_AFTER_LINES:
                self._check_is_data()

    def _check_is_data(self) -> None:
        rows = self.report.rows_read
        if not rows:
            raise DatasetInvalid("The file is empty", code="empty_file", param="file")
        if not self.objects:
            raise DatasetInvalid(
                f"None of the first {rows} non-blank line(s) is a JSON object; expected JSONL "
                "(one JSON object per line, UTF-8)",
                code="not_jsonl",
                param="file",
            )
        if self.preset == "auto":
            raise DatasetInvalid(
                f"Could not detect the preset: none of the first {rows} row(s) has "
                "'questions'/'answers' or 'messages'; name the preset explicitly",
                code="preset_not_detected",
                param="preset",
            )

    def _row(self, number: int, raw: bytes) -> None:
        # Text never holds NUL bytes; until a row has parsed, one means a binary upload.
        if not self.objects and b"\x00" in raw:
            raise DatasetInvalid(
                "The file looks binary (NUL bytes); expected UTF-8 JSONL", code="not_jsonl", param="file"
            )
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.errors.add(number, "invalid_json", self._json_error_message(raw))
            return
        if isinstance(row, dict):
            self.objects += 1
        if self.preset == "auto":
            if not isinstance(row, dict):
                self.errors.add(number, "not_an_object", "Row is not a JSON object")
                return
            detected = detect_preset(row)
            if detected is None:
                self.errors.add(
                    number,
                    "missing_field",
                    "Row has none of the fields of a known preset ('questions'/'answers' or "
                    f"'messages'); found: {', '.join(sorted(row)[:10]) or 'no fields'}",
                )
                return
            self.preset = self.report.preset = detected
        try:
            example = MAPPERS[self.preset](row, self.system_prompt)
        except RowRejected as rejected:
            self.errors.add(number, rejected.code, rejected.message)
            return
        if self.preset == "chat" and row.keys() - _CHAT_KEYS:
            self.dropped_keys += 1
        self._example(number, example)

    @staticmethod
    def _json_error_message(raw: bytes) -> str:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return "Line is not valid UTF-8 (convert the file to UTF-8)"
        return "Line is not valid JSON"

    def _example(self, number: int, example: dict[str, Any]) -> None:
        tokens: int | None = None
        # Sampled runs only tokenize what they keep, unless the example might be over the limit.
        if self.sample_size is None or example_token_upper_bound(example["messages"]) > self.limit:
            tokens = count_example_tokens(example["messages"], self.encoding)
            if tokens > self.limit:
                self.errors.add(
                    number,
                    "too_many_tokens",
                    f"Example has {tokens} tokens; {self.model.name} accepts at most {self.limit}",
                )
                return
        index = self.report.valid_examples
        self.report.valid_examples += 1
        if self.sample_size is None:
            self._write(example, tokens)  # type: ignore[arg-type]
        elif len(self.reservoir) < self.sample_size:
            self.reservoir.append((index, example, tokens))
        else:
            slot = self.rng.randrange(index + 1)
            if slot < self.sample_size:
                self.reservoir[slot] = (index, example, tokens)

    def _write(self, example: dict[str, Any], tokens: int) -> None:
        line = orjson.dumps(example) + b"\n"
        roles = {m.get("role") for m in example["messages"]}
        self.no_system += "system" not in roles
        self.no_user += "user" not in roles
        if _validation_side(question_key(example), self.seed, self.fraction):
            self.validation_out.write(line)
            self.report.validation_examples += 1
            self.report.validation_tokens += tokens
        else:
            self.train_out.write(line)
            self.report.train_examples += 1
            self.train_tokens.add(tokens)

    def finish(self, n_epochs: int | None) -> DatasetReport:
        report = self.report
        self._check_is_data()
        self.reservoir.sort(key=lambda item: item[0])
        for _, example, tokens in self.reservoir:
            if tokens is None:
                tokens = count_example_tokens(example["messages"], self.encoding)
            self._write(example, tokens)
        self.reservoir.clear()
        report.examples = report.train_examples + report.validation_examples
        report.errors = self.errors.errors
        report.errors_total = report.skipped = self.errors.total
        report.error_counts = dict(self.errors.counts)
        report.tokens = self.train_tokens.to_dict()
        report.quote = quote(
            self.model.name,
            billed_tokens_per_epoch=self.train_tokens.total,
            n_examples=report.train_examples,
            n_epochs=n_epochs,
        ).to_dict()
        report.warnings = self._warnings()
        report.error = too_few_error(report.train_examples, report.validation_examples)
        return report

    def _warnings(self) -> list[dict[str, Any]]:
        report = self.report
        found: list[dict[str, Any]] = []

        def warn(code: str, message: str) -> None:
            found.append({"code": code, "message": message})

        if self.no_system:
            warn("missing_system_message", f"{self.no_system} example(s) have no system message")
        if self.no_user:
            warn("missing_user_message", f"{self.no_user} example(s) have no user message")
        if self.sample_size is not None and self.sample_size > report.valid_examples:
            warn(
                "sample_larger_than_dataset",
                f"sample_size {self.sample_size} exceeds the {report.valid_examples} valid "
                "example(s); all were kept",
            )
        if self.fraction > 0 and not report.validation_examples and report.train_examples:
            warn("empty_validation_split", "validation_fraction > 0 but no example fell into validation")
        if self.dropped_keys:
            warn(
                "dropped_keys",
                f"{self.dropped_keys} row(s) had top-level keys other than "
                f"{', '.join(CHAT_TOP_LEVEL_KEYS)}; they were dropped",
            )
        shutdown = self.model.shutdown_date
        if shutdown and shutdown <= date.today() + timedelta(days=_SHUTDOWN_WARNING_DAYS):
            verb = "shut down" if shutdown <= date.today() else "shuts down"
            warn("model_shutdown", f"{self.model.name} {verb} on {shutdown.isoformat()}")
        return found
