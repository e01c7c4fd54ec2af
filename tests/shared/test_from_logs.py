"""How one logged conversation becomes a chat example (shared/datasets/from_logs.py)."""

from __future__ import annotations

from shared.datasets.from_logs import log_example
from shared.datasets.presets.chat import map_chat

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}


def test_a_tool_call_answer_keeps_null_content_and_passes_the_chat_checks() -> None:
    example = log_example(
        [{"role": "user", "content": "Weather?"}],
        {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None},
    )
    assert example == {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
        ]
    }
    assert map_chat(example)["messages"] == example["messages"]


def test_logs_without_an_answer_make_no_example() -> None:
    user = [{"role": "user", "content": "Hi"}]
    assert log_example(user, None) is None
    assert log_example(user, {"role": "assistant", "content": ""}) is None
    assert log_example(user, {"choices": []}) is None
    assert log_example("not a list", {"role": "assistant", "content": "x"}) is None


def test_a_completion_object_and_a_developer_prompt_are_normalized() -> None:
    example = log_example(
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi", "name": "ann"}],
        {"choices": [{"message": {"role": "assistant", "content": "Hello", "annotations": []}}]},
    )
    assert example == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "assistant", "content": "Hello"},
        ]
    }
