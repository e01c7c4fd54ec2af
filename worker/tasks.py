"""Each task: explicit name, ids as arguments, safe to run twice, bounded retries.

Transient provider errors are retried by Celery a few times; anything still undone is
picked up again by the sweep, which reads due work from the database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import openai
from sqlalchemy.orm import Session

from shared import attempts, queue, scheduler
from shared.datasets import service as datasets
from shared.db import session_scope
from shared.models import utcnow
from shared.queue import TaskName
from shared.tunes import jobs as tune_jobs
from shared.webhooks import service as webhooks

log = logging.getLogger(__name__)
app = queue.get_celery()

TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
# Longest provider Retry-After honoured as a Celery countdown (longer waits are cut to this).
MAX_RETRY_AFTER = 600.0
COMMON = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "soft_time_limit": 540,
    "time_limit": 600,
}


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
        try:
            # Two transactions: the uploaded file id is committed before the job is created, so
            # a crash in between re-uses the upload instead of paying for it twice.
            with session_scope() as session:
                if not tune_jobs.upload_files(session, tune_id):
                    return
            with session_scope() as session:
                tune_jobs.create_job(session, tune_id)
        except TRANSIENT as exc:
            # Counted in a transaction of its own: past the limit the tune fails with a reason.
            with session_scope() as session:
                if tune_jobs.submission_failed(session, tune_id, exc):
                    return
            wait = tune_jobs.retry_after(exc)
            if wait is not None:  # the provider said when to come back: not before
                raise submit_tune.retry(exc=exc, countdown=min(wait, MAX_RETRY_AFTER)) from exc
            raise  # Celery backs off and retries; past max_retries the sweep starts it again

    _guarded(f"submit:{tune_id}", work, lambda s: tune_jobs.give_up(s, tune_id, "submitting it"))


@app.task(name=TaskName.POLL_TUNE.value, max_retries=0, **COMMON)
def poll_tune(tune_id: str) -> None:
    def work() -> None:
        with session_scope() as session:
            tune_jobs.poll(session, tune_id)

    _guarded(f"poll:{tune_id}", work, lambda s: tune_jobs.give_up(s, tune_id, "polling its job"))


@app.task(name=TaskName.CONTROL_TUNE.value, autoretry_for=TRANSIENT, retry_backoff=2, max_retries=5, **COMMON)
def control_tune(tune_id: str, action: str) -> None:
    with session_scope() as session:
        tune_jobs.control_upstream(session, tune_id, action)


@app.task(name=TaskName.DELIVER_WEBHOOKS.value, max_retries=0, **COMMON)
def deliver_webhooks(delivery_ids: list[str]) -> None:
    """Send a batch: one destination's deliveries from one transaction, one sweep pass or a
    draining batch (`shared.webhooks.delivery`)."""
    counted: list[str] = []
    try:
        with session_scope() as session:
            webhooks.deliver_many(session, delivery_ids, start=partial(_start, counted))
            # Cleared in the transaction that records the outcomes: one commit fewer per batch.
            attempts.finish_many(session, counted)
    except BaseException:  # every way out except a dead process
        with session_scope() as session:
            attempts.finish_many(session, counted)
        raise


@app.task(name=TaskName.DELIVER_WEBHOOK.value, max_retries=0, **COMMON)
def deliver_webhook(delivery_id: str) -> None:
    """A message queued before batches existed."""
    deliver_webhooks([delivery_id])


def _start(counted: list[str], delivery_ids: list[str], together: bool) -> webhooks.Starts:
    """The worker-death cap of `_guarded`, counted per delivery (`deliver:{id}`), committed
    on a connection of its own before the batch sends (the batch's transaction is still open).

    A delivery that was in flight when a worker died leaves its batch and goes in one of its
    own, so one that kills its worker reaches the cap alone without taking the others along."""
    keys = {delivery_id: webhooks.attempt_key(delivery_id) for delivery_id in delivery_ids}
    with session_scope() as session:
        started = attempts.start_many(session, keys.values())
        died = [i for i in keys if started[keys[i]] > 1]
        if together and died:
            attempts.unstart(session, [keys[i] for i in died])
            counted += [keys[i] for i in keys if i not in died]
            return webhooks.Starts(send=[i for i in keys if i not in died], alone=died)
    counted += keys.values()
    over = [i for i in died if started[keys[i]] > attempts.MAX_ATTEMPTS]
    return webhooks.Starts(send=[i for i in keys if i not in over], give_up=over)


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
    """Re-enqueue every piece of due work the database knows about, polls within the provider
    budget (`shared.scheduler`)."""
    with session_scope() as session:
        scheduler.run_pass(session, now=utcnow())
