"""DPO preference rows (training-data.md §2.2): mapping, rejections, question key and token count."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import tiktoken

from shared import tokens
from shared.datasets.presets import MAPPERS, MappingOptions, RowRejected, detect_preset, map_dpo, question_key

SYSTEM = "你是一名专业的医生。"


def pair(question: str = "Hello, can you tell me how cold San Francisco is today?", **extra: Any) -> dict:
    return {
        "input": {
            "messages": [{"role": "user", "content": question}],
            "tools": [],
            "parallel_tool_calls": True,
        },
        "preferred_output": [
            {"role": "assistant", "content": "Today in San Francisco, it is not quite cold as expected."}
        ],
        "non_preferred_output": [
            {"role": "assistant", "content": "It is not particularly cold in San Francisco today."}
        ],
        **extra,
    }


def test_dpo_line_passes_through_with_system_prompt_prepended() -> None:
    row = pair(id=17)
    example = map_dpo(row, MappingOptions(system_prompt=SYSTEM))
    assert example == {
        "input": {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Hello, can you tell me how cold San Francisco is today?"},
            ],
            "tools": [],
            "parallel_tool_calls": True,
        },
        "preferred_output": row["preferred_output"],
        "non_preferred_output": row["non_preferred_output"],
    }
    assert list(example) == ["input", "preferred_output", "non_preferred_output"]  # "id" dropped
    assert map_dpo(row) == {key: row[key] for key in ("input", "preferred_output", "non_preferred_output")}
    own = pair()
    own["input"]["messages"].insert(0, {"role": "system", "content": "own"})
    assert map_dpo(own, SYSTEM)["input"]["messages"][0] == {"role": "system", "content": "own"}
    assert detect_preset(row) == "dpo" and MAPPERS["dpo"] is map_dpo


def mutate(path: tuple[Any, ...], value: Any) -> dict:
    row = pair()
    target: Any = row
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return row


ASSISTANT = {"role": "assistant", "content": "x"}


@pytest.mark.parametrize(
    ("row", "code", "fragment"),
    [
        ([1], "not_an_object", "array"),
        (mutate(("input",), KeyError), "missing_field", "'input'"),
        (mutate(("input",), "prompt text"), "invalid_field_type", "'input'"),
        (mutate(("input", "messages"), []), "missing_messages_list", "input"),
        (mutate(("input", "messages", 0, "role"), "robot"), "unrecognized_role", "input.messages[0]"),
        (mutate(("input", "messages", 0, "content"), " "), "missing_content", "input.messages[0]"),
        (
            mutate(("input", "messages"), [{"role": "user", "content": "q"}, ASSISTANT]),
            "last_message_not_user",
            "'assistant'",
        ),
        (mutate(("preferred_output",), KeyError), "missing_field", "'preferred_output'"),
        (mutate(("non_preferred_output",), {"role": "assistant"}), "invalid_dpo_output", "a JSON object"),
        (mutate(("preferred_output",), []), "invalid_dpo_output", "found 0 items"),
        (mutate(("preferred_output",), [ASSISTANT, ASSISTANT]), "invalid_dpo_output", "found 2 items"),
        (mutate(("preferred_output", 0, "role"), "user"), "invalid_dpo_output", "preferred_output[0]"),
        (mutate(("preferred_output", 0, "content"), None), "invalid_dpo_output", "null"),
        (
            mutate(("preferred_output", 0, "content"), [{"type": "text", "text": "x"}]),
            "invalid_dpo_output",
            "array",
        ),
        (mutate(("non_preferred_output", 0, "content"), "  "), "empty_content", "non_preferred_output[0]"),
        (mutate(("preferred_output", 0, "weight"), 1), "message_unrecognized_key", "weight"),
        (
            mutate(
                ("non_preferred_output",),
                [
                    {
                        "role": "assistant",
                        "content": " Today in San Francisco, it is not quite cold as expected.",
                    }
                ],
            ),
            "identical_outputs",
            "same text",
        ),
    ],
)
def test_dpo_rejections(row: Any, code: str, fragment: str) -> None:
    with pytest.raises(RowRejected) as err:
        map_dpo(row)
    assert err.value.code == code and fragment in err.value.message


def test_dpo_old_key_names_are_refused_with_a_rename_hint() -> None:
    row = pair()
    row["preferred_completion"] = row.pop("preferred_output")
    row["non_preferred_completion"] = row.pop("non_preferred_output")
    with pytest.raises(RowRejected) as err:
        map_dpo(row)
    assert err.value.code == "missing_field"
    assert "rename 'preferred_completion' to 'preferred_output'" in err.value.message


def test_dpo_question_key_is_the_last_user_message() -> None:
    row = pair()
    row["input"]["messages"] = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "An answer"},
        {"role": "user", "content": "  Is it COLD today？ "},
    ]
    assert question_key(map_dpo(row, SYSTEM)) == "isitcoldtoday"
    chat = {"messages": [{"role": "user", "content": "First question"}, ASSISTANT]}
    assert question_key(chat) == "firstquestion"


def independent_count(messages: list[dict], enc: tiktoken.Encoding) -> int:
    """The cookbook formula (3 per message, every string value, +1 per name, +3 priming)."""
    n = 3
    for message in messages:
        n += 3 + sum(len(enc.encode(v)) for v in message.values() if isinstance(v, str))
        n += "name" in message
    return n


@pytest.mark.parametrize("encoding_name", ["o200k_base", "cl100k_base"])
def test_dpo_token_count_is_input_plus_both_outputs(encoding_name: str) -> None:
    enc = tiktoken.get_encoding(encoding_name)
    row = pair("旧金山今天冷吗？请详细说明。")
    row["preferred_output"][0]["name"] = "doctor"
    example = map_dpo(row, SYSTEM)
    # Written out by hand: system + user + two outputs, each 3 + role + content (+ name + 1), + 3.
    expected = 3 + sum(
        3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"]))
        for m in [
            *example["input"]["messages"],
            *example["preferred_output"],
            *example["non_preferred_output"],
        ]
    )
    expected += len(enc.encode("doctor")) + 1
    assert expected == independent_count(
        [*example["input"]["messages"], *example["preferred_output"], *example["non_preferred_output"]], enc
    )
    assert tokens.count_training_example(example, enc) == expected
    assert tokens.training_example_token_upper_bound(example) >= expected
    chat = {"messages": [*example["input"]["messages"], *example["preferred_output"]]}
    assert tokens.count_training_example(chat, enc) == independent_count(chat["messages"], enc)
    assert tokens.example_messages_for_stats(example) == chat["messages"]
    assert tokens.example_messages_for_stats(chat) is chat["messages"]
    with pytest.raises(ValueError):
        tokens.count_training_example({"prompt": "p"}, enc)


def test_dpo_example_round_trips_as_one_json_line() -> None:
    example = map_dpo(copy.deepcopy(pair()), SYSTEM)
    line = json.dumps(example, ensure_ascii=False)
    assert "\n" not in line and json.loads(line) == example
    assert line.startswith('{"input": {"messages": [{"role": "system"')
