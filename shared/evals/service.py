"""Evals, API side: create (validate and resolve the models), read, list, and the sweep's claim.

The worker side (items, provider calls, scores) is `shared/evals/runner.py`."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import queue
from shared.chat import routing
from shared.datasets import service as datasets
from shared.errors import InvalidInput, NotFound
from shared.evals import metrics
from shared.ids import new_id
from shared.models import Eval, EvalItem, EvalOutput, unix
from shared.webhooks import service as webhooks

QUEUED, RUNNING, COMPLETED, FAILED = "queued", "running", "completed", "failed"
UNFINISHED = (QUEUED, RUNNING)
MAX_MODELS = 8
MAX_ITEMS = 2000


@dataclass(frozen=True)
class Generation:
    """Sent with every prompt. Temperature 0 by default: an eval compares models, not samples."""

    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float | None = None
    seed: int | None = None
    # Replaces the dataset's system message (or adds one); None keeps the dataset's.
    system_prompt: str | None = None


@dataclass(frozen=True)
class Judge:
    """LLM-as-judge: each later model against the first, asked twice with the order swapped."""

    model: str


@dataclass(frozen=True)
class EvalOptions:
    split: str = "validation"
    max_items: int = 100
    seed: int = 0
    language: str = "auto"  # auto | zh | en
    generation: Generation = field(default_factory=Generation)
    judge: Judge | None = None
    # Provider calls in flight at once for this eval (threads in the worker).
    concurrency: int = 4
    bootstrap_samples: int = 1000

    def check(self) -> None:
        if self.split not in ("train", "validation"):
            raise InvalidInput("split must be 'train' or 'validation'.", code="invalid_split", param="split")
        if not 1 <= self.max_items <= MAX_ITEMS:
            raise InvalidInput(
                f"max_items must be between 1 and {MAX_ITEMS}.", code="invalid_max_items", param="max_items"
            )
        if self.language not in ("auto", *metrics.LANGUAGES):
            raise InvalidInput("language must be auto, zh or en.", code="invalid_language", param="language")


def _resolve(session: Session, project_id: str, model: str, eval_id: str, param: str) -> dict[str, Any]:
    """The route an eval uses for `model` for its whole run (an alias split is picked once,
    sticky on the eval id, as the gateway picks per user)."""
    try:
        route = routing.pick(routing.lookup(session, project_id=project_id, model=model), user=eval_id)
    except NotFound as exc:
        raise NotFound(exc.message, code=exc.code, param=param) from None
    return {
        "model": model,
        "provider": route.provider.name,
        "upstream_model": route.upstream_model,
        "tune_id": route.tune_id,
    }


def create(
    session: Session,
    *,
    project_id: str,
    dataset_id: str,
    models: list[str],
    options: EvalOptions,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Eval:
    options.check()
    if not 2 <= len(models) <= MAX_MODELS or len(set(models)) != len(models):
        raise InvalidInput(
            f"models must name between 2 and {MAX_MODELS} different models.",
            code="invalid_models",
            param="models",
        )
    webhooks.validate_callback(webhook_url, webhook_events)
    dataset = datasets.get(session, project_id=project_id, dataset_id=dataset_id)
    try:
        datasets.content_key(dataset, options.split)
    except NotFound as exc:
        raise InvalidInput(exc.message, code="dataset_not_ready", param="dataset_id") from None
    if not (dataset.report or {}).get(f"{options.split}_examples"):
        raise InvalidInput(
            f"Dataset {dataset.id} has no {options.split} examples; upload it with a "
            "validation_fraction, or evaluate on split 'train'.",
            code="empty_split",
            param="split",
        )
    eval_id = new_id("eval")
    resolved = [
        _resolve(session, project_id, model, eval_id, f"models[{i}]") for i, model in enumerate(models)
    ]
    if options.judge is not None:
        resolved_judge = _resolve(session, project_id, options.judge.model, eval_id, "judge.model")
    row = Eval(
        id=eval_id,
        project_id=project_id,
        dataset_id=dataset.id,
        split=options.split,
        status=QUEUED,
        models=resolved,
        options={**asdict(options), "judge": resolved_judge if options.judge else None},
        webhook_url=webhook_url,
        webhook_events={"types": webhook_events} if webhook_events else None,
    )
    session.add(row)
    session.flush()
    queue.enqueue(session, queue.TaskName.RUN_EVAL, eval_id=row.id)
    return row


def get(session: Session, *, project_id: str, eval_id: str) -> Eval:
    row = session.get(Eval, eval_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"No eval {eval_id!r} in this project.", code="eval_not_found", param="eval_id")
    return row


def list_evals(
    session: Session, *, project_id: str, limit: int, after: str | None
) -> tuple[list[Eval], bool]:
    stmt = select(Eval).where(Eval.project_id == project_id).order_by(Eval.id.desc()).limit(limit + 1)
    if after:
        stmt = stmt.where(Eval.id < after)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


def claim_stale(session: Session, *, now: datetime, older_than: datetime, limit: int = 100) -> list[str]:
    """Unfinished evals untouched for a while (a lost message or a dead worker). A running eval
    touches `updated_at` with every output it stores, so only a stopped one goes stale."""
    stmt = (
        select(Eval)
        .where(Eval.status.in_(UNFINISHED), Eval.updated_at < older_than)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(stmt))
    for row in rows:
        row.updated_at = now
    session.flush()
    return [row.id for row in rows]


def eval_dict(row: Eval, *, done: int | None = None) -> dict[str, Any]:
    """The eval without its items (the webhook payload, and the head of GET /v1/evals/{id})."""
    return {
        "id": row.id,
        "object": "eval",
        "status": row.status,
        "dataset_id": row.dataset_id,
        "split": row.split,
        "models": [m["model"] for m in row.models],
        "resolved_models": row.models,
        "options": {k: v for k, v in row.options.items() if k != "split"},
        "items_total": row.items_total,
        "items_done": done,
        "metrics": (row.metrics or {}).get("models"),
        "language": (row.metrics or {}).get("language"),
        "judge": (row.metrics or {}).get("judge"),
        "error": {"code": row.error_code, "message": row.error_message} if row.error_code else None,
        "created_at": unix(row.created_at),
        "completed_at": unix(row.completed_at),
    }


def progress(session: Session, row: Eval) -> int:
    """Items whose every model has answered."""
    answered: dict[int, int] = {}
    slots = {str(i) for i in range(len(row.models))}
    for position, slot in session.execute(
        select(EvalOutput.position, EvalOutput.slot).where(EvalOutput.eval_id == row.id)
    ):
        if slot in slots:
            answered[position] = answered.get(position, 0) + 1
    return sum(1 for n in answered.values() if n == len(slots))


def items_table(
    session: Session, row: Eval, *, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """Question, reference and each model's answer and scores, side by side, by position."""
    stmt = select(EvalItem).where(EvalItem.eval_id == row.id).order_by(EvalItem.position).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    items = list(session.scalars(stmt))
    if not items:
        return []
    positions = [item.position for item in items]
    outputs: dict[tuple[int, str], EvalOutput] = {
        (out.position, out.slot): out
        for out in session.scalars(
            select(EvalOutput).where(
                EvalOutput.eval_id == row.id, EvalOutput.position.between(positions[0], positions[-1])
            )
        )
    }
    table = []
    for item in items:
        answers = []
        for index, model in enumerate(row.models):
            out = outputs.get((item.position, str(index)))
            answers.append(
                {
                    "model": model["model"],
                    "answer": out.answer if out else None,
                    "error": out.error if out else None,
                    "scores": out.scores if out else None,
                }
            )
        verdicts = [
            {"slot": slot, "verdict": out.scores}
            for (position, slot), out in sorted(outputs.items())
            if position == item.position and slot.startswith("judge:")
        ]
        table.append(
            {
                "position": item.position,
                "question": item.question,
                "reference": item.reference,
                "outputs": answers,
                **({"judge": verdicts} if verdicts else {}),
            }
        )
    return table


def to_csv(session: Session, row: Eval) -> str:
    """The per-item table as CSV: question, reference, then per model its answer and scores."""
    language = (row.metrics or {}).get("language")
    tokenizations = metrics.TOKENIZATIONS.get(language or "", ())
    score_columns = [(t, name) for t in tokenizations for name in metrics.ITEM_SCORES]
    header = ["position", "question", "reference"]
    for model in row.models:
        name = model["model"]
        header += [f"{name} answer", f"{name} error", f"{name} exact_match", f"{name} answer_length"]
        header += [f"{name} {t}.{metric}" for t, metric in score_columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for item in items_table(session, row):
        line: list[Any] = [item["position"], item["question"], item["reference"]]
        for out in item["outputs"]:
            scores = out["scores"] or {}
            line += [out["answer"], (out["error"] or {}).get("code", ""), scores.get("exact_match", "")]
            line.append(scores.get("answer_length", ""))
            line += [_round((scores.get(t) or {}).get(metric)) for t, metric in score_columns]
        writer.writerow(line)
    return buffer.getvalue()


def _round(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
