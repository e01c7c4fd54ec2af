"""The outbox: events and their deliveries, written in the transaction of the change they
report, so an event exists exactly when its change does."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared import queue
from shared.config import get_settings
from shared.errors import InvalidState, NotFound
from shared.ids import new_id
from shared.models import WebhookDelivery, WebhookEvent, unix, utcnow
from shared.webhooks.endpoints import TEST_EVENT, get_endpoint, list_endpoints
from shared.webhooks.slots import destination


def emit(
    session: Session,
    *,
    project_id: str,
    event_type: str,
    data: dict[str, Any],
    callback_url: str | None = None,
    callback_events: list[str] | None = None,
) -> str:
    """Record the event and one delivery per destination that wants it; returns the event id."""
    event = _new_event(session, project_id, event_type, data)
    destinations: list[tuple[str | None, str]] = [
        (endpoint.id, endpoint.url)
        for endpoint in list_endpoints(session, project_id=project_id)
        if endpoint.enabled and (endpoint.events is None or event_type in endpoint.events["types"])
    ]
    if callback_url and (not callback_events or event_type in callback_events):
        destinations.append((None, callback_url))
    for endpoint_id, url in destinations:
        _new_delivery(session, event, endpoint_id, url)
    session.flush()
    return event.id


def send_test(session: Session, *, project_id: str, endpoint_id: str) -> WebhookDelivery:
    """A `webhook.test` event to one endpoint, so its owner can check the receiver end to end."""
    endpoint = get_endpoint(session, project_id=project_id, endpoint_id=endpoint_id)
    event = _new_event(session, project_id, TEST_EVENT, {"endpoint_id": endpoint.id, "url": endpoint.url})
    delivery = _new_delivery(session, event, endpoint.id, endpoint.url)
    session.flush()
    return delivery


def redeliver(session: Session, *, project_id: str, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, with the same `webhook-id`, whatever happened to it before."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.project_id != project_id:
        raise NotFound(
            f"No webhook delivery {delivery_id!r} in this project.", code="webhook_delivery_not_found"
        )
    if delivery.endpoint_id is not None:
        endpoint = get_endpoint(session, project_id=project_id, endpoint_id=delivery.endpoint_id)
        if not endpoint.enabled:
            raise InvalidState(
                f"Endpoint {endpoint.id} is disabled ({endpoint.disabled_reason or 'by its owner'}); "
                "enable it first with PATCH /v1/webhook-endpoints/{id}.",
                code="webhook_endpoint_disabled",
            )
    delivery.status = "pending"
    delivery.next_attempt_at = utcnow() + timedelta(seconds=get_settings().lease_seconds)
    _enqueue(session, delivery.id, destination(delivery.endpoint_id, delivery.url))
    session.flush()
    return delivery


def list_events(
    session: Session, *, project_id: str, since: datetime | None, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Events oldest first, for a receiver to reconcile after an outage."""
    stmt = select(WebhookEvent).where(WebhookEvent.project_id == project_id).order_by(WebhookEvent.id)
    if since is not None:
        stmt = stmt.where(WebhookEvent.created_at >= since)
    if after is not None:
        stmt = stmt.where(WebhookEvent.id > after)
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return [orjson.loads(row.payload) for row in rows[:limit]], len(rows) > limit


def list_deliveries(
    session: Session, *, project_id: str, endpoint_id: str, limit: int = 100
) -> list[WebhookDelivery]:
    get_endpoint(session, project_id=project_id, endpoint_id=endpoint_id)
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def due_deliveries(session: Session, *, now: datetime, lease: timedelta, limit: int = 100) -> list[str]:
    """Claim due deliveries for re-enqueueing; pushing `next_attempt_at` out is the lease.

    At most `webhook_endpoint_concurrency` per destination a pass, most overdue first, so an
    endpoint with a backlog never fills a pass and the others' retries go out on time."""
    destination = func.coalesce(WebhookDelivery.endpoint_id, WebhookDelivery.url)
    ranked = (
        select(
            WebhookDelivery.id,
            func.row_number()
            .over(partition_by=destination, order_by=WebhookDelivery.next_attempt_at)
            .label("rank"),
        )
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .subquery()
    )
    fair = select(ranked.c.id).where(ranked.c.rank <= get_settings().webhook_endpoint_concurrency)
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.id.in_(fair), WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(stmt))
    for row in rows:
        row.next_attempt_at = now + lease
    session.flush()
    return [row.id for row in rows]


def enqueue_deliveries(session: Session, delivery_ids: list[str]) -> None:
    """Queue claimed deliveries as one batch per destination (sent after the commit)."""
    if not delivery_ids:
        return
    stmt = select(WebhookDelivery.id, WebhookDelivery.endpoint_id, WebhookDelivery.url).where(
        WebhookDelivery.id.in_(delivery_ids)
    )
    for delivery_id, endpoint_id, url in session.execute(stmt):
        _enqueue(session, delivery_id, destination(endpoint_id, url))


def continue_endpoints(
    session: Session, *, endpoint_ids: list[str], now: datetime, lease: timedelta
) -> list[str]:
    """When a batch to these endpoints ran out of time with deliveries still waiting (left due
    by senders that found the slots taken, or due retries), lease the next of them and queue
    them as one more batch, so a busy endpoint's backlog keeps moving without the sweep."""
    limit = get_settings().webhook_batch_size
    claimed: list[str] = []
    for endpoint_id in endpoint_ids:
        stmt = (
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(session.scalars(stmt))
        if not ids:
            continue
        lease_stmt = update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
        session.execute(
            lease_stmt.values(next_attempt_at=now + lease), execution_options={"synchronize_session": False}
        )
        for delivery_id in ids:
            _enqueue(session, delivery_id, endpoint_id)
        claimed += ids
    return claimed


def delivery_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "last_response_body": delivery.last_response_body,
        "next_attempt_at": unix(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "delivered_at": unix(delivery.delivered_at),
        "created_at": unix(delivery.created_at),
    }


def _new_event(session: Session, project_id: str, event_type: str, data: dict[str, Any]) -> WebhookEvent:
    event_id = new_id("evt")
    created = utcnow()
    payload = orjson.dumps({"id": event_id, "type": event_type, "created_at": unix(created), "data": data})
    event = WebhookEvent(
        id=event_id, project_id=project_id, type=event_type, payload=payload.decode(), created_at=created
    )
    session.add(event)
    return event


def _new_delivery(
    session: Session, event: WebhookEvent, endpoint_id: str | None, url: str
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        id=new_id("whd"),
        project_id=event.project_id,
        event_id=event.id,
        event_type=event.type,
        endpoint_id=endpoint_id,
        url=url,
        payload=event.payload,
        # The task enqueued below sends it now; the sweep steps in only if that message is lost.
        next_attempt_at=utcnow() + timedelta(seconds=get_settings().lease_seconds),
    )
    session.add(delivery)
    _enqueue(session, delivery.id, destination(endpoint_id, url))
    return delivery


def _enqueue(session: Session, delivery_id: str, dest: str) -> None:
    # The deliveries to one destination committed together travel in one message.
    queue.enqueue_batched(
        session,
        queue.TaskName.DELIVER_WEBHOOKS,
        group=dest,
        field="delivery_ids",
        item=delivery_id,
        limit=get_settings().webhook_batch_size,
    )
