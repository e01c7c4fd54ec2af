"""Eval scoring benchmark: how long `shared.evals.report.score` (what an eval's last transaction
runs: every answer's metrics, then the bootstrap intervals) takes for a Chinese eval.

    flock /tmp/tuneforge-bench.lock .venv/bin/python bench/evals.py [--items 200 1000 2000] [--models 2]

Answers and references are real Chinese medical answers from the reference kit's Huatuo-style
sample: model k answers item i with the answer of row i + k + 1 (another patient's answer, as a
sandbox-tuned model does). No database, provider or broker is involved."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.evals import bootstrap, metrics, report  # noqa: E402
from shared.models import Eval, EvalItem, EvalOutput  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "huatuo_style_sample.jsonl"


def build(n_items: int, n_models: int, answers: list[str]) -> tuple[Eval, list[EvalItem], dict]:
    row = Eval(
        id="eval_bench",
        models=[
            {"model": f"m{k}", "provider": "sandbox", "upstream_model": f"m{k}"} for k in range(n_models)
        ],
        options={"seed": 0, "bootstrap_samples": 1000, "language": "auto"},
    )
    items = [
        EvalItem(eval_id=row.id, position=i, messages=[], question="", reference=answers[i % len(answers)])
        for i in range(n_items)
    ]
    outputs = {
        (i, str(k)): EvalOutput(
            position=i,
            slot=str(k),
            answer=answers[(i + k + 1) % len(answers)],
            error=None,
            completion_tokens=0,
        )
        for i in range(n_items)
        for k in range(n_models)
    }
    return row, items, outputs


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, nargs="+", default=[200, 1000, 2000])
    parser.add_argument("--models", type=int, default=2)
    args = parser.parse_args()
    answers = [json.loads(line)["answers"] for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    metrics.tokenize("预热", "zh", "word")  # jieba's dictionary load is paid once per process
    say("| items | models | answers scored | score() total s | metrics per answer ms | bootstrap s |")
    say("|---|---|---|---|---|---|")
    for n_items in args.items:
        row, items, outputs = build(n_items, args.models, answers)
        started = time.perf_counter()
        for (position, _slot), out in outputs.items():
            metrics.item_scores(items[position].reference, out.answer, "zh")
        per_answer = (time.perf_counter() - started) / len(outputs)
        started = time.perf_counter()
        counts = bootstrap.draws(n_items, 1000, 0)
        for k in range(args.models):
            answered = [outputs[(i, str(k))].answer for i in range(n_items)]
            for tokenization in ("char", "word"):
                for _name in metrics.ITEM_SCORES:
                    bootstrap.mean([float(i) for i in range(n_items)], counts)
                tokens = [metrics.tokenize(a, "zh", tokenization) for a in answered]
                for n in (1, 2):
                    bootstrap.distinct(tokens, n, counts)
        bootstrap_s = time.perf_counter() - started
        row, items, outputs = build(n_items, args.models, answers)
        started = time.perf_counter()
        result = report.score(row, items, outputs)
        total = time.perf_counter() - started
        assert result["items_scored"] == n_items and result["bootstrap"]["samples"] == 1000
        say(
            f"| {n_items} | {args.models} | {len(outputs)} | {total:.1f} | {1000 * per_answer:.1f} | "
            f"{bootstrap_s:.1f} |"
        )


if __name__ == "__main__":
    main()
