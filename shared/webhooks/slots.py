"""In-flight slots per destination: at most `webhook_endpoint_concurrency` requests to one
endpoint (or one callback host) at once, across every sender thread and process.

A slot is a session-level advisory lock on (destination, number), held by the batch that sends
over it and released after its last request (or by Postgres when the connection dies)."""

from __future__ import annotations

import random
import time
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.config import get_settings

# Takes the first `want` free slots, starting at `first` so that batches spread over them; a
# LIMIT over a function scan stops asking for locks once it has enough.
_TAKE = text(
    "SELECT (n + :first) % :slots FROM generate_series(0, :slots - 1) AS n "
    "WHERE pg_try_advisory_lock(hashtext(:key), (n + :first) % :slots) LIMIT :want"
)
_RELEASE = text("SELECT pg_advisory_unlock(hashtext(:key), n) FROM unnest(CAST(:numbers AS int[])) AS n")


def destination(endpoint_id: str | None, url: str) -> str:
    """What the in-flight cap counts by: the endpoint, or the host of a per-request callback."""
    return endpoint_id or "url:" + (urlsplit(url).netloc or url)


def take(session: Session, dest: str, want: int) -> list[int]:
    """Up to `want` of the destination's free slots; waits up to `webhook_busy_wait_seconds` for
    the first one, then gives up with none. A fast receiver frees slots within milliseconds; a
    slow one keeps them, and then only this short wait is spent on it."""
    settings = get_settings()
    slots = settings.webhook_endpoint_concurrency
    if session.get_bind().dialect.name != "postgresql":
        return list(range(min(want, slots)))  # SQLite: one writer anyway, and no advisory locks
    params = {"key": _key(dest), "slots": slots, "want": min(want, slots)}
    deadline = time.monotonic() + settings.webhook_busy_wait_seconds
    while True:
        taken = list(session.execute(_TAKE, {**params, "first": random.randrange(slots)}).scalars())
        if taken or time.monotonic() >= deadline:
            return taken
        time.sleep(0.01)


def release(session: Session, dest: str, numbers: list[int]) -> None:
    if numbers and session.get_bind().dialect.name == "postgresql":
        session.execute(_RELEASE, {"key": _key(dest), "numbers": numbers})


def _key(dest: str) -> str:
    return "tuneforge.webhook:" + dest
