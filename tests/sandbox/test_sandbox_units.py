"""Pure pieces of the sandbox, without a server: epoch rule, file checks, retrieval, job clock."""

from __future__ import annotations

import json

import pytest

import tests.sandbox.harness  # noqa: F401  (sets TIKTOKEN_CACHE_DIR before tiktoken loads)
from sandbox.faults import job_fault
from sandbox.job_params import default_epochs
from sandbox.similarity import AnswerIndex
from sandbox.simulation import SimClock
from sandbox.validation import TrainingFileError, check_example, parse_training_file


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (4, 25),
        (5, 20),
        (10, 10),
        (11, 9),
        (20, 5),
        (33, 3),
        (8333, 3),
        (8334, 2),
        (12500, 2),
        (12501, 1),
    ],
)
def test_default_epochs_follow_the_cookbook_table(n: int, epochs: int) -> None:
    assert default_epochs(n) == epochs


@pytest.mark.parametrize(
    ("example", "category"),
    [
        ([1, 2], "data_type"),
        ({"messages": []}, "missing_messages_list"),
        ({"messages": [{"content": "x"}]}, "message_missing_key"),
        ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, "message_unrecognized_key"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unrecognized_role"),
        ({"messages": [{"role": "user", "content": ""}]}, "missing_content"),
        ({"messages": [{"role": "user", "content": "x"}]}, "example_missing_assistant_message"),
    ],
)
def test_the_seven_cookbook_checks(example: object, category: str) -> None:
    problem = check_example(example)
    assert problem is not None and category in problem


def test_server_side_extensions_are_accepted() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert (
        check_example(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": calls}]}
        )
        is None
    )
    assert check_example({"messages": [{"role": "assistant", "content": "a", "weight": 0}]}) is None
    assert "weight" in (
        check_example({"messages": [{"role": "assistant", "content": "a", "weight": 2}]}) or ""
    )
    assert "tool_call_id" in (check_example({"messages": [{"role": "tool", "content": "r"}]}) or "")


def test_parse_counts_examples_and_tokens() -> None:
    line = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]}
    raw = ("\n".join(json.dumps(line) for _ in range(10)) + "\n\n").encode()
    data = parse_training_file(raw, model="gpt-4o-mini-2024-07-18")
    assert data.n_examples == 10 and all(t == data.example_tokens[0] for t in data.example_tokens)
    # 2 messages × 3 + "user"(1) + "hello"(1) + "assistant"(1) + "hi there"(2) + 3 priming
    assert data.example_tokens[0] == 14
    with pytest.raises(TrainingFileError) as err:
        parse_training_file(b"\xff\xfe", model="gpt-4o-mini-2024-07-18")
    assert err.value.code == "invalid_training_file"


def test_retrieval_prefers_the_closest_question_in_any_script() -> None:
    index = AnswerIndex(
        [
            ("How do I treat a common cold?", "rest"),
            ("What causes high blood pressure?", "salt"),
            ("孩子感冒咳嗽流鼻涕怎么食疗？", "喝姜汤"),
            ("高血压患者饮食要注意什么？", "少盐"),
        ]
    )
    assert index.best("treating a cold at home").answer == "rest"  # type: ignore[union-attr]
    assert index.best("小孩感冒了流鼻涕，吃什么好？").answer == "喝姜汤"  # type: ignore[union-attr]
    exact = index.best("高血压患者饮食要注意什么？")
    assert exact is not None and exact.answer == "少盐" and exact.score == pytest.approx(1.0)
    assert index.best("zzzz") is None


def test_paused_clock_stands_still() -> None:
    clock = SimClock(scale=0.5, wall_anchor=100.0)
    assert clock.sim(101.0) == pytest.approx(2.0)
    clock.freeze(101.0)
    assert clock.sim(150.0) == pytest.approx(2.0)
    clock.thaw(150.0)
    assert clock.sim(151.0) == pytest.approx(4.0) and clock.wall(4.0) == pytest.approx(151.0)


def test_fault_switches() -> None:
    assert job_fault({"sandbox_fail": "1"}, None).code == "server_error"  # type: ignore[union-attr]
    assert job_fault({"sandbox_fail": "quota_exceeded"}, None).code == "quota_exceeded"  # type: ignore[union-attr]
    assert job_fault({"sandbox_fail": "0"}, None) is None
    assert job_fault(None, "demo-sandbox-fail") is not None and job_fault(None, "demo") is None
