"""The outbox: events and their deliveries, written in the transaction of the change they
report, so an event exists exactly when its change does."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared import queue
from shared.config import get_settings
from shared.errors import InvalidState, NotFound
from shared.ids import new_id
from shared.models import WebhookDelivery, WebhookEvent, unix, utcnow
from shared.webhooks.endpoints import TEST_EVENT, get_endpoint, list_endpoints


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
    queue.enqueue(session, queue.TaskName.DELIVER_WEBHOOK, delivery_id=delivery.id)
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


def give_up(session: Session, delivery_id: str) -> None:
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.status != "pending":
        return
    delivery.status = "failed"
    delivery.next_attempt_at = None
    delivery.last_error = "A worker stopped abruptly each time it sent this delivery; it will not be retried."
    session.flush()


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
    queue.enqueue(session, queue.TaskName.DELIVER_WEBHOOK, delivery_id=delivery.id)
    return delivery
