"""Row mapping presets on the sample data: alpaca, sharegpt, field map + template, auto-detection."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from shared.datasets.pipeline import prepare
from shared.datasets.presets import (
    MAPPERS,
    PRESET_NAMES,
    MappingOptions,
    RowRejected,
    detect_preset,
    map_alpaca,
    map_chat,
    map_fields,
    map_huatuo,
    map_sharegpt,
    question_key,
    resolve_preset,
)
from shared.errors import InvalidInput
from tests.support.paths import DATA

ALPACA = json.loads((DATA / "alpaca_zh400_en100.json").read_text(encoding="utf-8"))
SYSTEM = "你是一名专业的医生。"
FIELD_MAP = {"question": "ask", "answer": "answer"}
TEMPLATE = "科室：{department}\n问题：{question}"


def rejected(mapper: Any, row: Any, options: Any = None) -> tuple[str, str]:
    with pytest.raises(RowRejected) as err:
        mapper(row, options)
    return err.value.code, err.value.message


def invalid(**kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as err:
        MappingOptions(**kwargs)
    return err.value


def test_preset_names() -> None:
    assert PRESET_NAMES == ("auto", "huatuo", "alpaca", "sharegpt", "chat", "dpo", "map")
    assert set(MAPPERS) == set(PRESET_NAMES) - {"auto"}


def test_alpaca_sample_rows_chinese_and_english() -> None:
    example = map_alpaca(ALPACA[0], MappingOptions(system_prompt=f" {SYSTEM} "))
    assert example == {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "小张患肝炎双重感染，可能的病因是什么？"},
            {"role": "assistant", "content": ALPACA[0]["output"]},
        ]
    }
    english = map_alpaca(ALPACA[400])["messages"]
    assert [m["role"] for m in english] == ["user", "assistant"]
    assert english[0]["content"] == (
        "If you are a doctor, please answer the medical questions based on the patient's description."
        "\n\nDoctor, I think I have Bursitis. My joints are swollen and it hurts when I move them."
    )
    assert english[1]["content"].startswith("I see. Based on your symptoms")
    examples = [map_alpaca(row) for row in ALPACA]
    assert sum("\n\n" in e["messages"][0]["content"] for e in examples) == 100  # the 100 with an input


def test_alpaca_system_history_template_and_cleaning() -> None:
    row = {
        "instruction": " 头痛怎么办？ ",
        "input": "  ",
        "output": " 多休息。 ",
        "system": " 你是儿科医生。 ",
        "history": [["我发烧了", "量一下体温"], ["  ", "被丢弃的半轮"], ["38度", "吃退烧药"]],
        "age": 6,
    }
    options = MappingOptions(system_prompt=SYSTEM, user_template="年龄：{age}\n{question}")
    assert map_alpaca(row, options)["messages"] == [
        {"role": "system", "content": "你是儿科医生。"},  # the row's own wins
        {"role": "user", "content": "我发烧了"},
        {"role": "assistant", "content": "量一下体温"},
        {"role": "user", "content": "38度"},
        {"role": "assistant", "content": "吃退烧药"},
        {"role": "user", "content": "年龄：6\n头痛怎么办？"},
        {"role": "assistant", "content": "多休息。"},
    ]
    only_input = map_alpaca({"instruction": "", "input": "全部在 input 里", "output": "o"})
    assert only_input["messages"][0]["content"] == "全部在 input 里"


@pytest.mark.parametrize(
    ("row", "code", "names"),
    [
        (["instruction"], "not_an_object", "array"),
        ({"input": "i", "output": "o"}, "missing_field", "'instruction'"),
        ({"instruction": "q"}, "missing_field", "'output'"),
        ({"instruction": 3, "output": "o"}, "invalid_field_type", "'instruction'"),
        ({"instruction": "q", "input": ["x"], "output": "o"}, "invalid_field_type", "'input'"),
        ({"instruction": " ", "input": "", "output": "o"}, "empty_content", "'instruction' and 'input'"),
        ({"instruction": "q", "output": " \n"}, "empty_content", "'output'"),
        ({"instruction": "q", "output": "o", "system": 1}, "invalid_field_type", "'system'"),
        ({"instruction": "q", "output": "o", "history": "hi"}, "invalid_field_type", "'history'"),
        ({"instruction": "q", "output": "o", "history": [["only one"]]}, "invalid_field_type", "history[0]"),
    ],
)
def test_alpaca_rejections(row: Any, code: str, names: str) -> None:
    got_code, message = rejected(map_alpaca, row)
    assert got_code == code and names in message


def test_sharegpt_roles_system_and_empty_turns() -> None:
    row = {
        "system": "  顶层系统提示  ",
        "conversations": [
            {"from": "human", "value": " 头痛 "},
            {"from": "gpt", "value": "   "},  # dropped: empty assistant turn mid-conversation
            {"from": "human", "value": None},  # dropped too
            {"from": "user", "value": "还发烧"},
            {"from": "chatgpt", "value": " 多喝水 "},
            {"from": "Bing", "value": "休息"},
            {"role": "assistant", "content": "role/content turns work too"},
        ],
        "id": "x1",
    }
    assert map_sharegpt(row, SYSTEM) == {
        "messages": [
            {"role": "system", "content": "顶层系统提示"},
            {"role": "user", "content": "头痛"},
            {"role": "user", "content": "还发烧"},
            {"role": "assistant", "content": "多喝水"},
            {"role": "assistant", "content": "休息"},
            {"role": "assistant", "content": "role/content turns work too"},
        ]
    }
    turns = [
        {"from": "system", "value": " S1 "},
        {"from": "human", "value": "头痛"},
        {"from": "gpt", "value": "多喝水"},
    ]
    own_system = {"conversations": turns, "system": "ignored: a system turn wins"}
    assert [m["content"] for m in map_sharegpt(own_system, SYSTEM)["messages"]] == ["S1", "头痛", "多喝水"]
    plain = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert map_sharegpt(plain, SYSTEM)["messages"][0] == {"role": "system", "content": SYSTEM}


def test_sharegpt_tool_turns_map_to_openai_tool_calls() -> None:
    spec = {"name": "lookup", "description": "查药", "parameters": {"type": "object", "properties": {}}}
    row = {
        "conversations": [
            {"from": "human", "value": "布洛芬的剂量？"},
            {
                "from": "function_call",
                "value": json.dumps({"name": "lookup", "arguments": {"drug": "布洛芬"}}),
            },
            {"from": "observation", "value": "每次 200mg"},
            {"from": "gpt", "value": "每次 200mg。"},
        ],
        "tools": json.dumps([spec]),
    }
    example = map_sharegpt(row)
    assert example["messages"][1:3] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"drug": "布洛芬"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "每次 200mg"},
    ]
    assert example["tools"] == [{"type": "function", "function": spec}]
    assert map_chat(example) == example  # what sharegpt makes passes the chat checks


@pytest.mark.parametrize(
    ("row", "code", "names"),
    [
        ("text", "not_an_object", "string"),
        ({"messages_": []}, "missing_field", "'conversations'"),
        ({"conversations": {"from": "human"}}, "invalid_field_type", "'conversations'"),
        ({"conversations": ["hi"]}, "message_missing_key", "conversations[0]"),
        ({"conversations": [{"from": "human"}]}, "message_missing_key", "'value'"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "unrecognized_role", "'robot'"),
        ({"conversations": [{"from": "human", "value": 5}]}, "invalid_field_type", "conversations[0] value"),
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]},
            "example_missing_assistant_message",
            "assistant",
        ),
        (
            {"conversations": [{"from": "observation", "value": "42"}]},
            "invalid_tool_turn",
            "conversations[0]",
        ),
        ({"conversations": [{"from": "function_call", "value": "not json"}]}, "invalid_tool_turn", "JSON"),
        (
            {
                "conversations": [
                    {"from": "function_call", "value": '{"name": "f"}'},
                    {"from": "tool", "value": ""},
                ]
            },
            "empty_content",
            "conversations[1]",
        ),
        ({"conversations": [{"from": "gpt", "value": "a"}], "tools": "{"}, "invalid_field_type", "'tools'"),
    ],
)
def test_sharegpt_rejections(row: Any, code: str, names: str) -> None:
    got_code, message = rejected(map_sharegpt, row)
    assert got_code == code and names in message


def gbk_csv_rows() -> list[dict[str, str]]:
    with (DATA / "toyhom_neike_sample500_gbk.csv").open(encoding="gbk", newline="") as handle:
        return list(csv.DictReader(handle))


def test_field_map_with_template_on_the_gbk_csv() -> None:
    rows = gbk_csv_rows()
    assert list(rows[0]) == ["department", "title", "ask", "answer"]
    options = MappingOptions(system_prompt=SYSTEM, user_template=TEMPLATE, field_map=json.dumps(FIELD_MAP))
    examples = [map_fields(row, options) for row in rows]
    assert examples[0]["messages"] == [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": "科室：心血管科\n问题：我有高血压这两天女婿来的时候给我拿了些党参泡水喝，"
            "您好高血压可以吃党参吗？",
        },
        {"role": "assistant", "content": rows[0]["answer"].strip()},
    ]
    users = [e["messages"][1]["content"] for e in examples]
    assert sum(u.startswith("科室：神经科\n问题：") for u in users) == 395
    # A per-row system column wins over the configured prompt.
    with_system = MappingOptions(system_prompt=SYSTEM, field_map={**FIELD_MAP, "system": "department"})
    assert map_fields(rows[0], with_system)["messages"][0] == {"role": "system", "content": "心血管科"}
    assert map_fields({**rows[0], "department": ""}, with_system)["messages"][0]["content"] == SYSTEM


def test_field_map_and_template_row_rejections() -> None:
    options = MappingOptions(user_template=TEMPLATE, field_map=FIELD_MAP)
    code, message = rejected(map_fields, {"ask": "q", "answer": "a"}, options)
    assert code == "template_field_missing" and "{department}" in message and "'department'" in message
    code, message = rejected(map_fields, {"question": "q", "answer": "a"}, options)
    assert code == "missing_field" and "'ask'" in message and "question" in message
    code, message = rejected(map_fields, {"ask": "  ", "answer": "a", "department": "d"}, options)
    assert code == "empty_content" and "'ask'" in message
    code, message = rejected(map_fields, {"ask": "q", "answer": "a", "department": ["d"]}, options)
    assert code == "invalid_field_type" and "'department'" in message
    code, _ = rejected(map_huatuo, {"questions": "q", "answers": "a"}, MappingOptions(user_template=TEMPLATE))
    assert code == "template_field_missing"


@pytest.mark.parametrize(
    ("kwargs", "code", "fragment"),
    [
        ({"user_template": "问题：{question"}, "invalid_user_template", "malformed"),
        ({"user_template": "问题：{}"}, "invalid_user_template", "{}"),
        ({"user_template": "{0} {question}"}, "invalid_user_template", "{0}"),
        ({"user_template": "{question.__class__}"}, "invalid_user_template", "__class__"),
        ({"user_template": "{question!r}"}, "invalid_user_template", "!r"),
        ({"user_template": "{question:>9}"}, "invalid_user_template", ":>9"),
        ({"user_template": "科室：{department}"}, "invalid_user_template", "{question}"),
        ({"field_map": "not json"}, "invalid_field_map", "JSON object"),
        ({"field_map": ["ask"]}, "invalid_field_map", "object"),
        ({"field_map": {"question": "ask"}}, "invalid_field_map", "answer"),
        ({"field_map": {**FIELD_MAP, "extra": "x"}}, "invalid_field_map", "extra"),
        ({"field_map": {**FIELD_MAP, "answer": " "}}, "invalid_field_map", "field_map['answer']"),
    ],
)
def test_bad_options_raise_invalid_input(kwargs: dict[str, Any], code: str, fragment: str) -> None:
    err = invalid(**kwargs)
    assert err.code == code and fragment in err.message
    assert err.param == ("user_template" if "user_template" in kwargs else "field_map")


def test_literal_braces_and_blank_options() -> None:
    options = MappingOptions(user_template="{{科室}} {question}", field_map="", system_prompt="  ")
    assert (options.field_map, options.system_prompt) == (None, None)
    assert map_huatuo({"questions": "q", "answers": "a"}, options)["messages"][0]["content"] == "{科室} q"


def test_resolve_preset() -> None:
    mapped = MappingOptions(field_map=FIELD_MAP)
    assert resolve_preset("auto", mapped) == "map" and resolve_preset("map", mapped) == "map"
    assert resolve_preset("auto", MappingOptions(user_template=TEMPLATE)) == "auto"
    cases = [
        ("csv", MappingOptions(), "unknown_preset"),
        ("map", MappingOptions(), "missing_field_map"),
        ("huatuo", mapped, "invalid_field_map"),
        ("chat", MappingOptions(user_template=TEMPLATE), "invalid_user_template"),
    ]
    for preset, options, code in cases:
        with pytest.raises(InvalidInput) as err:
            resolve_preset(preset, options)
        assert err.value.code == code
    # A mapper reached with an option it cannot honour fails the request, not the row.
    with pytest.raises(InvalidInput):
        map_sharegpt({"conversations": []}, MappingOptions(user_template=TEMPLATE))
    with pytest.raises(InvalidInput):
        MAPPERS["map"]({"ask": "q", "answer": "a"}, None)


@pytest.mark.parametrize(
    ("row", "preset"),
    [
        ({"questions": "q", "answers": "a"}, "huatuo"),
        ({"answers": ["a"]}, "huatuo"),
        (ALPACA[0], "alpaca"),
        ({"conversations": [], "system": "s"}, "sharegpt"),
        ({"messages": []}, "chat"),
        ({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}, "dpo"),
        ({"input": {"messages": []}}, "dpo"),
        ({"input": "text", "preferred_completion": []}, "dpo"),
        ({"instruction": "only"}, None),
        ({"input": "i", "output": "o"}, None),
        ({"prompt": "p", "completion": "c"}, None),
    ],
)
def test_detect_preset(row: dict[str, Any], preset: str | None) -> None:
    assert detect_preset(row) == preset


def test_old_call_with_a_system_prompt_string_still_works() -> None:
    row = {"questions": "q", "answers": "a"}
    assert map_huatuo(row, SYSTEM) == map_huatuo(row, MappingOptions(system_prompt=SYSTEM))
    assert map_huatuo(row, None)["messages"][0] == {"role": "user", "content": "q"}
    assert question_key(map_alpaca(ALPACA[400])).startswith("ifyouareadoctor")


def test_pipeline_runs_alpaca_and_sharegpt_through_the_current_call() -> None:
    alpaca = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in ALPACA[390:410])
    train = io.BytesIO()
    report = prepare(io.BytesIO(alpaca), train_out=train, validation_out=io.BytesIO(), system_prompt=SYSTEM)
    assert (report.preset, report.train_examples, report.skipped) == ("alpaca", 20, 0)
    first = json.loads(train.getvalue().splitlines()[0])
    assert first == map_alpaca(ALPACA[390], SYSTEM)
    sharegpt = b"".join(
        json.dumps(
            {"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
        ).encode()
        + b"\n"
        for i in range(12)
    )
    report = prepare(io.BytesIO(sharegpt), train_out=io.BytesIO(), validation_out=io.BytesIO())
    assert (report.preset, report.train_examples, report.skipped) == ("sharegpt", 12, 0)
