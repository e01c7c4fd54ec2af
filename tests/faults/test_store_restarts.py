"""Redis and Postgres restarted under running tunes. Redis is only the broker: restarting it, even
with its data gone, loses messages but no tune, because the sweep finds due work in Postgres and
enqueues it again. Postgres is the source of truth: while it restarts, work fails and is retried,
the API says 503 rather than 500, and afterwards every tune finishes exactly once."""

from __future__ import annotations

import httpx

from tests.faults.support import FaultStack, HoldingReceiver, audit_tune, set_up, start_tune
from tests.support.procs import wait_for

# Jobs that run for a few seconds, so the restarts land while tunes are mid-flight.
SLOW_JOB = {"sandbox_time_scale": "0.1"}
SUBMITTED = ("submitted", "validating_files", "queued", "running", "succeeded")


def _status(http: httpx.Client, tune_id: str) -> str | None:
    """The tune's status, or None while the API cannot answer (a store is restarting)."""
    try:
        response = http.get(f"/v1/tunes/{tune_id}")
    except httpx.HTTPError:
        return None
    return str(response.json()["status"]) if response.status_code == 200 else None


def _wait_all(http: httpx.Client, tune_ids: list[str], statuses: tuple[str, ...], timeout: float) -> None:
    def reached() -> bool:
        now = {t: _status(http, t) for t in tune_ids}
        seen.update(now)
        return all(status in statuses for status in now.values())

    seen: dict[str, str | None] = {}
    try:
        wait_for(reached, timeout, what=f"tunes to reach {statuses}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; the tunes were {seen}") from None


def test_redis_restarts_lose_no_tune(stack: FaultStack, hooks: HoldingReceiver) -> None:
    http, secret, dataset = set_up(stack, hooks, seed="21")
    first = [start_tune(http, dataset["id"], metadata=SLOW_JOB) for _ in range(3)]
    _wait_all(http, first, SUBMITTED, 60)
    worker_pid = stack.worker.popen.pid

    # 1. A graceful restart that keeps the data (queued and unacked messages survive), while the
    #    worker holds a task: a poll the provider is slow to answer.
    _hold_a_poll(stack)
    stack.redis.stop(save=True)
    stack.redis.start()
    second = start_tune(http, dataset["id"], metadata=SLOW_JOB)

    # 2. A crash that loses everything, again under a running task, with a tune created while
    #    the broker is down: its message is never published, and every message queued is gone.
    _wait_all(http, [second], ("uploading", *SUBMITTED), 60)
    assert stack.worker.alive() and stack.worker.popen.pid == worker_pid, "the worker did not survive"
    _hold_a_poll(stack)
    stack.redis.kill(wipe=True)
    # 202 all the same: the tune is in Postgres, only its message is lost.
    orphan = start_tune(http, dataset["id"], metadata=SLOW_JOB)
    stack.redis.start()

    # A canary made after the crash: the same worker consumes again and beat publishes again.
    canary = start_tune(http, dataset["id"], metadata=SLOW_JOB)
    tunes = [*first, second, orphan, canary]
    _wait_all(http, tunes, ("succeeded", "failed", "cancelled"), 120)
    for tune_id in tunes:
        audit_tune(stack, http, tune_id, hooks, secret, status="succeeded")
    assert stack.worker.alive() and stack.worker.popen.pid == worker_pid, "the worker did not survive"
    assert stack.procs["beat"].alive()


def _hold_a_poll(stack: FaultStack) -> None:
    """Make the next poll wait 3 s at the provider and return once it is in flight."""
    (rule,) = stack.add_faults(
        {"action": "delay", "delay_s": 3, "method": "GET", "path": "/v1/fine_tuning/jobs/{job_id}"}
    )
    wait_for(lambda: stack.rule(rule)["fired"] >= 1, 30, interval=0.05, what="a poll to be in flight")


def test_postgres_restarts_lose_no_tune(stack: FaultStack, hooks: HoldingReceiver) -> None:
    http, secret, dataset = set_up(stack, hooks, seed="21")
    tunes = [start_tune(http, dataset["id"], metadata=SLOW_JOB) for _ in range(3)]
    _wait_all(http, tunes, SUBMITTED, 60)

    # 1. A fast shutdown: open transactions are rolled back, every connection is cut. While it
    #    is down, the API answers 503 with Retry-After (not a 500 that reads like a bug).
    stack.postgres.stop("fast")
    down = http.get(f"/v1/tunes/{tunes[0]}")
    assert down.status_code == 503, down.text
    assert down.headers.get("retry-after") and down.json()["error"]["code"] == "database_unavailable"
    refused = http.post("/v1/tunes", json={"dataset_id": dataset["id"], "base_model": "gpt-4o-mini"})
    assert refused.status_code == 503, refused.text
    stack.postgres.restart("fast", down_for=2.0)  # already down: the outage goes on, then ends
    tunes.append(start_tune(http, dataset["id"], metadata=SLOW_JOB))

    # 2. A crash (immediate: no shutdown checkpoint, recovery replays the WAL) under new work.
    _wait_all(http, tunes[-1:], ("uploading", *SUBMITTED), 60)
    stack.postgres.restart("immediate", down_for=2.0)

    _wait_all(http, tunes, ("succeeded", "failed", "cancelled"), 120)
    for tune_id in tunes:
        audit_tune(stack, http, tune_id, hooks, secret, status="succeeded")
    assert stack.worker.alive() and stack.procs["beat"].alive() and stack.procs["api"].alive()
