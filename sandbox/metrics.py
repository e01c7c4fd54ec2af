"""Synthetic training curves: noisy but falling loss, rising accuracy, deterministic per job seed.

Each step's noise is seeded by (seed, step) rather than drawn in sequence, so any step can be
computed on its own — the lazy job clock may jump over many steps at once.
"""

from __future__ import annotations

import csv
import io
import math
import random
from typing import Any

CSV_HEADER = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def _curve_shape(seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    initial = 1.6 + rng.random() * 1.2
    floor = 0.15 + rng.random() * 0.25
    return initial, floor


def step_metrics(seed: int, step: int, total_steps: int, *, validation: bool, final: bool) -> dict[str, Any]:
    """The `data` of a metrics event for one step (keys as OpenAI's metric events carry them)."""
    initial, floor = _curve_shape(seed)
    rng = random.Random(seed * 1_000_003 + step)
    progress = (step - 1) / max(1, total_steps - 1)
    trend = floor + (initial - floor) * math.exp(-3.5 * progress)
    learned = 1.0 - (trend - floor) / (initial - floor)
    data: dict[str, Any] = {
        "step": step,
        "total_steps": total_steps,
        "train_loss": round(trend * (1 + rng.uniform(-0.12, 0.12)), 6),
        "train_mean_token_accuracy": round(_clamp(0.45 + 0.5 * learned + rng.uniform(-0.03, 0.03)), 6),
    }
    if validation:
        data["valid_loss"] = round(trend * 1.08 * (1 + rng.uniform(-0.15, 0.15)), 6)
        data["valid_mean_token_accuracy"] = round(_clamp(0.43 + 0.5 * learned + rng.uniform(-0.04, 0.04)), 6)
        if final:
            # OpenAI computes the full-validation-set figures only at the end of training.
            data["full_valid_loss"] = round(trend * 1.1, 6)
            data["full_valid_mean_token_accuracy"] = round(_clamp(0.42 + 0.5 * learned), 6)
    return data


def step_message(data: dict[str, Any]) -> str:
    parts = [f"training loss={data['train_loss']:.2f}"]
    if "valid_loss" in data:
        parts.append(f"validation loss={data['valid_loss']:.2f}")
    if "full_valid_loss" in data:
        parts.append(f"full validation loss={data['full_valid_loss']:.2f}")
    return f"Step {data['step']}/{data['total_steps']}: " + ", ".join(parts)


def checkpoint_metrics(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "total_steps"}


def results_csv(rows: list[dict[str, Any]]) -> bytes:
    """The `fine-tune-results` file: one row per reported step; validation columns empty without one."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow(
            [
                row["step"],
                row["train_loss"],
                row["train_mean_token_accuracy"],
                row.get("valid_loss", ""),
                row.get("valid_mean_token_accuracy", ""),
            ]
        )
    return buffer.getvalue().encode()


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))
