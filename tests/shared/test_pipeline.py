from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / ".." / "shared"
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(KIT / "tiktoken"))

import tiktoken  # noqa: E402

from shared.datasets.pipeline import DatasetInvalid, dataset_problem, prepare  # noqa: E402
from shared.datasets.report import DatasetReport  # noqa: E402
from shared.errors import InvalidInput  # noqa: E402

HUATUO = KIT / "data" / "huatuo_style_sample.jsonl"
CHAT = KIT / "data" / "openai_chat_medicalgpt500.jsonl"
SYSTEM = "你是一名专业的医生，请根据患者的问题给出建议。"


def run(data: bytes | Path, **kwargs: Any) -> tuple[DatasetReport, list[dict], list[dict], bytes]:
    raw = data.read_bytes() if isinstance(data, Path) else data
    train, validation = io.BytesIO(), io.BytesIO()
    report = prepare(io.BytesIO(raw), train_out=train, validation_out=validation, **kwargs)
    train_rows = [json.loads(line) for line in train.getvalue().splitlines()]
    validation_rows = [json.loads(line) for line in validation.getvalue().splitlines()]
    return report, train_rows, validation_rows, train.getvalue()


def jsonl(*rows: Any) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def qa(i: int) -> dict[str, str]:
    return {"questions": f"问题 {i}：头痛怎么办？", "answers": f"回答 {i}：多休息。"}


def reference_tokens(messages: list[dict], encoding: str = "o200k_base") -> int:
    enc = tiktoken.get_encoding(encoding)
    return sum(3 + sum(len(enc.encode(v)) for v in m.values()) for m in messages) + 3


def test_huatuo_sample_100_with_seed() -> None:
    report, train, validation, raw = run(HUATUO, sample_size=100, seed=7, system_prompt=f"  {SYSTEM} \n")
    assert (report.preset, report.rows_read, report.valid_examples, report.examples) == (
        "huatuo",
        2000,
        2000,
        100,
    )
    assert (report.train_examples, report.validation_examples, len(train), validation) == (100, 0, 100, [])
    assert report.skipped == report.errors_total == 0 and report.ok and report.error is None
    source = [json.loads(line) for line in HUATUO.read_text(encoding="utf-8").splitlines()]
    position = {(r["questions"].strip(), r["answers"].strip()): i for i, r in enumerate(source)}
    indexes = []
    for row in train:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert row["messages"][0]["content"] == SYSTEM
        indexes.append(position[(row["messages"][1]["content"], row["messages"][2]["content"])])
    assert indexes == sorted(indexes) and len(set(indexes)) == 100  # input order, no repeats
    assert "\\u" not in raw.decode("utf-8") and SYSTEM.encode() in raw  # UTF-8, not escaped

    again = run(HUATUO, sample_size=100, seed=7, system_prompt=SYSTEM)
    assert again[3] == raw
    other = run(HUATUO, sample_size=100, seed=8, system_prompt=SYSTEM)
    assert other[3] != raw and len(other[1]) == 100

    expected = [reference_tokens(r["messages"]) for r in train]
    assert report.tokens["total"] == sum(expected)
    assert (report.tokens["min"], report.tokens["max"]) == (min(expected), max(expected))
    assert report.tokens["p50"] == sorted(expected)[49]  # nearest rank: ceil(0.5 × 100) = 50th
    assert report.tokens["p95"] == sorted(expected)[94]
    assert report.tokens["mean"] == round(sum(expected) / 100, 2)
    quote = report.quote
    assert (quote["model"], quote["n_epochs"], quote["billed_tokens"]) == (
        "gpt-4o-mini-2024-07-18",
        3,
        3 * sum(expected),
    )
    assert quote["cost_usd"] == round(3 * sum(expected) * 3.0 / 1e6, 4)
    assert not any(w["code"] == "missing_system_message" for w in report.warnings)


def test_bad_rows_are_reported_with_line_numbers_and_too_few() -> None:
    data = jsonl(qa(1)) + b"this is not json\n" + jsonl(qa(2), {"questions": "只有问题"}, qa(3))
    report, train, _, _ = run(data, preset="huatuo")
    assert [(e["line"], e["code"]) for e in report.errors] == [(2, "invalid_json"), (4, "missing_field")]
    assert "answers" in report.errors[1]["message"]
    assert (report.rows_read, report.examples, report.train_examples, report.skipped) == (5, 3, 3, 2)
    assert report.errors_total == 2
    assert report.error_counts == {"invalid_json": 1, "missing_field": 1}
    assert len(train) == 3
    assert not report.ok
    assert report.error is not None and report.error["code"] == "too_few_examples"
    assert report.error["message"].startswith("Dataset has 3 valid example(s); at least 10 are required")
    assert dataset_problem(report) == ("too_few_examples", report.error["message"])
    stored = report.to_dict()
    assert stored["error"]["code"] == "too_few_examples" and stored["errors"] == report.errors
    assert any(w["code"] == "missing_system_message" for w in report.warnings)


def test_bom_crlf_and_blank_lines() -> None:
    rows = [json.dumps(qa(i), ensure_ascii=False).encode() for i in range(12)]
    body = b"\r\n".join(rows[:5]) + b"\r\n\r\n   \r\n" + b"\r\n".join(rows[5:]) + b"\r\n{bad\r\n\r\n"
    report, train, _, _ = run(b"\xef\xbb\xbf" + body)
    assert report.preset == "huatuo"
    assert (report.examples, report.train_examples, report.blank_lines, report.rows_read) == (12, 12, 3, 13)
    assert report.errors == [
        {
            "line": 15,
            "code": "invalid_json",
            "message": "Line is not valid JSON: unexpected character, expected a string key (column 2)",
        }
    ]
    assert train[0]["messages"][0] == {"role": "user", "content": "问题 0：头痛怎么办？"}
    assert report.ok


def test_chat_preset_passthrough() -> None:
    source = [json.loads(line) for line in CHAT.read_text(encoding="utf-8").splitlines()]
    report, train, _, _ = run(CHAT, preset="chat", target_model="gpt-3.5-turbo")
    assert (report.preset, report.examples, report.train_examples, report.skipped) == ("chat", 500, 500, 0)
    assert train == source
    assert {
        "code": "missing_system_message",
        "message": "500 example(s) have no system message",
    } in report.warnings
    assert report.quote["model"] == "gpt-3.5-turbo-0125"
    expected = sum(reference_tokens(r["messages"], "cl100k_base") for r in source)
    assert report.tokens["total"] == expected
    assert report.quote["billed_tokens"] == 3 * expected


def test_chat_system_prompt_only_where_missing() -> None:
    with_system = {
        "messages": [
            {"role": "system", "content": "own"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ],
        "id": 7,
    }
    without = {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
    report, train, _, _ = run(jsonl(with_system, without), system_prompt="S")
    assert train[0] == {"messages": with_system["messages"]}  # unknown top-level "id" dropped
    assert train[1]["messages"][0] == {"role": "system", "content": "S"}
    assert any(w["code"] == "dropped_keys" for w in report.warnings)


def test_auto_detection_uses_first_valid_row() -> None:
    data = b"[1, 2]\n" + jsonl({"instruction": "x"}, qa(1), {"messages": [{"role": "user", "content": "q"}]})
    report, train, _, _ = run(data)
    assert report.preset == "huatuo"
    assert [(e["line"], e["code"]) for e in report.errors] == [
        (1, "not_an_object"),
        (2, "missing_field"),
        (4, "missing_field"),
    ]
    assert len(train) == 1
    assert run(CHAT)[0].preset == "chat"


def test_cookbook_checks_one_row_per_code() -> None:
    ok_user = {"role": "user", "content": "q"}
    ok_assistant = {"role": "assistant", "content": "a"}
    rows = [
        [1, 2],
        {"messages": []},
        {"messages": [{"content": "q"}, ok_assistant]},
        {"messages": [{"role": "user", "content": "q", "extra": 1}, ok_assistant]},
        {"messages": [{"role": "robot", "content": "q"}, ok_assistant]},
        {"messages": [{"role": "user", "content": "   "}, ok_assistant]},
        {"messages": [ok_user]},
        {"messages": [{"role": "developer", "content": "d"}, ok_user, ok_assistant]},
        {"messages": [ok_user, {"role": "assistant", "content": "a", "weight": 2}]},
        # Accepted on purpose: OpenAI's current format (tool role, tool_calls, weight, name).
        {
            "messages": [
                {"role": "system", "content": "s", "name": "sys"},
                ok_user,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
                {"role": "assistant", "content": "a", "weight": 1},
            ],
            "tools": [],
        },
        {"messages": [ok_user, {"role": "assistant", "content": "a", "weight": 0}, ok_assistant]},
    ]
    report, train, _, _ = run(jsonl(*rows), preset="chat")
    assert [(e["line"], e["code"]) for e in report.errors] == [
        (1, "data_type"),
        (2, "missing_messages_list"),
        (3, "message_missing_key"),
        (4, "message_unrecognized_key"),
        (5, "unrecognized_role"),
        (6, "missing_content"),
        (7, "example_missing_assistant_message"),
        (8, "unrecognized_role"),
        (9, "invalid_weight"),
    ]
    assert train == [rows[9], rows[10]]
    assert report.skipped == 9


def test_huatuo_list_fields_and_cleaning() -> None:
    rows = [
        {"questions": [["  首个问法 ", "第二种问法"]], "answers": ["  答案  "]},
        {"questions": ["", "  ", "非空问题"], "answers": "答"},
        {"questions": [], "answers": "答"},
        {"questions": "问", "answers": "   "},
        {"questions": 12, "answers": "答"},
        {"questions": None, "answers": "答"},
    ]
    report, train, _, _ = run(jsonl(*rows), preset="huatuo")
    assert [m["content"] for m in train[0]["messages"]] == ["首个问法", "答案"]
    assert train[1]["messages"][0]["content"] == "非空问题"
    assert [(e["line"], e["code"]) for e in report.errors] == [
        (3, "empty_content"),
        (4, "empty_content"),
        (5, "invalid_field_type"),
        (6, "missing_field"),
    ]


def test_too_many_tokens_is_dropped_with_and_without_sampling() -> None:
    long_row = {"questions": "长问题", "answers": "hello " * 20_000}
    data = jsonl(*(qa(i) for i in range(12)), long_row)
    for kwargs in ({}, {"sample_size": 5, "seed": 3}):
        report, train, _, _ = run(data, target_model="gpt-3.5-turbo-0125", **kwargs)
        assert [(e["line"], e["code"]) for e in report.errors] == [(13, "too_many_tokens")]
        assert "16385" in report.errors[0]["message"]
        assert report.valid_examples == 12


def test_split_keeps_duplicate_questions_together() -> None:
    variants = ["Question {i}?", "question {i}？", "  QUESTION   {i} ", "Question {i}!"]
    rows = [
        {"questions": v.format(i=i), "answers": f"a{i}-{k}"}
        for i in range(40)
        for k, v in enumerate(variants)
    ]
    report, train, validation, _ = run(jsonl(*rows), validation_fraction=0.3, seed=11)
    assert report.train_examples + report.validation_examples == 160

    def group(row: dict) -> str:
        return row["messages"][1]["content"].split("-")[0]

    train_groups = {group(r) for r in train}
    validation_groups = {group(r) for r in validation}
    assert train_groups and validation_groups and not train_groups & validation_groups
    assert all(len([r for r in validation if group(r) == g]) == 4 for g in validation_groups)
    assert report.validation_tokens == sum(reference_tokens(r["messages"]) for r in validation)
    again = run(jsonl(*rows), validation_fraction=0.3, seed=11)
    assert again[2] == validation


def test_sampling_a_large_generated_input() -> None:
    n = 50_000
    data = b"".join(b'{"questions":"q%d","answers":"a%d"}\n' % (i, i) for i in range(n))
    report, train, _, raw = run(data, sample_size=1000, seed=1)
    assert (report.valid_examples, report.examples, report.train_examples) == (n, 1000, 1000)
    picked = [int(r["messages"][0]["content"][1:]) for r in train]
    assert picked == sorted(picked) and len(set(picked)) == 1000
    assert 50 <= sum(i >= n * 9 // 10 for i in picked) <= 150  # late rows get their ~10 % share
    assert run(data, sample_size=1000, seed=1)[3] == raw
    assert any(w["code"] == "missing_system_message" for w in report.warnings)


def test_sample_larger_than_dataset_keeps_everything() -> None:
    report, train, _, _ = run(jsonl(*(qa(i) for i in range(11))), sample_size=50)
    assert len(train) == 11 and report.ok
    assert any(w["code"] == "sample_larger_than_dataset" for w in report.warnings)


def test_error_list_is_capped_but_counted() -> None:
    data = b"x\n" * 5 + jsonl(*(qa(i) for i in range(10)))
    report = run(data, error_limit=2)[0]
    assert [e["line"] for e in report.errors] == [1, 2]
    assert (report.errors_total, report.skipped, report.error_counts) == (5, 5, {"invalid_json": 5})


def test_invalid_utf8_line() -> None:
    report = run(jsonl(qa(1)) + '{"questions": "头痛", "answers": "休息"}\n'.encode("gbk"))[0]
    assert (report.errors[0]["line"], report.errors[0]["code"]) == (2, "invalid_encoding")
    assert "UTF-8" in report.errors[0]["message"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"\n\n  \n", "empty_file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", "binary_file"),
        (b"hello\nworld\n", "not_jsonl"),
        (b'1\n2\n"three"\n', "not_jsonl"),
        # Legacy completions rows: no preset maps them (alpaca rows are detected since issue 3).
        (jsonl({"prompt": "p", "completion": "c"}), "preset_not_detected"),
    ],
)
def test_not_data_raises(data: bytes, code: str) -> None:
    with pytest.raises(DatasetInvalid) as err:
        run(data)
    assert err.value.code == code
    assert isinstance(err.value, InvalidInput)
    assert err.value.message


def test_gives_up_early_on_non_jsonl() -> None:
    with pytest.raises(DatasetInvalid) as err:
        run(b"not json at all\n" * 5000)
    assert err.value.code == "not_jsonl" and "1000" in err.value.message


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"preset": "csv"}, "preset"),
        ({"target_model": "gpt-9"}, "model"),
        ({"sample_size": 0}, "sample_size"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"n_epochs": 0}, "n_epochs"),
    ],
)
def test_bad_arguments_raise_before_reading(kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidInput) as err:
        run(jsonl(qa(1)), **kwargs)
    assert err.value.param == param


class FullDisk(io.BytesIO):
    """An output that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_failed_write_fails_the_run_and_leaves_no_writer_thread() -> None:
    import threading

    rows = jsonl(*[qa(i) for i in range(3000)])
    with pytest.raises(OSError, match="No space left"):
        prepare(io.BytesIO(rows), train_out=FullDisk(50_000), validation_out=io.BytesIO(), batch_rows=100)
    assert not [t for t in threading.enumerate() if t.name.startswith("dataset-write")]
    # The same rows with room enough: every batch arrives, in order.
    train = FullDisk(10**8)
    report = prepare(io.BytesIO(rows), train_out=train, validation_out=io.BytesIO(), batch_rows=100)
    written = [json.loads(line)["messages"][0]["content"] for line in train.getvalue().splitlines()]
    assert report.train_examples == 3000 and written == [qa(i)["questions"] for i in range(3000)]
