"""Attempt counting across worker deaths.

Celery redelivers a task whose worker died (`acks_late` + `reject_on_worker_lost`), which is
right for a worker killed by a deploy and wrong for one killed by the task itself: that message
would come back forever. Each start is counted in its own committed transaction before the work
begins; past the cap the caller gives the object up with a reason instead of running it again."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.models import TaskAttempt, utcnow

MAX_ATTEMPTS = 3


def start(session: Session, key: str) -> int:
    """Count one more start of `key` and return the count (the caller commits at once).

    One statement (an upsert), since every guarded task pays for it before its work."""
    return start_many(session, [key])[key]


def start_many(session: Session, keys: Collection[str]) -> dict[str, int]:
    """`start` for many keys in one statement: key -> count."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    now = utcnow()
    # Sorted, so two tasks counting overlapping keys lock them in the same order.
    rows = [{"key": key, "attempts": 1, "updated_at": now} for key in sorted(set(keys))]
    stmt = insert(TaskAttempt).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[TaskAttempt.key], set_={"attempts": TaskAttempt.attempts + 1, "updated_at": now}
    ).returning(TaskAttempt.key, TaskAttempt.attempts)
    return {key: int(count) for key, count in session.execute(stmt)}


def unstart(session: Session, keys: Collection[str]) -> None:
    """Take back the count of starts that were counted but did not run the work."""
    stmt = update(TaskAttempt).where(TaskAttempt.key.in_(sorted(keys)))
    session.execute(
        stmt.values(attempts=TaskAttempt.attempts - 1), execution_options={"synchronize_session": False}
    )


def finish(session: Session, key: str) -> None:
    finish_many(session, [key])


def finish_many(session: Session, keys: Collection[str]) -> None:
    session.execute(delete(TaskAttempt).where(TaskAttempt.key.in_(sorted(keys))))
