"""A deterministic stand-in for an LLM judge, so eval judging can be tested offline.

A base model asked a reference-guided pairwise question (a user message with `[Reference]`,
`[Answer A]` and `[Answer B]` sections, as Tuneforge's eval judge sends) answers `A`, `B` or `tie`:
the answer whose character bigrams overlap the reference's more (F1) wins. The verdict depends on
the answers, not on their order, like an unbiased judge; it is not a language model."""

from __future__ import annotations

import re
from collections import Counter

_SECTION = re.compile(r"^\[(Question|Reference|Answer A|Answer B|Verdict)\]\s*$", re.MULTILINE)


def sections(text: str) -> dict[str, str] | None:
    parts = _SECTION.split(text)
    found = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    return found if {"Reference", "Answer A", "Answer B"} <= found.keys() else None


def _bigrams(text: str) -> Counter[str]:
    clean = "".join(text.split())
    return Counter(clean[i : i + 2] for i in range(len(clean) - 1))


def overlap(answer: str, reference: str) -> float:
    mine, theirs = _bigrams(answer), _bigrams(reference)
    common = sum((mine & theirs).values())
    if not common:
        return 0.0
    precision, recall = common / sum(mine.values()), common / sum(theirs.values())
    return 2 * precision * recall / (precision + recall)


def verdict(user_text: str) -> str | None:
    """`A`, `B` or `tie` for a judge prompt; None for any other message."""
    found = sections(user_text)
    if found is None:
        return None
    a, b = (overlap(found[key], found["Reference"]) for key in ("Answer A", "Answer B"))
    if abs(a - b) < 1e-9:
        return "tie"
    return "A" if a > b else "B"
