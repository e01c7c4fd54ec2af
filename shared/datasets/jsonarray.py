"""A streaming JSON-array reader: `[ {...}, {...} ]` → one record per element, without loading the
array (a 2 GB array is read a chunk at a time, each element is held once, up to MAX_ROW_BYTES).

A byte-level splitter finds element boundaries (top-level commas and the closing bracket, outside
strings) and orjson parses each element, so a bad element is one rejected row and the next element
is read as usual. The scan only works on UTF-8 (structural characters are ASCII and never appear
inside a UTF-8 multi-byte sequence), which is what intake hands over.

Line numbers: an element's `line` is the physical line where its first character is; for a
pretty-printed array that is the line of its `{`, for a one-line array it is 1 for every element.
Messages of elements orjson refuses also name the line and column of the actual fault.

Lenient on purpose: a trailing comma before `]` is accepted. Errors: `invalid_json` (an element
orjson refuses, an empty element `,,`, data after the closing bracket — reading stops there),
`too_deep`, `invalid_encoding`, `row_too_long`, `truncated_json` (the file ends inside an element;
a missing final `]` alone is only a warning).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

import orjson

from shared.datasets.formats import MAX_ROW_BYTES, DatasetInvalid, Record, json_error

if TYPE_CHECKING:
    from shared.datasets.intake import Intake

CHUNK_BYTES = 1024 * 1024

# A whole string (to its closing quote, or to the end of the chunk: group 1 is then empty) or a
# structural character. At depth 1 commas end the element; deeper they do not matter.
_STRING = rb'"[^"\\]*+(?:\\[\s\S][^"\\]*+)*+("?)'
_IN_ELEMENT = re.compile(_STRING + rb"|[\[\]{},]")
_NESTED = re.compile(_STRING + rb"|[\[\]{}]")
_IN_STRING = re.compile(rb'["\\]')  # the rest of a string that crossed a chunk boundary
_NON_SPACE = re.compile(rb"[^ \t\r\n]")

_BEFORE, _BETWEEN, _ELEMENT, _AFTER = range(4)
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPEN_SQUARE, _CLOSE_SQUARE, _OPEN_CURLY = ord("["), ord("]"), ord("{")


def _element(data: bytes, line: int, encoding: str) -> Record:
    try:
        return line, orjson.loads(data), None
    except orjson.JSONDecodeError as exc:
        code, message = json_error(data, exc, encoding, "Element")
        if code == "invalid_json":
            message = f"Element is not valid JSON: {exc.msg} (at line {line + exc.lineno - 1})"
        return line, None, (code, message)


def array_records(reader: BinaryIO, intake: Intake, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Record]:
    encoding = intake.encoding or "utf-8"
    state = _BEFORE
    depth = 0
    in_string = escaped = False
    parts: list[bytes] = []
    size = 0
    oversize = False
    element_line = 0
    line = 1  # the line at `counted` in the current chunk
    while chunk := reader.read(chunk_bytes):
        n = len(chunk)
        pos = counted = segment = 0
        while pos < n:
            if state == _ELEMENT:
                if in_string:
                    if escaped:
                        escaped = False
                        pos += 1
                        continue
                    found = _IN_STRING.search(chunk, pos)
                    if found is None:
                        break
                    p = found.start()
                    if chunk[p] == _BACKSLASH:
                        pos = p + 2
                        escaped = pos > n
                    else:
                        in_string = False
                        pos = p + 1
                    continue
                found = (_IN_ELEMENT if depth == 1 else _NESTED).search(chunk, pos)
                if found is None:
                    break
                p = found.start()
                c = chunk[p]
                pos = p + 1
                if c == _QUOTE:
                    pos = found.end()
                    if not found.group(1):  # the string goes on in the next chunk
                        in_string = True
                        escaped = pos < n  # stopped before a backslash that ends the chunk
                        pos = n
                elif c in (_OPEN_SQUARE, _OPEN_CURLY):
                    depth += 1
                elif depth > 1:
                    depth -= 1
                elif c in (_COMMA, _CLOSE_SQUARE):
                    size += p - segment
                    if oversize or size > MAX_ROW_BYTES:
                        yield (
                            element_line,
                            None,
                            ("row_too_long", f"Element is longer than {MAX_ROW_BYTES} bytes"),
                        )
                    else:
                        parts.append(chunk[segment:p])
                        yield _element(b"".join(parts), element_line, encoding)
                    parts = []
                    state = _BETWEEN if c == _COMMA else _AFTER
                # else: a stray '}' at the top of an element; orjson will refuse the element
                continue
            found = _NON_SPACE.search(chunk, pos)
            if found is None:
                break
            p = found.start()
            c = chunk[p]
            line += chunk.count(b"\n", counted, p)
            counted = p
            if state == _BETWEEN:
                if c == _CLOSE_SQUARE:
                    state = _AFTER
                    pos = p + 1
                elif c == _COMMA:
                    yield line, None, ("invalid_json", "Empty array element (two commas in a row)")
                    pos = p + 1
                else:
                    state, depth, segment, size, oversize, element_line = _ELEMENT, 1, p, 0, False, line
                    pos = p
            elif state == _BEFORE:
                if c != _OPEN_SQUARE:
                    raise DatasetInvalid(
                        f"Expected a JSON array ('[') at line {line}; found {chr(c)!r}. "
                        "Use format=jsonl for one JSON object per line.",
                        code="not_json_array",
                        param="file",
                    )
                state = _BETWEEN
                pos = p + 1
            else:
                yield line, None, ("invalid_json", "Unexpected data after the end of the JSON array")
                return
        if state == _ELEMENT and not oversize:
            size += n - segment
            if size > MAX_ROW_BYTES:
                parts, oversize = [], True
            else:
                parts.append(chunk[segment:])
        segment = 0
        line += chunk.count(b"\n", counted)
    if state == _ELEMENT and depth == 1 and not in_string and not oversize:
        # The last element may be whole, with only the closing bracket missing.
        record = _element(b"".join(parts), element_line, encoding)
        if record[2] is None:
            yield record
            state = _BETWEEN
    if state == _ELEMENT:
        yield element_line, None, ("truncated_json", "The file ends inside this element (truncated upload?)")
    if state == _BETWEEN:
        intake.warnings.append(
            {
                "code": "truncated_json",
                "message": "The JSON array has no closing ']'; the file may be truncated",
            }
        )
