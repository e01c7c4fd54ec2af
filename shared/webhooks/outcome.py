"""What one attempt's answer means for its delivery and endpoint.

Only 2xx is success; a redirect is a failure (never followed); 410 means the receiver is gone
for good, so its endpoint is disabled; 429/502/503/504 with `Retry-After` push the next attempt
out as asked. The retry schedule lives in the row (`next_attempt_at`), not in Celery, and an
endpoint that has failed for days is disabled with the reason shown to its owner."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.config import get_settings
from shared.models import WebhookDelivery, WebhookEndpoint
from shared.webhooks import sender
from shared.webhooks.endpoints import disable

SLOW_DOWN = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = timedelta(hours=24)


def record(
    delivery: WebhookDelivery,
    endpoint: WebhookEndpoint | None,
    now: datetime,
    answer: sender.Answer | None,
    error: str | None,
) -> None:
    """Record an attempt that was made: `answer`, or the `error` that stopped it."""
    delivery.attempts += 1
    if answer is not None:
        delivery.last_status_code = answer.status
        delivery.last_response_body = answer.body
        delivery.last_error = None if answer.ok else _describe(answer.status)
    else:
        delivery.last_error = error
    if answer is not None and answer.ok:
        finish(delivery, "delivered")
        delivery.delivered_at = now
        if endpoint is not None and endpoint.failing_since is not None:
            endpoint.failing_since = None
    elif answer is not None and answer.status == 410 and endpoint is not None:
        finish(delivery, "failed", error="HTTP 410 Gone: the endpoint was disabled.")
        if endpoint.enabled:
            disable(endpoint, f"The receiver answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC.")
    else:
        retry_after = answer.retry_after if answer is not None and answer.status in SLOW_DOWN else None
        _schedule_retry(delivery, now, retry_after)
        if endpoint is not None:
            _note_failure(endpoint, now)


def _schedule_retry(delivery: WebhookDelivery, now: datetime, retry_after: float | None) -> None:
    schedule = get_settings().webhook_retry_schedule
    if delivery.attempts > len(schedule):
        finish(
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


def finish(delivery: WebhookDelivery, status: str, *, error: str | None = None) -> None:
    delivery.status = status
    delivery.next_attempt_at = None
    if error is not None:
        delivery.last_error = error


def _describe(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed; point the endpoint at the final URL."
    return f"HTTP {status}"
