"""Every preset through the whole pipeline (intake → mapping → dedup → tokens → quote), on the
reference kit's files where one exists."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import tiktoken

from shared.datasets.pipeline import prepare
from shared.datasets.report import DatasetReport
from tests.support.paths import DATA

ALPACA = DATA / "alpaca_zh400_en100.json"
GBK_CSV = DATA / "toyhom_neike_sample500_gbk.csv"


def run(raw: bytes, **kwargs: Any) -> tuple[DatasetReport, list[dict[str, Any]]]:
    train, validation = io.BytesIO(), io.BytesIO()
    report = prepare(io.BytesIO(raw), train_out=train, validation_out=validation, **kwargs)
    return report, [json.loads(line) for line in train.getvalue().splitlines()]


def chat_tokens(messages: list[dict[str, Any]], enc: tiktoken.Encoding) -> int:
    return sum(3 + sum(len(enc.encode(v)) for v in m.values() if isinstance(v, str)) for m in messages) + 3


def test_the_alpaca_array_is_detected_and_mapped() -> None:
    items = json.loads(ALPACA.read_text(encoding="utf-8"))
    report, train = run(ALPACA.read_bytes(), system_prompt="You are a careful doctor.")
    assert (report.preset, report.format) == ("alpaca", "json")
    assert report.examples + report.duplicates["exact"] + report.duplicates["normalised"] == len(items)
    first = items[0]
    expected_user = first["instruction"].strip() + (
        "\n\n" + first["input"].strip() if first["input"].strip() else ""
    )
    assert train[0]["messages"] == [
        {"role": "system", "content": "You are a careful doctor."},
        {"role": "user", "content": expected_user},
        {"role": "assistant", "content": first["output"].strip()},
    ]
    enc = tiktoken.get_encoding("o200k_base")
    assert report.tokens["total"] == sum(chat_tokens(row["messages"], enc) for row in train)


def test_dpo_rows_keep_their_shape_and_count_both_outputs() -> None:
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"问题{i}：发烧怎么办？"}]},
            "preferred_output": [
                {"role": "assistant", "content": f"回答{i}：多喝水，体温超过38.5度请就医。"}
            ],
            "non_preferred_output": [{"role": "assistant", "content": f"回答{i}：不用管。"}],
        }
        for i in range(12)
    ]
    raw = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    report, train = run(raw, system_prompt="你是医生。")
    assert (report.preset, report.examples) == ("dpo", 12) and report.ok
    assert train[0]["input"]["messages"][0] == {"role": "system", "content": "你是医生。"}
    assert train[0]["preferred_output"] == rows[0]["preferred_output"]
    enc = tiktoken.get_encoding("o200k_base")
    expected = sum(
        chat_tokens(r["input"]["messages"] + r["preferred_output"] + r["non_preferred_output"], enc)
        for r in train
    )
    assert report.tokens["total"] == expected


def test_a_field_map_and_template_read_the_gbk_csv() -> None:
    with GBK_CSV.open(encoding="gbk", newline="") as handle:
        reference = list(csv.DictReader(handle))
    report, train = run(
        GBK_CSV.read_bytes(),
        preset="map",
        field_map=json.dumps({"question": "ask", "answer": "answer"}),
        user_template="科室：{department}\n{question}",
    )
    assert (report.preset, report.format, report.encoding) == ("map", "csv", "gb18030")
    assert "\ufffd" not in json.dumps(train, ensure_ascii=False)
    first = reference[0]
    assert train[0]["messages"] == [
        {"role": "user", "content": f"科室：{first['department'].strip()}\n{first['ask'].strip()}"},
        {"role": "assistant", "content": first["answer"].strip()},
    ]


def test_sharegpt_conversations_become_chat_turns() -> None:
    rows = [
        {
            "conversations": [
                {"from": "human", "value": f"头痛{i}天了怎么办？"},
                {"from": "gpt", "value": "多休息，必要时就医。"},
                {"from": "human", "value": "需要吃药吗？"},
                {"from": "gpt", "value": "请遵医嘱。"},
            ]
        }
        for i in range(10)
    ]
    raw = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    report, train = run(raw)
    assert (report.preset, report.examples) == ("sharegpt", 10)
    assert [m["role"] for m in train[0]["messages"]] == ["user", "assistant", "user", "assistant"]
