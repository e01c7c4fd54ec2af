"""The provider misbehaves (scripted through the sandbox's fault control plane): throttling with
Retry-After, 5xx bursts, calls that time out, a job create whose answer is lost. Tunes still
succeed with exactly one provider job each. A provider that keeps failing fails the tune with a
reason the user can act on, announced by webhook."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.story import wait_tune
from tests.faults.support import (
    PROVIDER_MAX_FAILURES,
    PROVIDER_TIMEOUT_SECONDS,
    FaultStack,
    HoldingReceiver,
    audit_tune,
    set_up,
    start_tune,
)

JOB = "/v1/fine_tuning/jobs/{job_id}"


def _fired_log(stack: FaultStack, rule_id: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each request a rule fired on, with the next request on the same route (None if none)."""
    log = stack.request_log()
    pairs = []
    for i, entry in enumerate(log):
        if entry["fault"] and entry["fault"]["source"] == rule_id:
            later = [
                e for e in log[i + 1 :] if (e["method"], e["route"]) == (entry["method"], entry["route"])
            ]
            pairs.append((entry, later[0] if later else None))
    return pairs


def test_throttling_and_server_errors_on_every_call_are_ridden_out(
    stack: FaultStack, hooks: HoldingReceiver
) -> None:
    http, secret, dataset = set_up(stack, hooks, seed="31")
    upload_429, create_429, create_500, poll_429, poll_503 = stack.add_faults(
        {
            "action": "status",
            "status": 429,
            "retry_after": 1,
            "method": "POST",
            "path": "/v1/files",
            "times": 2,
        },
        {
            "action": "status",
            "status": 429,
            "retry_after": 1,
            "method": "POST",
            "path": "/v1/fine_tuning/jobs",
        },
        # Two failed creates in a row: one short of PROVIDER_MAX_FAILURES.
        {"action": "status", "status": 500, "method": "POST", "path": "/v1/fine_tuning/jobs"},
        {"action": "status", "status": 429, "retry_after": 1, "method": "GET", "path": JOB},
        # Three answers fail one whole poll (the SDK's two retries included); the fourth, the next.
        {"action": "status", "status": 503, "method": "GET", "path": JOB, "times": 4},
    )
    tune_id = start_tune(http, dataset["id"])

    assert wait_tune(http, tune_id, timeout=120)["status"] == "succeeded"
    for rule_id, fired in ((upload_429, 2), (create_429, 1), (create_500, 1), (poll_429, 1), (poll_503, 4)):
        assert stack.rule(rule_id)["fired"] == fired, stack.rule(rule_id)
    # No request came back before the Retry-After it was given had passed.
    for rule_id in (upload_429, create_429, poll_429):
        for throttled, retry in _fired_log(stack, rule_id):
            assert retry is not None and retry["at"] - throttled["at"] >= 1.0, (throttled, retry)
    audit_tune(stack, http, tune_id, hooks, secret, status="succeeded")


def test_timeouts_and_lost_create_answers_make_one_job_each(
    stack: FaultStack, hooks: HoldingReceiver
) -> None:
    """Two tunes at once, each with its own faults (rules scoped by base model)."""
    http, secret, dataset = set_up(stack, hooks, seed="32")
    late = PROVIDER_TIMEOUT_SECONDS + 2
    create = {"method": "POST", "path": "/v1/fine_tuning/jobs"}
    rules = stack.add_faults(
        # The job is created, then the connection closes without an answer.
        {"action": "drop_after", "model": "gpt-4o-mini", **create},
        # The job is created, then its answer stalls past the read timeout.
        {"action": "stall_body", "delay_s": late, "model": "gpt-4.1-mini", **create},
        # A poll that answers only after the read timeout (the SDK retries it).
        {"action": "delay", "delay_s": late, "method": "GET", "path": JOB, "model": "gpt-4o-mini"},
        # An upload whose answer stalls past the read timeout (whichever tune uploads first).
        {"action": "stall_body", "delay_s": late, "method": "POST", "path": "/v1/files"},
    )
    tune_ids = [start_tune(http, dataset["id"], model) for model in ("gpt-4o-mini", "gpt-4.1-mini")]

    for tune_id in tune_ids:
        assert wait_tune(http, tune_id, timeout=120)["status"] == "succeeded"
    assert [stack.rule(r)["fired"] for r in rules] == [1, 1, 1, 1]
    for tune_id in tune_ids:
        events = http.get(f"/v1/tunes/{tune_id}/events").json()["data"]
        assert any("created by an earlier attempt" in e["message"] for e in events), events
        audit_tune(stack, http, tune_id, hooks, secret, status="succeeded")


@pytest.mark.parametrize("status", [503, 401])
def test_a_provider_that_keeps_failing_polls_fails_the_tune(
    stack: FaultStack, hooks: HoldingReceiver, status: int
) -> None:
    """Down (503, which the SDK retries twice per poll) or refusing us (401, not retried)."""
    http, secret, dataset = set_up(stack, hooks, seed=f"34{status}")
    (down,) = stack.add_faults(
        {
            "action": "status",
            "status": status,
            "method": "GET",
            "path": JOB,
            "model": "gpt-4.1-mini",
            "times": None,
        }
    )
    tune_id = start_tune(http, dataset["id"], base_model="gpt-4.1-mini")

    done = wait_tune(http, tune_id, timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "provider_unreachable", done
    message = done["error"]["message"]
    assert f"{PROVIDER_MAX_FAILURES} polls in a row" in message and done["provider_job_id"] in message
    assert f"Error code: {status}" in message, message
    # Each failed poll is one request, or three where the SDK retries; then the tune was given up.
    requests_per_poll = 3 if status >= 500 else 1
    assert stack.rule(down)["fired"] == requests_per_poll * PROVIDER_MAX_FAILURES
    audit_tune(stack, http, tune_id, hooks, secret, status="failed")


def test_a_provider_that_keeps_failing_job_creation_fails_the_tune(
    stack: FaultStack, hooks: HoldingReceiver
) -> None:
    http, secret, dataset = set_up(stack, hooks, seed="35")
    (down,) = stack.add_faults(
        {"action": "status", "status": 500, "method": "POST", "path": "/v1/fine_tuning/jobs", "times": None}
    )
    tune_id = start_tune(http, dataset["id"])

    done = wait_tune(http, tune_id, timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "provider_unreachable", done
    message = done["error"]["message"]
    assert f"failed {PROVIDER_MAX_FAILURES} attempts in a row" in message and "500" in message, message
    assert "No provider job is recorded" in message and "start the tune again" in message
    # One request per attempt (job creation is never retried blindly by the SDK).
    assert stack.rule(down)["fired"] == PROVIDER_MAX_FAILURES
    audit_tune(stack, http, tune_id, hooks, secret, status="failed", jobs=0)


def test_a_provider_that_refuses_the_upload_fails_the_tune(stack: FaultStack, hooks: HoldingReceiver) -> None:
    http, secret, dataset = set_up(stack, hooks, seed="36")
    (refused,) = stack.add_faults(
        {
            "action": "status",
            "status": 401,
            "code": "invalid_api_key",
            "message": "Incorrect API key provided.",
            "method": "POST",
            "path": "/v1/files",
            "times": None,
        }
    )
    tune_id = start_tune(http, dataset["id"])

    done = wait_tune(http, tune_id, timeout=60)
    assert done["status"] == "failed" and done["error"]["code"] == "provider_rejected", done
    message = done["error"]["message"]
    assert "HTTP 401" in message and "Incorrect API key" in message, message
    assert "Check the provider's API key" in message
    assert stack.rule(refused)["fired"] == 1  # a refusal is not retried
    audit_tune(stack, http, tune_id, hooks, secret, status="failed", jobs=0)
