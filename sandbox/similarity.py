"""Character n-gram retrieval: the sandbox's stand-in for a fine-tuned model.

TF-IDF cosine over character 1–3-grams works without a tokenizer or word boundaries, so Chinese
questions match as well as English ones; IDF keeps common characters (的, 是, "e") from dominating.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

NGRAM_SIZES = (1, 2, 3)
_SPACE = re.compile(r"\s+")


def _normalize(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def ngrams(text: str) -> Counter[str]:
    clean = _normalize(text)
    grams: Counter[str] = Counter()
    for size in NGRAM_SIZES:
        grams.update(clean[i : i + size] for i in range(len(clean) - size + 1))
    return grams


@dataclass(frozen=True)
class Match:
    index: int
    score: float
    answer: str


class AnswerIndex:
    """Questions → answers; `best(query)` returns the answer of the most similar question."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._answers = [answer for _, answer in pairs]
        grams = [ngrams(question) for question, _ in pairs]
        doc_freq: Counter[str] = Counter()
        for counts in grams:
            doc_freq.update(counts.keys())
        n_docs = len(pairs)
        self._idf = {g: math.log((1 + n_docs) / (1 + df)) + 1.0 for g, df in doc_freq.items()}
        # Inverted postings keep a query proportional to the grams it shares, not to the corpus size.
        self._postings: dict[str, list[tuple[int, float]]] = {}
        self._norms: list[float] = []
        for doc, counts in enumerate(grams):
            weights = {g: c * self._idf[g] for g, c in counts.items()}
            self._norms.append(math.sqrt(sum(w * w for w in weights.values())) or 1.0)
            for gram, weight in weights.items():
                self._postings.setdefault(gram, []).append((doc, weight))

    def __len__(self) -> int:
        return len(self._answers)

    def best(self, query: str) -> Match | None:
        counts = ngrams(query)
        if not counts or not self._answers:
            return None
        weights = {g: c * self._idf[g] for g, c in counts.items() if g in self._idf}
        scores: dict[int, float] = {}
        for gram, weight in weights.items():
            for doc, doc_weight in self._postings[gram]:
                scores[doc] = scores.get(doc, 0.0) + weight * doc_weight
        if not scores:
            return None
        # Unseen grams still lengthen the query vector, so a partial match scores below 1.
        unseen = sum(
            (c * (math.log(1 + len(self._answers)) + 1.0)) ** 2
            for g, c in counts.items()
            if g not in self._idf
        )
        query_norm = math.sqrt(sum(w * w for w in weights.values()) + unseen) or 1.0
        # Ties go to the earliest example so answers are deterministic.
        doc, dot = max(scores.items(), key=lambda item: (item[1] / self._norms[item[0]], -item[0]))
        return Match(doc, dot / (self._norms[doc] * query_norm), self._answers[doc])
