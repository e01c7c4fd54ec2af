"""The dataset report: counts, line-numbered errors, token statistics, the quote and warnings.

Field names are part of the v1 contract (DESIGN §12); fields may be added, never renamed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_TRAIN_EXAMPLES = 10


class ErrorLog:
    """Every rejected row is counted; only the first `limit` are kept with their details."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.errors: list[dict[str, Any]] = []
        self.total = 0
        self.counts: Counter[str] = Counter()

    def add(self, line: int, code: str, message: str) -> None:
        self.total += 1
        self.counts[code] += 1
        if len(self.errors) < self.limit:
            self.errors.append({"line": line, "code": code, "message": message})


class TokenStats:
    """Exact statistics from a histogram: memory grows with distinct lengths (≤ the model's
    example limit), not with the number of examples."""

    def __init__(self) -> None:
        self.histogram: Counter[int] = Counter()
        self.count = 0
        self.total = 0

    def add(self, tokens: int) -> None:
        self.histogram[tokens] += 1
        self.count += 1
        self.total += tokens

    def add_many(self, counts: list[int]) -> None:
        self.histogram.update(counts)
        self.count += len(counts)
        self.total += sum(counts)

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile: the smallest length with at least p% of examples at or below it."""
        if not self.count:
            return 0
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for length in sorted(self.histogram):
            seen += self.histogram[length]
            if seen >= rank:
                return length
        return max(self.histogram)

    def to_dict(self) -> dict[str, Any]:
        if not self.count:
            return {"total": 0, "min": 0, "max": 0, "mean": 0.0, "p50": 0, "p95": 0}
        return {
            "total": self.total,
            "min": min(self.histogram),
            "max": max(self.histogram),
            "mean": round(self.total / self.count, 2),
            "p50": self.percentile(50),
            "p95": self.percentile(95),
        }


@dataclass
class DatasetReport:
    """What `prepare` found and produced.

    - `format` (`jsonl`, `json`, `csv`, `tsv`, `parquet`), `encoding` (Python's codec name, e.g.
      `utf-8`, `gb18030`, `utf-16`; None for Parquet), `compression` (`gzip` or None), `bom`:
      what intake read; `format_detected` / `encoding_detected`: sniffed (True) or given as
      options (False).
    - `rows_read`: records read: non-blank lines (JSONL), elements (JSON array), data rows after
      the header (CSV/TSV), rows (Parquet); `blank_lines` (and all-blank CSV rows) are skipped
      silently. `rows_read == valid_examples + skipped + duplicates["exact"] +
      duplicates["normalised"]`.
    - `valid_examples`: unique valid examples in the whole input (before sampling); `examples` =
      `train_examples` + `validation_examples`, the ones written (after sampling and splitting),
      so a sample of 100 is a dataset of 100 examples.
    - `duplicates`: examples dropped as copies of an earlier one: `exact` (same JSON) and
      `normalised` (same after case, width, whitespace and punctuation are normalised).
    - `mapped_columns`: for CSV/TSV/Parquet read as huatuo, `{"questions": column, "answers":
      column}` when those columns have other names (e.g. `ask`/`answer`); None otherwise.
    - `skipped`: rejected rows; every one has an entry in `error_counts` and `errors_total`
      (so `skipped == errors_total`), but only the first `error_limit` are listed in `errors`
      as `{"line", "code", "message"}` with 1-based line numbers (per format: the physical line
      where the row starts; Parquet: the row number).
    - `tokens`: statistics over the train examples; `quote`: training cost of the train split
      (validation tokens are not billed).
    - `error`: `None` when the dataset can be used for fine-tuning; otherwise
      `{"code", "message"}` (v1: `too_few_examples`) — the caller marks the dataset failed but
      can still store and show the whole report, line errors included. `ok` says which.
    """

    preset: str
    format: str | None = None
    format_detected: bool = False
    encoding: str | None = None
    encoding_detected: bool = False
    compression: str | None = None
    bom: bool = False
    rows_read: int = 0
    blank_lines: int = 0
    valid_examples: int = 0
    examples: int = 0
    train_examples: int = 0
    validation_examples: int = 0
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    error_counts: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=lambda: {"exact": 0, "normalised": 0})
    mapped_columns: dict[str, str] | None = None
    tokens: dict[str, Any] = field(default_factory=lambda: TokenStats().to_dict())
    validation_tokens: int = 0
    quote: dict[str, Any] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def too_few_error(train: int, validation: int) -> dict[str, str] | None:
    if train >= MIN_TRAIN_EXAMPLES:
        return None
    if validation:
        message = (
            f"Dataset has {train + validation} valid example(s), {train} of them in the training "
            f"split; at least {MIN_TRAIN_EXAMPLES} training examples are required for fine-tuning. "
            "Add rows, fix the rejected ones, or lower validation_fraction."
        )
    else:
        message = (
            f"Dataset has {train} valid example(s); at least {MIN_TRAIN_EXAMPLES} are required for "
            "fine-tuning. Add rows or fix the rejected ones (see errors)."
        )
    return {"code": "too_few_examples", "message": message}
