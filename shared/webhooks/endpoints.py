"""Webhook endpoints of a project: create, change, rotate their secret, and the secrets that
sign a delivery (two during a rotation's grace period)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import crypto
from shared.auth import new_webhook_secret
from shared.errors import InvalidInput, NotFound
from shared.ids import new_id
from shared.models import Project, WebhookEndpoint, utcnow
from shared.webhooks import ssrf

EVENT_TYPES = (
    "dataset.ready",
    "dataset.failed",
    "tune.running",
    "tune.succeeded",
    "tune.failed",
    "tune.cancelled",
    "eval.completed",
    # A tuned model's base shuts down soon (shared/providers/lifecycle.py).
    "model.deprecation_warning",
)
TEST_EVENT = "webhook.test"
DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class EndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str


def create_endpoint(
    session: Session, *, project_id: str, url: str, events: list[str] | None, description: str | None = None
) -> EndpointWithSecret:
    ssrf.check_registration(url)
    check_event_types(events, param="events")
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
    return EndpointWithSecret(endpoint=endpoint, secret=secret)


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


def update_endpoint(
    session: Session,
    *,
    project_id: str,
    endpoint_id: str,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    endpoint = get_endpoint(session, project_id=project_id, endpoint_id=endpoint_id)
    if url is not None:
        ssrf.check_registration(url)
        endpoint.url = url
    if events is not None:
        check_event_types(events, param="events")
        endpoint.events = {"types": events} if events else None
    if description is not None:
        endpoint.description = description
    if enabled is not None:
        endpoint.enabled = enabled
        if enabled:
            # Turning an endpoint back on is the owner saying it is fixed: start counting afresh.
            endpoint.disabled_reason = None
            endpoint.failing_since = None
    session.flush()
    return endpoint


def delete_endpoint(session: Session, *, project_id: str, endpoint_id: str) -> None:
    session.delete(get_endpoint(session, project_id=project_id, endpoint_id=endpoint_id))
    session.flush()


def rotate_secret(
    session: Session, *, project_id: str, endpoint_id: str, grace: timedelta = DEFAULT_GRACE
) -> EndpointWithSecret:
    """A new secret signs from now on; the old one signs too until the grace period ends, so a
    receiver can switch over without dropping a delivery."""
    endpoint = get_endpoint(session, project_id=project_id, endpoint_id=endpoint_id)
    secret = new_webhook_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = utcnow() + grace
    endpoint.secret = crypto.encrypt(secret)
    session.flush()
    return EndpointWithSecret(endpoint=endpoint, secret=secret)


def disable(endpoint: WebhookEndpoint, reason: str) -> None:
    endpoint.enabled = False
    endpoint.disabled_reason = reason


def signing_secrets(
    session: Session, *, project_id: str, endpoint_id: str | None, now: datetime
) -> list[str]:
    """The secrets that sign a delivery: the endpoint's (and its previous one during a rotation's
    grace period), or the project's default secret for per-request callbacks."""
    if endpoint_id is None:
        return [default_secret(session, project_id=project_id)]
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("The endpoint of this delivery was deleted.", code="webhook_endpoint_not_found")
    secrets = [crypto.decrypt(endpoint.secret)]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        secrets.append(crypto.decrypt(endpoint.previous_secret))
    return secrets


def default_secret(session: Session, *, project_id: str) -> str:
    project = session.get(Project, project_id)
    assert project is not None
    return crypto.decrypt(project.default_webhook_secret)


def validate_callback(url: str | None, events: list[str] | None) -> None:
    """Check a per-request `webhook_url`/`webhook_events` pair before the object is created."""
    if url is not None:
        ssrf.check_registration(url)
    check_event_types(events, param="webhook_events")


def check_event_types(events: list[str] | None, *, param: str) -> None:
    unknown = sorted(set(events or []) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(
            f"Unknown event type(s) {unknown}; choose from {list(EVENT_TYPES)}.",
            code="invalid_event_type",
            param=param,
        )
