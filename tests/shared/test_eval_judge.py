"""The judge's verdict rules: a preference counts only when it survives swapping the answers, so a
judge that always picks the first answer ends in ties; and the sandbox's stand-in judge."""

from __future__ import annotations

import pytest

from sandbox import judge as sandbox_judge
from shared.evals import judge


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A", "A"),
        (" b.", "B"),
        ("Tie", "tie"),
        ("**A** is better", "A"),
        ("Answer A", "invalid"),
        ("", "invalid"),
    ],
)
def test_parse(reply: str, verdict: str) -> None:
    assert judge.parse(reply) == verdict


def test_only_order_independent_preferences_count() -> None:
    # The candidate is B in the first order and A in the swapped one.
    assert judge.item_verdict("B", "A") == "win"
    assert judge.item_verdict("A", "B") == "loss"
    assert judge.item_verdict("A", "A") == "tie"  # always the first answer: position bias
    assert judge.item_verdict("B", "B") == "tie"  # always the second
    assert judge.item_verdict("B", "tie") == "tie"
    assert judge.item_verdict("invalid", "A") == "invalid"
    biased = [judge.item_verdict("A", "A") for _ in range(10)]
    assert judge.summarize(biased) == {"win": 0, "tie": 10, "loss": 0, "invalid": 0, "win_rate": 50.0}
    assert judge.summarize(["win", "win", "loss", "tie", "invalid"])["win_rate"] == pytest.approx(62.5)


def test_prompts_swap_the_answers() -> None:
    answers = {(0, "0"): "base answer", (0, "1"): "tuned answer"}
    (ab_slot, ab), (ba_slot, ba) = judge.prompts("问题", "参考", answers, 0, 2)
    assert (ab_slot, ba_slot) == ("judge:0:1:ab", "judge:0:1:ba")
    assert ab[1]["content"].index("base answer") < ab[1]["content"].index("tuned answer")
    assert ba[1]["content"].index("tuned answer") < ba[1]["content"].index("base answer")


def test_the_sandbox_judge_is_order_free_and_follows_the_reference() -> None:
    close, far = "多喝水，注意休息", "I am a general assistant."
    first = sandbox_judge.verdict(judge.user_message("感冒怎么办", "多喝水，多休息", close, far))
    second = sandbox_judge.verdict(judge.user_message("感冒怎么办", "多喝水，多休息", far, close))
    assert (first, second) == ("A", "B")
    assert judge.item_verdict(judge.parse(second or ""), judge.parse(first or "")) == "win"
    assert sandbox_judge.verdict(judge.user_message("q", "ref", "same", "same")) == "tie"
    assert sandbox_judge.verdict("What is the capital of France?") is None
