"""The Celery app, the task names, and enqueue-after-commit.

The API and the domain code enqueue by task *name*; only `worker/` registers the functions.
A message is a hint that work is due; Postgres holds the truth, and the scheduler's sweep
re-enqueues anything a lost message left behind."""

from __future__ import annotations

import logging
from enum import StrEnum
from functools import lru_cache
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from shared.config import Settings, get_settings

log = logging.getLogger(__name__)


class TaskName(StrEnum):
    PREPARE_DATASET = "tuneforge.datasets.prepare"
    SUBMIT_TUNE = "tuneforge.tunes.submit"
    POLL_TUNE = "tuneforge.tunes.poll"
    CONTROL_TUNE = "tuneforge.tunes.control"
    # One delivery per message: only messages queued before batches existed still use it.
    DELIVER_WEBHOOK = "tuneforge.webhooks.deliver"
    DELIVER_WEBHOOKS = "tuneforge.webhooks.deliver_batch"
    SWEEP = "tuneforge.scheduler.sweep"
    RUN_EVAL = "tuneforge.evals.run"


def webhook_queue(settings: Settings | None = None) -> str:
    """Deliveries have a queue of their own, consumed by its own worker (`tuneforge worker --queue
    webhooks`), so slow receivers never take the slots dataset and tune work runs in."""
    return f"{(settings or get_settings()).celery_queue}.webhooks"


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    app = Celery("tuneforge", broker=settings.celery_broker_url)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_routes={
            name.value: {"queue": webhook_queue(settings)}
            for name in (TaskName.DELIVER_WEBHOOK, TaskName.DELIVER_WEBHOOKS)
        },
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=600,
        task_soft_time_limit=540,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {"task": TaskName.SWEEP.value, "schedule": settings.scheduler_interval_seconds}
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    if settings.celery_broker_url.startswith("redis"):
        # Unacked messages come back after this long if a worker vanished mid-task.
        app.conf.broker_transport_options = {"visibility_timeout": 3600}
    if settings.celery_broker_url.startswith("redis://"):
        # So a worker survives Redis restarting under a running task (see shared/broker.py);
        # rediss:// and sentinel:// keep kombu's own transport.
        app.conf.broker_transport = "shared.broker:Transport"
    return app


def enqueue(session: Session, name: TaskName, **kwargs: Any) -> None:
    """Queue a task to be published only once `session` commits."""
    session.info.setdefault("tuneforge_outbox", []).append((name.value, kwargs))


def enqueue_batched(
    session: Session, name: TaskName, *, group: str, field: str, item: Any, limit: int
) -> None:
    """Add `item` to the list argument `field` of this transaction's message for `group`, or
    start a new one (past `limit` items): many objects changed in one transaction become a
    few messages instead of one each."""
    batches: dict[tuple[str, str], dict[str, list[Any]]] = session.info.setdefault("tuneforge_batches", {})
    kwargs = batches.get((name.value, group))
    if kwargs is None or len(kwargs[field]) >= limit:
        kwargs = {field: []}
        batches[(name.value, group)] = kwargs
        enqueue(session, name, **kwargs)  # the same list: items added later travel with it
    kwargs[field].append(item)


def take_pending(session: Session) -> list[tuple[str, dict[str, Any]]]:
    session.info.pop("tuneforge_batches", None)
    pending: list[tuple[str, dict[str, Any]]] = session.info.pop("tuneforge_outbox", [])
    return pending


def publish_all(pending: list[tuple[str, dict[str, Any]]]) -> None:
    app = get_celery()
    for name, kwargs in pending:
        try:
            app.send_task(name, kwargs=kwargs)
        except Exception:  # noqa: BLE001 - the sweep re-drives work whose message was lost
            log.warning("publish failed for %s", name, exc_info=True)
