"""Hostile callback URLs never cause a connection: refused when registered, or at send time when
one slips into the outbox, and a redirect to an internal address is not followed. A canary
listening on the loopback addresses counts any connection that gets through."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shared.db import session_scope
from shared.ids import new_id
from shared.models import WebhookDelivery
from tests.conftest import CANARY_PORT
from tests.e2e.rows import insert_deliveries
from tests.e2e.story import client
from tests.support.procs import wait_for
from tests.support.receiver import Canary

P = CANARY_PORT
HOSTILE = [
    f"http://127.0.0.2:{P}/",
    f"http://127.1.2.3:{P}/",
    f"http://127.255.255.254:{P}/",
    f"http://2130706434:{P}/",  # 127.0.0.2, decimal
    f"http://0x7f000002:{P}/",  # hex
    f"http://0x7f.0.0.2:{P}/",
    f"http://0177.0.0.2:{P}/",  # octal
    f"http://017700000002:{P}/",
    f"http://127.2:{P}/",
    f"http://localhost:{P}/",  # a name resolving to 127.0.0.1
    f"http://LOCALHOST:{P}/",
    f"http://[::1]:{P}/",
    f"http://[::ffff:127.0.0.2]:{P}/",  # IPv4-mapped IPv6
    f"http://[0:0:0:0:0:ffff:7f00:2]:{P}/",
    f"http://0.0.0.0:{P}/",
    f"http://0:{P}/",
    f"https://127.0.0.2:{P}/",
    f"https://localhost:{P}/hooks?x=1",
    f"http://[::]:{P}/",
]


@pytest.fixture
def canary() -> Iterator[Canary]:
    listener = Canary(CANARY_PORT)
    yield listener
    listener.close()


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_are_refused_when_registered(stack, make_key, canary, url: str) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    response = http.post("/v1/webhook-endpoints", json={"url": url})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "webhook_destination_forbidden"
    callback = http.post(
        "/v1/datasets",
        files={"file": ("a.jsonl", b'{"questions": "q", "answers": "a"}\n')},
        data={"webhook_url": url},
    )
    assert callback.status_code == 400
    assert canary.connections == 0


def test_hostile_urls_in_the_outbox_are_refused_at_send(stack, make_key, canary) -> None:  # type: ignore[no-untyped-def]
    # As after DNS rebinding: the rows exist, only the check at send time stands in the way.
    make_key(project := f"ssrf-{new_id('x')}")
    ids = insert_deliveries(project, list(HOSTILE), event_type="tune.succeeded", payload='{"id": "evt_x"}')

    def all_refused() -> bool:
        with session_scope() as session:
            rows = [session.get(WebhookDelivery, i) for i in ids]
            return all(r is not None and r.attempts >= 1 for r in rows)

    wait_for(all_refused, 60, what="every hostile delivery to be attempted")
    with session_scope() as session:
        for delivery_id in ids:
            row = session.get(WebhookDelivery, delivery_id)
            assert row is not None and row.status != "delivered"
            assert "non-public address" in (row.last_error or ""), (row.url, row.last_error)
    time.sleep(0.2)
    assert canary.connections == 0


def test_a_redirect_to_an_internal_address_is_not_followed(stack, make_key, receiver, canary) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key())
    receiver.status_code = 302
    receiver.headers = {"Location": f"http://127.0.0.2:{CANARY_PORT}/"}
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url}).json()
    receiver.expect_secrets(endpoint["secret"])
    test = http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
    assert test.status_code == 202

    def attempted() -> dict | None:  # type: ignore[type-arg]
        rows = http.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()["data"]
        return rows[0] if rows and rows[0]["attempts"] >= 1 else None

    row = wait_for(attempted, 20, what="the first attempt")
    assert row["status"] == "pending" and row["last_status_code"] == 302
    assert "redirects are not followed" in row["last_error"]
    assert canary.connections == 0
