"""Record readers: UTF-8 text (or a Parquet file) → `(line, value, error)` records.

`line` is what the report's errors cite:
- JSONL: the 1-based physical line.
- CSV/TSV: the physical line where the record starts (the header is line 1 unless blank lines come
  first; a quoted field may span lines, the record keeps its first line).
- JSON array: see jsonarray.py (the physical line where the element starts).
- Parquet: the 1-based row number over the whole file (Parquet has no lines).

Exactly one of `value` and `error` is meaningful: `error` is `(code, message)` for a record that
could not be read, `None` otherwise (then `value` may legitimately be JSON `null`). Records are
never dropped silently except blank lines / empty CSV rows, which `intake.blank_lines` counts.
Problems with the file as a whole raise `DatasetInvalid` (the dataset fails).
"""

from __future__ import annotations

import csv
import datetime
import decimal
import re
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from shared.errors import InvalidInput

if TYPE_CHECKING:
    from shared.datasets.intake import Intake

Record = tuple[int, Any, tuple[str, str] | None]

# A row (line, CSV record, array element) longer than this is rejected without being held whole.
MAX_ROW_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# orjson refuses documents nested deeper than this.
JSON_MAX_DEPTH = 1024
_PARQUET_BATCH_ROWS = 1024
_PIECE = 256 * 1024
_NOT_SPACE = re.compile(rb"[^ \t\r\n]")

# The csv module's default (131,072 characters per field) would reject long answers; records are
# capped at MAX_ROW_BYTES by the line reader and this limit together.
csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))


class DatasetInvalid(InvalidInput):
    """The upload is not a dataset at all (empty, binary, undecodable, not in a known format)."""

    code = "invalid_dataset"


def json_error(data: bytes, exc: orjson.JSONDecodeError, encoding: str, what: str) -> tuple[str, str]:
    """(code, message) for a row orjson refused; `what` is "Line" or "Element"."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        if encoding == "utf-8":
            return (
                "invalid_encoding",
                f"{what} is not valid UTF-8; convert the file to UTF-8 or name its encoding "
                "(the `encoding` option)",
            )
        return "invalid_encoding", f"{what} has bytes that are not valid {encoding}"
    if "depth limit" in exc.msg:
        return "too_deep", f"{what} nests JSON deeper than {JSON_MAX_DEPTH} levels"
    return "invalid_json", f"{what} is not valid JSON: {exc.msg} (column {exc.colno})"


def _read_line(readline: Any) -> bytes | bytearray | None:
    """The next physical line (b"" at the end), or None for a line over MAX_ROW_BYTES, which is
    skipped a piece at a time: a 2 GB line costs one piece of memory, not 2 GB."""
    raw = readline(_PIECE)
    if len(raw) < _PIECE or raw.endswith(b"\n"):
        return raw  # type: ignore[no-any-return]
    line = bytearray(raw)
    while True:
        piece = readline(_PIECE)
        if len(line) + len(piece) > MAX_ROW_BYTES:
            while len(piece) == _PIECE and not piece.endswith(b"\n"):
                piece = readline(_PIECE)
            return None
        line += piece
        if len(piece) < _PIECE or piece.endswith(b"\n"):
            return line


def _skip_blank_run(reader: Any) -> int:
    """After a blank line, consume the blank lines that follow straight from the read buffer and
    return how many there were, so a file (or a gzip bomb) of newlines costs a search per buffer,
    not a Python iteration per line."""
    skipped = 0
    while True:
        buffered = reader.peek(_PIECE)
        if not buffered:
            return skipped
        found = _NOT_SPACE.search(buffered)
        end = found.start() if found else len(buffered)
        cut = buffered.rfind(b"\n", 0, end) + 1
        if not cut:
            return skipped
        skipped += buffered.count(b"\n", 0, cut)
        reader.read(cut)
        if found:
            return skipped


def jsonl_records(reader: BinaryIO, intake: Intake) -> Iterator[Record]:
    """One JSON value per line; LF or CRLF; blank lines counted, a BOM at the start of any line
    (files concatenated with `cat`) ignored."""
    readline = reader.readline
    loads = orjson.loads
    number = 0
    while True:
        raw = _read_line(readline)
        if raw is None:
            number += 1
            yield number, None, ("line_too_long", f"Line is longer than {MAX_ROW_BYTES} bytes")
            continue
        if not raw:
            return
        number += 1
        if raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            yield number, loads(raw), None
        except orjson.JSONDecodeError as exc:
            if raw.strip():
                yield number, None, json_error(raw, exc, intake.encoding or "utf-8", "Line")
                continue
            skipped = _skip_blank_run(reader)
            intake.blank_lines += 1 + skipped
            number += skipped


class _LineState:
    """What the line feeder tells the CSV loop: the physical line where the current record
    started, and a problem found in its lines (csv.reader only sees text)."""

    __slots__ = ("blank", "fresh", "number", "problem", "start")

    def __init__(self) -> None:
        self.problem: tuple[str, str] | None = None
        self.number = 0  # physical lines read
        self.start = 0  # the first line of the record being read
        self.fresh = True  # the next line starts a record
        self.blank = 0

    def take(self) -> tuple[str, str] | None:
        problem, self.problem = self.problem, None
        return problem


def _text_lines(reader: Any, state: _LineState, encoding: str) -> Iterator[str]:
    readline = reader.readline
    while True:
        raw = _read_line(readline)
        if raw is not None and not raw:
            return
        state.number += 1
        if state.fresh:
            if raw is not None and not raw.strip():
                # Between records a blank line is an empty row: count it (and the run it starts)
                # here instead of feeding csv.reader one line at a time.
                skipped = _skip_blank_run(reader)
                state.blank += 1 + skipped
                state.number += skipped
                continue
            state.start, state.fresh = state.number, False
        if raw is None:
            state.problem = ("row_too_long", f"Row is longer than {MAX_ROW_BYTES} bytes")
            yield "\n"
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", "replace")
            state.problem = state.problem or (
                "invalid_encoding",
                f"Row has bytes that are not valid {'UTF-8' if encoding == 'utf-8' else encoding}",
            )
        if "\x00" in line:
            state.problem = state.problem or ("invalid_csv", "Row contains a NUL byte")
        yield line


def _csv_error(exc: csv.Error) -> tuple[str, str]:
    text = str(exc)
    if "unexpected end of data" in text:
        return "unterminated_quote", "A quoted field that starts in this row is never closed"
    if "field limit" in text:
        return "row_too_long", f"A field in this row is longer than {MAX_ROW_BYTES} characters"
    return "invalid_csv", f"Row is not valid CSV: {text}"


def _header(fields: list[str], line: int) -> list[str]:
    names = [f.strip().lstrip("\ufeff").strip() or f"column_{i + 1}" for i, f in enumerate(fields)]
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DatasetInvalid(
            f"The header (line {line}) names column(s) more than once: {', '.join(duplicates)}",
            code="invalid_csv_header",
            param="file",
        )
    return names


def csv_records(reader: BinaryIO, intake: Intake, delimiter: str) -> Iterator[Record]:
    """A header row, then one record per row as `{column: text}`; all values are strings.

    Quoted fields may span lines (strict CSV quoting). Rows whose fields are all blank count as
    blank lines. Codes: `wrong_field_count`, `unterminated_quote`, `invalid_csv`, `row_too_long`,
    `invalid_encoding`."""
    state = _LineState()
    rows = csv.reader(
        _text_lines(reader, state, intake.encoding or "utf-8"), delimiter=delimiter, strict=True
    )
    header: list[str] | None = None
    header_line = 0
    while True:
        state.fresh = True
        try:
            fields = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            state.take()
            if header is None:
                raise DatasetInvalid(
                    f"The CSV header (line {state.start}) cannot be read: {exc}",
                    code="invalid_csv",
                    param="file",
                ) from exc
            yield state.start, None, _csv_error(exc)
            continue
        start, problem = state.start, state.take()
        if problem is None and not any(f.strip() for f in fields):
            state.blank += 1
            continue
        if header is None:
            if problem is not None:
                raise DatasetInvalid(
                    f"The CSV header (line {start}) cannot be read: {problem[1]}",
                    code=problem[0],
                    param="file",
                )
            header, header_line = _header(fields, start), start
            continue
        if problem is not None:
            yield start, None, problem
        elif len(fields) != len(header):
            yield (
                start,
                None,
                (
                    "wrong_field_count",
                    f"Row has {len(fields)} field(s); the header (line {header_line}) has {len(header)}",
                ),
            )
        else:
            yield start, dict(zip(header, fields, strict=True)), None
    intake.blank_lines += state.blank


def _jsonable(value: Any) -> Any:
    """Parquet values orjson cannot write (bytes, decimals, dates, maps) as JSON-friendly ones."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta):
        return str(value)
    return value


def _native(arrow_type: Any) -> bool:
    import pyarrow as pa

    t = pa.types
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_boolean(arrow_type):
        return True
    if t.is_integer(arrow_type) or t.is_floating(arrow_type) or t.is_null(arrow_type):
        return True
    if t.is_list(arrow_type) or t.is_large_list(arrow_type):
        return _native(arrow_type.value_type)
    if t.is_struct(arrow_type):
        return all(_native(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    return False


def parquet_records(file: BinaryIO, intake: Intake, *, close: bool) -> Iterator[Record]:
    """Rows as dicts (nested lists and structs stay lists and dicts), read a batch at a time.
    `file` must be seekable; `close` when it is a spool the reader owns."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise DatasetInvalid(
            "Parquet needs pyarrow, which is not installed here; upload JSONL, JSON or CSV instead.",
            code="parquet_unavailable",
            param="format",
        ) from exc
    try:
        try:
            parquet = pq.ParquetFile(file)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DatasetInvalid(
                f"The file is not a readable Parquet file: {exc}", code="invalid_parquet", param="file"
            ) from exc
        convert = not all(_native(f.type) for f in parquet.schema_arrow)
        number = 0
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
        while True:
            try:
                batch = next(batches, None)
                rows = batch.to_pylist() if batch is not None else None
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise DatasetInvalid(
                    f"The Parquet file is damaged after row {number}: {exc}",
                    code="invalid_parquet",
                    param="file",
                ) from exc
            if rows is None:
                return
            for row in rows:
                number += 1
                yield number, _jsonable(row) if convert else row, None
    finally:
        if close:
            file.close()
