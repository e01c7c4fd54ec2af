"""Sending deliveries in batches (what an answer means is in `outcome`).

A batch is one destination's deliveries, locked (`FOR UPDATE SKIP LOCKED`) for the whole
transaction that sends them and records every outcome, so no two senders ever send the same
delivery at once. Its requests go out over the destination's in-flight slots (`slots`), and a
sender that holds them keeps taking that endpoint's other waiting deliveries for up to
`webhook_batch_seconds` (draining), so deliveries queued one message each are sent in bulk
when their endpoint is busy instead of each waiting for a slot of its own."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby

import httpx
from cryptography.fernet import InvalidToken
from sqlalchemy import exists, literal, or_, select
from sqlalchemy.orm import Session

from shared import queue
from shared.config import get_settings
from shared.errors import DomainError
from shared.models import TaskAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from shared.webhooks import outbox, outcome, sender, signing, slots
from shared.webhooks.endpoints import signing_secrets

log = logging.getLogger(__name__)

GAVE_UP = "A worker stopped abruptly each time it sent this delivery; it will not be retried."
ATTEMPT_PREFIX = "deliver:"


def attempt_key(delivery_id: str) -> str:
    """The worker-death counter of one delivery (`shared.attempts`)."""
    return ATTEMPT_PREFIX + delivery_id


@dataclass
class Starts:
    """The worker-death cap's answer for deliveries a batch is about to send (`Starter`)."""

    send: list[str]
    # In flight when a worker died: each goes in a batch of its own.
    alone: list[str] = field(default_factory=list)
    give_up: list[str] = field(default_factory=list)


# Counts the starts of these deliveries, committed before any is sent; the flag says whether
# they are sent together with others (then one that died before must go alone).
Starter = Callable[[list[str], bool], Starts]


@dataclass
class _Item:
    """One delivery's request, with plain copies of what the sending thread needs (ORM objects
    stay on the thread that owns the session)."""

    delivery: WebhookDelivery
    url: str
    event_id: str
    body: bytes
    sent: bool = False
    answer: sender.Answer | None = None
    error: str | None = None


@dataclass
class _Destination:
    name: str
    endpoint: WebhookEndpoint | None
    secrets: list[str] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    gone: bool = False  # answered 410: no further request is started


def deliver(session: Session, delivery_id: str, *, now: datetime | None = None) -> None:
    """Send one pending delivery and record the outcome; a no-op once it is delivered or given up."""
    deliver_many(session, [delivery_id], now=now)


def deliver_many(
    session: Session,
    delivery_ids: Sequence[str],
    *,
    now: datetime | None = None,
    start: Starter | None = None,
) -> bool:
    """Send the pending deliveries among `delivery_ids` and record every outcome (flushed).

    Rows another sender holds are skipped. With `start` (the worker), the batch drains: while it
    holds a single endpoint's slots it also sends that endpoint's other deliveries that are due
    or not yet tried, and past `webhook_batch_seconds` it leases the next ones and queues them as
    one more batch. What was not sent (no slot free, out of time) stays due without an attempt
    counted. Returns whether anything was sent.

    Only `emit`, `redeliver`, the sweep and a draining batch queue these ids, so the time is not
    checked again."""
    now = now or utcnow()
    started = time.monotonic()
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.id.in_(sorted(set(delivery_ids))), WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.id)
        .with_for_update(skip_locked=True)
    )
    rows = _started(session, list(session.scalars(stmt)), start, together=len(delivery_ids) > 1)
    rows.sort(key=lambda row: slots.destination(row.endpoint_id, row.url))
    groups = [
        (_Destination(name, None), list(group))
        for name, group in groupby(rows, key=lambda row: slots.destination(row.endpoint_id, row.url))
    ]
    ready = [(dest, group) for dest, group in groups if _can_send(session, dest, group, now)]
    deadline = started + get_settings().webhook_batch_seconds
    sent = 0
    busy: str | None = None  # an endpoint with more waiting when time ran out
    try:
        for dest, group in ready:
            dest.slots = slots.take(session, dest.name, len(group))
        batches = [(dest, [_item(row) for row in group]) for dest, group in ready]
        sent += _send(session, batches, deadline, now)
        sending = [dest for dest, _ in ready if dest.slots]
        if start is not None and len(sending) == 1 and sending[0].endpoint is not None:
            drained, busy = _drain(session, sending[0], start, deadline, now)
            sent += drained
    finally:
        for dest, _ in ready:
            slots.release(session, dest.name, dest.slots)
    if busy is not None:
        lease = timedelta(seconds=get_settings().lease_seconds)
        outbox.continue_endpoints(session, endpoint_ids=[busy], now=utcnow(), lease=lease)
    return sent > 0


def _started(
    session: Session, rows: list[WebhookDelivery], start: Starter | None, *, together: bool
) -> list[WebhookDelivery]:
    if start is None or not rows:
        return rows
    starts = start([row.id for row in rows], together)
    for row in rows:
        if row.id in starts.alone:
            # Queued with this transaction: its message must not find the row still locked.
            queue.enqueue(session, queue.TaskName.DELIVER_WEBHOOKS, delivery_ids=[row.id])
        if row.id in starts.give_up:
            log.error("webhook %s: the worker died each time it was sent; giving up", row.id)
            outcome.finish(row, "failed", error=GAVE_UP)
    return [row for row in rows if row.id in starts.send]


def _can_send(session: Session, dest: _Destination, group: list[WebhookDelivery], now: datetime) -> bool:
    """Load the destination's endpoint and secrets; fail its deliveries when they cannot be sent."""
    first = group[0]
    dest.endpoint = session.get(WebhookEndpoint, first.endpoint_id) if first.endpoint_id else None
    if dest.endpoint is not None and not dest.endpoint.enabled:
        reason = dest.endpoint.disabled_reason or "by its owner"
        for row in group:
            outcome.finish(row, "failed", error=f"Not sent: the endpoint is disabled ({reason}).")
        return False
    try:
        dest.secrets = signing_secrets(
            session, project_id=first.project_id, endpoint_id=first.endpoint_id, now=now
        )
    except InvalidToken:
        # Retrying cannot help: the secret was encrypted under another TUNEFORGE_SECRET_KEY.
        error = "The signing secret cannot be decrypted; was TUNEFORGE_SECRET_KEY changed?"
        log.error("webhook destination %s: %s", dest.name, error)
        for row in group:
            outcome.finish(row, "failed", error=error)
        return False
    return True


def _drain(
    session: Session, dest: _Destination, start: Starter, deadline: float, now: datetime
) -> tuple[int, str | None]:
    """Keep sending the endpoint's waiting deliveries over the slots already held, a batch at a
    time, until none is left (returns no endpoint) or time is up (returns the endpoint, whose
    next batch the caller queues). Returns how many were sent, too."""
    assert dest.endpoint is not None
    settings = get_settings()
    lease = timedelta(seconds=settings.lease_seconds)
    sent = 0
    while not dest.gone and dest.endpoint.enabled and time.monotonic() < deadline:
        stmt = (
            select(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == dest.endpoint.id,
                WebhookDelivery.status == "pending",
                # Due, or new (its own message may still be queued; it finds the row delivered).
                # The first bound lets the scan use ix_webhook_delivery_next_attempt_at: new
                # rows carry a lease of `lease_seconds`, and delivered ones have no next attempt.
                # Rows this transaction already sent are recorded (flushed), so no longer match.
                WebhookDelivery.next_attempt_at <= utcnow() + lease,
                or_(WebhookDelivery.next_attempt_at <= utcnow(), WebhookDelivery.attempts == 0),
                # Not one a dead worker was sending: that goes in a batch of its own, by its id.
                ~exists().where(TaskAttempt.key == literal(ATTEMPT_PREFIX) + WebhookDelivery.id),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(settings.webhook_batch_size)
            .with_for_update(skip_locked=True)
        )
        rows = _started(session, list(session.scalars(stmt)), start, together=True)
        if not rows:
            return sent, None
        sent += _send(session, [(dest, [_item(row) for row in rows])], deadline, now)
    return sent, None if dest.gone or not dest.endpoint.enabled else dest.endpoint.id


def _item(row: WebhookDelivery) -> _Item:
    return _Item(row, row.url, row.event_id, row.payload.encode())


def _send(
    session: Session, batches: list[tuple[_Destination, list[_Item]]], deadline: float, now: datetime
) -> int:
    """One stream per slot, every destination at once, on the sender pool; this thread waits,
    then records every outcome (flushed). Returns how many requests were made."""
    streams = []
    for dest, items in batches:
        waiting = deque(items)
        streams += [sender.pool().submit(_stream, dest, waiting, deadline) for _ in dest.slots]
    for stream in streams:
        stream.result()
    sent = 0
    for dest, items in batches:
        for item in items:
            if item.sent:
                outcome.record(item.delivery, dest.endpoint, now, item.answer, item.error)
                sent += 1
            else:
                # Not attempted (no slot free, or out of time): still due, for the batch that
                # holds this destination's slots, or the sweep.
                item.delivery.next_attempt_at = now
    session.flush()
    return sent


def _stream(dest: _Destination, waiting: deque[_Item], deadline: float) -> None:
    started = False
    while not dest.gone and (not started or time.monotonic() < deadline):
        try:
            item = waiting.popleft()
        except IndexError:
            return
        started = True
        item.sent = True
        try:
            headers = signing.headers(dest.secrets, item.event_id, item.body)
            item.answer = sender.post(item.url, item.body, headers)
        except (httpx.HTTPError, DomainError) as exc:
            item.error = (str(exc) or type(exc).__name__)[: sender.BODY_LIMIT]
        except Exception:  # a bug must fail this attempt, not every delivery of the batch
            log.exception("webhook %s: sending failed", item.delivery.id)
            item.error = "Internal error while sending; it will be retried."
        if item.answer is not None and item.answer.status == 410 and dest.endpoint is not None:
            dest.gone = True
