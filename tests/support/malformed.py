"""The malformed-input corpus: uploads that are broken in the ways real files are broken.

Each case is built at test time (the big ones are tens of MB; nothing large is committed) and says
what the dataset engine must make of it: either the dataset fails with one dataset-level code
(`fails`), or the listed rows are rejected with exactly these `(line, code)` pairs, in order, and
the rest is read (`errors`, and `examples` when it matters). Line numbers follow the documented
semantics: JSONL/CSV the physical line where the row starts (the CSV header is line 1), JSON
arrays the physical line where the element starts, Parquet the 1-based row number.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    fails: str | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)
    examples: int | None = None
    warnings: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def qa(i: int) -> dict[str, str]:
    return {"questions": f"问题 {i}：头痛怎么办？", "answers": f"回答 {i}：多休息。"}


GOOD = [qa(i) for i in range(10)]
ASCII_GOOD = [{"questions": f"question {i}?", "answers": f"answer {i}."} for i in range(10)]


def chat(i: int, **override: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    return {"messages": override.get("messages", messages)}


def line(row: Any) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode() + b"\n"


def jsonl(*rows: Any) -> bytes:
    return b"".join(line(r) for r in rows)


def one_per_line_array(elements: list[bytes]) -> bytes:
    """`[`, then element k on line k + 2, then `]`."""
    return b"[\n" + b",\n".join(elements) + b"\n]\n"


def pretty_array(rows: list[Any]) -> bytes:
    return json.dumps(rows, ensure_ascii=False, indent=2).encode()


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return "".join(f"{x}\n" for x in lines).encode(encoding)


CSV_GOOD = ["question,answer", *(f"q{i},a{i}" for i in range(10))]


def parquet(columns: dict[str, list[Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


def _big_jsonl_line() -> bytes:
    huge = {"questions": "x" * (50 * MB), "answers": "a"}
    return jsonl(*GOOD[:5]) + line(huge) + jsonl(*GOOD[5:])


def _big_element() -> bytes:
    elements = [line(r).strip() for r in GOOD]
    elements.insert(
        3, json.dumps({"questions": "长" * (6 * MB), "answers": "a"}, ensure_ascii=False).encode()
    )
    return one_per_line_array(elements)


def _late(bad: bytes, *, csv: bool = False) -> tuple[bytes, int]:
    """150 good rows (over the 8000-byte binary sniff window), then `bad`; (data, its line)."""
    if csv:
        good = csv_bytes(
            "question,answer",
            *(f"问题{i}：头痛怎么办？该怎么处理,回答{i}：多休息，多喝水。" for i in range(150)),
        )
        assert len(good) > 8000
        return good + bad, 152
    good = jsonl(*(qa(i) for i in range(150)))
    assert len(good) > 8000
    return good + bad, 151


def _gzip_bomb(prefix: bytes = b"") -> bytes:
    return gzip.compress(prefix + b"\n" * (64 * MB), compresslevel=9)


def _truncated_parquet() -> bytes:
    data = parquet({"questions": [f"q{i}" for i in range(20)], "answers": [f"a{i}" for i in range(20)]})
    return data[: len(data) - 30]


_NUL_ROW = b'{"questions": "a\x00b", "answers": "c"}\n'
_NUL_CSV = "问题,回\x00答\n".encode()

CASES: list[Case] = [
    # --- JSONL: rows ---
    Case(
        "jsonl_truncated_last_line",
        lambda: jsonl(*GOOD) + b'{"questions": "q", "answ',
        errors=[(11, "invalid_json")],
        examples=10,
    ),
    Case(
        "jsonl_wrong_type_number",
        lambda: jsonl(*GOOD[:5], {"questions": 12, "answers": "a"}, *GOOD[5:]),
        errors=[(6, "invalid_field_type")],
    ),
    Case(
        "jsonl_wrong_type_object",
        lambda: jsonl(*GOOD[:2], {"questions": {"x": 1}, "answers": "a"}, *GOOD[2:]),
        errors=[(3, "invalid_field_type")],
    ),
    Case(
        "jsonl_missing_key",
        lambda: jsonl(*GOOD[:3], {"questions": "只有问题"}, *GOOD[3:]),
        errors=[(4, "missing_field")],
    ),
    Case(
        "jsonl_empty_content",
        lambda: jsonl(*GOOD, {"questions": " \t ", "answers": "a"}),
        errors=[(11, "empty_content")],
    ),
    Case(
        "jsonl_not_objects_among_rows",
        lambda: jsonl(*GOOD, [1, 2], "text", None),
        errors=[(11, "not_an_object"), (12, "not_an_object"), (13, "not_an_object")],
    ),
    Case(
        "jsonl_trailing_garbage",
        lambda: jsonl(*GOOD[:7]) + b'{"questions": "q", "answers": "a"} x\n' + jsonl(*GOOD[7:]),
        errors=[(8, "invalid_json")],
    ),
    Case(
        "jsonl_deep_array_100k",
        lambda: jsonl(*GOOD) + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        errors=[(11, "too_deep")],
    ),
    Case(
        "jsonl_deep_object_100k",
        lambda: jsonl(*GOOD[:1]) + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n" + jsonl(*GOOD[1:]),
        errors=[(2, "too_deep")],
    ),
    Case("jsonl_line_50mb", _big_jsonl_line, errors=[(6, "line_too_long")], examples=10),
    Case(
        "jsonl_invalid_utf8",
        lambda: jsonl(*GOOD) + b'{"questions": "\xff\xfe\xfa", "answers": "a"}\n',
        errors=[(11, "invalid_encoding")],
    ),
    Case("jsonl_nul_in_a_late_row", lambda: _late(_NUL_ROW)[0], errors=[(151, "invalid_json")], examples=150),
    Case(
        "jsonl_bom_in_the_middle_of_a_line",
        lambda: jsonl(*GOOD[:3]) + b'{"questions": "q", "answers": "a"}\xef\xbb\xbf\n' + jsonl(*GOOD[3:]),
        errors=[(4, "invalid_json")],
    ),
    # `cat a.jsonl b.jsonl` of two files with BOMs: accepted, nothing rejected.
    Case(
        "jsonl_bom_at_a_line_start",
        lambda: b"\xef\xbb\xbf" + jsonl(*GOOD[:5]) + b"\xef\xbb\xbf" + jsonl(*GOOD[5:]),
        errors=[],
        examples=10,
    ),
    Case(
        "mixed_encodings_gbk_line_in_utf8",
        lambda: jsonl(*GOOD[:4]) + line(qa(99)).decode().encode("gbk") + jsonl(*GOOD[4:]),
        errors=[(5, "invalid_encoding")],
        examples=10,
    ),
    Case(
        "mixed_encodings_utf8_line_in_gbk",
        lambda: jsonl(*GOOD[:5]).decode().encode("gbk")
        + line(qa(99))
        + jsonl(*GOOD[5:]).decode().encode("gbk"),
        errors=[(6, "invalid_encoding")],
        examples=10,
    ),
    Case(
        "declared_gbk_but_utf8",
        lambda: jsonl(*ASCII_GOOD, *GOOD[:3]),
        options={"encoding": "gbk"},
        errors=[(11, "invalid_encoding"), (12, "invalid_encoding"), (13, "invalid_encoding")],
        examples=10,
    ),
    # --- chat rows (the cookbook's checks) ---
    Case(
        "chat_unknown_role",
        lambda: jsonl(
            *(chat(i) for i in range(3)),
            chat(3, messages=[{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]),
        ),
        options={"preset": "chat"},
        errors=[(4, "unrecognized_role")],
    ),
    Case(
        "chat_empty_content",
        lambda: jsonl(
            chat(0),
            chat(1, messages=[{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]),
        ),
        errors=[(2, "missing_content")],
    ),
    Case(
        "chat_no_assistant",
        lambda: jsonl(chat(0), chat(1, messages=[{"role": "user", "content": "q"}])),
        errors=[(2, "example_missing_assistant_message")],
    ),
    Case(
        "chat_missing_role",
        lambda: jsonl(chat(0), chat(1, messages=[{"content": "q"}, {"role": "assistant", "content": "a"}])),
        errors=[(2, "message_missing_key")],
    ),
    Case(
        "chat_messages_not_a_list",
        lambda: jsonl(chat(0), {"messages": "hello"}),
        errors=[(2, "missing_messages_list")],
    ),
    # --- not data at all ---
    Case("empty_file", lambda: b"", fails="empty_file"),
    Case("only_blank_lines", lambda: b"\r\n  \r\n\t\r\n\n", fails="empty_file"),
    Case("binary_random", lambda: random.Random(7).randbytes(64 * 1024), fails="binary_file"),
    Case("png_header", lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", fails="binary_file"),
    Case("nul_in_the_first_line", lambda: _NUL_ROW + jsonl(*GOOD), fails="binary_file"),
    Case("utf16_without_bom", lambda: jsonl(*GOOD).decode().encode("utf-16-le"), fails="binary_file"),
    Case("jsonl_numbers_only", lambda: b"1\n2\n3\n", fails="not_jsonl"),
    Case("cr_only_line_endings", lambda: b"\r".join(line(r).strip() for r in GOOD), fails="not_jsonl"),
    Case(
        "pdf_like_text",
        lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        fails="not_jsonl",
    ),
    Case(
        "no_known_preset",
        lambda: jsonl(*({"prompt": "p", "completion": "c"} for _ in range(3))),
        fails="preset_not_detected",
    ),
    # --- JSON arrays ---
    Case(
        "json_truncated_mid_element",
        lambda: pretty_array([*GOOD, qa(10), qa(11)])[:-40],
        errors=[(46, "truncated_json")],
        examples=11,
    ),
    Case(
        "json_truncated_after_a_comma",
        lambda: b"[" + b",".join(line(r).strip() for r in GOOD) + b",",
        errors=[],
        examples=10,
        warnings=("truncated_json",),
    ),
    Case(
        "json_missing_closing_bracket",
        lambda: b"[" + b",".join(line(r).strip() for r in GOOD),
        errors=[],
        examples=10,
        warnings=("truncated_json",),
    ),
    Case(
        "json_unterminated_string",
        lambda: one_per_line_array([line(r).strip() for r in GOOD])[:-3] + b',\n{"questions": "abc',
        errors=[(12, "truncated_json")],
        examples=10,
    ),
    Case("json_array_of_non_objects", lambda: b'[1, 2, "x", null, true, [1]]', fails="no_objects"),
    Case(
        "json_non_objects_among_objects",
        lambda: one_per_line_array([*(line(r).strip() for r in GOOD), b"1", b'"x"', b"[1]"]),
        errors=[(12, "not_an_object"), (13, "not_an_object"), (14, "not_an_object")],
    ),
    Case(
        "json_missing_comma",
        lambda: one_per_line_array(
            [line(r).strip() for r in GOOD[:4]]
            + [line(GOOD[4]).strip() + b"\n" + line(qa(50)).strip()]
            + [line(r).strip() for r in GOOD[5:]]
        ),
        errors=[(6, "invalid_json")],
        examples=9,
    ),
    Case(
        "json_double_comma",
        lambda: b"[\n"
        + b",\n".join(line(r).strip() for r in GOOD[:5])
        + b",\n,\n"
        + b",\n".join(line(r).strip() for r in GOOD[5:])
        + b"\n]",
        errors=[(7, "invalid_json")],
        examples=10,
    ),
    Case(
        "json_data_after_the_array",
        lambda: one_per_line_array([line(r).strip() for r in GOOD])
        + b"trailing junk\n"
        + b'{"questions": "q"}\n',
        errors=[(13, "invalid_json")],
        examples=10,
    ),
    Case(
        "json_nan_in_an_element",
        lambda: one_per_line_array([*(line(r).strip() for r in GOOD), b'{"questions": "q", "answers": NaN}']),
        errors=[(12, "invalid_json")],
    ),
    Case(
        "json_deep_100k",
        lambda: one_per_line_array([*(line(r).strip() for r in GOOD), b"[" * 100_000 + b"]" * 100_000]),
        errors=[(12, "too_deep")],
    ),
    Case(
        "json_invalid_utf8_element",
        lambda: one_per_line_array(
            [
                line(GOOD[0]).strip(),
                b'{"questions": "\xc3\x28", "answers": "a"}',
                *(line(r).strip() for r in GOOD[1:]),
            ]
        ),
        errors=[(3, "invalid_encoding")],
    ),
    Case("json_element_18mb", _big_element, errors=[(5, "row_too_long")], examples=10),
    Case(
        "json_top_level_object",
        lambda: b'{"data": [1, 2]}',
        options={"format": "json"},
        fails="not_json_array",
    ),
    # --- CSV / TSV ---
    Case(
        "csv_unterminated_quote",
        lambda: csv_bytes(*CSV_GOOD, 'q10,"never closed', "q11,a11"),
        errors=[(12, "unterminated_quote")],
        examples=10,
    ),
    Case(
        "csv_wrong_field_count",
        lambda: csv_bytes(*CSV_GOOD[:4], "x,y,z", *CSV_GOOD[4:]),
        errors=[(5, "wrong_field_count")],
        examples=10,
    ),
    Case("csv_too_few_fields", lambda: csv_bytes(*CSV_GOOD, "lonely"), errors=[(12, "wrong_field_count")]),
    Case(
        "csv_text_after_a_closing_quote",
        lambda: csv_bytes(*CSV_GOOD[:3], '"abc"def,x', *CSV_GOOD[3:]),
        errors=[(4, "invalid_csv")],
        examples=10,
    ),
    Case("csv_invalid_utf8", lambda: csv_bytes(*CSV_GOOD) + b"q\xff,a\n", errors=[(12, "invalid_encoding")]),
    Case(
        "csv_empty_answer_after_multiline_field",
        lambda: csv_bytes(*CSV_GOOD[:2], 'q1b,"line one', "line two", 'line three"', "q2,  ", *CSV_GOOD[2:]),
        errors=[(6, "empty_content")],
        examples=11,
    ),
    Case(
        "csv_nul_in_a_late_row",
        lambda: _late(_NUL_CSV, csv=True)[0],
        errors=[(152, "invalid_csv")],
        examples=150,
    ),
    Case("csv_header_only", lambda: csv_bytes("question,answer"), fails="empty_file"),
    Case(
        "csv_duplicate_header",
        lambda: csv_bytes("question,answer,answer", "q,a,b"),
        fails="invalid_csv_header",
    ),
    Case(
        "tsv_unknown_columns",
        lambda: csv_bytes("foo\tbar", *(f"x{i}\ty{i}" for i in range(5))),
        fails="preset_not_detected",
    ),
    # --- Parquet ---
    Case(
        "parquet_wrong_columns",
        lambda: parquet({"foo": ["x"] * 3, "bar": ["y"] * 3}),
        fails="preset_not_detected",
    ),
    Case(
        "parquet_wrong_columns_named_preset",
        lambda: parquet({"foo": ["x"] * 3, "bar": ["y"] * 3}),
        options={"preset": "huatuo"},
        errors=[(1, "missing_field"), (2, "missing_field"), (3, "missing_field")],
    ),
    Case(
        "parquet_wrong_types",
        lambda: parquet({"questions": [1, 2], "answers": ["a", "b"]}),
        errors=[(1, "invalid_field_type"), (2, "invalid_field_type")],
    ),
    Case("parquet_truncated", _truncated_parquet, fails="invalid_parquet"),
    Case("parquet_magic_then_junk", lambda: b"PAR1" + b"junk" * 100, fails="invalid_parquet"),
    Case(
        "parquet_declared_but_jsonl",
        lambda: jsonl(*GOOD),
        options={"format": "parquet"},
        fails="invalid_parquet",
    ),
    # --- gzip ---
    Case(
        "gzip_bomb_at_start",
        _gzip_bomb,
        options={"max_decompressed_bytes": 4 * MB},
        fails="decompressed_too_large",
    ),
    Case(
        "gzip_bomb_after_rows",
        lambda: _gzip_bomb(jsonl(*GOOD)),
        options={"max_decompressed_bytes": 8 * MB},
        fails="decompressed_too_large",
    ),
    Case(
        "gzip_truncated",
        lambda: gzip.compress(jsonl(*(qa(i) for i in range(2000))))[:-500],
        fails="invalid_gzip",
    ),
    Case("gzip_damaged_header", lambda: b"\x1f\x8b" + b"junkjunkjunk", fails="invalid_gzip"),
    Case("gzip_trailing_garbage", lambda: gzip.compress(jsonl(*GOOD)) + b"garbage", fails="invalid_gzip"),
    Case("gzip_inside_gzip", lambda: gzip.compress(gzip.compress(jsonl(*GOOD))), fails="binary_file"),
    Case("gzip_of_nothing", lambda: gzip.compress(b""), fails="empty_file"),
]
