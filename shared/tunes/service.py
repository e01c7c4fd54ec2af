"""Tune lifecycle: create and cancel (API side), submit and poll (worker side).

Domain functions flush and never commit; the worker commits between the upload and the job
creation so a crash never loses an upload it already paid for."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import openai
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import blobs, pricing, providers, queue
from shared.config import get_settings
from shared.datasets import service as datasets
from shared.errors import BudgetExceeded, InvalidInput, InvalidState, NotFound
from shared.ids import new_id
from shared.models import Tune, TuneEvent, utcnow
from shared.tunes import states
from shared.tunes.serialize import tune_dict
from shared.webhooks import service as webhooks

log = logging.getLogger(__name__)

# Failures in a row while polling before we give up on a job we cannot see any more.
MAX_POLL_FAILURES = 30
METADATA_KEY = "tuneforge_tune_id"


def create(
    session: Session,
    *,
    project_id: str,
    dataset_id: str,
    base_model: str,
    n_epochs: int | None = None,
    suffix: str | None = None,
    provider: str | None = None,
    metadata: dict[str, str] | None = None,
    max_cost_usd: float | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Tune:
    dataset = datasets.get(session, project_id=project_id, dataset_id=dataset_id)
    if dataset.status != "ready":
        raise InvalidState(
            f"Dataset {dataset_id} is {dataset.status}; wait for it to be ready before starting a tune.",
            code="dataset_not_ready",
            param="dataset_id",
        )
    chosen = providers.resolve(provider)
    model = pricing.resolve_model(base_model)
    if metadata and len(metadata) > 15:
        raise InvalidInput(
            "metadata takes at most 15 pairs (one is reserved).", code="invalid_metadata", param="metadata"
        )
    webhooks.validate_callback(webhook_url, webhook_events)
    quote = datasets.quote(session, dataset, model=model.name, n_epochs=n_epochs)
    limits = [v for v in (max_cost_usd, get_settings().default_budget_usd) if v is not None]
    budget = min(limits) if limits else None
    if budget is not None and quote["cost_usd"] > budget:
        raise BudgetExceeded(
            f"This tune is quoted at ${quote['cost_usd']:.2f}, above the limit of ${budget:.2f}. "
            "Raise max_cost_usd, sample fewer examples, or pick a cheaper base model.",
            param="max_cost_usd",
            details={"quote": quote},
        )
    tune = Tune(
        id=new_id("tune"),
        project_id=project_id,
        dataset_id=dataset.id,
        status=states.CREATED,
        base_model=model.name,
        provider=chosen.name,
        n_epochs=n_epochs,
        suffix=suffix,
        user_metadata=metadata,
        quote=quote,
        webhook_url=webhook_url,
        webhook_events={"types": webhook_events} if webhook_events else None,
    )
    session.add(tune)
    _record(session, tune, "status", f"Tune created for {model.name} on {chosen.name}.")
    session.flush()
    queue.enqueue(session, queue.TaskName.SUBMIT_TUNE, tune_id=tune.id)
    return tune


def get(session: Session, *, project_id: str, tune_id: str) -> Tune:
    tune = session.get(Tune, tune_id)
    if tune is None or tune.project_id != project_id:
        raise NotFound(f"No tune {tune_id!r} in this project.", code="tune_not_found", param="tune_id")
    return tune


def list_tunes(
    session: Session, *, project_id: str, limit: int, after: str | None
) -> tuple[list[Tune], bool]:
    stmt = select(Tune).where(Tune.project_id == project_id).order_by(Tune.id.desc()).limit(limit + 1)
    if after:
        stmt = stmt.where(Tune.id < after)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


def list_events(session: Session, *, project_id: str, tune_id: str) -> list[TuneEvent]:
    get(session, project_id=project_id, tune_id=tune_id)
    # Ids are monotonic per process, so id order is the order in which events were recorded;
    # provider timestamps have whole-second precision and would tie.
    stmt = select(TuneEvent).where(TuneEvent.tune_id == tune_id).order_by(TuneEvent.id)
    return list(session.scalars(stmt))


def metrics(session: Session, *, project_id: str, tune_id: str) -> list[dict[str, Any]]:
    """The loss curve: one point per step, from the provider's metrics events."""
    get(session, project_id=project_id, tune_id=tune_id)
    stmt = (
        select(TuneEvent)
        .where(TuneEvent.tune_id == tune_id, TuneEvent.kind == "metrics")
        .order_by(TuneEvent.step, TuneEvent.id)
    )
    points: dict[int, dict[str, Any]] = {}
    for event in session.scalars(stmt):
        if event.step is not None and event.data:
            points[event.step] = {k: v for k, v in event.data.items() if v is not None}
    return list(points.values())


def cancel(session: Session, *, project_id: str, tune_id: str) -> Tune:
    tune = get(session, project_id=project_id, tune_id=tune_id)
    if tune.status in states.TERMINAL:
        raise InvalidState(f"Tune {tune_id} is already {tune.status}.", code="tune_not_cancellable")
    if tune.provider_job_id is None:
        _transition(session, tune, states.CANCELLED, "Cancelled before submission to the provider.")
    else:
        tune.cancel_requested = True
        queue.enqueue(session, queue.TaskName.CANCEL_TUNE, tune_id=tune.id)
    session.flush()
    return tune


# --- worker side -------------------------------------------------------------------------


def upload_files(session: Session, tune_id: str) -> bool:
    """Upload the training (and validation) file; True when the job can be created next."""
    tune = _lock(session, tune_id)
    if tune is None or tune.status not in (states.CREATED, states.UPLOADING):
        return False
    dataset = datasets.get(session, project_id=tune.project_id, dataset_id=tune.dataset_id)
    _transition(session, tune, states.UPLOADING, "Uploading the training file to the provider.")
    client = _client(tune)
    if tune.provider_file_id is None:
        tune.provider_file_id = _upload(client, dataset.train_blob, f"{dataset.id}-train.jsonl")
    has_validation = bool((dataset.report or {}).get("validation_examples"))
    if has_validation and dataset.validation_blob and tune.provider_validation_file_id is None:
        tune.provider_validation_file_id = _upload(
            client, dataset.validation_blob, f"{dataset.id}-validation.jsonl"
        )
    session.flush()
    return True


def create_job(session: Session, tune_id: str) -> None:
    tune = _lock(session, tune_id)
    if tune is None or tune.status != states.UPLOADING or tune.provider_job_id is not None:
        return
    client = _client(tune)
    # A create whose response was lost may still have made the job: look for our id first.
    job = _find_job(client, tune.id)
    message = f"Found provider job {job.id} created by an earlier attempt." if job else ""
    if job is None:
        hyperparameters: dict[str, Any] = {"n_epochs": tune.n_epochs or "auto"}
        try:
            # No SDK retries here: a blind retry of a create can double-bill; the task retries
            # instead, and then finds the job above if the first attempt did create it.
            job = client.with_options(max_retries=0).fine_tuning.jobs.create(
                model=tune.base_model,
                training_file=tune.provider_file_id or "",
                validation_file=tune.provider_validation_file_id,
                suffix=tune.suffix,
                metadata={**(tune.user_metadata or {}), METADATA_KEY: tune.id},
                method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            )
        except openai.BadRequestError as exc:
            _fail(session, tune, "provider_rejected", f"The provider refused the job: {_error_message(exc)}")
            return
        message = f"Submitted as provider job {job.id}."
    tune.provider_job_id = job.id
    tune.next_poll_at = utcnow()
    _transition(session, tune, states.SUBMITTED, message)
    _apply_job(session, tune, job)


def poll(session: Session, tune_id: str, *, now: datetime | None = None) -> None:
    now = now or utcnow()
    tune = _lock(session, tune_id)
    if tune is None or tune.status in states.TERMINAL or tune.provider_job_id is None:
        return
    client = _client(tune)
    try:
        job = client.fine_tuning.jobs.retrieve(tune.provider_job_id)
        _copy_events(session, tune, client)
    except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
        tune.poll_failures += 1
        if tune.poll_failures >= MAX_POLL_FAILURES:
            _fail(
                session,
                tune,
                "provider_unreachable",
                f"Gave up after {tune.poll_failures} failed polls: {exc}",
            )
            return
        backoff = min(get_settings().poll_interval_seconds * 2**tune.poll_failures, 300)
        tune.next_poll_at = now + timedelta(seconds=backoff)
        session.flush()
        return
    except openai.NotFoundError:
        _fail(
            session, tune, "provider_job_missing", f"The provider no longer knows job {tune.provider_job_id}."
        )
        return
    tune.poll_failures = 0
    _apply_job(session, tune, job)
    if tune.status not in states.TERMINAL:
        tune.next_poll_at = now + timedelta(seconds=_poll_interval(tune.status))
    session.flush()


def cancel_upstream(session: Session, tune_id: str) -> None:
    tune = _lock(session, tune_id)
    if tune is None or tune.status in states.TERMINAL or tune.provider_job_id is None:
        return
    try:
        job = _client(tune).fine_tuning.jobs.cancel(tune.provider_job_id)
    except openai.BadRequestError:
        # Already finished upstream: the next poll records how it ended.
        tune.next_poll_at = utcnow()
        session.flush()
        return
    _apply_job(session, tune, job)


def due_polls(session: Session, *, now: datetime, lease: timedelta, limit: int = 100) -> list[str]:
    stmt = (
        select(Tune)
        .where(Tune.next_poll_at <= now, Tune.status.not_in(states.TERMINAL))
        .order_by(Tune.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(stmt))
    for tune in rows:
        tune.next_poll_at = now + lease
    session.flush()
    return [tune.id for tune in rows]


def claim_stuck_submissions(
    session: Session, *, now: datetime, older_than: datetime, limit: int = 100
) -> list[str]:
    """Tunes left before job creation by a lost message or a dead worker; see due_polls."""
    stmt = (
        select(Tune)
        .where(Tune.status.in_((states.CREATED, states.UPLOADING)), Tune.updated_at < older_than)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(stmt))
    for tune in rows:
        tune.updated_at = now
    session.flush()
    return [tune.id for tune in rows]


# --- internals ---------------------------------------------------------------------------


def _client(tune: Tune) -> openai.OpenAI:
    return providers.client(providers.resolve(tune.provider))


def _find_job(client: openai.OpenAI, tune_id: str) -> Any | None:
    page = client.fine_tuning.jobs.list(metadata={METADATA_KEY: tune_id}, limit=10)
    return next((job for job in page.data if (job.metadata or {}).get(METADATA_KEY) == tune_id), None)


def _upload(client: openai.OpenAI, blob_key: str | None, filename: str) -> str:
    if blob_key is None:
        raise InvalidState("The dataset has no prepared training file.", code="dataset_not_ready")
    with blobs.open_read(blob_key) as handle:
        return client.files.create(file=(filename, handle), purpose="fine-tune").id


def _lock(session: Session, tune_id: str) -> Tune | None:
    return session.get(Tune, tune_id, with_for_update=True, populate_existing=True)


def _apply_job(session: Session, tune: Tune, job: Any) -> None:
    status = job.status if job.status in states.PROVIDER_STATUSES else tune.status
    if status == states.SUCCEEDED:
        tune.fine_tuned_model = job.fine_tuned_model
        tune.trained_tokens = job.trained_tokens
        if tune.started_at is None:
            # Polling can miss a short running phase; a finished job did run, and clients wait for it.
            _transition(session, tune, states.RUNNING, "Training started.")
        tune.finished_at = utcnow()
        _transition(session, tune, status, f"Fine-tuned model {job.fine_tuned_model} is ready.")
    elif status == states.FAILED:
        error = getattr(job, "error", None)
        code = getattr(error, "code", None) or "provider_job_failed"
        message = getattr(error, "message", None) or "The provider reported the job as failed."
        _fail(session, tune, code, message)
    else:
        _transition(session, tune, status, f"Provider job is {status}.")
    session.flush()


def _fail(session: Session, tune: Tune, code: str, message: str) -> None:
    tune.error_code = code
    tune.error_message = message
    tune.finished_at = utcnow()
    _transition(session, tune, states.FAILED, message)


def _transition(session: Session, tune: Tune, status: str, message: str) -> None:
    if tune.status == status:
        return
    tune.status = status
    if status == states.RUNNING and tune.started_at is None:
        tune.started_at = utcnow()
    if status == states.CANCELLED:
        tune.finished_at = tune.finished_at or utcnow()
    if status in states.TERMINAL:
        tune.next_poll_at = None
    _record(session, tune, "status", message, data={"status": status})
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


def _record(
    session: Session, tune: Tune, kind: str, message: str, *, data: dict[str, Any] | None = None
) -> None:
    session.add(
        TuneEvent(
            id=new_id("tev"), tune_id=tune.id, source="tuneforge", kind=kind, message=message, data=data
        )
    )


def _copy_events(session: Session, tune: Tune, client: openai.OpenAI) -> None:
    known = set(
        session.scalars(
            select(TuneEvent.provider_event_id).where(
                TuneEvent.tune_id == tune.id, TuneEvent.provider_event_id.is_not(None)
            )
        )
    )
    fresh = []
    # Events come newest first; stop paging at the first one we already have.
    for event in client.fine_tuning.jobs.list_events(tune.provider_job_id or "", limit=100):
        if event.id in known:
            break
        fresh.append(event)
    for event in reversed(fresh):
        data = event.data if isinstance(event.data, dict) else None
        is_metrics = event.type == "metrics" and data is not None
        session.add(
            TuneEvent(
                id=new_id("tev"),
                tune_id=tune.id,
                source="provider",
                kind="metrics" if is_metrics else "message",
                provider_event_id=event.id,
                level=event.level or "info",
                message=event.message,
                data=data,
                step=int(data["step"]) if is_metrics and data and "step" in data else None,
                created_at=datetime.fromtimestamp(event.created_at, tz=utcnow().tzinfo),
            )
        )


def _poll_interval(status: str) -> float:
    base = get_settings().poll_interval_seconds
    # Queued jobs can wait for hours; running ones change every few seconds.
    return base if status == states.RUNNING else base * 2


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)
