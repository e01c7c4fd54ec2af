"""Outgoing webhooks through the real worker: signatures, retries from the outbox, the delivery
log, and per-request callbacks signed with the project's default secret."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from openai import OpenAI
from standardwebhooks import Webhook, WebhookVerificationError

from shared.config import Settings, get_settings
from shared.db import session_scope
from shared.ids import new_id
from shared.models import WebhookDelivery, utcnow
from shared.webhooks import delivery
from tests.e2e.rows import insert_deliveries
from tests.e2e.story import client, upload_dataset, wait_dataset
from tests.support.paths import HUATUO
from tests.support.procs import wait_for
from tests.support.receiver import start_receiver


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
    receiver.expect_secrets(endpoint["secret"])
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
    receiver.expect_secrets(endpoint["secret"])
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
    receiver.expect_secrets(http.get("/v1/webhooks/default/secret").json()["secret"])
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


def _deliveries(http, endpoint_id: str) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return http.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries").json()["data"]


def test_a_rotated_secret_signs_with_old_and_new_during_the_grace_period(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url}).json()
    receiver.expect_secrets(endpoint["secret"])
    rotated = http.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").json()
    old, new = endpoint["secret"], rotated["secret"]
    assert new.startswith("whsec_") and new != old
    http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
    wait_for(lambda: receiver.requests, 15, what="the test delivery")
    first = receiver.requests[0]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(first.body, first.headers)["type"] == "webhook.test"
        OpenAI(api_key="unused", webhook_secret=secret).webhooks.verify_signature(first.body, first.headers)

    # Without a grace period the old secret stops signing at once.
    newest = http.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_period_seconds": 0}
    ).json()["secret"]
    receiver.expect_secrets(newest)
    http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
    wait_for(lambda: len(receiver.requests) >= 2, 15, what="the second test delivery")
    second = receiver.requests[1]
    assert len(second.headers["webhook-signature"].split(" ")) == 1
    Webhook(newest).verify(second.body, second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(second.body, second.headers)


def test_410_disables_the_endpoint(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    receiver.status_code = 410
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url}).json()
    receiver.expect_secrets(endpoint["secret"])
    http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")

    def disabled() -> dict | None:  # type: ignore[type-arg]
        body = http.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
        return body if not body["enabled"] else None

    body = wait_for(disabled, 15, what="the endpoint to be disabled")
    assert "410" in body["disabled_reason"]
    assert _deliveries(http, endpoint["id"])[0]["status"] == "failed"
    _small_dataset(http)  # no delivery is made to a disabled endpoint
    time.sleep(1)
    assert len(receiver.requests) == 1
    refused = http.post(f"/v1/webhook-deliveries/{_deliveries(http, endpoint['id'])[0]['id']}/redeliver")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "webhook_endpoint_disabled"

    receiver.status_code = 200
    enabled = http.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True}).json()
    assert enabled["enabled"] and enabled["disabled_reason"] is None


def test_redelivery_and_the_event_list(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    started = int(time.time())
    endpoint = http.post(
        "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["dataset.ready"]}
    ).json()
    receiver.expect_secrets(endpoint["secret"])
    dataset = _small_dataset(http)
    wait_for(lambda: receiver.requests, 15, what="dataset.ready")
    # The receiver has the request a moment before the sender records its answer.
    delivery = wait_for(
        lambda: next((d for d in _deliveries(http, endpoint["id"]) if d["status"] == "delivered"), None),
        15,
        what="the delivery to be recorded",
    )
    again = http.post(f"/v1/webhook-deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202
    wait_for(lambda: len(receiver.requests) >= 2, 15, what="the redelivery")
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]

    events = http.get("/v1/events", params={"since": started}).json()["data"]
    assert [e["type"] for e in events] == ["dataset.ready"]
    assert events[0]["id"] == delivery["event_id"] and events[0]["data"]["id"] == dataset["id"]
    other = client(stack.api_url, make_key())
    assert other.get("/v1/events").json()["data"] == []
    assert other.post(f"/v1/webhook-deliveries/{delivery['id']}/redeliver").status_code == 404


def test_the_retry_schedule_follows_a_controllable_clock(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    """Domain functions driven with explicit times, against a receiver that always fails."""
    receiver.status_code = 500
    http = client(stack.api_url, make_key(project := f"clock-{new_id('x')}"))
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url}).json()
    receiver.expect_secrets(endpoint["secret"])
    schedule = get_settings().webhook_retry_schedule
    # Far in the future, so the running sweep never considers this row due.
    t0 = utcnow() + timedelta(days=30)
    (delivery_id,) = insert_deliveries(project, [receiver.url], endpoint_id=endpoint["id"], due=t0)
    now = t0
    for attempt, delay in enumerate(schedule, start=1):
        with session_scope() as session:
            delivery.deliver(session, delivery_id, now=now)
        with session_scope() as session:
            row = session.get(WebhookDelivery, delivery_id)
            assert row is not None and row.attempts == attempt and row.status == "pending"
            waited = (row.next_attempt_at - now).total_seconds()  # type: ignore[operator]
            assert abs(waited - delay) <= 0.1 * delay
            now = row.next_attempt_at  # type: ignore[assignment]
    with session_scope() as session:
        delivery.deliver(session, delivery_id, now=now)
    with session_scope() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None and row.status == "failed" and row.attempts == len(schedule) + 1
    assert len(receiver.requests) == len(schedule) + 1


def test_the_default_schedule_is_the_documented_one() -> None:
    default = Settings.model_fields["webhook_retry_schedule"].default_factory()  # type: ignore[misc]
    assert default == [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600]


def test_an_endpoint_failing_for_five_days_is_disabled(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.status_code = 503
    http = client(stack.api_url, make_key(project := f"days-{new_id('x')}"))
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url}).json()
    receiver.expect_secrets(endpoint["secret"])
    t0 = utcnow() + timedelta(days=60)
    ids = insert_deliveries(project, [receiver.url] * 2, endpoint_id=endpoint["id"], due=t0)
    for delivery_id, now in ((ids[0], t0), (ids[1], t0 + timedelta(days=5, seconds=1))):
        with session_scope() as session:
            delivery.deliver(session, delivery_id, now=now)
    body = http.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
    assert not body["enabled"] and "5 days" in body["disabled_reason"]


def test_a_slow_endpoint_holds_back_neither_other_endpoints_nor_datasets(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    """A receiver that takes 4 s to answer gets a burst of deliveries: it occupies at most its
    per-endpoint share of sender threads, another endpoint's delivery goes out meanwhile, and
    dataset processing (on the default queue) is not stuck behind any of it."""
    slow, server = start_receiver()
    slow.delay = 4.0
    burst = 16
    cap = get_settings().webhook_endpoint_concurrency
    try:
        http = client(stack.api_url, make_key())
        slow_endpoint = http.post("/v1/webhook-endpoints", json={"url": slow.url}).json()
        slow.expect_secrets(slow_endpoint["secret"])
        for _ in range(burst):
            assert http.post(f"/v1/webhook-endpoints/{slow_endpoint['id']}/test").status_code == 202
        wait_for(lambda: slow.in_flight, 10, what="the slow receiver to be busy")

        fast_endpoint = http.post(
            "/v1/webhook-endpoints", json={"url": receiver.url, "events": ["dataset.ready"]}
        ).json()
        receiver.expect_secrets(fast_endpoint["secret"])
        http.post(f"/v1/webhook-endpoints/{fast_endpoint['id']}/test")
        wait_for(lambda: receiver.requests, 15, what="the other endpoint's delivery")
        # Sent while the slow endpoint's first wave (at most `cap` requests) was still in flight.
        assert len(slow.requests) <= cap < burst, f"it waited for {len(slow.requests)} slow deliveries"

        # Dataset work is on its own queue: it finishes (and is announced) while the burst drags on.
        dataset = _small_dataset(http)
        assert dataset["status"] == "ready"
        wait_for(lambda: len(receiver.requests) >= 2, 15, what="dataset.ready at the other endpoint")
        assert len(slow.requests) < burst, "dataset processing waited for the slow burst"
        assert 1 <= slow.max_in_flight <= cap, f"{slow.max_in_flight} deliveries in flight to one endpoint"
        # The rest of the burst is not sent: a disabled endpoint's deliveries fail without a request.
        http.patch(f"/v1/webhook-endpoints/{slow_endpoint['id']}", json={"enabled": False})
    finally:
        server.shutdown()
    failures = slow.verification_failures()
    assert not failures, failures
