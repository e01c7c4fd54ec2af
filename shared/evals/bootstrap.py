"""Seeded percentile bootstrap over items.

Every metric of every model is resampled with the same item draws (a paired bootstrap), so two
models' intervals describe the same resampled test sets. The same seed gives the same intervals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.evals.metrics import ngrams

CONFIDENCE = 0.95


def draws(n_items: int, samples: int, seed: int) -> np.ndarray:
    """How often each item appears in each resample: a (samples, n_items) count matrix."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_items, size=(samples, n_items))
    counts = np.zeros((samples, n_items), dtype=np.int64)
    rows = np.repeat(np.arange(samples), n_items)
    np.add.at(counts, (rows, picks.ravel()), 1)
    return counts


def interval(stats: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def mean(values: Sequence[float], counts: np.ndarray) -> dict[str, Any]:
    """The mean of per-item values with its interval."""
    array = np.asarray(values, dtype=np.float64)
    stats = counts @ array / counts.sum(axis=1)
    low, high = interval(stats)
    return {"value": float(array.mean()), "ci_low": low, "ci_high": high}


def distinct(answers: Sequence[Sequence[str]], n: int, counts: np.ndarray) -> dict[str, Any]:
    """Corpus Distinct-n with its interval: in a resample an n-gram counts once however many times
    its items were drawn, while the total grows with every draw."""
    ids: dict[tuple[str, ...], int] = {}
    masks: list[int] = []
    totals: list[int] = []
    for tokens in answers:
        grams = ngrams(tokens, n)
        totals.append(len(grams))
        mask = 0
        for gram in grams:
            mask |= 1 << ids.setdefault(gram, len(ids))
        masks.append(mask)
    total = sum(totals)
    value = 100.0 * len(ids) / total if total else 0.0
    grand = counts @ np.asarray(totals, dtype=np.int64)
    stats = np.zeros(len(counts))
    for row, drawn in enumerate(counts):
        union = 0
        for item in np.flatnonzero(drawn):
            union |= masks[item]
        stats[row] = 100.0 * union.bit_count() / grand[row] if grand[row] else 0.0
    # An answer drawn twice repeats all its n-grams, so resampled corpora are less distinct than
    # the real one: re-centre the draws on the observed value (a bias-corrected percentile interval).
    stats = np.clip(stats - (stats.mean() - value), 0.0, 100.0)
    low, high = interval(stats)
    return {"value": value, "ci_low": low, "ci_high": high}
