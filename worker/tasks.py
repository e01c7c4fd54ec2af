"""Each task: explicit name, ids as arguments, safe to run twice, bounded retries.

Transient provider errors are retried by Celery a few times; anything still undone is
picked up again by the sweep, which reads due work from the database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import openai
from sqlalchemy.orm import Session

from shared import attempts, idempotency, queue
from shared.config import get_settings
from shared.datasets import service as datasets
from shared.db import session_scope
from shared.models import utcnow
from shared.queue import TaskName
from shared.tunes import service as tunes
from shared.webhooks import service as webhooks

log = logging.getLogger(__name__)
app = queue.get_celery()

TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
COMMON = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "soft_time_limit": 540,
    "time_limit": 600,
}
STALE_AFTER = timedelta(seconds=120)


@app.task(name=TaskName.PREPARE_DATASET.value, max_retries=3, **COMMON)
def prepare_dataset(dataset_id: str) -> None:
    with session_scope() as session:
        if not datasets.start(session, dataset_id):
            return
    with session_scope() as session:
        datasets.prepare(session, dataset_id)


@app.task(
    name=TaskName.SUBMIT_TUNE.value,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=5,
    **COMMON,
)
def submit_tune(tune_id: str) -> None:
    def work() -> None:
        # Two transactions: the uploaded file id is committed before the job is created, so a
        # crash in between re-uses the upload instead of paying for it twice.
        with session_scope() as session:
            if not tunes.upload_files(session, tune_id):
                return
        with session_scope() as session:
            tunes.create_job(session, tune_id)

    _guarded(f"submit:{tune_id}", work, lambda s: tunes.give_up(s, tune_id, "submitting it"))


@app.task(name=TaskName.POLL_TUNE.value, max_retries=0, **COMMON)
def poll_tune(tune_id: str) -> None:
    def work() -> None:
        with session_scope() as session:
            tunes.poll(session, tune_id)

    _guarded(f"poll:{tune_id}", work, lambda s: tunes.give_up(s, tune_id, "polling its job"))


@app.task(name=TaskName.CONTROL_TUNE.value, autoretry_for=TRANSIENT, retry_backoff=2, max_retries=5, **COMMON)
def control_tune(tune_id: str, action: str) -> None:
    with session_scope() as session:
        tunes.control_upstream(session, tune_id, action)


@app.task(name=TaskName.DELIVER_WEBHOOK.value, max_retries=0, **COMMON)
def deliver_webhook(delivery_id: str) -> None:
    def work() -> None:
        with session_scope() as session:
            webhooks.deliver(session, delivery_id)

    _guarded(f"deliver:{delivery_id}", work, lambda s: webhooks.give_up(s, delivery_id))


def _guarded(key: str, work: Callable[[], None], give_up: Callable[[Session], None]) -> None:
    """Run `work` unless it already started MAX_ATTEMPTS times without returning, which only a
    dying worker causes; then `give_up` records why the object will not be retried."""
    with session_scope() as session:
        started = attempts.start(session, key)
    if started > attempts.MAX_ATTEMPTS:
        log.error("%s: the worker died %d times running it; giving up", key, started - 1)
        with session_scope() as session:
            give_up(session)
            attempts.finish(session, key)
        return
    try:
        work()
    finally:  # every way out except a dead process
        with session_scope() as session:
            attempts.finish(session, key)


@app.task(name=TaskName.SWEEP.value, max_retries=0, expires=30, **COMMON)
def sweep() -> None:
    """Re-enqueue every piece of due work the database knows about."""
    now = utcnow()
    lease = timedelta(seconds=get_settings().lease_seconds)
    with session_scope() as session:
        for tune_id in tunes.due_polls(session, now=now, lease=lease):
            queue.enqueue(session, TaskName.POLL_TUNE, tune_id=tune_id)
        for tune_id in tunes.claim_stuck_submissions(session, now=now, older_than=now - STALE_AFTER):
            queue.enqueue(session, TaskName.SUBMIT_TUNE, tune_id=tune_id)
        for dataset_id in datasets.claim_stale(session, now=now, older_than=now - STALE_AFTER):
            queue.enqueue(session, TaskName.PREPARE_DATASET, dataset_id=dataset_id)
        for delivery_id in webhooks.due_deliveries(session, now=now, lease=lease):
            queue.enqueue(session, TaskName.DELIVER_WEBHOOK, delivery_id=delivery_id)
        idempotency.purge_expired(session, now=now)
