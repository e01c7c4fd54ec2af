"""The one place that makes database sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    url = settings.sqlalchemy_url
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["connect_args"] = {"application_name": "tuneforge"}
        # A thread-pool worker (the webhook senders) holds up to two connections per thread in
        # flight: a batch's transaction, and the one that counts its starts before it sends.
        kwargs["pool_size"] = max(10, 2 * settings.webhook_worker_concurrency + 4)
    engine = create_engine(url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _session_factory()()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit or roll back, then publish the tasks enqueued in it.

    Publishing after the commit means a worker never sees a task for a row that does not
    exist yet, or for one that was rolled back."""
    from shared import queue

    with new_session() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        pending = queue.take_pending(session)
        callbacks: list[Callable[[], None]] = session.info.pop("tuneforge_after_commit", [])
    queue.publish_all(pending)
    for callback in callbacks:
        callback()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the unit of work opened by `session_scope` has committed (never on
    rollback): for side effects other processes must not see before the rows they describe."""
    session.info.setdefault("tuneforge_after_commit", []).append(callback)


def dispose_after_fork() -> None:
    # A forked worker child must not reuse the parent's sockets.
    get_engine().dispose(close=False)
