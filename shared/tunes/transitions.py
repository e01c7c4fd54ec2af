"""Every tune state change goes through here: the status, its event row and, for the statuses
clients hear about, the webhook outbox rows, all in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.ids import new_id
from shared.models import Tune, TuneEvent, utcnow
from shared.tunes import states
from shared.tunes.serialize import tune_dict
from shared.webhooks import service as webhooks


def transition(session: Session, tune: Tune, status: str, message: str) -> None:
    if tune.status == status:
        return
    tune.status = status
    if status == states.RUNNING and tune.started_at is None:
        tune.started_at = utcnow()
    if status == states.CANCELLED:
        tune.finished_at = tune.finished_at or utcnow()
    if status in states.TERMINAL:
        tune.next_poll_at = None
    record(session, tune, "status", message, data={"status": status})
    session.flush()
    if status in states.ANNOUNCED:
        webhooks.emit(
            session,
            project_id=tune.project_id,
            event_type=f"tune.{status}",
            data=tune_dict(tune),
            callback_url=tune.webhook_url,
            callback_events=(tune.webhook_events or {}).get("types"),
        )


def fail(session: Session, tune: Tune, code: str, message: str) -> None:
    tune.error_code = code
    tune.error_message = message
    tune.finished_at = utcnow()
    transition(session, tune, states.FAILED, message)


def apply_job(session: Session, tune: Tune, job: Any) -> None:
    """Mirror the provider job's status onto the tune."""
    status = job.status if job.status in states.PROVIDER_STATUSES else tune.status
    if status == states.SUCCEEDED:
        tune.fine_tuned_model = job.fine_tuned_model
        tune.trained_tokens = job.trained_tokens
        if tune.started_at is None:
            # Polling can miss a short running phase; a finished job did run, and clients wait for it.
            transition(session, tune, states.RUNNING, "Training started.")
        tune.finished_at = utcnow()
        transition(session, tune, status, f"Fine-tuned model {job.fine_tuned_model} is ready.")
    elif status == states.FAILED:
        error = getattr(job, "error", None)
        code = getattr(error, "code", None) or "provider_job_failed"
        message = getattr(error, "message", None) or "The provider reported the job as failed."
        fail(session, tune, code, message)
    else:
        transition(session, tune, status, f"Provider job is {status}.")
    session.flush()


def record(
    session: Session, tune: Tune, kind: str, message: str, *, data: dict[str, Any] | None = None
) -> None:
    session.add(
        TuneEvent(
            id=new_id("tev"), tune_id=tune.id, source="tuneforge", kind=kind, message=message, data=data
        )
    )
