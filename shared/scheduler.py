"""One pass of the sweep: find the due work Postgres knows about, claim it with a lease, and
enqueue it (DESIGN.md §3, §9). Beat runs `worker.tasks.sweep`, which calls `run_pass` every
TUNEFORGE_SCHEDULER_INTERVAL_SECONDS; `bench/scheduler.py` times the same function.

Safe if two schedulers start: every claim is `SELECT … FOR UPDATE SKIP LOCKED` plus a lease
written in the same transaction, so a row one pass holds or has just leased is not handed out
by another until the lease runs out.

Polls are rationed: a pass enqueues at most `poll_budget()` of them, most overdue first, and
leaves the rest due for the next pass, so 10,000 due tunes become a steady
TUNEFORGE_PROVIDER_POLLS_PER_SECOND, never a 10,000-request burst at the provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from shared import idempotency, queue
from shared.config import Settings, get_settings
from shared.datasets import service as datasets
from shared.evals import service as evals
from shared.providers import lifecycle
from shared.queue import TaskName
from shared.tunes import claims as tune_claims
from shared.tunes import promote
from shared.webhooks import service as webhooks


@dataclass
class Claimed:
    """What one pass claimed (and enqueued), by kind."""

    polls: list[str] = field(default_factory=list)
    submissions: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    evals: list[str] = field(default_factory=list)


def poll_budget(settings: Settings | None = None) -> int:
    """Polls one pass may enqueue: the provider budget per second times the pass interval.

    At least one, so a tiny budget still makes progress (then the rate is one per pass)."""
    settings = settings or get_settings()
    return max(1, int(settings.provider_polls_per_second * settings.scheduler_interval_seconds))


def run_pass(session: Session, *, now: datetime, settings: Settings | None = None) -> Claimed:
    """Claim and enqueue everything due at `now`. The caller commits; the messages are published
    after the commit (`session_scope`), so a rolled-back pass enqueues nothing and leases nothing."""
    settings = settings or get_settings()
    lease = timedelta(seconds=settings.lease_seconds)
    # A submission or a dataset untouched this long lost its message or its worker.
    stale = now - timedelta(seconds=settings.stale_after_seconds)
    claimed = Claimed(
        polls=tune_claims.due_polls(session, now=now, lease=lease, limit=poll_budget(settings)),
        submissions=tune_claims.claim_stuck_submissions(session, now=now, older_than=stale),
        datasets=datasets.claim_stale(session, now=now, older_than=stale),
        deliveries=webhooks.due_deliveries(session, now=now, lease=lease),
        evals=evals.claim_stale(session, now=now, older_than=stale),
    )
    for tune_id in claimed.polls:
        queue.enqueue(session, TaskName.POLL_TUNE, tune_id=tune_id)
    for tune_id in claimed.submissions:
        queue.enqueue(session, TaskName.SUBMIT_TUNE, tune_id=tune_id)
    for dataset_id in claimed.datasets:
        queue.enqueue(session, TaskName.PREPARE_DATASET, dataset_id=dataset_id)
    webhooks.enqueue_deliveries(session, claimed.deliveries)
    for eval_id in claimed.evals:
        queue.enqueue(session, TaskName.RUN_EVAL, eval_id=eval_id)
    idempotency.purge_expired(session, now=now)
    # Hourly per process: one model.deprecation_warning per tuned model whose base shuts down soon.
    lifecycle.warn_due_every(session)
    # Retunes waiting for the eval that decides whether their alias moves.
    promote.continue_waiting_every(session)
    return claimed
