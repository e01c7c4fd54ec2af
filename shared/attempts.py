"""Attempt counting across worker deaths.

Celery redelivers a task whose worker died (`acks_late` + `reject_on_worker_lost`), which is
right for a worker killed by a deploy and wrong for one killed by the task itself: that message
would come back forever. Each start is counted in its own committed transaction before the work
begins; past the cap the caller gives the object up with a reason instead of running it again."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from shared.models import TaskAttempt, utcnow

MAX_ATTEMPTS = 3


def start(session: Session, key: str) -> int:
    """Count one more start of `key` and return the count (the caller commits at once)."""
    row = session.get(TaskAttempt, key, with_for_update=True)
    if row is None:
        row = TaskAttempt(key=key, attempts=0)
        session.add(row)
    row.attempts += 1
    row.updated_at = utcnow()
    session.flush()
    return row.attempts


def finish(session: Session, key: str) -> None:
    session.execute(delete(TaskAttempt).where(TaskAttempt.key == key))
