"""The sweep's poll claims against real Postgres: the provider budget per pass, most overdue
first, leases, and two schedulers claiming at once (shared/scheduler.py, tune_claims.due_polls).

These tests get a database of their own: `due_polls` claims across all projects, and the
session database has a live scheduler (the e2e stack's beat) sweeping it, so counting only our
own rows there would still race that beat for them."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from alembic import command
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, event, insert, text
from sqlalchemy.orm import Session

from shared import queue
from shared.config import Settings
from shared.ids import new_id
from shared.migrate import alembic_config
from shared.models import Dataset, Project, Tune
from shared.queue import TaskName
from shared.scheduler import poll_budget, run_pass
from shared.tunes import claims as tune_claims
from tests.conftest import ADMIN_URL, RUN_ID

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    name = f"tuneforge_scheduler_{RUN_ID}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    eng = create_engine(url)
    try:
        config = alembic_config()
        with eng.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        yield eng
    finally:
        eng.dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dataset(engine: Engine) -> str:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE project CASCADE"))
        project = new_id("proj")
        conn.execute(insert(Project), [{"id": project, "name": project, "default_webhook_secret": "x"}])
        dataset_id = new_id("ds")
        conn.execute(
            insert(Dataset),
            [
                {
                    "id": dataset_id,
                    "project_id": project,
                    "status": "ready",
                    "options": {},
                    "raw_blob": "raw",
                    "raw_bytes": 1,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        )
    return dataset_id


def add_tunes(
    engine: Engine, dataset_id: str, due_in: list[float | None], status: str = "running"
) -> list[str]:
    """One tune per offset (seconds from NOW to its next poll; None: not followed), inserted in
    a shuffled order so the claim order cannot come from insertion order."""
    project_id = _project(engine, dataset_id)
    rows = [
        {
            "id": new_id("tune"),
            "project_id": project_id,
            "dataset_id": dataset_id,
            "status": status,
            "base_model": "gpt-4o-mini-2024-07-18",
            "provider": "sandbox",
            "provider_job_id": "ftjob-test",
            "next_poll_at": None if offset is None else NOW + timedelta(seconds=offset),
            "cancel_requested": False,
            "poll_failures": 0,
            "created_at": NOW,
            "updated_at": NOW,
        }
        for offset in due_in
    ]
    shuffled = rows[:]
    random.Random(len(rows)).shuffle(shuffled)
    with engine.begin() as conn:
        conn.execute(insert(Tune), shuffled)
    return [row["id"] for row in rows]


def _project(engine: Engine, dataset_id: str) -> str:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT project_id FROM dataset WHERE id = :id"), {"id": dataset_id}
        ).scalar_one()


def settings(polls_per_second: float, interval: float = 1.0) -> Settings:
    return Settings(
        provider_polls_per_second=polls_per_second, scheduler_interval_seconds=interval, lease_seconds=60
    )


def sweep_pass(engine: Engine, budget: Settings, now: datetime = NOW) -> tuple[list[str], list[str]]:
    """One committed pass: (polls claimed, tune ids of the POLL_TUNE messages it would publish)."""
    with Session(engine) as session:
        claimed = run_pass(session, now=now, settings=budget)
        session.commit()
        messages = queue.take_pending(session)
    polls = [kwargs["tune_id"] for name, kwargs in messages if name == TaskName.POLL_TUNE.value]
    return claimed.polls, polls


def test_poll_budget_is_rate_times_interval_and_at_least_one() -> None:
    assert poll_budget(settings(20)) == 20
    assert poll_budget(settings(20, interval=0.5)) == 10
    assert poll_budget(settings(0.2)) == 1
    with pytest.raises(ValidationError):
        settings(0)


def test_a_pass_claims_at_most_the_budget_most_overdue_first(engine: Engine, dataset: str) -> None:
    overdue = add_tunes(engine, dataset, [-(i + 1) for i in range(25)])  # overdue[-1] is the oldest
    not_due = add_tunes(engine, dataset, [1, 5, 30])
    add_tunes(engine, dataset, [None, None])  # not submitted yet
    claimed, enqueued = sweep_pass(engine, settings(10))
    assert claimed == overdue[::-1][:10]
    assert enqueued == claimed
    with engine.connect() as conn:
        polls = dict(
            conn.execute(text("SELECT id, next_poll_at FROM tune WHERE next_poll_at IS NOT NULL")).all()
        )
    assert {tid for tid, at in polls.items() if at == NOW + LEASE} == set(claimed)  # leased
    assert [polls[tid] - NOW for tid in not_due] == [timedelta(seconds=s) for s in (1, 5, 30)]  # untouched


def test_the_rest_stay_due_and_the_next_passes_claim_them(engine: Engine, dataset: str) -> None:
    overdue = add_tunes(engine, dataset, [-(i + 1) for i in range(25)])[::-1]
    add_tunes(engine, dataset, [1, 5, 30])
    add_tunes(engine, dataset, [-100], status="succeeded")  # finished: never polled again
    budget = settings(5, interval=2)  # 10 a pass
    passes = [sweep_pass(engine, budget)[0] for _ in range(4)]
    assert passes == [overdue[:10], overdue[10:20], overdue[20:], []]
    # Time moves on: the not-yet-due ones come due, the leased ones stay leased.
    later = sweep_pass(engine, budget, now=NOW + timedelta(seconds=30))[0]
    assert len(later) == 3 and not set(later) & set(overdue)


def test_the_lease_keeps_a_claimed_tune_until_it_runs_out(engine: Engine, dataset: str) -> None:
    (tune_id,) = add_tunes(engine, dataset, [-1])
    assert sweep_pass(engine, settings(10))[0] == [tune_id]
    assert sweep_pass(engine, settings(10), now=NOW + timedelta(seconds=30))[0] == []
    assert sweep_pass(engine, settings(10), now=NOW + LEASE - timedelta(milliseconds=1))[0] == []
    assert sweep_pass(engine, settings(10), now=NOW + LEASE)[0] == [tune_id]


def test_a_second_claimer_skips_the_rows_the_first_holds(engine: Engine, dataset: str) -> None:
    overdue = add_tunes(engine, dataset, [-(i + 1) for i in range(20)])[::-1]
    with Session(engine) as first, Session(engine) as second:
        held = tune_claims.due_polls(first, now=NOW, lease=LEASE, limit=8)  # locked until `first` commits
        # Waiting on `first` instead of skipping its rows would fail here rather than hang.
        second.execute(text("SET LOCAL lock_timeout = '2s'"))
        skipped = tune_claims.due_polls(second, now=NOW, lease=LEASE, limit=8)
        first.commit()
        second.commit()
    assert held == overdue[:8]
    assert skipped == overdue[8:16]
    with Session(engine) as third:
        assert tune_claims.due_polls(third, now=NOW, lease=LEASE, limit=8) == overdue[16:]
        third.commit()


def test_two_schedulers_at_once_claim_each_due_tune_exactly_once(engine: Engine, dataset: str) -> None:
    due = add_tunes(engine, dataset, [-(i % 40) - 0.5 for i in range(150)])
    start = threading.Barrier(2)
    claims: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def scheduler(name: str) -> None:
        try:
            start.wait(timeout=5)
            for _ in range(100):  # 150 tunes at 7 a pass need about 22 passes in all
                with Session(engine) as session:
                    claimed = run_pass(session, now=NOW, settings=settings(7)).polls
                    time.sleep(0.01)  # hold the claimed rows' locks a moment
                    session.commit()
                if not claimed:
                    return
                claims[name].extend(claimed)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler, args=(name,)) for name in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []
    counts = Counter(claims["a"] + claims["b"])
    assert [tid for tid, n in counts.items() if n > 1] == []
    assert set(counts) == set(due)
    assert claims["a"] and claims["b"], "the two schedulers did not overlap"


def _explain(engine: Engine, statement: str, parameters: dict[str, object], *, generic: bool) -> str:
    """The plan of a captured statement; `generic` plans it as a prepared statement with unknown
    parameters, as psycopg's automatic prepare can end up doing for a query run every second."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cur:
            if not generic:
                cur.execute("EXPLAIN " + statement, parameters)
            else:
                cur.execute("PREPARE claim AS " + re.sub(r"%\((\w+)\)s", number, statement))
                cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                args = ", ".join(psycopg.sql.Literal(parameters[n]).as_string(raw) for n in names)
                cur.execute(f"EXPLAIN EXECUTE claim({args})")
            plan = "\n".join(row[0] for row in cur.fetchall())
        conn.rollback()
    return plan


def test_the_claims_use_the_partial_indexes(engine: Engine, dataset: str) -> None:
    add_tunes(engine, dataset, [-(i % 50) for i in range(2000)] + [None] * 200)
    add_tunes(engine, dataset, [None] * 3000, status="succeeded")
    add_tunes(engine, dataset, [None] * 20, status="created")
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE tune"))
    captured: list[tuple[str, dict[str, object]]] = []

    def capture(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if "SKIP LOCKED" in statement and "FROM tune" in statement:
            assert isinstance(parameters, dict)
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with Session(engine) as session:
            run_pass(session, now=NOW, settings=settings(20))
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    polls = next(c for c in captured if "ORDER BY tune.next_poll_at" in c[0])
    submissions = next(c for c in captured if "tune.updated_at <" in c[0])
    assert "ix_tune_next_poll_at" in _explain(engine, *polls, generic=False)
    assert "ix_tune_next_poll_at" in _explain(engine, *polls, generic=True)
    assert "ix_tune_unsubmitted_updated_at" in _explain(engine, *submissions, generic=False)
