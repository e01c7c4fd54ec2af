"""Tune lifecycle, worker side: upload the files, create the provider job, poll it and pass on
pause/resume/cancel. State changes go through `transitions`; provider data is copied by `sync`.

Domain functions flush and never commit; the worker commits between the upload and the job
creation so a crash never loses an upload it already paid for."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import openai
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from shared import blobs, providers, queue
from shared.attempts import MAX_ATTEMPTS
from shared.config import get_settings
from shared.datasets import service as datasets
from shared.errors import InvalidState
from shared.models import Tune, utcnow
from shared.tunes import deployment, promote, states, sync
from shared.tunes.transitions import apply_job, fail, record, transition

log = logging.getLogger(__name__)

MAX_POLL_BACKOFF = 300.0
METADATA_KEY = "tuneforge_tune_id"
# Provider errors that may pass: the worker retries them, and gives up after
# TUNEFORGE_PROVIDER_MAX_FAILURES of them in a row. Any other error status is a refusal.
TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
RETRYABLE_STATUSES = frozenset({408, 409})


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
