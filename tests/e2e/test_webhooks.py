"""Outgoing webhooks through the real worker: signatures, retries from the outbox, the delivery
log, and per-request callbacks signed with the project's default secret."""

from __future__ import annotations

import json

from openai import OpenAI
from standardwebhooks import Webhook

from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.support.paths import HUATUO
from tests.support.procs import wait_for


def _small_dataset(http, **form):  # type: ignore[no-untyped-def]
    return wait_dataset(
        http, upload_dataset(http, HUATUO, preset="huatuo", sample_size="12", seed="3", **form)["id"]
    )


def test_failed_deliveries_are_retried_with_the_same_id(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    receiver.script = [500, 503]
    endpoint = http.post(
        "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["dataset.ready"]}
    ).json()
    dataset = _small_dataset(http)
    assert dataset["status"] == "ready"

    wait_for(lambda: len(receiver.requests) >= 3, 30, what="three attempts")
    attempts = receiver.requests[:3]
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert len({a.body for a in attempts}) == 1
    stamps = [int(a.headers["webhook-timestamp"]) for a in attempts]
    assert stamps == sorted(stamps)
    for attempt in attempts:
        Webhook(endpoint["secret"]).verify(attempt.body, attempt.headers)
        OpenAI(api_key="unused", webhook_secret=endpoint["secret"]).webhooks.verify_signature(
            attempt.body, attempt.headers
        )

    def delivered() -> dict | None:  # type: ignore[type-arg]
        rows = http.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()["data"]
        return rows[0] if rows and rows[0]["status"] == "delivered" else None

    row = wait_for(delivered, 15, what="delivery to be logged as delivered")
    assert (row["attempts"], row["last_status_code"], row["event_type"]) == (3, 200, "dataset.ready")


def test_a_receiver_that_keeps_failing_is_given_up(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    receiver.status_code = 500
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url}).json()
    _small_dataset(http)

    def given_up() -> dict | None:  # type: ignore[type-arg]
        rows = http.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()["data"]
        return rows[0] if rows and rows[0]["status"] == "failed" else None

    # The test schedule is [0.5, 1, 2] s: the first attempt and three retries.
    row = wait_for(given_up, 40, what="delivery to be given up")
    assert row["attempts"] == 4 and row["last_status_code"] == 500 and row["next_attempt_at"] is None
    assert len(receiver.requests) == 4


def test_per_request_callback_uses_the_default_secret(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    dataset = _small_dataset(http, webhook_url=receiver.url, webhook_events="dataset.ready")
    assert dataset["status"] == "ready"
    wait_for(lambda: receiver.requests, 15, what="the callback")
    secret = http.get("/v1/webhooks/default/secret").json()["secret"]
    payload = Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert payload["type"] == "dataset.ready" and payload["data"]["id"] == dataset["id"]
    assert payload["data"]["report"]["examples"] == 12


def test_unknown_event_types_and_bad_urls_are_refused(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    bad_type = http.post(
        "/v1/webhook-endpoints", json={"url": "https://example.com/h", "events": ["tune.exploded"]}
    )
    assert bad_type.status_code == 400 and bad_type.json()["error"]["code"] == "invalid_event_type"
    bad_url = http.post("/v1/webhook-endpoints", json={"url": "ftp://example.com/h"})
    assert bad_url.status_code == 400 and bad_url.json()["error"]["param"] == "url"
    listed = http.get("/v1/webhook-endpoints").json()["data"]
    assert listed == [] and "secret" not in json.dumps(listed)
