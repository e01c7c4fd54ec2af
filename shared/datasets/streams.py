"""Byte streams for intake: put back sniffed bytes, gunzip with a cap, transcode to UTF-8."""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from typing import Any

from shared.datasets.formats import DatasetInvalid

CHUNK = 256 * 1024
MARK = "tuneforge.mark"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Undecodable bytes become lone surrogates, which UTF-8 cannot carry, so the row that holds
    them fails to parse downstream and is rejected as `invalid_encoding`."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(0xDC00 + b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(MARK, _mark_undecodable)


def decodes(data: bytes, name: str, final: bool) -> bool:
    try:
        codecs.getincrementaldecoder(name)("strict").decode(data, final=final)
    except UnicodeDecodeError:
        return False
    return True


def read_upto(stream: Any, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        data = stream.read(size)
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


class Chain(io.RawIOBase):
    """`head`, then the rest of `tail`: gives back the bytes read for sniffing."""

    def __init__(self, head: bytes, tail: Any) -> None:
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Gunzip(io.RawIOBase):
    """Decompressed bytes of a gzip stream, refusing to produce more than `limit`."""

    def __init__(self, source: Any, limit: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=source, mode="rb")
        self._limit = limit
        self._total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self._gzip.readinto(buffer)
        except EOFError as exc:
            raise DatasetInvalid(
                "The gzip stream ends early; the upload is truncated. Upload the whole file.",
                code="invalid_gzip",
                param="file",
            ) from exc
        except (OSError, zlib.error) as exc:
            raise DatasetInvalid(
                f"The file starts like gzip but is not valid gzip ({exc}).", code="invalid_gzip", param="file"
            ) from exc
        self._total += n
        if self._total > self._limit:
            raise DatasetInvalid(
                f"The file decompresses to more than {self._limit} bytes "
                "(TUNEFORGE_DATASET_MAX_DECOMPRESSED_BYTES); split it, or ask the operator to raise "
                "the limit.",
                code="decompressed_too_large",
                param="file",
            )
        return n


class Transcode(io.RawIOBase):
    """`source` in `encoding`, as UTF-8. ASCII-compatible encodings (GB18030, Latin-1, ...) are read
    line by line so that a non-ASCII line that is valid UTF-8 (mixed encodings) can be marked bad
    instead of turned into mojibake; UTF-16/32 are read in chunks."""

    def __init__(self, source: Any, encoding: str) -> None:
        self._source = io.BufferedReader(source, CHUNK)
        self._decoder = codecs.getincrementaldecoder(encoding)(MARK)
        self._by_line = "\n".encode(encoding) == b"\n"
        self._line_start = True
        self._out = b""
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._out):
            if self._done:
                return 0
            self._out, self._pos = self._next(), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _next(self) -> bytes:
        raw = self._source.readline(CHUNK) if self._by_line else self._source.read(CHUNK)
        if not raw:
            self._done = True
            return self._decoder.decode(b"", final=True).encode("utf-8", "surrogatepass")  # type: ignore[no-any-return]
        whole_line = self._line_start and raw.endswith(b"\n")
        self._line_start = raw.endswith(b"\n")
        if self._by_line and whole_line and not raw.isascii() and decodes(raw, "utf-8", True):
            return b"\xff" + raw  # not UTF-8 any more: the row is rejected as invalid_encoding
        return self._decoder.decode(raw).encode("utf-8", "surrogatepass")  # type: ignore[no-any-return]
