"""An eval's numbers: per-answer scores (stored on each output) and, per model, every metric with
its bootstrap 95% interval, plus the judge's win/tie/loss.

Models are compared on the same items: an item counts only when every model answered it
without an error (`items_scored`; errors are counted per model)."""

from __future__ import annotations

from typing import Any

from shared.evals import bootstrap, judge, metrics
from shared.models import Eval, EvalItem, EvalOutput

TOKENIZATION_LABELS = {
    "zh": {"char": "Chinese characters", "word": "jieba words (precise mode)"},
    "en": {"word": "lower-cased words"},
}


def language_of(row: Eval, items: list[EvalItem]) -> str:
    chosen = row.options.get("language", "auto")
    return chosen if chosen != "auto" else metrics.detect_language(item.reference for item in items)


def score(row: Eval, items: list[EvalItem], outputs: dict[tuple[int, str], EvalOutput]) -> dict[str, Any]:
    language = language_of(row, items)
    slots = [str(i) for i in range(len(row.models))]
    for item in items:
        for slot in slots:
            out = outputs[(item.position, slot)]
            if out.error is None:
                out.scores = metrics.item_scores(item.reference, out.answer, language)
    scored = [item for item in items if all(outputs[(item.position, s)].error is None for s in slots)]
    samples = row.options.get("bootstrap_samples", 1000)
    counts = bootstrap.draws(len(scored), samples, row.options["seed"]) if scored else None
    per_model: dict[str, Any] = {}
    for slot, model in zip(slots, row.models, strict=True):
        answered = [outputs[(item.position, slot)] for item in scored]
        per_model[model["model"]] = _model_metrics(answered, [i.reference for i in scored], language, counts)
        per_model[model["model"]]["errors"] = sum(1 for i in items if outputs[(i.position, slot)].error)
    return {
        "language": language,
        "tokenizations": TOKENIZATION_LABELS[language],
        "items_scored": len(scored),
        "bootstrap": {"samples": samples, "confidence": bootstrap.CONFIDENCE, "seed": row.options["seed"]},
        "models": per_model,
        "judge": _judge(row, items, outputs),
    }


def _model_metrics(
    answered: list[EvalOutput], references: list[str], language: str, counts: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {"items_scored": len(answered)}
    if not answered:
        return result
    for tokenization in metrics.TOKENIZATIONS[language]:
        block = {
            name: bootstrap.mean([out.scores[tokenization][name] for out in answered], counts)  # type: ignore[index]
            for name in metrics.ITEM_SCORES
        }
        tokens = [metrics.tokenize(out.answer, language, tokenization) for out in answered]
        for n in (1, 2):
            block[f"distinct_{n}"] = bootstrap.distinct(tokens, n, counts)
        result[tokenization] = block
    for name in ("exact_match", "answer_length"):
        result[name] = bootstrap.mean([out.scores[name] for out in answered], counts)  # type: ignore[index]
    result["reference_length"] = sum(metrics.answer_length(r, language) for r in references) / len(references)
    result["completion_tokens"] = sum(out.completion_tokens for out in answered)
    return result


def _judge(
    row: Eval, items: list[EvalItem], outputs: dict[tuple[int, str], EvalOutput]
) -> dict[str, Any] | None:
    judged = row.options.get("judge")
    if not judged:
        return None
    pairs = []
    for other in range(1, len(row.models)):
        verdicts = []
        for item in items:
            ab, ba = (outputs.get((item.position, judge.slot(0, other, order))) for order in judge.ORDERS)
            if ab is None or ba is None:
                continue
            parsed = [judge.parse(out.answer) if out.error is None else "invalid" for out in (ab, ba)]
            for out, verdict in zip((ab, ba), parsed, strict=True):
                out.scores = {"verdict": verdict}
            verdicts.append(judge.item_verdict(*parsed))
        pairs.append(
            {
                "baseline": row.models[0]["model"],
                "model": row.models[other]["model"],
                **judge.summarize(verdicts),
            }
        )
    return {"model": judged["model"], "upstream_model": judged["upstream_model"], "pairs": pairs}
