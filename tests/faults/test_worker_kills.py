"""SIGKILL the whole worker (main process and prefork children) while each task type is in flight:
upload, job creation, poll and webhook delivery. The sandbox holds the provider call open (a
`delay` rule: the provider acts after the kill; a `stall_body` rule: it acted, the answer never
arrives) and the receiver holds the delivery open; the worker dies, a fresh one starts, and the
sweep re-drives the work from Postgres.

Each round kills each task type once: the submission (upload + create) dies twice and starts three
times, exactly the attempt cap, so the tune must still succeed. The last test kills one poll
past the cap and expects the tune to fail with `worker_crashed`, announced by webhook."""

from __future__ import annotations

import pytest

from tests.e2e.story import wait_tune
from tests.faults.support import FaultStack, HoldingReceiver, audit_tune, kill_during, set_up, start_tune
from tests.support.procs import wait_for

# Shorter than the fault stack's stale-after (5 s) and provider timeout (5 s): the provider
# finishes a call the kill cut short before the sweep starts that work again.
HOLD_S = 2.5


@pytest.mark.parametrize("hold", ["delay", "stall_body"])
def test_a_tune_survives_a_kill_in_every_task_type(
    stack: FaultStack, hooks: HoldingReceiver, hold: str
) -> None:
    http, secret, dataset = set_up(stack, hooks, seed="11" if hold == "delay" else "12")
    upload, create, poll = stack.add_faults(
        {"action": hold, "delay_s": HOLD_S, "method": "POST", "path": "/v1/files"},
        {"action": hold, "delay_s": HOLD_S, "method": "POST", "path": "/v1/fine_tuning/jobs"},
        {"action": hold, "delay_s": HOLD_S, "method": "GET", "path": "/v1/fine_tuning/jobs/{job_id}"},
    )
    hooks.hold = 1
    tune_id = start_tune(http, dataset["id"])

    kill_during(stack, upload, f"submit:{tune_id}")
    tune = stack.tune_row(tune_id)
    assert tune.status == "created" and tune.provider_file_id is None  # the upload was rolled back

    kill_during(stack, create, f"submit:{tune_id}")
    tune = stack.tune_row(tune_id)
    assert tune.provider_file_id and tune.provider_job_id is None  # uploaded; no job recorded
    assert stack.attempts(f"submit:{tune_id}") == {f"submit:{tune_id}": 2}

    kill_during(stack, poll, f"poll:{tune_id}")

    # Running and succeeded may be entered by one poll: whichever delivery arrives first is held.
    held = wait_for(lambda: hooks.requests, 60, what="the first delivery to arrive")[0].payload["type"]
    stack.kill_worker()
    assert stack.attempts("deliver:%"), "the delivery was not in flight when the worker was killed"
    hooks.release_all()
    stack.start_worker()

    done = wait_tune(http, tune_id, timeout=90)
    audit_tune(stack, http, tune_id, hooks, secret, status="succeeded")
    # The held delivery died with its worker and went out again under the same id.
    assert len(hooks.of_type(held, tune_id)) == 2
    assert done["fine_tuned_model"]


def test_a_poll_that_keeps_dying_fails_the_tune_at_the_cap(stack: FaultStack, hooks: HoldingReceiver) -> None:
    http, secret, dataset = set_up(stack, hooks, seed="13")
    # Only this test's base model: every poll of its job is held until the worker is killed.
    (poll,) = stack.add_faults(
        {
            "action": "delay",
            "delay_s": HOLD_S,
            "method": "GET",
            "path": "/v1/fine_tuning/jobs/{job_id}",
            "model": "gpt-4.1-mini",
            "times": None,
        }
    )
    tune_id = start_tune(http, dataset["id"], "gpt-4.1-mini")

    for death in range(1, 4):
        kill_during(stack, poll, f"poll:{tune_id}", fired=death)
        assert stack.attempts(f"poll:{tune_id}") == {f"poll:{tune_id}": death}

    done = wait_tune(http, tune_id, timeout=60)
    assert done["status"] == "failed" and done["error"]["code"] == "worker_crashed", done
    assert "3 times" in done["error"]["message"] and "polling" in done["error"]["message"]
    # The fourth start gave up before calling the provider.
    assert stack.rule(poll)["fired"] == 3
    audit_tune(stack, http, tune_id, hooks, secret, status="failed")
    assert hooks.of_type("tune.failed", tune_id)[0].payload["data"]["error"]["code"] == "worker_crashed"
