"""LLM-as-judge, pairwise and position-swapped: every later model is compared with the first
(the baseline) on each item, asked once with the baseline as answer A and once as answer B.
A model wins an item only when the judge prefers it in both orders; a preference that flips with
the order is the judge's position bias and counts as a tie (MT-Bench's rule), as does a "tie"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# Reference-guided: the judge sees the reference answer too.
SYSTEM = (
    "You are an impartial judge of answers to a user's question. Compare answer A and answer B "
    "with the reference answer and decide which is better (accurate, complete, helpful). "
    "Reply with exactly one of: A, B, tie."
)
GENERATION: dict[str, Any] = {"temperature": 0.0, "max_tokens": 8}
ORDERS = ("ab", "ba")
_VERDICT = re.compile(r"^\W*(A|B|TIE)\b", re.IGNORECASE)


def user_message(question: str, reference: str, answer_a: str, answer_b: str) -> str:
    return (
        f"[Question]\n{question}\n\n[Reference]\n{reference}\n\n"
        f"[Answer A]\n{answer_a}\n\n[Answer B]\n{answer_b}\n\n[Verdict]"
    )


def slot(baseline: int, other: int, order: str) -> str:
    return f"judge:{baseline}:{other}:{order}"


def prompts(
    question: str, reference: str, answers: dict[tuple[int, str], str], position: int, n_models: int
) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """(slot, messages) of every judge call for one item."""
    baseline = answers.get((position, "0"), "")
    for other in range(1, n_models):
        candidate = answers.get((position, str(other)), "")
        for order in ORDERS:
            a, b = (baseline, candidate) if order == "ab" else (candidate, baseline)
            yield (
                slot(0, other, order),
                [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": user_message(question, reference, a, b)},
                ],
            )


def parse(reply: str) -> str:
    """ "A", "B", "tie", or "invalid" when the reply does not start with a verdict."""
    match = _VERDICT.match(reply.strip())
    if match is None:
        return "invalid"
    word = match.group(1).upper()
    return "tie" if word == "TIE" else word


def item_verdict(ab: str, ba: str) -> str:
    """ "win" (the candidate, model B in the first order), "loss", "tie" or "invalid"."""
    if "invalid" in (ab, ba):
        return "invalid"
    # In "ab" the candidate is B; in "ba" it is A.
    first = {"A": "loss", "B": "win", "tie": "tie"}[ab]
    second = {"A": "win", "B": "loss", "tie": "tie"}[ba]
    return first if first == second else "tie"


def summarize(verdicts: list[str]) -> dict[str, Any]:
    counts = {key: verdicts.count(key) for key in ("win", "tie", "loss", "invalid")}
    judged = counts["win"] + counts["tie"] + counts["loss"]
    counts["win_rate"] = 100.0 * (counts["win"] + 0.5 * counts["tie"]) / judged if judged else None
    return counts
