"""Webhook endpoints, the outbox, and delivery.

`emit` is called in the same transaction as the change it reports, so an event exists exactly
when its change does. `deliver` sends one outbox row; the retry schedule lives in the row
(`next_attempt_at`), and the scheduler's sweep re-enqueues due rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from cryptography.fernet import InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import crypto, queue
from shared.auth import new_webhook_secret
from shared.config import get_settings
from shared.errors import DomainError, InvalidInput, NotFound
from shared.ids import new_id
from shared.models import Project, WebhookDelivery, WebhookEndpoint, utcnow
from shared.webhooks import sender, signing, ssrf

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "dataset.ready",
    "dataset.failed",
    "tune.running",
    "tune.succeeded",
    "tune.failed",
    "tune.cancelled",
    "eval.completed",
)
RESPONSE_BODY_LIMIT = 1024


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str


def create_endpoint(
    session: Session, *, project_id: str, url: str, events: list[str] | None, description: str | None = None
) -> CreatedEndpoint:
    ssrf.check_url_syntax(url)
    _check_event_types(events, param="events")
    secret = new_webhook_secret()
    endpoint = WebhookEndpoint(
        id=new_id("we"),
        project_id=project_id,
        url=url,
        secret=crypto.encrypt(secret),
        events={"types": events} if events else None,
        description=description,
    )
    session.add(endpoint)
    session.flush()
    return CreatedEndpoint(endpoint=endpoint, secret=secret)


def list_endpoints(session: Session, *, project_id: str) -> list[WebhookEndpoint]:
    stmt = (
        select(WebhookEndpoint).where(WebhookEndpoint.project_id == project_id).order_by(WebhookEndpoint.id)
    )
    return list(session.scalars(stmt))


def get_endpoint(session: Session, *, project_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.project_id != project_id:
        raise NotFound(
            f"No webhook endpoint {endpoint_id!r} in this project.", code="webhook_endpoint_not_found"
        )
    return endpoint


def delete_endpoint(session: Session, *, project_id: str, endpoint_id: str) -> None:
    session.delete(get_endpoint(session, project_id=project_id, endpoint_id=endpoint_id))
    session.flush()


def list_deliveries(session: Session, *, project_id: str, endpoint_id: str) -> list[WebhookDelivery]:
    get_endpoint(session, project_id=project_id, endpoint_id=endpoint_id)
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.created_at.desc())
        .limit(100)
    )
    return list(session.scalars(stmt))


def default_secret(session: Session, *, project_id: str) -> str:
    project = session.get(Project, project_id)
    assert project is not None
    return crypto.decrypt(project.default_webhook_secret)


def validate_callback(url: str | None, events: list[str] | None) -> None:
    """Check a per-request `webhook_url`/`webhook_events` pair before the object is created."""
    if url is not None:
        ssrf.check_url_syntax(url)
    _check_event_types(events, param="webhook_events")


def emit(
    session: Session,
    *,
    project_id: str,
    event_type: str,
    data: dict[str, Any],
    callback_url: str | None = None,
    callback_events: list[str] | None = None,
) -> str:
    """Write one outbox row per destination that wants `event_type`; returns the event id."""
    event_id = new_id("evt")
    payload = orjson.dumps(
        {"id": event_id, "type": event_type, "created_at": int(utcnow().timestamp()), "data": data}
    ).decode()
    destinations: list[tuple[str | None, str]] = [
        (endpoint.id, endpoint.url)
        for endpoint in list_endpoints(session, project_id=project_id)
        if endpoint.enabled and (endpoint.events is None or event_type in endpoint.events["types"])
    ]
    if callback_url and (not callback_events or event_type in callback_events):
        destinations.append((None, callback_url))
    for endpoint_id, url in destinations:
        delivery = WebhookDelivery(
            id=new_id("whd"),
            project_id=project_id,
            event_id=event_id,
            event_type=event_type,
            endpoint_id=endpoint_id,
            url=url,
            payload=payload,
            # The task enqueued below sends it now; the sweep steps in only if that message is lost.
            next_attempt_at=utcnow() + timedelta(seconds=get_settings().lease_seconds),
        )
        session.add(delivery)
        queue.enqueue(session, queue.TaskName.DELIVER_WEBHOOK, delivery_id=delivery.id)
    session.flush()
    return event_id


def deliver(session: Session, delivery_id: str, *, now: datetime | None = None) -> None:
    """Send one pending delivery and record the outcome; a no-op once it is delivered or given up.

    Only the sweep (for due retries) and `emit` enqueue this, so it does not re-check the time."""
    now = now or utcnow()
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update={"skip_locked": True})
    if delivery is None or delivery.status != "pending":
        return
    body = delivery.payload.encode()
    delivery.attempts += 1
    try:
        secret = _secret_for(session, delivery)
    except InvalidToken:
        # Retrying cannot help: the secret was encrypted under another TUNEFORGE_SECRET_KEY.
        delivery.status = "failed"
        delivery.next_attempt_at = None
        delivery.last_error = "The signing secret cannot be decrypted; was TUNEFORGE_SECRET_KEY changed?"
        log.error("webhook %s: %s", delivery.id, delivery.last_error)
        session.flush()
        return
    try:
        answer = sender.post(delivery.url, body, signing.headers([secret], delivery.event_id, body))
        delivery.last_status_code = answer.status
        delivery.last_response_body = answer.body
        ok = 200 <= answer.status < 300
        delivery.last_error = None if ok else f"HTTP {answer.status}"
    except (httpx.HTTPError, DomainError) as exc:
        delivery.last_error = str(exc)[:RESPONSE_BODY_LIMIT] or type(exc).__name__
        ok = False
    if ok:
        delivery.status = "delivered"
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    else:
        _schedule_retry(delivery, now)
    session.flush()


def give_up(session: Session, delivery_id: str) -> None:
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.status != "pending":
        return
    delivery.status = "failed"
    delivery.next_attempt_at = None
    delivery.last_error = "A worker stopped abruptly each time it sent this delivery; it will not be retried."
    session.flush()


def due_deliveries(session: Session, *, now: datetime, lease: timedelta, limit: int = 100) -> list[str]:
    """Claim due deliveries for re-enqueueing; pushing `next_attempt_at` out is the lease."""
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = list(session.scalars(stmt))
    for row in rows:
        row.next_attempt_at = now + lease
    session.flush()
    return [row.id for row in rows]


def _schedule_retry(delivery: WebhookDelivery, now: datetime) -> None:
    schedule = get_settings().webhook_retry_schedule
    if delivery.attempts > len(schedule):
        delivery.status = "failed"
        delivery.next_attempt_at = None
        log.warning(
            "webhook %s to endpoint %s given up after %d attempts",
            delivery.id,
            delivery.endpoint_id,
            delivery.attempts,
        )
        return
    delivery.next_attempt_at = now + timedelta(seconds=schedule[delivery.attempts - 1])


def _secret_for(session: Session, delivery: WebhookDelivery) -> str:
    if delivery.endpoint_id is None:
        return default_secret(session, project_id=delivery.project_id)
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    assert endpoint is not None
    return crypto.decrypt(endpoint.secret)


def _check_event_types(events: list[str] | None, *, param: str) -> None:
    unknown = sorted(set(events or []) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(
            f"Unknown event type(s) {unknown}; choose from {list(EVENT_TYPES)}.",
            code="invalid_event_type",
            param=param,
        )
