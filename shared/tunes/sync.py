"""Copy what the provider knows about a job into Postgres: its events (messages and metric
points), its checkpoints, and the per-step metrics of its result file.

Every copy is keyed by the provider's own id, so running one twice adds nothing."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import openai
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ids import new_id
from shared.models import Tune, TuneEvent

RESULT_COLUMNS = ("train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def copy_events(session: Session, tune: Tune, client: openai.OpenAI) -> None:
    known = _known_ids(session, tune)
    fresh = []
    # Events come newest first; stop paging at the first one we already have.
    for event in client.fine_tuning.jobs.list_events(tune.provider_job_id or "", limit=100):
        if event.id in known:
            break
        fresh.append(event)
    for event in reversed(fresh):
        data = event.data if isinstance(event.data, dict) else None
        is_metrics = event.type == "metrics" and data is not None and "step" in data
        _add(
            session,
            tune,
            kind="metrics" if is_metrics else "message",
            provider_id=event.id,
            message=event.message,
            level=event.level or "info",
            data=data,
            step=int(data["step"]) if is_metrics and data else None,
            at=event.created_at,
        )


def copy_checkpoints(session: Session, tune: Tune, client: openai.OpenAI) -> None:
    known = _known_ids(session, tune)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(tune.provider_job_id or "", limit=100).data
    for checkpoint in reversed(checkpoints):
        if checkpoint.id in known:
            continue
        _add(
            session,
            tune,
            kind="checkpoint",
            provider_id=checkpoint.id,
            message=f"Checkpoint at step {checkpoint.step_number}: {checkpoint.fine_tuned_model_checkpoint}",
            data={
                "id": checkpoint.id,
                "step": checkpoint.step_number,
                "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
                "metrics": checkpoint.metrics.model_dump(exclude_none=True) if checkpoint.metrics else {},
            },
            step=checkpoint.step_number,
            at=checkpoint.created_at,
        )


def copy_result_metrics(session: Session, tune: Tune, client: openai.OpenAI, result_files: list[str]) -> None:
    """The result CSV has a row per step, where events may have been thinned out upstream."""
    known = _known_ids(session, tune)
    for file_id in result_files[:1]:
        text = client.files.content(file_id).text
        for row in csv.DictReader(io.StringIO(text)):
            step = _number(row.get("step"))
            if step is None or f"{file_id}:{int(step)}" in known:
                continue
            point: dict[str, Any] = {"step": int(step)}
            point.update({k: v for k in RESULT_COLUMNS if (v := _number(row.get(k))) is not None})
            _add(
                session,
                tune,
                kind="metrics",
                provider_id=f"{file_id}:{int(step)}",
                message=f"Result file step {int(step)}",
                data=point,
                step=int(step),
                source="result_file",
            )


def _known_ids(session: Session, tune: Tune) -> set[str]:
    stmt = select(TuneEvent.provider_event_id).where(
        TuneEvent.tune_id == tune.id, TuneEvent.provider_event_id.is_not(None)
    )
    return {value for value in session.scalars(stmt) if value is not None}


def _add(
    session: Session,
    tune: Tune,
    *,
    kind: str,
    provider_id: str,
    message: str,
    data: dict[str, Any] | None,
    step: int | None,
    level: str = "info",
    at: int | None = None,
    source: str = "provider",
) -> None:
    event = TuneEvent(
        id=new_id("tev"),
        tune_id=tune.id,
        source=source,
        kind=kind,
        provider_event_id=provider_id,
        level=level,
        message=message,
        data=data,
        step=step,
    )
    if at is not None:
        event.created_at = datetime.fromtimestamp(at, tz=UTC)
    session.add(event)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
