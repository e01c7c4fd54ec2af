"""Per-answer text metrics, the columns of the Huatuo-26M paper's generation table, every score in
[0, 100] (the libraries' [0, 1] values times 100).

The arithmetic is the reference libraries'; only the tokens are ours:
- BLEU-n: `nltk.translate.bleu_score.sentence_bleu`, one reference, uniform weights over 1..n-grams
  (cumulative BLEU-n, so BLEU-4 is the usual BLEU), smoothing `SmoothingFunction().method1`
  (epsilon 0.1 added to n-gram matches that are zero, Chen & Cherry 2014), so one missing 4-gram
  does not zero a short answer.
- GLEU: `nltk.translate.gleu_score.sentence_gleu` (1- to 4-grams, Wu et al. 2016).
- ROUGE-1/2/L: `rouge_score.rouge_scorer.RougeScorer` F-measure, no stemming, with our tokens
  (its default tokenizer keeps only [a-z0-9] and would drop every Chinese character).
- Distinct-1/2 (Li et al. 2016): distinct n-grams over all n-grams of all a model's answers.

Tokens: Chinese is scored twice, on characters (`char`) and on jieba words (`word`, jieba's default
dictionary, precise mode); English once, on lower-cased words (`word`). Whitespace and tokens made
only of punctuation or symbols are dropped in every tokenization, so "，" and "." earn nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from nltk.translate.gleu_score import sentence_gleu
from rouge_score import rouge_scorer

LANGUAGES = ("zh", "en")
TOKENIZATIONS = {"zh": ("char", "word"), "en": ("word",)}
# Scored per answer against its reference, then averaged over items.
ITEM_SCORES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "gleu", "rouge_1", "rouge_2", "rouge_l")
# Properties of all a model's answers together.
CORPUS_SCORES = ("distinct_1", "distinct_2")

_SMOOTHING = SmoothingFunction().method1
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]")
_EN_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_jieba_lock = threading.Lock()
_jieba: Any = None


class _Pretokenized:
    """rouge-score's tokenizer interface over text we already split (tokens joined by spaces)."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Pretokenized())


def detect_language(texts: Iterable[str]) -> str:
    """ "zh" when at least 30% of the letters in `texts` are CJK ideographs, else "en"."""
    cjk = letters = 0
    for text in texts:
        cjk += len(_CJK.findall(text))
        letters += len(_LETTER.findall(text))
    return "zh" if letters and cjk / letters >= 0.3 else "en"


def _segmenter() -> Any:
    global _jieba
    with _jieba_lock:
        if _jieba is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()  # loads the dictionary once, not on the first answer scored
            _jieba = jieba
    return _jieba


def _is_content(token: str) -> bool:
    return any(not unicodedata.category(ch).startswith(("P", "S", "Z", "C")) for ch in token)


def tokenize(text: str, language: str, tokenization: str) -> list[str]:
    if language == "en":
        return _EN_WORD.findall(text.lower())
    if tokenization == "char":
        return [ch for ch in text if _is_content(ch)]
    return [w for w in _segmenter().lcut(text) if _is_content(w)]


def bleu(reference: Sequence[str], hypothesis: Sequence[str], n: int) -> float:
    if not reference or not hypothesis:
        return 0.0
    weights = tuple([1.0 / n] * n)
    score = sentence_bleu([list(reference)], list(hypothesis), weights=weights, smoothing_function=_SMOOTHING)
    return 100.0 * float(score)


def gleu(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    if not reference or not hypothesis:
        return 0.0
    return 100.0 * float(sentence_gleu([list(reference)], list(hypothesis)))


def rouge(reference: Sequence[str], hypothesis: Sequence[str]) -> dict[str, float]:
    scores = _ROUGE.score(" ".join(reference), " ".join(hypothesis))
    return {
        "rouge_1": 100.0 * scores["rouge1"].fmeasure,
        "rouge_2": 100.0 * scores["rouge2"].fmeasure,
        "rouge_l": 100.0 * scores["rougeL"].fmeasure,
    }


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct(answers: Iterable[Sequence[str]], n: int) -> float:
    """Distinct n-grams over all n-grams of every answer, times 100 (0 when there are none)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in answers:
        grams = ngrams(tokens, n)
        total += len(grams)
        seen.update(grams)
    return 100.0 * len(seen) / total if total else 0.0


def normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def exact_match(reference: str, answer: str) -> float:
    """100 when the texts are equal after NFKC and whitespace folding, else 0."""
    return 100.0 if normalize(reference) == normalize(answer) else 0.0


def answer_length(answer: str, language: str) -> int:
    """Characters (without whitespace) for Chinese, words for English: not a [0, 100] score."""
    if language == "en":
        return len(_EN_WORD.findall(answer.lower()))
    return sum(1 for ch in answer if not ch.isspace())


def text_scores(reference: Sequence[str], hypothesis: Sequence[str]) -> dict[str, float]:
    scores = {f"bleu_{n}": bleu(reference, hypothesis, n) for n in (1, 2, 3, 4)}
    scores["gleu"] = gleu(reference, hypothesis)
    scores.update(rouge(reference, hypothesis))
    return scores


def item_scores(reference: str, answer: str, language: str) -> dict[str, Any]:
    """Every per-answer score of one answer: {"char": {...}, "word": {...}, "exact_match",
    "answer_length"} (only "word" for English)."""
    result: dict[str, Any] = {}
    for tokenization in TOKENIZATIONS[language]:
        result[tokenization] = text_scores(
            tokenize(reference, language, tokenization), tokenize(answer, language, tokenization)
        )
    result["exact_match"] = exact_match(reference, answer)
    result["answer_length"] = answer_length(answer, language)
    return result
