"""Scheduler benchmark: how long one sweep pass takes with 10,000 active tunes in Postgres, and
whether the provider poll rate stays within TUNEFORGE_PROVIDER_POLLS_PER_SECOND.

    .venv/bin/python bench/scheduler.py [--tunes 10000] [--history 50000] [--passes 20]

It creates a throwaway database on the local Postgres (trust auth for user `postgres`), migrates
it, bulk-inserts a project, datasets, the active tunes, finished tunes (history) and webhook
deliveries, then:

1. times `shared.scheduler.run_pass` (what the beat-driven `sweep` task runs, minus publishing:
   the enqueued messages are counted and dropped, nothing reaches a broker) with 1 %, 10 % and
   100 % of the active tunes due, both within the budget and uncapped;
2. prints the plan of the poll-claim query;
3. replays a stretch of simulated time: a pass every interval, each claimed tune "polled" at once
   and due again 5 s (running) or 10 s (otherwise) later, and reports polls enqueued per second
   against the budget.

The database is dropped at the end (unless --keep)."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from support import create_database, database_url, drop_database, out  # noqa: E402

ACTIVE_MIX = [  # (status, share of active tunes); created/uploading have no next_poll_at yet
    ("queued", 0.40),
    ("running", 0.33),
    ("validating_files", 0.12),
    ("submitted", 0.05),
    ("paused", 0.05),
    ("created", 0.03),
    ("uploading", 0.02),
]
HISTORY_MIX = [("succeeded", 0.80), ("failed", 0.15), ("cancelled", 0.05)]
UNFOLLOWED = {"created", "uploading"}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tunes", type=int, default=10_000, help="active (not finished) tunes")
    parser.add_argument("--history", type=int, default=50_000, help="finished tunes beside them")
    parser.add_argument("--deliveries", type=int, default=20_000, help="webhook deliveries (1 %% pending)")
    parser.add_argument("--passes", type=int, default=20, help="timed passes per scenario")
    parser.add_argument("--budget", type=float, default=20.0, help="provider polls per second")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    parser.add_argument("--simulate", type=float, default=120.0, help="simulated seconds of passes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    return parser.parse_args()


def main() -> None:
    args = parse()
    name = f"tuneforge_bench_{uuid.uuid4().hex[:8]}"
    url = database_url(args.admin_url, name)
    # The settings object reads the environment once; set it before anything imports it.
    os.environ.update(
        {
            "TUNEFORGE_DATABASE_URL": url,
            "TUNEFORGE_BROKER_URL": "memory://",
            "TUNEFORGE_ENV_FILE": os.devnull,
            "TUNEFORGE_PROVIDER_POLLS_PER_SECOND": str(args.budget),
            "TUNEFORGE_SCHEDULER_INTERVAL_SECONDS": str(args.interval),
        }
    )
    create_database(args.admin_url, name)
    try:
        run(args)
    finally:
        from shared.db import get_engine

        get_engine().dispose()
        if not args.keep:
            drop_database(args.admin_url, name)
        else:
            out(f"kept database {name}")


def run(args: argparse.Namespace) -> None:
    from sqlalchemy import text

    from shared.config import get_settings
    from shared.db import get_engine
    from shared.migrate import upgrade_head
    from shared.scheduler import poll_budget

    settings = get_settings()
    upgrade_head()
    engine = get_engine()
    rng = random.Random(args.seed)
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    started = time.perf_counter()
    seed_rows(engine, args, rng, t0)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    out(
        f"seeded {args.tunes:,} active tunes, {args.history:,} finished tunes, {args.deliveries:,} "
        f"deliveries in {time.perf_counter() - started:.1f} s"
    )
    cpu = os.cpu_count()
    out(f"machine: {cpu} cores; Postgres: {scalar(engine, 'SHOW server_version')}")
    out(
        f"budget {args.budget:g} polls/s x interval {args.interval:g} s = {poll_budget(settings)} polls "
        f"per pass; lease {settings.lease_seconds:g} s"
    )
    out()

    uncapped = settings.model_copy(update={"provider_polls_per_second": 1e9})
    rows = []
    plans = {}
    for fraction in (0.01, 0.10, 1.0):
        due = set_due(engine, rng, t0, fraction)
        snapshot(engine)
        for label, chosen in (("budget", settings), ("uncapped", uncapped)):
            times, claimed, enqueued, sql = timed_passes(engine, chosen, t0, args.passes)
            rows.append((fraction, due, label, times, claimed, enqueued))
            if label == "budget":
                plans[fraction] = explain(engine, sql)
    header = (
        f"{'due':>5} {'due tunes':>9} {'mode':>8} {'median ms':>9} {'p95 ms':>7} {'max ms':>7} "
        f"{'polls/pass':>10} {'msgs/pass':>9} {'polls/s at 1 pass/' + format(args.interval, 'g') + 's':>22}"
    )
    out(f"One sweep pass (run_pass + commit), {args.passes} passes per row:")
    out(header)
    out("-" * len(header))
    for fraction, due, label, times, claimed, enqueued in rows:
        out(
            f"{fraction:>5.0%} {due:>9,} {label:>8} {ms(statistics.median(times)):>9} "
            f"{ms(p95(times)):>7} {ms(max(times)):>7} {claimed:>10,} {enqueued:>9,} "
            f"{claimed / args.interval:>22,.0f}"
        )
    out()
    for fraction, plan in plans.items():
        out(f"Plan of the poll claim ({fraction:.0%} due, within the budget):")
        for line in plan:
            out("    " + line)
    out()
    simulate(engine, settings, uncapped, rng, t0, args)


def seed_rows(engine: Any, args: argparse.Namespace, rng: random.Random, t0: datetime) -> None:
    from sqlalchemy import insert

    from shared.ids import new_id
    from shared.models import Dataset, Project, Tune, WebhookDelivery

    project = new_id("proj")
    datasets = [new_id("ds") for _ in range(100)]
    long_ago = t0 - timedelta(days=30)
    with engine.begin() as conn:
        conn.execute(
            insert(Project.__table__),
            [
                {
                    "id": project,
                    "name": "bench",
                    "default_webhook_secret": "x",
                    "created_at": long_ago,
                    "updated_at": long_ago,
                }
            ],
        )
        conn.execute(
            insert(Dataset.__table__),
            [
                {
                    "id": d,
                    "project_id": project,
                    "status": "ready",
                    "filename": "train.jsonl",
                    "options": {},
                    "raw_blob": f"raw/{d}",
                    "raw_bytes": 1000,
                    "train_blob": f"prepared/{d}",
                    "created_at": long_ago,
                    "updated_at": long_ago,
                }
                for d in datasets
            ],
        )

        def tune(status: str) -> dict[str, Any]:
            followed = status not in UNFOLLOWED and status not in {s for s, _ in HISTORY_MIX}
            updated = t0 - timedelta(seconds=rng.uniform(0, 100))
            if status in UNFOLLOWED and rng.random() < 0.05:
                updated = t0 - timedelta(seconds=rng.uniform(200, 900))  # stuck: lost message
            return {
                "id": new_id("tune"),
                "project_id": project,
                "dataset_id": rng.choice(datasets),
                "status": status,
                "base_model": "gpt-4o-mini-2024-07-18",
                "provider": "sandbox",
                "n_epochs": 3,
                "suffix": "bench",
                "quote": {"cost_usd": 0.17},
                "provider_file_id": "file-x",
                "provider_job_id": f"ftjob-{uuid.uuid4().hex}",
                "cancel_requested": False,
                "poll_failures": 0,
                "next_poll_at": t0 + timedelta(seconds=rng.uniform(0, 10)) if followed else None,
                "created_at": long_ago,
                "updated_at": updated,
            }

        batch: list[dict[str, Any]] = []
        for status in pick(rng, ACTIVE_MIX, args.tunes) + pick(rng, HISTORY_MIX, args.history):
            batch.append(tune(status))
            if len(batch) == 5000:
                conn.execute(insert(Tune.__table__), batch)
                batch = []
        if batch:
            conn.execute(insert(Tune.__table__), batch)

        deliveries = []
        for _ in range(args.deliveries):
            pending = rng.random() < 0.01
            deliveries.append(
                {
                    "id": new_id("whd"),
                    "project_id": project,
                    "event_id": new_id("evt"),
                    "event_type": "tune.running",
                    "url": "https://example.com/hooks",
                    "payload": "{}",
                    "status": "pending" if pending else "delivered",
                    "attempts": 1,
                    "next_attempt_at": t0 + timedelta(seconds=rng.uniform(-30, 600)) if pending else None,
                    "created_at": long_ago,
                }
            )
        conn.execute(insert(WebhookDelivery.__table__), deliveries)


def pick(rng: random.Random, mix: list[tuple[str, float]], n: int) -> list[str]:
    statuses = [status for status, share in mix for _ in range(round(share * n))]
    statuses = (statuses + [mix[0][0]] * n)[:n]
    rng.shuffle(statuses)
    return statuses


def set_due(engine: Any, rng: random.Random, t0: datetime, fraction: float) -> int:
    """Make `fraction` of the followed tunes due at t0 (up to a minute overdue), the rest due
    within the next 10 s."""
    from sqlalchemy import bindparam, select, update

    from shared.models import Tune

    with engine.begin() as conn:
        ids = list(conn.scalars(select(Tune.id).where(Tune.next_poll_at.is_not(None)).order_by(Tune.id)))
        rng.shuffle(ids)
        cut = round(fraction * len(ids))
        values = [
            {
                "tid": tid,
                "at": t0 - timedelta(seconds=rng.uniform(0, 60))
                if i < cut
                else t0 + timedelta(seconds=rng.uniform(0.001, 10)),
            }
            for i, tid in enumerate(ids)
        ]
        stmt = update(Tune.__table__).where(Tune.__table__.c.id == bindparam("tid"))
        conn.execute(stmt.values(next_poll_at=bindparam("at")), values)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE tune")
    return cut


def snapshot(engine: Any) -> None:
    """Remember the rows a pass changes, so each timed pass starts from the same state."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_tune, bench_delivery")
        conn.exec_driver_sql("CREATE TABLE bench_tune AS SELECT id, next_poll_at, updated_at FROM tune")
        conn.exec_driver_sql(
            "CREATE TABLE bench_delivery AS SELECT id, next_attempt_at FROM webhook_delivery "
            "WHERE status = 'pending'"
        )


def restore(engine: Any) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE tune t SET next_poll_at = b.next_poll_at, updated_at = b.updated_at FROM bench_tune b "
            "WHERE t.id = b.id AND (t.next_poll_at IS DISTINCT FROM b.next_poll_at "
            "OR t.updated_at <> b.updated_at)"
        )
        conn.exec_driver_sql(
            "UPDATE webhook_delivery d SET next_attempt_at = b.next_attempt_at FROM bench_delivery b "
            "WHERE d.id = b.id AND d.next_attempt_at IS DISTINCT FROM b.next_attempt_at"
        )


def timed_passes(
    engine: Any, settings: Any, t0: datetime, passes: int
) -> tuple[list[float], int, int, tuple[str, Any]]:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from shared import queue
    from shared.scheduler import run_pass

    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "SKIP LOCKED" in statement and "ORDER BY tune.next_poll_at" in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    times: list[float] = []
    claimed = enqueued = 0
    try:
        for _ in range(passes + 1):  # the first pass warms the connection pool and the caches
            restore(engine)
            start = time.perf_counter()
            with Session(engine) as session:
                result = run_pass(session, now=t0, settings=settings)
                session.commit()
                messages = queue.take_pending(session)
            times.append(time.perf_counter() - start)
            claimed, enqueued = len(result.polls), len(messages)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
        restore(engine)
    return times[1:], claimed, enqueued, captured[-1]


def explain(engine: Any, sql: tuple[str, Any]) -> list[str]:
    statement, parameters = sql
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
        plan = [row[0] for row in rows]
        conn.rollback()
    return plan


def simulate(
    engine: Any, settings: Any, uncapped: Any, rng: random.Random, t0: datetime, args: argparse.Namespace
) -> None:
    """Passes every interval over simulated time; a claimed tune is polled at once and due again
    after its poll interval (5 s running, 10 s otherwise), as `tunes.poll` sets it."""
    from sqlalchemy.orm import Session

    from shared import queue
    from shared.scheduler import run_pass

    out(
        f"Simulated {args.simulate:g} s (a pass every {args.interval:g} s; a claimed tune is polled at once "
        "and due again 5 s later if running, else 10 s), starting with next polls spread over 10 s:"
    )
    header = (
        f"{'mode':>8} {'polls':>8} {'mean polls/s':>12} {'max in 1 s':>10} {'budget/s':>8} "
        f"{'tunes polled':>12} {'max pass ms':>11}"
    )
    out(header)
    out("-" * len(header))
    followed = scalar(engine, "SELECT count(*) FROM tune WHERE next_poll_at IS NOT NULL")
    for label, chosen in (("budget", settings), ("uncapped", uncapped)):
        set_due(engine, rng, t0, 0.0)
        per_second: Counter[int] = Counter()
        polled: set[str] = set()
        slowest = 0.0
        steps = int(args.simulate / args.interval)
        for step in range(steps):
            now = t0 + timedelta(seconds=step * args.interval)
            start = time.perf_counter()
            with Session(engine) as session:
                claimed = run_pass(session, now=now, settings=chosen).polls
                session.commit()
                queue.take_pending(session)
            slowest = max(slowest, time.perf_counter() - start)
            per_second[int(step * args.interval)] += len(claimed)
            polled.update(claimed)
            if claimed:  # the worker polls them: due again after the poll interval
                with engine.begin() as conn:
                    conn.exec_driver_sql(
                        "UPDATE tune SET next_poll_at = %(now)s + CASE WHEN status = 'running' "
                        "THEN interval '5 seconds' ELSE interval '10 seconds' END WHERE id = ANY(%(ids)s)",
                        {"now": now, "ids": claimed},
                    )
        total = sum(per_second.values())
        out(
            f"{label:>8} {total:>8,} {total / args.simulate:>12,.1f} {max(per_second.values()):>10,} "
            f"{args.budget:>8g} {len(polled):>5,}/{followed:<6,} {ms(slowest):>11}"
        )
    out()
    out(
        f"Within the budget every followed tune is polled about every {followed / args.budget:,.0f} s "
        f"({followed:,} tunes / {args.budget:g} polls/s), most overdue first."
    )


def scalar(engine: Any, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
