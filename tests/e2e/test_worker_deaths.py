"""A task whose worker keeps dying is not redelivered forever: after the attempt cap the object
fails with a reason. The deaths are represented by the counts dead workers leave behind."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import func, select

from shared import attempts, queue
from shared.db import session_scope
from shared.models import TaskAttempt, Tune, utcnow
from tests.e2e.story import client, ready_dataset, start_tune, wait_tune
from tests.support.procs import wait_for


def test_a_poll_that_kept_killing_workers_fails_the_tune(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    tune = start_tune(http, ready_dataset(http)["id"], "1")
    wait_for(lambda: http.get(f"/v1/tunes/{tune['id']}").json()["provider_job_id"], 30, what="submission")
    # Take the tune off the sweep's schedule and let any poll in flight return first: a regular
    # poll that finished after the seeding below would clear the count it is meant to trip.
    with session_scope() as session:
        session.get(Tune, tune["id"]).next_poll_at = utcnow() + timedelta(days=1)  # type: ignore[union-attr]
    wait_for(lambda: _poll_count(tune["id"]) == 0, 30, what="polls in flight to return")
    time.sleep(1.0)  # a poll the sweep enqueued just before may start now
    wait_for(lambda: _poll_count(tune["id"]) == 0, 30, what="polls in flight to return")
    # Three polls started and never returned, as when the worker process is killed mid-task.
    with session_scope() as session:
        for _ in range(attempts.MAX_ATTEMPTS):
            attempts.start(session, f"poll:{tune['id']}")
    with session_scope() as session:
        queue.enqueue(session, queue.TaskName.POLL_TUNE, tune_id=tune["id"])

    done = wait_tune(http, tune["id"], timeout=30)
    assert done["status"] == "failed" and done["error"]["code"] == "worker_crashed"
    assert "3 times" in done["error"]["message"]
    with session_scope() as session:
        assert session.get(Tune, tune["id"]).status == "failed"  # type: ignore[union-attr]


def test_tasks_that_return_leave_no_attempt_count(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = ready_dataset(http)
    tune = http.post("/v1/tunes", json={"dataset_id": dataset["id"], "base_model": "gpt-4o-mini"}).json()
    assert wait_tune(http, tune["id"])["status"] == "succeeded"

    def counts_left() -> int:
        with session_scope() as session:
            stmt = select(func.count()).select_from(TaskAttempt).where(TaskAttempt.key.contains(tune["id"]))
            return session.scalar(stmt) or 0

    # The last poll clears its count just after committing the final status.
    wait_for(lambda: counts_left() == 0, 10, what="attempt counts to be cleared")


def _poll_count(tune_id: str) -> int:
    with session_scope() as session:
        row = session.get(TaskAttempt, f"poll:{tune_id}")
        return row.attempts if row else 0
