"""The pure dataset transform: an upload in, train/validation JSONL and a report out. No DB, no HTTP.

One streaming pass (run.py): intake (format, encoding, gzip; intake.py) → mapping (presets) →
dedup (exact, then normalised; dedup.py) → token limit → sample → split → write. Without
`sample_size`, every example is written once its batch is counted (memory does not grow with the
file, apart from 16 to 32 bytes of fingerprints per unique example); with it, a seeded reservoir
keeps `sample_size` examples and writes them at the end, in input order.

Token counting goes a batch of rows at a time (`batch_rows` rows or run.py's `_BATCH_CHARS`
characters): rows are read and mapped into a batch, whose distinct strings that the bounded cache
does not know (shared.tokens.ExampleCounter) are then counted once, in background threads
(`tokenizer_threads`, default: the CPUs available), while the next batch is read; then the batch
is finished in input order: dedup (the common chat shape's strings normalised together, dedup.py),
rejections, the token limit, the sample, the split and the writes (one write per output and
batch). Outputs and report are the same as one row at a time would give, whatever the thread
count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

from shared.datasets.formats import DatasetInvalid
from shared.datasets.gc_pause import gc_paused
from shared.datasets.intake import DEFAULT_MAX_DECOMPRESSED_BYTES, check_options
from shared.datasets.presets import MappingOptions, resolve_preset
from shared.datasets.presets.chat import plain_chat_example
from shared.datasets.report import DatasetReport
from shared.datasets.run import DEFAULT_BATCH_ROWS, Run
from shared.errors import InvalidInput
from shared.pricing import validate_n_epochs
from shared.tokens import TokenLengths

__all__ = ["DatasetInvalid", "dataset_problem", "plain_chat_example", "prepare"]


def prepare(
    source: BinaryIO,
    *,
    train_out: BinaryIO,
    validation_out: BinaryIO,
    preset: str = "auto",
    system_prompt: str | None = None,
    user_template: str | None = None,
    field_map: Mapping[str, str] | str | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    validation_fraction: float = 0.0,
    target_model: str = "gpt-4o-mini-2024-07-18",
    n_epochs: int | None = None,
    error_limit: int = 100,
    format: str = "auto",
    encoding: str | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    tokenizer_threads: int | None = None,
    tokenizer: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    token_lengths: TokenLengths | None = None,
) -> DatasetReport:
    """Turn an upload into chat-format train/validation JSONL and return the report.

    Input (intake.py): JSONL, a JSON array, CSV/TSV or Parquet (`format`, default sniffed), each
    optionally gzip-compressed; UTF-8 with or without a BOM, UTF-16/32 with a BOM, GB18030/GBK
    (detected, or named by `encoding`); LF or CRLF; blank lines are skipped. Bad rows never raise:
    each is rejected with a 1-based line number (formats.py says what `line` means per format)
    and a code (`invalid_json`, `invalid_encoding`, `too_deep`, `line_too_long`/`row_too_long`,
    `truncated_json`, `wrong_field_count`, `unterminated_quote`, `invalid_csv`, the presets'
    codes such as `not_an_object`, `missing_field`, `empty_content` and the cookbook's seven chat
    checks, `too_many_tokens` above the target model's per-example limit) and counted in
    `skipped`. Duplicate examples (dedup.py) are dropped and counted in `duplicates`.

    `preset="auto"` picks a preset with `presets.detect_preset` from the first object row with a
    known key; CSV/TSV/Parquet columns named like a question and an answer (e.g. `ask`/`answer`)
    are read as huatuo's (columns.py; `report.mapped_columns` says so).
    `system_prompt` is added to huatuo rows, and to chat rows that have no system message.
    `sample_size`: seeded reservoir sample of the valid examples, written in input order.
    `validation_fraction`: each example goes to validation when a seeded hash of its normalised
    first user message falls below the fraction, so duplicate questions never straddle the split
    (the realised share is therefore close to, not exactly, the fraction).
    `tokenizer_threads`: threads that tokenize (default `shared.tokens.default_threads()`);
    `tokenizer`: "auto", "tiktoken" or "quicktok" (default: TUNEFORGE_TOKENIZER; see
    `shared.tokens.tokenizer_backend`); `batch_rows`: rows per token-counting batch;
    `token_lengths`: the length cache to count through (default: the process-wide one for the
    encoding and tokenizer). The outputs and the report depend on none of these.

    Raises `InvalidInput` for bad arguments (unknown preset, format, encoding or model, n_epochs,
    sample_size, validation_fraction) before reading, and `DatasetInvalid` when the file holds no
    data at all, is binary, a gzip bomb or damaged (then whatever was written to the outputs must
    be discarded). Fewer than 10 training examples does not raise: the report comes back with
    `error.code == "too_few_examples"` (`report.ok` is False) so the caller can fail the dataset
    and still keep the report.
    """
    options = MappingOptions(system_prompt=system_prompt, user_template=user_template, field_map=field_map)
    preset = resolve_preset(preset, options)
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
    check_options(format, encoding)
    if error_limit < 0:
        raise ValueError("error_limit must be >= 0")
    if tokenizer_threads is not None and tokenizer_threads < 1:
        raise ValueError("tokenizer_threads must be >= 1")
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    run = Run(
        train_out=train_out,
        validation_out=validation_out,
        preset=preset,
        options=options,
        sample_size=sample_size,
        seed=seed,
        validation_fraction=validation_fraction,
        target_model=target_model,
        error_limit=error_limit,
        tokenizer_threads=tokenizer_threads,
        tokenizer=tokenizer,
        batch_rows=batch_rows,
        token_lengths=token_lengths,
    )
    try:
        with gc_paused():
            run.consume(
                source, format=format, encoding=encoding, max_decompressed_bytes=max_decompressed_bytes
            )
            return run.finish(n_epochs)
    finally:
        run.output.close()
        run.counter.close()


def dataset_problem(report: DatasetReport) -> tuple[str, str] | None:
    """(code, message) when the report says the dataset cannot be used, else None."""
    if report.error is None:
        return None
    return report.error["code"], report.error["message"]
