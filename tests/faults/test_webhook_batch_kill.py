"""SIGKILL the worker while a batch of deliveries is half answered: two requests were answered,
two are held open by the receiver. Nothing of the batch was recorded, so every delivery goes out
again under the same `webhook-id` (at least once, never lost), each on its own, since each was
in flight when a worker died."""

from __future__ import annotations

import json

from sqlalchemy import select
from standardwebhooks import Webhook

from shared.ids import new_id
from shared.models import WebhookDelivery, WebhookEndpoint, utcnow
from tests.e2e.story import client
from tests.faults.support import FaultStack, HoldingReceiver
from tests.support.procs import wait_for


def test_a_batch_whose_worker_dies_midway_is_sent_again_and_not_lost(
    stack: FaultStack, hooks: HoldingReceiver
) -> None:
    http = client(stack.api_url, stack.new_key())
    created = http.post("/v1/webhook-endpoints", json={"url": hooks.url})
    assert created.status_code == 201, created.text
    endpoint = created.json()
    hooks.hold = 2
    # Four due rows of one endpoint: the sweep claims them in one pass, as one batch.
    with stack.db() as session:
        row = session.get(WebhookEndpoint, endpoint["id"])
        assert row is not None
        events = [new_id("evt") for _ in range(4)]
        ids = []
        for event_id in events:
            delivery = WebhookDelivery(
                id=new_id("whd"),
                project_id=row.project_id,
                event_id=event_id,
                event_type="webhook.test",
                endpoint_id=endpoint["id"],
                url=endpoint["url"],
                payload=json.dumps({"id": event_id, "type": "webhook.test", "created_at": 0, "data": {}}),
                next_attempt_at=utcnow(),
            )
            session.add(delivery)
            ids.append(delivery.id)

    wait_for(lambda: len(hooks.requests) >= 4, 30, interval=0.05, what="the batch's four requests")
    in_flight = stack.attempts("deliver:%")
    assert {f"deliver:{i}" for i in ids} <= in_flight.keys(), in_flight
    stack.kill_worker()
    hooks.release_all()
    stack.start_worker()

    def done() -> list[WebhookDelivery] | None:
        with stack.db() as session:
            rows = list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))))
        return rows if all(r.status != "pending" for r in rows) else None

    rows = wait_for(done, 60, what="the batch to be sent again")
    assert {r.status for r in rows} == {"delivered"}
    # The dead batch recorded nothing: the attempt that counts is the one after the restart.
    assert {r.attempts for r in rows} == {1}
    arrived = [h.headers["webhook-id"] for h in hooks.requests]
    assert all(arrived.count(event_id) >= 2 for event_id in events), arrived
    assert set(arrived) == set(events)
    verifier = Webhook(endpoint["secret"])
    for hook in hooks.requests:
        verifier.verify(hook.body, hook.headers)
    assert not {f"deliver:{i}" for i in ids} & stack.attempts("deliver:%").keys()
