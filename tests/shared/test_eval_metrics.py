"""Eval metrics on cases small enough to check by hand, English and Chinese; each expected value is
written as the arithmetic that gives it, and also checked against the reference library called
directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from nltk.translate.gleu_score import sentence_gleu
from rouge_score import rouge_scorer

from shared.evals import bootstrap, metrics

REF_EN = "The cat sat on the mat."
HYP_EN = "the cat sat"


def test_english_words_by_hand() -> None:
    scores = metrics.item_scores(REF_EN, HYP_EN, "en")
    assert set(scores) == {"word", "exact_match", "answer_length"}
    word = scores["word"]
    brevity = math.exp(1 - 6 / 3)  # 6 reference words, 3 hypothesis words
    # Every hypothesis 1-, 2- and 3-gram is in the reference; BLEU-n is cumulative (uniform weights).
    for n in (1, 2, 3):
        assert word[f"bleu_{n}"] == pytest.approx(100 * brevity)
    # No 4-gram at all: method1 smoothing puts 0.1 in its place instead of zeroing the score.
    assert word["bleu_4"] == pytest.approx(100 * brevity * 0.1**0.25)
    # GLEU = min(precision, recall) over 1..4-grams: 6 of the hypothesis' 6, out of the reference's 18.
    assert word["gleu"] == pytest.approx(100 * 6 / 18)
    # ROUGE-1 and L: P = 3/3, R = 3/6; ROUGE-2: P = 2/2, R = 2/5.
    assert word["rouge_1"] == word["rouge_l"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
    assert word["rouge_2"] == pytest.approx(100 * 2 * 1 * 0.4 / 1.4)
    assert scores["exact_match"] == 0 and scores["answer_length"] == 3


def test_chinese_characters_and_jieba_words_by_hand() -> None:
    scores = metrics.item_scores("感冒了多喝水，注意休息。", "感冒了要注意休息", "zh")
    assert set(scores) == {"char", "word", "exact_match", "answer_length"}
    # jieba: 感冒/了/多喝水/注意/休息 against 感冒/了/要/注意/休息 (punctuation dropped).
    assert metrics.tokenize("感冒了多喝水，注意休息。", "zh", "word") == [
        "感冒",
        "了",
        "多喝水",
        "注意",
        "休息",
    ]
    word = scores["word"]
    assert word["bleu_1"] == pytest.approx(100 * 4 / 5)
    assert word["bleu_2"] == pytest.approx(100 * math.sqrt(4 / 5 * 2 / 4))
    assert word["rouge_1"] == pytest.approx(80) and word["rouge_l"] == pytest.approx(80)
    assert word["rouge_2"] == pytest.approx(50)
    # Characters: 感冒了多喝水注意休息 (10) against 感冒了要注意休息 (8).
    char = scores["char"]
    assert char["bleu_1"] == pytest.approx(100 * math.exp(1 - 10 / 8) * 7 / 8)
    lcs = len("感冒了注意休息")
    assert char["rouge_l"] == pytest.approx(100 * 2 * (lcs / 8) * (lcs / 10) / (lcs / 8 + lcs / 10))
    assert scores["answer_length"] == 8


def test_three_characters() -> None:
    char = metrics.item_scores("我头痛", "我头疼", "zh")["char"]
    p1, p2, smoothed = 2 / 3, 1 / 2, 0.1
    assert char["bleu_1"] == pytest.approx(100 * p1)
    assert char["bleu_2"] == pytest.approx(100 * math.sqrt(p1 * p2))
    assert char["bleu_3"] == pytest.approx(100 * (p1 * p2 * smoothed) ** (1 / 3))
    assert char["bleu_4"] == pytest.approx(100 * (p1 * p2 * smoothed * smoothed) ** (1 / 4))
    assert char["gleu"] == pytest.approx(100 * 3 / 6)  # 我 头 我头 of six n-grams each side
    assert char["rouge_2"] == pytest.approx(50)


@pytest.mark.parametrize(
    ("reference", "answer", "language"),
    [
        (REF_EN, HYP_EN, "en"),
        ("Drink water and rest; see a doctor if the fever lasts.", "Rest, drink water, see a doctor.", "en"),
        ("感冒了多喝水，注意休息。", "感冒了要注意休息", "zh"),
        ("建议您到医院做血常规检查，明确诊断后再用药。", "您好，建议做血常规检查。", "zh"),
    ],
)
def test_the_libraries_called_directly_agree(reference: str, answer: str, language: str) -> None:
    scores = metrics.item_scores(reference, answer, language)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=metrics._Pretokenized())
    for tokenization in metrics.TOKENIZATIONS[language]:
        ref = metrics.tokenize(reference, language, tokenization)
        hyp = metrics.tokenize(answer, language, tokenization)
        got = scores[tokenization]
        for n in (1, 2, 3, 4):
            direct = sentence_bleu(
                [ref], hyp, weights=(1 / n,) * n, smoothing_function=SmoothingFunction().method1
            )
            assert got[f"bleu_{n}"] == pytest.approx(100 * direct)
        assert got["gleu"] == pytest.approx(100 * sentence_gleu([ref], hyp))
        rouge = scorer.score(" ".join(ref), " ".join(hyp))
        assert got["rouge_l"] == pytest.approx(100 * rouge["rougeL"].fmeasure)
        assert all(0 <= value <= 100 for value in got.values())


def test_identical_empty_and_unrelated_answers_bound_the_scale() -> None:
    text = "头痛发热的时候应该吃什么药"  # at least four jieba words, so BLEU-4 has a 4-gram
    same = metrics.item_scores(text, text, "zh")
    assert all(v == pytest.approx(100) for t in ("char", "word") for v in same[t].values())
    assert same["exact_match"] == 100
    for answer in ("", "xyz"):
        scores = metrics.item_scores("头痛怎么办", answer, "zh")
        assert all(v == 0 for t in ("char", "word") for v in scores[t].values())


def test_exact_match_folds_width_and_whitespace_only() -> None:
    assert metrics.exact_match("ＡＢＣ  d", " ABC d\n") == 100
    assert metrics.exact_match("abc", "abd") == 0


def test_distinct_is_over_all_answers() -> None:
    answers = [["a", "b", "a"], ["a", "c"]]
    assert metrics.distinct(answers, 1) == pytest.approx(100 * 3 / 5)  # a b c of 5 unigrams
    assert metrics.distinct(answers, 2) == pytest.approx(100 * 3 / 3)  # ab ba ac
    assert metrics.distinct([[]], 1) == 0


def test_language_detection() -> None:
    assert metrics.detect_language(["我头痛了怎么办 help"]) == "zh"
    assert metrics.detect_language(["I have a headache (头痛) since yesterday"]) == "en"


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = [float(v) for v in range(100)]
    counts = bootstrap.draws(len(values), 1000, seed=3)
    assert (counts.sum(axis=1) == len(values)).all()
    first = bootstrap.mean(values, counts)
    assert first == bootstrap.mean(values, bootstrap.draws(len(values), 1000, seed=3))
    assert first != bootstrap.mean(values, bootstrap.draws(len(values), 1000, seed=4))
    assert first["ci_low"] < first["value"] == 49.5 < first["ci_high"]
    # The standard error of the mean of 0..99 is about 2.9: a 95% interval about ±5.7 wide.
    assert 4 < first["value"] - first["ci_low"] < 8 and 4 < first["ci_high"] - first["value"] < 8
    flat = bootstrap.mean([7.0] * 10, bootstrap.draws(10, 200, seed=0))
    assert flat == {"value": 7.0, "ci_low": 7.0, "ci_high": 7.0}


def test_bootstrap_distinct_matches_a_direct_count_per_resample() -> None:
    answers = [["a", "b"], ["a", "a"], ["c"], ["b", "d", "e"]]
    counts = bootstrap.draws(len(answers), 50, seed=1)
    result = bootstrap.distinct(answers, 1, counts)
    assert result["value"] == pytest.approx(metrics.distinct(answers, 1))
    direct = [
        metrics.distinct([answers[i] for i, c in enumerate(row) for _ in range(c)], 1) for row in counts
    ]
    # Re-centred on the observed value: duplicated answers bias every resample's Distinct downwards.
    shifted = np.clip(np.asarray(direct) - (np.mean(direct) - result["value"]), 0, 100)
    low, high = np.percentile(shifted, [2.5, 97.5])
    assert low <= result["value"] <= high
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high))
