"""Attempt counting across worker deaths.

Celery redelivers a task whose worker died (`acks_late` + `reject_on_worker_lost`), which is
right for a worker killed by a deploy and wrong for one killed by the task itself: that message
would come back forever. Each start is counted in its own committed transaction before the work
begins; past the cap the caller gives the object up with a reason instead of running it again."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.models import TaskAttempt, utcnow

MAX_ATTEMPTS = 3


def start(session: Session, key: str) -> int:
    """Count one more start of `key` and return the count (the caller commits at once).

    One statement (an upsert), since every guarded task pays for it before its work."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    now = utcnow()
    stmt = insert(TaskAttempt).values(key=key, attempts=1, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[TaskAttempt.key], set_={"attempts": TaskAttempt.attempts + 1, "updated_at": now}
    ).returning(TaskAttempt.attempts)
    return int(session.execute(stmt).scalar_one())


def finish(session: Session, key: str) -> None:
    session.execute(delete(TaskAttempt).where(TaskAttempt.key == key))
