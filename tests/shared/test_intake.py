"""Intake (formats, encodings, gzip) and dedup through the pure pipeline, on the reference kit's real
sample files and on the same rows re-encoded every way intake accepts."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.datasets.dedup import Deduplicator, FingerprintSet, normalise_text
from shared.datasets.intake import Intake, open_intake
from shared.datasets.jsonarray import array_records
from shared.datasets.pipeline import prepare
from shared.datasets.report import DatasetReport
from shared.errors import InvalidInput
from tests.support.paths import DATA, HUATUO, TIKTOKEN_DIR

os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))

GBK_CSV = DATA / "toyhom_neike_sample500_gbk.csv"
ALPACA = DATA / "alpaca_zh400_en100.json"
CHAT = DATA / "openai_chat_medicalgpt500.jsonl"


def run(data: bytes, **kwargs: Any) -> tuple[DatasetReport, list[dict[str, Any]], bytes]:
    train = io.BytesIO()
    report = prepare(io.BytesIO(data), train_out=train, validation_out=io.BytesIO(), **kwargs)
    return report, [orjson.loads(x) for x in train.getvalue().splitlines()], train.getvalue()


def pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in rows]


def first_occurrences(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


@pytest.mark.parametrize(
    ("path", "preset", "fmt", "encoding", "rows"),
    [
        (HUATUO, "huatuo", "jsonl", "utf-8", 2000),
        (CHAT, "chat", "jsonl", "utf-8", 500),
        (ALPACA, "alpaca", "json", "utf-8", 500),
        (GBK_CSV, "huatuo", "csv", "gb18030", 500),
    ],
)
def test_each_sample_file_is_detected(path: Path, preset: str, fmt: str, encoding: str, rows: int) -> None:
    report, train, raw = run(path.read_bytes(), sample_size=300, seed=3)
    assert (report.preset, report.format, report.encoding) == (preset, fmt, encoding)
    assert report.format_detected and report.encoding_detected and report.compression is None
    assert report.rows_read == rows and report.skipped == 0 and report.ok
    assert report.valid_examples + sum(report.duplicates.values()) == rows
    assert len(train) == report.examples == 300
    assert "\ufffd" not in raw.decode("utf-8")


def test_alpaca_array_rows_match_the_source() -> None:
    source = json.loads(ALPACA.read_text(encoding="utf-8"))
    report, train, _ = run(ALPACA.read_bytes())
    assert (report.rows_read, report.examples, report.duplicates) == (500, 500, {"exact": 0, "normalised": 0})
    expected = [
        ((r["instruction"].strip() + "\n\n" + r["input"].strip()).strip(), r["output"].strip())
        for r in source
    ]
    assert pairs(train) == expected


def _gbk_reference() -> list[dict[str, str]]:
    # Decoded independently: Python's own gbk codec and csv module.
    text = GBK_CSV.read_bytes().decode("gbk")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("options", [{}, {"encoding": "gbk", "format": "csv"}, {"encoding": "GB18030"}])
def test_gbk_csv_decodes_exactly_like_the_reference(options: dict[str, str]) -> None:
    reference = _gbk_reference()
    assert len(reference) == 500 and list(reference[0]) == ["department", "title", "ask", "answer"]
    expected = first_occurrences([(r["ask"].strip(), r["answer"].strip()) for r in reference])
    report, train, raw = run(GBK_CSV.read_bytes(), **options)
    assert "\ufffd" not in raw.decode("utf-8")
    assert pairs(train) == expected
    assert report.duplicates == {"exact": 500 - len(expected), "normalised": 0} and len(expected) == 483
    assert report.mapped_columns == {"questions": "ask", "answers": "answer"}
    assert report.encoding == ("gb18030" if "encoding" not in options else options["encoding"].lower())
    assert report.encoding_detected is ("encoding" not in options)
    assert {w["code"] for w in report.warnings} >= {"mapped_columns", "duplicates_dropped"}
    assert report.error_counts == {} and report.rows_read == 500


def _variants() -> dict[str, tuple[bytes, dict[str, Any], dict[str, Any]]]:
    """The huatuo sample in every shape intake reads: (data, options, expected report fields)."""
    rows = [json.loads(x) for x in HUATUO.read_text(encoding="utf-8").splitlines()]
    plain = HUATUO.read_bytes()
    text = plain.decode("utf-8")
    as_csv = io.StringIO(newline="")
    csv.writer(as_csv).writerows([("questions", "answers"), *((r["questions"], r["answers"]) for r in rows)])
    as_tsv = io.StringIO(newline="")
    csv.writer(as_tsv, delimiter="\t").writerows(
        [("questions", "answers"), *((r["questions"], r["answers"]) for r in rows)]
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"id": list(range(len(rows))), **{k: [r[k] for r in rows] for k in ("questions", "answers")}}
    )
    parquet = io.BytesIO()
    pq.write_table(table, parquet, row_group_size=300)
    pretty = json.dumps(rows, ensure_ascii=False, indent=2).encode()
    return {
        "jsonl": (plain, {}, {"format": "jsonl", "encoding": "utf-8"}),
        "jsonl_gzip": (gzip.compress(plain), {}, {"compression": "gzip"}),
        "utf8_bom_crlf": (b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(), {}, {"bom": True}),
        "utf16_bom": (text.encode("utf-16"), {}, {"encoding": "utf-16", "bom": True}),
        "utf16_be_bom_gzip": (
            gzip.compress(b"\xfe\xff" + text.encode("utf-16-be")),
            {},
            {"encoding": "utf-16"},
        ),
        "gb18030": (text.encode("gb18030"), {}, {"encoding": "gb18030"}),
        "gb18030_given": (text.encode("gb18030"), {"encoding": "gb18030"}, {"encoding_detected": False}),
        "json_array": (pretty, {}, {"format": "json"}),
        "json_array_one_line_gzip": (gzip.compress(orjson.dumps(rows)), {}, {"format": "json"}),
        "csv": (as_csv.getvalue().encode(), {}, {"format": "csv", "mapped_columns": None}),
        "csv_gbk_gzip": (gzip.compress(as_csv.getvalue().encode("gbk")), {}, {"encoding": "gb18030"}),
        "tsv": (as_tsv.getvalue().encode(), {}, {"format": "tsv"}),
        "tsv_given": (as_tsv.getvalue().encode(), {"format": "tsv"}, {"format_detected": False}),
        "parquet": (parquet.getvalue(), {}, {"format": "parquet", "encoding": None}),
        "parquet_gzip": (gzip.compress(parquet.getvalue()), {}, {"format": "parquet", "compression": "gzip"}),
    }


VARIANTS = _variants()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_shape_of_the_same_rows_gives_the_same_dataset(name: str) -> None:
    options = {"sample_size": 60, "seed": 11, "validation_fraction": 0.2}
    baseline = run(HUATUO.read_bytes(), **options)
    data, extra, expected = VARIANTS[name]
    report, train, raw = run(data, **options, **extra)
    assert raw == baseline[2] and len(train) > 30
    assert (report.rows_read, report.valid_examples, report.skipped) == (2000, 2000, 0)
    assert report.preset == "huatuo"
    for field, value in expected.items():
        assert getattr(report, field) == value, field


def _intake() -> Intake:
    return Intake(format="json", encoding="utf-8")


TRICKY = [
    {"s": 'quote " inside, and ] } [ { , outside', "n": [1, [2, [3, {"k": "v]"}]]]},
    {"s": "back\\slash at the end\\", "t": "\\\\", "u": '\\"', "e": ""},
    {"s": "多字节 UTF-8 ✓ and \u2028 line separator", "deep": {"a": {"b": {"c": ["[", "]", "{", "}"]}}}},
    "a string element",
    12.5,
    None,
    [],
    {},
    {"s": "\n".join(["multi", "line"]), "x": True},
]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 16, 64, 4096])
@pytest.mark.parametrize("layout", ["compact", "pretty"])
def test_json_array_splitter_at_every_chunk_boundary(chunk: int, layout: str) -> None:
    if layout == "compact":
        data = orjson.dumps(TRICKY)
        lines = [1] * len(TRICKY)
    else:
        data = (
            b"[\n"
            + b",\n\n".join(json.dumps(x, ensure_ascii=False, indent=1).encode() for x in TRICKY)
            + b"\n]"
        )
        # Independently: element k starts after k separators ",\n\n" and the lines its predecessors span.
        lines, current = [], 2
        for x in TRICKY:
            lines.append(current)
            current += json.dumps(x, ensure_ascii=False, indent=1).count("\n") + 2
    records = list(array_records(io.BytesIO(data), _intake(), chunk_bytes=chunk))
    assert [r[2] for r in records] == [None] * len(TRICKY)
    assert [r[1] for r in records] == TRICKY
    assert [r[0] for r in records] == lines


def test_sniffing_rules() -> None:
    def sniffed(data: bytes) -> tuple[str, str | None]:
        intake = open_intake(io.BytesIO(data))
        return intake.format, intake.encoding

    assert sniffed(b'[1, 2]\n{"a": 1}\n') == ("jsonl", "utf-8")  # JSONL whose first row is an array
    assert sniffed(b'[{"a": 1}]\n') == ("json", "utf-8")
    assert sniffed(b'  \n[\n {"a": 1}\n]') == ("json", "utf-8")
    assert sniffed(b"a;b\n1;2\n") == ("csv", "utf-8")
    assert sniffed(b'"x,y"\tz\n') == ("tsv", "utf-8")  # the comma is quoted
    assert sniffed(b"just text\n") == ("jsonl", "utf-8")
    assert sniffed("问题,回答\n".encode("gbk")) == ("csv", "gb18030")
    assert sniffed(b"PAR1") == ("parquet", None)


def test_semicolon_csv_and_report_fields() -> None:
    data = "Question;Answer\n" + "".join(f"q{i};a{i}\n" for i in range(12))
    report, train, _ = run(data.encode())
    assert (report.format, report.preset, report.examples) == ("csv", "huatuo", 12)
    assert report.mapped_columns == {"questions": "Question", "answers": "Answer"}
    stored = report.to_dict()
    for key in ("format", "format_detected", "encoding", "encoding_detected", "compression", "bom"):
        assert key in stored
    assert stored["duplicates"] == {"exact": 0, "normalised": 0}


def test_parquet_nested_chat_rows_and_non_json_types() -> None:
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    messages = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(12)
    ]
    table = pa.table(
        {
            "messages": messages,
            "when": [datetime.datetime(2024, 1, i + 1) for i in range(12)],
            "price": pa.array([decimal.Decimal("1.50")] * 12, pa.decimal128(5, 2)),
            "blob": [b"\x00\x01"] * 12,
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=5)
    report, train, _ = run(out.getvalue())
    assert (report.format, report.preset, report.examples) == ("parquet", "chat", 12)
    assert [r["messages"] for r in train] == messages  # extra columns dropped by the chat preset
    assert any(w["code"] == "dropped_keys" for w in report.warnings)


def test_options_are_checked_before_reading() -> None:
    for options, code in (
        ({"format": "xml"}, "invalid_format"),
        ({"encoding": "klingon"}, "invalid_encoding"),
    ):
        with pytest.raises(InvalidInput) as err:
            run(b"", **options)
        assert err.value.code == code and err.value.param in options
    with pytest.raises(InvalidInput):
        run(b"", encoding="base64")  # a bytes-to-bytes codec is not a text encoding


def test_duplicates_exact_and_normalised() -> None:
    rows = [
        {"questions": "头痛怎么办？", "answers": "多休息。"},
        {"answers": "多休息。", "questions": "头痛怎么办？"},  # same example, keys in another order
        {"questions": "  头痛怎么办? ", "answers": "多休息."},  # half-width punctuation, spaces
        {"questions": "Headache, what now?", "answers": "Rest!"},
        {"questions": "HEADACHE what now", "answers": "rest"},
        {"questions": "Ｈｅａｄａｃｈｅ，what now？", "answers": "ＲＥＳＴ"},  # full-width letters
        {"questions": "Headache, what now?", "answers": "Rest, and drink water."},  # different answer
    ]
    data = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    report, train, _ = run(data)
    assert report.duplicates == {"exact": 1, "normalised": 3}
    assert pairs(train) == [
        ("头痛怎么办？", "多休息。"),
        ("Headache, what now?", "Rest!"),
        ("Headache, what now?", "Rest, and drink water."),
    ]
    assert report.rows_read == report.valid_examples + 4
    assert normalise_text("Ｈｅｌｌｏ， Ｗｏｒｌｄ！") == normalise_text("hello world") == "helloworld"


def test_dedup_of_other_shapes_and_a_third_copy() -> None:
    dedup = Deduplicator()

    def tool_call(call_id: str, *, tools_first: bool = False) -> dict[str, Any]:
        messages = [{"role": "assistant", "content": None, "tool_calls": [{"id": call_id}]}]
        return {"tools": [], "messages": messages} if tools_first else {"messages": messages, "tools": []}

    assert dedup.duplicate(tool_call("A")) is None
    assert dedup.duplicate(tool_call("A", tools_first=True)) == "exact"
    assert dedup.duplicate(tool_call("a")) == "normalised"
    assert dedup.duplicate(tool_call("a")) == "exact"
    assert dedup.to_dict() == {"exact": 2, "normalised": 1}


def test_fingerprint_set_grows_and_stays_compact() -> None:
    rng = random.Random(5)
    values = [rng.getrandbits(64) | 1 for _ in range(100_000)]
    fingerprints = FingerprintSet()
    assert all(fingerprints.add(v) for v in values)
    assert not any(fingerprints.add(v) for v in values[::7])
    assert fingerprints.count == 100_000 and all(v in fingerprints for v in values[::13])
    assert (rng.getrandbits(64) | 1) not in fingerprints
    assert fingerprints.nbytes <= 4 * 8 * 100_000  # at most 4 slots of 8 bytes per value
    with pytest.raises(ValueError):
        fingerprints.add(0)
