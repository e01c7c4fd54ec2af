"""Tune lifecycle: create, read and control (API side); submit, poll and control the provider
job (worker side). State changes go through `transitions`; provider data is copied by `sync`.

Domain functions flush and never commit; the worker commits between the upload and the job
creation so a crash never loses an upload it already paid for."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import openai
from sqlalchemy import select, update
from sqlalchemy.orm import Session, object_session

from shared import blobs, pricing, providers, queue
from shared.attempts import MAX_ATTEMPTS
from shared.config import get_settings
from shared.datasets import service as datasets
from shared.errors import BudgetExceeded, InvalidInput, InvalidState, NotFound
from shared.ids import new_id
from shared.models import Tune, TuneEvent, utcnow
from shared.providers import lifecycle
from shared.tunes import deployment, promote, states, sync
from shared.tunes.transitions import apply_job, fail, record, transition
from shared.webhooks import service as webhooks

log = logging.getLogger(__name__)

MAX_POLL_BACKOFF = 300.0
METADATA_KEY = "tuneforge_tune_id"
# Provider errors that may pass: the worker retries them, and gives up after
# TUNEFORGE_PROVIDER_MAX_FAILURES of them in a row. Any other error status is a refusal.
TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
RETRYABLE_STATUSES = frozenset({408, 409})


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
    chosen = providers.resolve(provider, session=session, project_id=project_id)
    model = pricing.resolve_model(base_model)
    lifecycle.check_accepts(session, project_id=project_id, provider=chosen, model=model.name)
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
        provider=chosen.display_name,
        provider_account_id=chosen.account_id,
        n_epochs=n_epochs,
        suffix=suffix,
        user_metadata=metadata,
        quote=quote,
        webhook_url=webhook_url,
        webhook_events={"types": webhook_events} if webhook_events else None,
    )
    session.add(tune)
    record(
        session,
        tune,
        "status",
        f"Tune created for {model.name} on {chosen.display_name}.",
        data={"status": states.CREATED},
    )
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
    """The loss curve: one point per step, merged from metrics events and the result file."""
    get(session, project_id=project_id, tune_id=tune_id)
    stmt = (
        select(TuneEvent)
        .where(TuneEvent.tune_id == tune_id, TuneEvent.kind == "metrics")
        .order_by(TuneEvent.step, TuneEvent.id)
    )
    points: dict[int, dict[str, Any]] = {}
    for event in session.scalars(stmt):
        if event.step is not None and event.data:
            points.setdefault(event.step, {}).update({k: v for k, v in event.data.items() if v is not None})
    return list(points.values())


def checkpoints(session: Session, *, project_id: str, tune_id: str) -> list[dict[str, Any]]:
    get(session, project_id=project_id, tune_id=tune_id)
    stmt = (
        select(TuneEvent)
        .where(TuneEvent.tune_id == tune_id, TuneEvent.kind == "checkpoint")
        .order_by(TuneEvent.step)
    )
    return [event.data for event in session.scalars(stmt) if event.data]


def cancel(session: Session, *, project_id: str, tune_id: str) -> Tune:
    tune = get(session, project_id=project_id, tune_id=tune_id)
    if tune.status in states.TERMINAL:
        raise InvalidState(f"Tune {tune_id} is already {tune.status}.", code="tune_not_cancellable")
    if tune.provider_job_id is None:
        transition(session, tune, states.CANCELLED, "Cancelled before submission to the provider.")
    else:
        tune.cancel_requested = True
        queue.enqueue(session, queue.TaskName.CONTROL_TUNE, tune_id=tune.id, action="cancel")
    session.flush()
    return tune


def pause(session: Session, *, project_id: str, tune_id: str) -> Tune:
    """Ask the provider to pause a queued or running job; `resume` picks it up again."""
    return _request_control(session, project_id, tune_id, "pause", allowed=states.PAUSABLE)


def resume(session: Session, *, project_id: str, tune_id: str) -> Tune:
    return _request_control(session, project_id, tune_id, "resume", allowed=frozenset({states.PAUSED}))


def _request_control(
    session: Session, project_id: str, tune_id: str, action: str, *, allowed: frozenset[str]
) -> Tune:
    tune = get(session, project_id=project_id, tune_id=tune_id)
    if tune.status not in allowed or tune.provider_job_id is None:
        raise InvalidState(
            f"Tune {tune_id} is {tune.status}; only a tune that is {' or '.join(sorted(allowed))} "
            f"at the provider can be {action}d.",
            code=f"tune_not_{action}able",
        )
    queue.enqueue(session, queue.TaskName.CONTROL_TUNE, tune_id=tune.id, action=action)
    return tune


# --- worker side -------------------------------------------------------------------------


def upload_files(session: Session, tune_id: str) -> bool:
    """Upload the training (and validation) file; True when the job can be created next."""
    tune = _lock(session, tune_id)
    if tune is None or tune.status not in (states.CREATED, states.UPLOADING):
        return False
    dataset = datasets.get(session, project_id=tune.project_id, dataset_id=tune.dataset_id)
    transition(session, tune, states.UPLOADING, "Uploading the training file to the provider.")
    client = _client(tune)
    uploaded = False
    try:
        if tune.provider_file_id is None:
            tune.provider_file_id = _upload(client, dataset.train_blob, f"{tune.id}-train.jsonl")
            uploaded = True
        has_validation = bool((dataset.report or {}).get("validation_examples"))
        if has_validation and dataset.validation_blob and tune.provider_validation_file_id is None:
            tune.provider_validation_file_id = _upload(
                client, dataset.validation_blob, f"{tune.id}-validation.jsonl"
            )
            uploaded = True
    except openai.APIStatusError as exc:
        if not _refused(exc):
            raise
        fail(session, tune, "provider_rejected", _refusal("the training file", exc))
        return False
    if uploaded:  # the provider answered: failures are counted "in a row" from here
        tune.poll_failures = 0
    session.flush()
    return True


def create_job(session: Session, tune_id: str) -> None:
    tune = _lock(session, tune_id)
    if tune is None or tune.status != states.UPLOADING or tune.provider_job_id is not None:
        return
    client = _client(tune)
    try:
        # A create whose response was lost may still have made the job: look for our id first.
        job = _find_job(client, tune.id)
        message = f"Found provider job {job.id} created by an earlier attempt." if job else ""
        if job is None:
            hyperparameters: dict[str, Any] = {"n_epochs": tune.n_epochs or "auto"}
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
            message = f"Submitted as provider job {job.id}."
    except openai.APIStatusError as exc:
        if not _refused(exc):
            raise
        fail(session, tune, "provider_rejected", _refusal("the job", exc))
        return
    tune.poll_failures = 0
    tune.provider_job_id = job.id
    tune.next_poll_at = utcnow()
    transition(session, tune, states.SUBMITTED, message)
    if job.status not in states.TERMINAL:
        # A job adopted after it finished is left to the poll due now: it copies the events,
        # checkpoints and result metrics along with the final status.
        apply_job(session, tune, job)


def poll(session: Session, tune_id: str, *, now: datetime | None = None) -> None:
    now = now or utcnow()
    tune = _lock(session, tune_id)
    if tune is None or tune.status in states.TERMINAL or tune.provider_job_id is None:
        return
    provider = providers.for_tune(session, tune)
    client = providers.client(provider)
    try:
        job = client.fine_tuning.jobs.retrieve(tune.provider_job_id)
        sync.copy_events(session, tune, client)
        if job.status == states.SUCCEEDED:
            sync.copy_checkpoints(session, tune, client)
            sync.copy_result_metrics(session, tune, client, list(job.result_files or []))
            if not deployment.ready(session, tune, provider, job):
                # Trained but not serving yet (Azure deploys it first): look again soon.
                if tune.status not in states.TERMINAL:
                    tune.poll_failures = 0
                    tune.next_poll_at = now + timedelta(seconds=_poll_interval(states.RUNNING))
                session.flush()
                return
    except openai.NotFoundError:
        fail(
            session, tune, "provider_job_missing", f"The provider no longer knows job {tune.provider_job_id}."
        )
        return
    except (openai.APIConnectionError, openai.APIStatusError) as exc:
        # Unreachable, throttled, failing, or refusing us (a revoked key): backed off and counted,
        # so a provider that never recovers fails the tune instead of being polled forever.
        _poll_failed(session, tune, now, exc)
        return
    except deployment.Unavailable as exc:
        _poll_failed(session, tune, now, exc)
        return
    tune.poll_failures = 0
    apply_job(session, tune, job)
    if tune.status not in states.TERMINAL:
        tune.next_poll_at = now + timedelta(seconds=_poll_interval(tune.status))
    elif tune.status == states.SUCCEEDED and tune.on_success:
        promote.after_success(session, tune)
    session.flush()


def control_upstream(session: Session, tune_id: str, action: str) -> None:
    """Cancel, pause or resume the provider job; the job it returns is mirrored at once."""
    tune = _lock(session, tune_id)
    if tune is None or tune.status in states.TERMINAL or tune.provider_job_id is None:
        return
    jobs = _client(tune).fine_tuning.jobs
    calls = {"cancel": jobs.cancel, "pause": jobs.pause, "resume": jobs.resume}
    try:
        job = calls[action](tune.provider_job_id)
    except openai.BadRequestError as exc:
        # The job moved on meanwhile (finished, already paused…): the next poll shows where it is.
        record(session, tune, "message", f"The provider refused to {action} the job: {_error_message(exc)}")
        tune.next_poll_at = utcnow()
        session.flush()
        return
    apply_job(session, tune, job)
    tune.next_poll_at = utcnow()
    session.flush()


def submission_failed(session: Session, tune_id: str, exc: openai.APIError) -> bool:
    """Count a transient failure to upload or create the job (the caller's own transaction was
    rolled back); True when that was one too many and the tune has failed, so stop retrying."""
    tune = _lock(session, tune_id)
    if tune is None or tune.status not in (states.CREATED, states.UPLOADING):
        return True
    tune.poll_failures += 1  # provider failures in a row, whether submitting or polling
    session.flush()
    if tune.poll_failures < get_settings().provider_max_failures:
        return False
    fail(
        session,
        tune,
        "provider_unreachable",
        f"The provider failed {tune.poll_failures} attempts in a row to take this tune (last error: "
        f"{exc}). No provider job is recorded for it (one with metadata {METADATA_KEY}={tune.id} "
        "would be an orphan to cancel); check the provider's status, then start the tune again.",
    )
    return True


def give_up(session: Session, tune_id: str, doing: str) -> None:
    tune = _lock(session, tune_id)
    if tune is None or tune.status in states.TERMINAL:
        return
    fail(
        session,
        tune,
        "worker_crashed",
        f"A worker stopped abruptly {MAX_ATTEMPTS} times while {doing}, so Tuneforge stopped "
        "retrying. The operator's worker logs say why; start a new tune once it is fixed.",
    )


def nudge(session: Session, *, provider_job_id: str) -> str | None:
    """Poll now the tune that follows `provider_job_id` (a provider told us it changed)."""
    tune = session.scalar(select(Tune).where(Tune.provider_job_id == provider_job_id).limit(1))
    if tune is None or tune.status in states.TERMINAL:
        return None
    tune.next_poll_at = utcnow()
    queue.enqueue(session, queue.TaskName.POLL_TUNE, tune_id=tune.id)
    session.flush()
    return tune.id


def due_polls(session: Session, *, now: datetime, lease: timedelta, limit: int = 100) -> list[str]:
    """Claim up to `limit` tunes whose poll is due, most overdue first; the rest stay due for the
    next pass (the sweep's provider budget sets `limit`).

    Rows another transaction holds (a second scheduler's pass, a poll in progress) are skipped,
    not waited for; pushing `next_poll_at` out by `lease` keeps a claimed tune from being handed
    out again until the lease runs out. The scan walks `ix_tune_next_poll_at` (only followed
    tunes are in it) in order and stops after `limit` rows, however many are due."""
    stmt = (
        select(Tune.id)
        .where(Tune.next_poll_at <= now, Tune.status.not_in(states.TERMINAL))
        .order_by(Tune.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(stmt))
    for start in range(0, len(ids), _CLAIM_CHUNK):
        chunk = ids[start : start + _CLAIM_CHUNK]
        session.execute(update(Tune).where(Tune.id.in_(chunk)).values(next_poll_at=now + lease))
    return ids


_CLAIM_CHUNK = 5000  # ids per UPDATE, well under the driver's bound-parameter limit


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
    return providers.client(providers.for_tune(object_session(tune), tune))


def _find_job(client: openai.OpenAI, tune_id: str) -> Any | None:
    page = client.fine_tuning.jobs.list(metadata={METADATA_KEY: tune_id}, limit=10)
    return next((job for job in page.data if (job.metadata or {}).get(METADATA_KEY) == tune_id), None)


def _upload(client: openai.OpenAI, blob_key: str | None, filename: str) -> str:
    """Upload once: a file named for this tune with the right size is one an earlier attempt
    uploaded before its response was lost (files carry no metadata, so the name is the key)."""
    if blob_key is None:
        raise InvalidState("The dataset has no prepared training file.", code="dataset_not_ready")
    size = blobs.path_for(blob_key).stat().st_size
    recent = client.files.list(purpose="fine-tune", limit=100, order="desc").data
    earlier = next(
        (f for f in recent if f.filename == filename and f.bytes == size and f.status != "error"), None
    )
    if earlier is not None:
        return earlier.id
    with blobs.open_read(blob_key) as handle:
        return (
            client.with_options(max_retries=0).files.create(file=(filename, handle), purpose="fine-tune").id
        )


def _lock(session: Session, tune_id: str) -> Tune | None:
    return session.get(Tune, tune_id, with_for_update=True, populate_existing=True)


def _poll_failed(session: Session, tune: Tune, now: datetime, exc: Exception) -> None:
    tune.poll_failures += 1
    # Failures in a row while polling before we give up on a job we cannot see any more.
    if tune.poll_failures >= get_settings().provider_max_failures:
        fail(
            session,
            tune,
            "provider_unreachable",
            f"The provider did not answer {tune.poll_failures} polls in a row (last error: {exc}). "
            f"The job may still run there as {tune.provider_job_id}: check the provider's status, "
            "then start a new tune if it is gone.",
        )
        return
    backoff = min(get_settings().poll_interval_seconds * 2**tune.poll_failures, MAX_POLL_BACKOFF)
    # A provider that says when to come back is believed, within reason.
    tune.next_poll_at = now + timedelta(seconds=max(backoff, min(retry_after(exc) or 0, MAX_POLL_BACKOFF)))
    session.flush()


def retry_after(exc: Exception) -> float | None:
    """The wait a provider's error asked for (`retry-after-ms` or `retry-after`), in seconds."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(response.headers[header]) * scale
        except (KeyError, ValueError):
            continue
    return None


def _poll_interval(status: str) -> float:
    base = get_settings().poll_interval_seconds
    # Queued jobs can wait for hours; running ones change every few seconds.
    return base if status == states.RUNNING else base * 2


def _refused(exc: openai.APIStatusError) -> bool:
    """A refusal that repeating will not change (a 4xx other than 408, 409 and 429)."""
    return not isinstance(exc, TRANSIENT) and exc.status_code not in RETRYABLE_STATUSES


def _refusal(what: str, exc: openai.APIStatusError) -> str:
    hint = ""
    if exc.status_code in (401, 403):
        hint = " Check the provider's API key and what it is allowed to do, then start the tune again."
    return f"The provider refused {what} (HTTP {exc.status_code}): {_error_message(exc)}{hint}"


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)
