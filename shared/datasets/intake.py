"""Intake: the raw upload → a stream of records `(line, value, error)` (see formats.py), plus what
was found about the file (format, encoding, compression) for the report. Everything streams: memory
does not grow with the file.

1. Compression: gzip (magic `1f 8b`, multi-member too) is decompressed on the fly with a cap on the
   decompressed bytes; a bomb fails the dataset with `decompressed_too_large`, a truncated or
   damaged stream with `invalid_gzip`.
2. Encoding: the `encoding` option when given; else a BOM (UTF-8, UTF-16, UTF-32); else a sample of
   the first MiB: valid UTF-8 → `utf-8`; lines that are mostly not UTF-8 but decode as GB18030
   (a superset of GBK and GB2312) → `gb18030`; otherwise `utf-8`. No guessing library: the rule
   is deterministic and documented. Text in another encoding is transcoded to UTF-8 as it streams.
   A row with bytes its encoding cannot decode is rejected (`invalid_encoding`), never decoded
   with replacement characters; in a file read line by line in a non-UTF-8 encoding (GB18030,
   Latin-1, ...) a non-ASCII line that is valid UTF-8 is rejected the same way, because reading
   it as GB18030 would produce mojibake (mixed encodings).
3. Binary: a NUL byte in the first 8000 bytes of text (git's rule) fails with `binary_file`.
4. Format: the `format` option, or sniffed: Parquet magic `PAR1`; first non-blank character `[` →
   JSON array (unless the first line is a complete JSON value and more lines follow: JSONL whose
   first row is an array); `{` → JSONL; a first line with tabs, commas or semicolons → TSV/CSV
   (the most frequent of them, outside quotes, is the delimiter); anything else → JSONL, which
   then fails as `not_jsonl` when no row is an object.
"""

from __future__ import annotations

import codecs
import io
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from shared.datasets.formats import DatasetInvalid, Record, csv_records, jsonl_records, parquet_records
from shared.datasets.jsonarray import array_records
from shared.datasets.streams import CHUNK, MARK, Chain, Gunzip, Transcode, decodes, read_upto
from shared.errors import InvalidInput

FORMATS = ("auto", "jsonl", "json", "csv", "tsv", "parquet")
DEFAULT_MAX_DECOMPRESSED_BYTES = 4 * 1024**3
SAMPLE_BYTES = 1024 * 1024
BINARY_WINDOW = 8000
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (_UTF8_BOM, "utf-8"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_DELIMITERS = ("\t", ",", ";")


def codec_name(encoding: str) -> str | None:
    """Python's canonical name for a text encoding (`GBK` → `gbk`), or None when there is none."""
    try:
        info = codecs.lookup(encoding)
        "a".encode(info.name)  # refuses bytes-to-bytes codecs such as base64
    except LookupError:
        return None
    return "utf-8" if info.name == "utf-8-sig" else info.name


def check_options(format: str, encoding: str | None) -> None:
    """InvalidInput for an unknown `format` or `encoding` (before anything is read)."""
    if format not in FORMATS:
        raise InvalidInput(
            f"Unknown format {format!r}; use one of {list(FORMATS)}.", code="invalid_format", param="format"
        )
    if encoding is not None and codec_name(encoding) is None:
        raise InvalidInput(
            f"Unknown encoding {encoding!r}; use a Python codec name such as utf-8, gb18030, gbk or utf-16.",
            code="invalid_encoding",
            param="encoding",
        )


@dataclass(eq=False)
class Intake:
    format: str
    encoding: str | None  # None for Parquet
    compression: str | None = None
    bom: bool = False
    format_detected: bool = False
    encoding_detected: bool = False
    blank_lines: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)
    _records: Iterator[Record] = field(default_factory=lambda: iter(()))

    def records(self) -> Iterator[Record]:
        return self._records


def open_intake(
    source: BinaryIO,
    *,
    format: str = "auto",
    encoding: str | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> Intake:
    """Sniff the upload and return its Intake; records are read lazily from `intake.records()`.

    Raises `InvalidInput` for unknown options and `DatasetInvalid` for a file that is not data;
    iterating the records raises `DatasetInvalid` for damage found later (a gzip stream that ends
    early, a decompression bomb, a damaged Parquet file)."""
    check_options(format, encoding)
    start = _tell(source)
    head = read_upto(source, 4)
    stream: BinaryIO = Chain(head, source)  # type: ignore[assignment]
    compression = None
    if head.startswith(_GZIP_MAGIC):
        compression = "gzip"
        stream = Gunzip(stream, max_decompressed_bytes)  # type: ignore[assignment]
    sample = read_upto(stream, SAMPLE_BYTES)
    at_eof = len(sample) < SAMPLE_BYTES
    stream = Chain(sample, stream)  # type: ignore[assignment]

    if format == "parquet" or (format == "auto" and sample.startswith(_PARQUET_MAGIC)):
        return _parquet(source, stream, sample, start, compression, detected=format == "auto")

    name, bom, encoding_detected = _encoding(sample, at_eof, encoding)
    if name == "utf-8":
        read_upto(stream, bom)
        text_sample = sample[bom:]
        text: BinaryIO = stream
    else:
        text_sample = _decode(sample, name, at_eof).encode("utf-8", "surrogatepass")
        text = Transcode(stream, name)  # type: ignore[assignment]
    if b"\x00" in text_sample[:BINARY_WINDOW]:
        raise DatasetInvalid(
            "The file looks binary (NUL bytes near the start). Upload JSONL, a JSON array, CSV/TSV or "
            "Parquet, optionally gzip-compressed, as UTF-8, GB18030/GBK or UTF-16 with a BOM "
            "(UTF-16 without a BOM needs the `encoding` option).",
            code="binary_file",
            param="file",
        )
    fmt, delimiter = _format(text_sample, at_eof, format)
    intake = Intake(
        format=fmt,
        encoding=name,
        compression=compression,
        bom=any(sample.startswith(mark) for mark, _ in _BOMS),
        format_detected=format == "auto",
        encoding_detected=encoding_detected,
    )
    reader = io.BufferedReader(text, CHUNK)  # type: ignore[arg-type]
    if fmt == "jsonl":
        intake._records = jsonl_records(reader, intake)
    elif fmt == "json":
        intake._records = array_records(reader, intake)
    else:
        intake._records = csv_records(reader, intake, delimiter or ",")
    return intake


def _parquet(
    source: BinaryIO,
    stream: BinaryIO,
    sample: bytes,
    start: int | None,
    compression: str | None,
    detected: bool,
) -> Intake:
    if not sample.startswith(_PARQUET_MAGIC):
        raise DatasetInvalid(
            "format is parquet but the file does not start with Parquet's magic bytes 'PAR1'",
            code="invalid_parquet",
            param="file",
        )
    intake = Intake(format="parquet", encoding=None, compression=compression, format_detected=detected)
    if compression is None and start is not None:
        source.seek(start)
        intake._records = parquet_records(source, intake, close=False)
        return intake
    # Parquet needs random access (its index is at the end): spool the decompressed bytes to disk.
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - the record reader closes it
    try:
        shutil.copyfileobj(stream, spool, CHUNK)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    intake._records = parquet_records(spool, intake, close=True)  # type: ignore[arg-type]
    return intake


def _encoding(sample: bytes, at_eof: bool, given: str | None) -> tuple[str, int, bool]:
    """(codec, BOM bytes to skip, detected?)"""
    if given is not None:
        name = codec_name(given) or "utf-8"
        return name, len(_UTF8_BOM) if name == "utf-8" and sample.startswith(_UTF8_BOM) else 0, False
    for bom, name in _BOMS:
        if sample.startswith(bom):
            # UTF-16/32 decoders read and drop their BOM themselves.
            return name, len(bom) if name == "utf-8" else 0, True
    if decodes(sample, "utf-8", at_eof):
        return "utf-8", 0, True
    lines = sample.split(b"\n")
    if not at_eof:
        lines.pop()  # maybe cut short
    utf8 = gb18030 = other = 0
    for line in lines:
        if line.isascii():
            continue
        if decodes(line, "utf-8", True):
            utf8 += 1
        elif decodes(line, "gb18030", True):
            gb18030 += 1
        else:
            other += 1
    # GB18030 when most non-ASCII lines are GB18030 and not UTF-8: a stray UTF-8 or junk line does
    # not flip the whole file (that line is rejected on its own).
    if gb18030 > utf8 + other:
        return "gb18030", 0, True
    return "utf-8", 0, True


def _decode(data: bytes, name: str, final: bool) -> str:
    return codecs.getincrementaldecoder(name)(MARK).decode(data, final=final)  # type: ignore[no-any-return]


def _format(sample: bytes, at_eof: bool, given: str) -> tuple[str, str | None]:
    if given in ("jsonl", "json"):
        return given, None
    body = sample.lstrip(b" \t\r\n\x0c")
    first_line, newline, rest = body.partition(b"\n")
    if given == "tsv":
        return "tsv", "\t"
    if given == "csv":
        return "csv", _delimiter(first_line) or ","
    if body.startswith(b"["):
        if (newline or at_eof) and rest.strip():
            try:
                orjson.loads(first_line)
            except orjson.JSONDecodeError:
                return "json", None
            return "jsonl", None
        return "json", None
    if not body or body.startswith(b"{"):
        return "jsonl", None
    delimiter = _delimiter(first_line)
    if delimiter is None:
        return "jsonl", None
    return ("tsv" if delimiter == "\t" else "csv"), delimiter


def _delimiter(header: bytes) -> str | None:
    """The most frequent of tab, comma and semicolon outside double quotes; tab wins ties."""
    text = header.decode("utf-8", "replace")
    outside = "".join(text.split('"')[::2])
    counts = {d: outside.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


def _tell(source: BinaryIO) -> int | None:
    try:
        return source.tell() if source.seekable() else None
    except (OSError, AttributeError, ValueError):
        return None
