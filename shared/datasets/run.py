"""One preparation run (pipeline.prepare): reads the records, maps and checks each row, and
finishes them a batch at a time — dedup, the token limit, the sample, the split, the writes — then
makes the report. See pipeline.py's docstring for the order of things and what does not depend
on the batch size or the thread count."""

from __future__ import annotations

import random
from datetime import date, timedelta
from itertools import chain
from typing import Any, BinaryIO

from shared.datasets.columns import TabularColumns
from shared.datasets.dedup import Deduplicator, Plain, plain_messages
from shared.datasets.formats import DatasetInvalid
from shared.datasets.intake import open_intake
from shared.datasets.output import Output
from shared.datasets.presets import (
    CHAT_TOP_LEVEL_KEYS,
    DETECTION_HINT,
    MAPPERS,
    MappingOptions,
    RowRejected,
    detect_preset,
    resolve_preset,
)
from shared.datasets.presets.chat import plain_chat_example
from shared.datasets.report import DatasetReport, ErrorLog, too_few_error
from shared.pricing import quote, resolve_model
from shared.tokens import (
    ExampleCounter,
    Submitted,
    TokenLengths,
    encoding_name_for_model,
    training_example_token_upper_bound,
)

# A file whose first rows hold no usable row is not a dataset; stop instead of reading gigabytes.
_GIVE_UP_AFTER_LINES = 1000
_SHUTDOWN_WARNING_DAYS = 90
_CHAT_KEYS = frozenset(CHAT_TOP_LEVEL_KEYS)
# Rows per token-counting batch: big enough to keep the threads busy, small enough that a batch's
# examples are a few MiB; a batch of long examples ends early, at _BATCH_CHARS characters.
DEFAULT_BATCH_ROWS = 2048
_BATCH_CHARS = 1 << 21
# A row waiting for its batch's counts: (line, example, ticket, the `plain_messages` of an example
# of the common shape or None), or (line, None, (code, message), None) for a rejected row. The
# ticket is None when the example needs no count, `_COUNT_PLAIN` for a plain example, counted from
# its batch's distinct contents, else ExampleCounter.add's. Plain
# examples are checked for duplicates when their batch is finished, all at once; others as they
# are read (the two kinds can never be duplicates of each other, so the order between them does
# not matter).
_Pending = tuple[int, Any, Any, Any]
# The ticket of a plain example to count with its batch's distinct contents (`_next_batch`).
_COUNT_PLAIN: Any = object()
# A batch being counted: its rows, the strings submitted, the lengths known and deferred when it
# was closed (ExampleCounter.add_texts), and its plain examples' distinct contents (for dedup).
_Counting = tuple[list[_Pending], Submitted, tuple[dict[str, int], list[str]], list[str] | None]


class Run:
    def __init__(
        self,
        *,
        train_out: BinaryIO,
        validation_out: BinaryIO,
        preset: str,
        options: MappingOptions,
        sample_size: int | None,
        seed: int,
        validation_fraction: float,
        target_model: str,
        error_limit: int,
        tokenizer_threads: int | None = None,
        tokenizer: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        token_lengths: TokenLengths | None = None,
    ) -> None:
        self.preset = preset
        self.options = options
        self.sample_size = sample_size
        self.seed = seed
        self.fraction = validation_fraction
        self.model = resolve_model(target_model)
        # The encoding's name is enough: tiktoken's tables load only if tiktoken counts.
        self.encoding_name = encoding_name_for_model(self.model.name)
        self.limit = self.model.max_tokens_per_example
        self.rng = random.Random(seed)
        self.reservoir: list[tuple[int, dict[str, Any], int | None]] = []
        self.errors = ErrorLog(error_limit)
        self.report = DatasetReport(preset=preset)
        self.output = Output(train_out, validation_out, self.report, validation_fraction, seed)
        self.objects = 0
        self.dropped_keys = 0
        self.dedup = Deduplicator()
        self.format = "jsonl"
        self.columns = TabularColumns("jsonl")
        self.intake_warnings: list[dict[str, str]] = []
        self.counter = ExampleCounter(self.encoding_name, tokenizer_threads, token_lengths, tokenizer)
        self.batch_rows = batch_rows
        # Rows waiting for their batch's token counts, in input order (`_Pending`). While one
        # batch is read, the batch before it may still be counting (`counting`).
        self.batch: list[_Pending] = []
        self.counting: _Counting | None = None
        self.plain_chat = options.user_template is None
        self.chat_rows = False  # see `_row`

    def consume(
        self, source: BinaryIO, *, format: str, encoding: str | None, max_decompressed_bytes: int
    ) -> None:
        intake = open_intake(
            source, format=format, encoding=encoding, max_decompressed_bytes=max_decompressed_bytes
        )
        report = self.report
        self.format = report.format = intake.format
        report.format_detected = intake.format_detected
        report.encoding, report.encoding_detected = intake.encoding, intake.encoding_detected
        report.compression, report.bom = intake.compression, intake.bom
        self.intake_warnings = intake.warnings
        self.columns = TabularColumns(intake.format)
        for number, value, error in intake.records():
            report.rows_read += 1
            if error is None:
                self._row(number, value)
            else:
                self.batch.append((number, None, error, None))
            if report.rows_read == _GIVE_UP_AFTER_LINES:
                self._drain()
                self._check_is_data()
            elif len(self.batch) >= self.batch_rows or self.counter.chars >= _BATCH_CHARS:
                self._next_batch()
        self._drain()
        report.blank_lines = intake.blank_lines

    def _check_is_data(self) -> None:
        rows = self.report.rows_read
        if not rows:
            raise DatasetInvalid(
                "The file holds no rows (it is empty or blank, or a CSV/TSV header alone)",
                code="empty_file",
                param="file",
            )
        first = self.errors.errors[0] if self.errors.errors else None
        first_problem = f" First problem, line {first['line']}: {first['message']}" if first else ""
        if not self.objects and self.format == "jsonl":
            raise DatasetInvalid(
                f"None of the first {rows} non-blank line(s) is a JSON object; expected JSONL "
                "(one JSON object per line), a JSON array, CSV/TSV or Parquet." + first_problem,
                code="not_jsonl",
                param="file",
            )
        if not self.objects and self.format == "json":
            raise DatasetInvalid(
                f"None of the first {rows} element(s) of the JSON array is an object; expected an "
                "array of JSON objects." + first_problem,
                code="no_objects",
                param="file",
            )
        if self.preset == "auto" and self.objects:
            raise DatasetInvalid(
                f"Could not detect the preset: none of the first {rows} row(s) has {DETECTION_HINT}"
                f"{self.columns.hint()}; name the preset explicitly",
                code="preset_not_detected",
                param="preset",
            )

    def _row(self, number: int, row: Any) -> None:
        if self.chat_rows and type(row) is dict and len(row) == 1:
            # The commonest row, once the preset is chat and the columns need no renaming: what
            # the general road below does with it, in fewer steps.
            found = plain_chat_example(row, self.options.system_prompt)
            if found is not None:
                self.objects += 1
                example, plain = found
                ticket = None
                if self.sample_size is None or training_example_token_upper_bound(example) > self.limit:
                    ticket = _COUNT_PLAIN
                    # Counted with the batch (`_next_batch`), but its characters end a long batch now.
                    self.counter.chars += sum(map(len, plain[1]))
                self.batch.append((number, example, ticket, plain))
                return
        self._any_row(number, row)
        self.chat_rows = (
            self.preset == "chat" and self.plain_chat and self.columns.decided and not self.columns.rename
        )

    def _any_row(self, number: int, row: Any) -> None:
        if isinstance(row, dict):
            self.objects += 1
            if not self.columns.decided:  # tabular files: question/answer-like columns (columns.py)
                self.columns.decide(row, self.preset, detect_preset)
                self.report.mapped_columns = self.columns.mapped
            if self.columns.rename:
                row = self.columns.apply(row)
        if self.preset == "auto":
            if not isinstance(row, dict):
                self._reject(number, "not_an_object", "Row is not a JSON object")
                return
            detected = detect_preset(row)
            if detected is None:
                self._reject(
                    number,
                    "missing_field",
                    "Row has none of the fields of a known preset; found: "
                    f"{', '.join(sorted(row)[:10]) or 'no fields'}",
                )
                return
            self.preset = self.report.preset = resolve_preset(detected, self.options)
        if self.preset == "chat" and self.plain_chat and type(row) is dict and len(row) == 1:
            found = plain_chat_example(row, self.options.system_prompt)
            if found is not None:
                self._example(number, *found)
                return
        try:
            example = MAPPERS[self.preset](row, self.options)
        except RowRejected as rejected:
            self._reject(number, rejected.code, rejected.message)
            return
        if self.preset == "chat" and row.keys() - _CHAT_KEYS:
            self.dropped_keys += 1
        self._example(number, example, plain_messages(example))

    def _reject(self, number: int, code: str, message: str) -> None:
        self.batch.append((number, None, (code, message), None))

    def _example(self, number: int, example: dict[str, Any], plain: Plain | None) -> None:
        try:
            if plain is None and self.dedup.duplicate_of(example, None) is not None:
                return
        except TypeError as exc:  # orjson cannot write it (nesting over 255 levels), so neither can we
            code = "too_deep" if "ecursion" in str(exc) else "invalid_value"
            self._reject(number, code, f"Example cannot be written as JSON: {exc}")
            return
        ticket = None
        # Sampled runs only tokenize what they keep, unless the example might be over the limit.
        if self.sample_size is None or training_example_token_upper_bound(example) > self.limit:
            if plain is None:
                ticket = self.counter.add(example)
            else:
                ticket = _COUNT_PLAIN
                self.counter.chars += sum(map(len, plain[1]))
        self.batch.append((number, example, ticket, plain))

    def _next_batch(self) -> None:
        """Start counting this batch's strings, then finish the batch before it."""
        batch = self.batch
        texts = list(dict.fromkeys(chain.from_iterable(p[3][1] for p in batch if p[2] is _COUNT_PLAIN)))
        known, deferred = self.counter.add_texts(texts)
        submitted = self.counter.submit()
        if self.counting is not None:
            self._finish(*self.counting)
        # Every plain example counted: their distinct contents are dedup's too.
        plain_texts = texts if self.sample_size is None else None
        self.counting = (batch, submitted, (known, deferred), plain_texts)
        self.batch = []

    def _drain(self) -> None:
        """Finish every row read so far."""
        self._next_batch()
        if self.counting is not None:
            self._finish(*self.counting)
            self.counting = None

    def _finish(
        self,
        batch: list[_Pending],
        submitted: Submitted,
        lengths: tuple[dict[str, int], list[str]],
        texts: list[str] | None,
    ) -> None:
        """Take the batch's token counts, then finish its rows in input order."""
        counter = self.counter
        counter.wait(submitted)
        errors, report, limit, sample_size = self.errors, self.report, self.limit, self.sample_size
        reservoir, count, fixed_tokens = self.reservoir, counter.tokens, counter.fixed_tokens
        length_of = counter.completed(*lengths).__getitem__
        plains = [plain for _, _, _, plain in batch if plain is not None]
        duplicates = iter(self.dedup.duplicates_of_plain(plains, texts) if plains else ())
        # The examples to write, their token counts and their roles (plain examples), in order.
        examples: list[dict[str, Any]] = []
        counts: list[int] = []
        roles: list[tuple[str, ...] | None] = []
        valid = report.valid_examples
        for number, example, ticket, plain in batch:
            if example is None:
                errors.add(number, *ticket)
                continue
            if plain is not None and next(duplicates) is not None:
                continue
            tokens: int | None = None
            if ticket is _COUNT_PLAIN:
                tokens = fixed_tokens(plain[0]) + sum(map(length_of, plain[1]))
            elif ticket is not None:
                tokens = ticket[0] if not ticket[1] else count(ticket)
            if tokens is not None and tokens > limit:
                errors.add(
                    number,
                    "too_many_tokens",
                    f"Example has {tokens} tokens; {self.model.name} accepts at most {limit}",
                )
                continue
            if sample_size is None:
                examples.append(example)
                counts.append(tokens)  # type: ignore[arg-type]
                roles.append(None if plain is None else plain[0])
            elif len(reservoir) < sample_size:
                reservoir.append((valid, example, tokens))
            else:
                slot = self.rng.randrange(valid + 1)
                if slot < sample_size:
                    reservoir[slot] = (valid, example, tokens)
            valid += 1
        report.valid_examples = valid
        if examples:
            self.output.write(examples, counts, roles)
        self.output.flush()

    def finish(self, n_epochs: int | None) -> DatasetReport:
        report = self.report
        self._check_is_data()
        self.reservoir.sort(key=lambda item: item[0])
        counter = self.counter
        for start in range(0, len(self.reservoir), self.batch_rows):
            kept = self.reservoir[start : start + self.batch_rows]
            tickets = [counter.add(example) if tokens is None else None for _, example, tokens in kept]
            counter.resolve()
            self.output.write(
                [example for _, example, _ in kept],
                [
                    tokens if ticket is None else counter.tokens(ticket)
                    for (_, _, tokens), ticket in zip(kept, tickets, strict=True)
                ],
                [None] * len(kept),
            )
            self.output.flush()
        self.reservoir.clear()
        report.examples = report.train_examples + report.validation_examples
        report.errors = self.errors.errors
        report.errors_total = report.skipped = self.errors.total
        report.error_counts = dict(self.errors.counts)
        report.duplicates = self.dedup.to_dict()
        report.tokens = self.output.train_tokens.to_dict()
        report.quote = quote(
            self.model.name,
            billed_tokens_per_epoch=self.output.train_tokens.total,
            n_examples=report.train_examples,
            n_epochs=n_epochs,
        ).to_dict()
        report.warnings = self._warnings()
        report.error = too_few_error(report.train_examples, report.validation_examples)
        return report

    def _warnings(self) -> list[dict[str, Any]]:
        report = self.report
        found: list[dict[str, Any]] = list(self.intake_warnings)

        def warn(code: str, message: str) -> None:
            found.append({"code": code, "message": message})

        found += [w for w in (self.columns.warning(report.preset), self.dedup.warning()) if w]
        if self.output.no_system:
            warn("missing_system_message", f"{self.output.no_system} example(s) have no system message")
        if self.output.no_user:
            warn("missing_user_message", f"{self.output.no_user} example(s) have no user message")
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
