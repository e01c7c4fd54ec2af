"""Deliveries sent in batches: one message per destination and transaction, a slow destination
in a batch holds back none of the others, requests to one endpoint go out concurrently within
its in-flight cap, a batch holding an endpoint's slots takes that endpoint's other waiting
deliveries along, and the worker-death cap still counts each delivery on its own.

The domain function is driven directly on rows whose `next_attempt_at` lies far ahead, so the
running sweep never hands them to the worker meanwhile."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

from sqlalchemy import select, text

from shared import attempts, queue
from shared.config import get_settings
from shared.db import new_session, session_scope
from shared.ids import new_id
from shared.models import Project, TaskAttempt, WebhookDelivery, utcnow
from shared.webhooks import delivery, outbox, slots
from tests.e2e.story import client
from tests.support.procs import wait_for
from tests.support.receiver import start_receiver

FAR = timedelta(days=40)


def _endpoint(http, receiver):  # type: ignore[no-untyped-def]
    endpoint = http.post("/v1/webhook-endpoints", json={"url": receiver.url}).json()
    receiver.expect_secrets(endpoint["secret"])
    return endpoint


def _rows(
    session, project: str, endpoint: dict, count: int, *, due_in: timedelta = FAR, tried: int = 0
) -> list[str]:  # type: ignore[type-arg]
    """Outbox rows for `endpoint`, as `emit` writes them; returns their ids (flushed)."""
    project_id = session.scalar(select(Project.id).where(Project.name == project))
    ids = []
    for _ in range(count):
        event_id = new_id("evt")
        payload = json.dumps({"id": event_id, "type": "webhook.test", "created_at": 0, "data": {}})
        row = WebhookDelivery(
            id=new_id("whd"),
            project_id=project_id,
            event_id=event_id,
            event_type="webhook.test",
            endpoint_id=endpoint["id"],
            url=endpoint["url"],
            payload=payload,
            next_attempt_at=utcnow() + due_in,
            attempts=tried,
        )
        session.add(row)
        ids.append(row.id)
    session.flush()
    return ids


def _statuses(ids: list[str]) -> dict[str, str]:
    with session_scope() as session:
        stmt = select(WebhookDelivery.id, WebhookDelivery.status).where(WebhookDelivery.id.in_(ids))
        return {delivery_id: status for delivery_id, status in session.execute(stmt)}


def test_one_slow_destination_in_a_batch_holds_back_none_of_the_others(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    slow, server = start_receiver()
    slow.delay = 5.0
    try:
        http = client(stack.api_url, make_key(project := f"batch-{new_id('x')}"))
        slow_endpoint, fast_endpoint = _endpoint(http, slow), _endpoint(http, receiver)
        with session_scope() as session:
            ids = _rows(session, project, slow_endpoint, 1) + _rows(session, project, fast_endpoint, 3)

        def send() -> None:
            with session_scope() as session:
                delivery.deliver_many(session, ids)

        sender = threading.Thread(target=send)
        sender.start()
        wait_for(lambda: len(receiver.requests) == 3, 30, what="the fast endpoint's three deliveries")
        # All three arrived while the slow receiver was still answering the batch's fourth.
        assert slow.in_flight == 1 and not slow.requests
        sender.join(60)
        assert not sender.is_alive()
    finally:
        server.shutdown()
    assert set(_statuses(ids).values()) == {"delivered"}
    assert not slow.verification_failures()


def test_a_batch_sends_to_one_endpoint_concurrently_within_its_cap(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.delay = 0.5
    http = client(stack.api_url, make_key(project := f"batch-{new_id('x')}"))
    endpoint = _endpoint(http, receiver)
    with session_scope() as session:
        ids = _rows(session, project, endpoint, 10)
    with session_scope() as session:
        delivery.deliver_many(session, ids)
    assert set(_statuses(ids).values()) == {"delivered"}
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 10
    assert 1 < receiver.max_in_flight <= get_settings().webhook_endpoint_concurrency


def test_the_batch_holding_the_slots_takes_the_endpoints_waiting_deliveries(
    stack, make_key, receiver
) -> None:  # type: ignore[no-untyped-def]
    """A sender that finds every slot taken leaves its deliveries due, unattempted; the sender
    holding the slots sends them, and new ones whose own messages are still queued, along with
    its batch. (Rows written in the test's transaction: the running sweep cannot see them.)"""
    http = client(stack.api_url, make_key(project := f"batch-{new_id('x')}"))
    endpoint = _endpoint(http, receiver)
    lease = timedelta(seconds=get_settings().lease_seconds)
    send_all = lambda ids, together: delivery.Starts(send=ids)  # noqa: E731 - no counting here
    with new_session() as session:
        waiting = _rows(session, project, endpoint, 3, due_in=lease)
        # Another sender holds every slot: nothing goes out, nothing is counted.
        with new_session() as other:
            held = slots.take(other, endpoint["id"], get_settings().webhook_endpoint_concurrency)
            assert delivery.deliver_many(session, waiting, start=send_all) is False
            slots.release(other, endpoint["id"], held)
            other.commit()
        rows = [session.get(WebhookDelivery, i) for i in waiting]
        assert all(r.status == "pending" and r.attempts == 0 and r.next_attempt_at <= utcnow() for r in rows)  # type: ignore[union-attr,operator]
        assert not receiver.requests

        new = _rows(session, project, endpoint, 2, due_in=lease)
        later = _rows(session, project, endpoint, 1, due_in=timedelta(seconds=5), tried=1)  # retry, not due
        first = _rows(session, project, endpoint, 1, due_in=lease)
        assert delivery.deliver_many(session, first, start=send_all) is True
        statuses = {i: session.get(WebhookDelivery, i).status for i in waiting + new + first + later}  # type: ignore[union-attr]
        session.rollback()
    assert {i for i, status in statuses.items() if status == "delivered"} == set(waiting + new + first)
    assert len(receiver.requests) == 6


def test_deliveries_committed_together_travel_in_one_message_per_destination(
    stack, make_key, receiver
) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key(project := f"batch-{new_id('x')}"))
    one, other = _endpoint(http, receiver), _endpoint(http, receiver)
    with new_session() as session:
        project_id = session.scalar(select(Project.id).where(Project.name == project))
        events = [
            outbox.emit(session, project_id=project_id, event_type="dataset.ready", data={"n": n})
            for n in range(3)
        ]
        messages = queue.take_pending(session)
        stmt = select(WebhookDelivery.id, WebhookDelivery.endpoint_id).where(
            WebhookDelivery.event_id.in_(events)
        )
        rows = list(session.execute(stmt))
        session.rollback()
    assert {name for name, _ in messages} == {queue.TaskName.DELIVER_WEBHOOKS.value}
    by_endpoint = {e["id"]: {i for i, endpoint_id in rows if endpoint_id == e["id"]} for e in (one, other)}
    assert {frozenset(kwargs["delivery_ids"]) for _, kwargs in messages} == {
        frozenset(ids) for ids in by_endpoint.values()
    }
    assert len(messages) == 2
    assert all(len(ids) == 3 for ids in by_endpoint.values())


def test_a_delivery_that_kept_killing_workers_is_given_up_without_its_batch(
    stack, make_key, receiver
) -> None:  # type: ignore[no-untyped-def]
    """Its count says three workers died sending it: the batch sends the others and gives it a
    batch of its own, where it reaches the cap. The deaths are represented by the counts."""
    http = client(stack.api_url, make_key(project := f"batch-{new_id('x')}"))
    endpoint = _endpoint(http, receiver)
    with session_scope() as session:
        ids = _rows(session, project, endpoint, 3)
        poison = ids[1]
        for _ in range(attempts.MAX_ATTEMPTS):
            attempts.start(session, f"deliver:{poison}")
    with session_scope() as session:
        queue.enqueue(session, queue.TaskName.DELIVER_WEBHOOKS, delivery_ids=ids)

    wait_for(lambda: "pending" not in _statuses(ids).values(), 30, what="the batch to finish")
    assert _statuses(ids) == {ids[0]: "delivered", poison: "failed", ids[2]: "delivered"}
    with session_scope() as session:
        row = session.get(WebhookDelivery, poison)
        assert row is not None and "worker stopped" in (row.last_error or "") and row.attempts == 0
        keys = [f"deliver:{i}" for i in ids]
        assert not session.scalars(select(TaskAttempt.key).where(TaskAttempt.key.in_(keys))).all()
        poison_event = row.event_id
    assert len(receiver.requests) == 2
    assert all(r.headers["webhook-id"] != poison_event for r in receiver.requests)


def test_an_endpoints_slots_are_released_after_a_batch(stack, make_key, receiver) -> None:  # type: ignore[no-untyped-def]
    http = client(stack.api_url, make_key(project := f"batch-{new_id('x')}"))
    endpoint = _endpoint(http, receiver)
    with session_scope() as session:
        ids = _rows(session, project, endpoint, 6)
    with session_scope() as session:
        delivery.deliver_many(session, ids)
    with session_scope() as session:
        cap = get_settings().webhook_endpoint_concurrency
        assert len(slots.take(session, endpoint["id"], cap)) == cap
        locks = session.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        )
        slots.release(session, endpoint["id"], list(range(cap)))
    assert locks == cap
