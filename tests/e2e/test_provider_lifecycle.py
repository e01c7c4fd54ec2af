"""Lifecycle of tuned models on providers: deprecation warnings and flags under a controllable
clock, and a retune whose alias moves only if the new tune wins an eval."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared import auth
from shared.db import session_scope
from shared.providers import lifecycle
from tests.e2e.provider_support import (
    add_provider,
    azure_body,
    error_code,
    http_for,
    ready_dataset,
    tune,
)
from tests.e2e.story import wait_tune
from tests.support.procs import wait_for


def test_lifecycle_warnings_and_models_flag(stack, make_key, future_api, receiver) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    now = http_for(stack.api_url, key)
    endpoint = now.post(
        "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["model.deprecation_warning"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    receiver.expect_secrets(endpoint.json()["secret"])
    done = wait_tune(now, tune(now, ready_dataset(now), "sandbox").json()["id"])
    assert done["status"] == "succeeded"

    listed = {m["id"]: m for m in now.get("/v1/models").json()["data"]}
    assert listed[done["fine_tuned_model"]]["deprecation_warning"] is False  # 50 days left today
    later = {m["id"]: m for m in http_for(future_api, key).get("/v1/models").json()["data"]}
    assert later[done["fine_tuned_model"]]["deprecation_warning"] is True
    assert later[done["fine_tuned_model"]]["shutdown_date"] == "2027-01-14"

    with session_scope() as session:
        project_id = auth.authenticate(session, key).project_id
    with session_scope() as session:  # 20 days before the shutdown, inside the 30-day window
        warned = lifecycle.warn_due(session, now=datetime(2026, 12, 25, tzinfo=UTC), project_id=project_id)
    assert warned == [done["id"]]
    with session_scope() as session:  # once per tune
        assert (
            lifecycle.warn_due(session, now=datetime(2026, 12, 26, tzinfo=UTC), project_id=project_id) == []
        )
    delivered = wait_for(lambda: receiver.requests, 20, what="the deprecation warning")
    event = json.loads(delivered[0].body)
    assert event["type"] == "model.deprecation_warning"
    assert event["data"]["id"] == done["id"] and event["data"]["days_left"] == 20


def test_a_retune_moves_its_alias_only_if_it_wins_the_eval(stack, make_key, azure_sandbox) -> None:  # type: ignore[no-untyped-def]
    http = http_for(stack.api_url, make_key())
    add_provider(http, **azure_body("azure", azure_sandbox))
    first = wait_tune(http, tune(http, ready_dataset(http), "sandbox").json()["id"])
    assert first["status"] == "succeeded", first
    gate = {"split": "train", "max_items": 12}
    # Against the base model it replaces, the tuned model wins (it answers its training data).
    assert http.put("/v1/aliases/doctor", json={"model": "gpt-4o-mini"}).status_code == 200
    # Against an identical tune it cannot be strictly better: the gate keeps the alias where it is.
    assert http.put("/v1/aliases/twin", json={"model": first["id"]}).status_code == 200
    winner = http.post(
        f"/v1/tunes/{first['id']}/retune", json={"provider": "azure", "alias": "doctor", "require_eval": gate}
    )
    twin = http.post(
        f"/v1/tunes/{first['id']}/retune", json={"provider": "azure", "alias": "twin", "require_eval": gate}
    )
    assert winner.status_code == twin.status_code == 202, (winner.text, twin.text)

    def settled(tune_id: str) -> dict[str, Any] | None:
        body = http.get(f"/v1/tunes/{tune_id}").json()
        return body if (body.get("on_success") or {}).get("state") == "done" else None

    won = wait_for(lambda: settled(winner.json()["id"]), 120, what="the gated retune to settle")
    assert won["on_success"]["moved"] is True, won
    assert http.get("/v1/aliases/doctor").json()["targets"][0]["model"] == won["id"]
    lost = wait_for(lambda: settled(twin.json()["id"]), 120, what="the second gated retune to settle")
    assert lost["on_success"]["moved"] is False and lost["on_success"]["reason"] == "eval_gate_failed", lost
    assert http.get("/v1/aliases/twin").json()["targets"][0]["model"] == first["id"]
    assert error_code(
        http.post(f"/v1/tunes/{first['id']}/retune", json={"provider": "azure", "require_eval": True})
    ) == ("missing_alias")
