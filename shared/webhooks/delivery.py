"""Sending one delivery and deciding what its answer means.

Only 2xx is success; a redirect is a failure (never followed); 410 means the receiver is gone
for good, so its endpoint is disabled; 429/502/503/504 with `Retry-After` push the next attempt
out as asked. The retry schedule lives in the row (`next_attempt_at`), not in Celery, and an
endpoint that has failed for days is disabled with the reason shown to its owner."""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from cryptography.fernet import InvalidToken
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.errors import DomainError
from shared.models import WebhookDelivery, WebhookEndpoint, utcnow
from shared.webhooks import sender, signing
from shared.webhooks.endpoints import disable, signing_secrets

log = logging.getLogger(__name__)

SLOW_DOWN = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = timedelta(hours=24)


def deliver(session: Session, delivery_id: str, *, now: datetime | None = None) -> None:
    """Send one pending delivery and record the outcome; a no-op once it is delivered or given up.

    Only the sweep (for due retries), `emit` and `redeliver` enqueue this, so it does not re-check
    the time."""
    now = now or utcnow()
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update={"skip_locked": True})
    if delivery is None or delivery.status != "pending":
        return
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id) if delivery.endpoint_id else None
    if endpoint is not None and not endpoint.enabled:
        _finish(
            delivery,
            "failed",
            error=f"Not sent: the endpoint is disabled ({endpoint.disabled_reason or 'by its owner'}).",
        )
        session.flush()
        return
    try:
        secrets = signing_secrets(
            session, project_id=delivery.project_id, endpoint_id=delivery.endpoint_id, now=now
        )
    except InvalidToken:
        # Retrying cannot help: the secret was encrypted under another TUNEFORGE_SECRET_KEY.
        _finish(
            delivery,
            "failed",
            error="The signing secret cannot be decrypted; was TUNEFORGE_SECRET_KEY changed?",
        )
        log.error("webhook %s: %s", delivery.id, delivery.last_error)
        session.flush()
        return
    slot = _take_slot(session, delivery)
    if slot is None:
        # The endpoint already has its share of deliveries in flight: this one stays due and is
        # tried again shortly, without counting an attempt, so a slow receiver holds at most
        # `webhook_endpoint_concurrency` sender threads however many deliveries it is owed.
        delivery.next_attempt_at = now + timedelta(seconds=get_settings().webhook_busy_retry_seconds)
        session.flush()
        return
    body = delivery.payload.encode()
    delivery.attempts += 1
    answer: sender.Answer | None = None
    try:
        answer = sender.post(
            delivery.url,
            body,
            signing.headers(secrets, delivery.event_id, body),
        )
        delivery.last_status_code = answer.status
        delivery.last_response_body = answer.body
        delivery.last_error = None if answer.ok else _describe(answer.status)
    except (httpx.HTTPError, DomainError) as exc:
        delivery.last_error = (str(exc) or type(exc).__name__)[: sender.BODY_LIMIT]
    finally:
        _release_slot(session, slot)
    if answer is not None and answer.ok:
        _finish(delivery, "delivered")
        delivery.delivered_at = now
        if endpoint is not None:
            endpoint.failing_since = None
    elif answer is not None and answer.status == 410 and endpoint is not None:
        _finish(delivery, "failed", error="HTTP 410 Gone: the endpoint was disabled.")
        disable(endpoint, f"The receiver answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC.")
    else:
        retry_after = answer.retry_after if answer is not None and answer.status in SLOW_DOWN else None
        _schedule_retry(delivery, now, retry_after)
        if endpoint is not None:
            _note_failure(endpoint, now)
    session.flush()


def _take_slot(session: Session, delivery: WebhookDelivery) -> tuple[str, int] | None:
    """One of the destination's in-flight slots, or None when all are taken: a session-level
    advisory lock on (destination, slot), held only around the request (`_release_slot`), and
    released by Postgres anyway if the worker's connection dies."""
    settings = get_settings()
    if session.get_bind().dialect.name != "postgresql":
        return ("", -1)  # SQLite: one writer anyway
    destination = delivery.endpoint_id or "url:" + (urlsplit(delivery.url).netloc or delivery.url)
    key = "tuneforge.webhook:" + destination
    slots = settings.webhook_endpoint_concurrency
    first = random.randrange(slots)  # spread the threads over the slots
    # A fast receiver frees a slot within milliseconds, so wait a little before giving this one
    # back; a slow one keeps them all, and then only this short wait is spent on it.
    deadline = time.monotonic() + settings.webhook_busy_wait_seconds
    while True:
        for offset in range(slots):
            slot = (first + offset) % slots
            taken = session.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:key), :slot)"), {"key": key, "slot": slot}
            ).scalar_one()
            if taken:
                return key, slot
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _release_slot(session: Session, slot: tuple[str, int]) -> None:
    key, number = slot
    if number >= 0:
        unlock = text("SELECT pg_advisory_unlock(hashtext(:key), :slot)")
        session.execute(unlock, {"key": key, "slot": number})


def _schedule_retry(delivery: WebhookDelivery, now: datetime, retry_after: float | None) -> None:
    schedule = get_settings().webhook_retry_schedule
    if delivery.attempts > len(schedule):
        _finish(
            delivery,
            "failed",
            error=f"Given up after {delivery.attempts} attempts; last: {delivery.last_error}",
        )
        return
    delay = timedelta(seconds=schedule[delivery.attempts - 1])
    if retry_after is not None:
        delay = max(delay, min(timedelta(seconds=retry_after), MAX_RETRY_AFTER))
    delivery.next_attempt_at = now + delay


def _note_failure(endpoint: WebhookEndpoint, now: datetime) -> None:
    endpoint.failing_since = endpoint.failing_since or now
    limit = timedelta(seconds=get_settings().webhook_disable_after_seconds)
    if endpoint.enabled and now - endpoint.failing_since >= limit:
        disable(
            endpoint,
            f"Every delivery failed from {endpoint.failing_since:%Y-%m-%d %H:%M} UTC for {limit.days} days; "
            "fix the receiver, then enable the endpoint again.",
        )


def _finish(delivery: WebhookDelivery, status: str, *, error: str | None = None) -> None:
    delivery.status = status
    delivery.next_attempt_at = None
    if error is not None:
        delivery.last_error = error


def _describe(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed; point the endpoint at the final URL."
    return f"HTTP {status}"
