"""The sweep's claims on tunes: polls that are due and submissions that were lost."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.models import Tune
from shared.tunes import states


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
