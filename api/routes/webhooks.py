from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api import schemas
from api.deps import PrincipalDep, SessionDep
from shared.models import WebhookEndpoint, unix
from shared.webhooks import service as webhooks

router = APIRouter(prefix="/v1", tags=["webhooks"])


def _endpoint(e: WebhookEndpoint) -> dict[str, object]:
    return {
        "id": e.id,
        "object": "webhook_endpoint",
        "url": e.url,
        "events": (e.events or {}).get("types"),
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "failing_since": unix(e.failing_since),
        "description": e.description,
        "created_at": unix(e.created_at),
    }


@router.post("/webhook-endpoints", status_code=201, response_model=schemas.CreatedWebhookEndpoint)
def create_endpoint(
    session: SessionDep, principal: PrincipalDep, body: schemas.WebhookEndpointRequest
) -> dict[str, object]:
    """Register a receiver; the signing secret is in this response only."""
    created = webhooks.create_endpoint(
        session,
        project_id=principal.project_id,
        url=str(body.url),
        events=body.events,
        description=body.description,
    )
    return {**_endpoint(created.endpoint), "secret": created.secret}


@router.get("/webhook-endpoints", response_model=schemas.Page[schemas.WebhookEndpoint])
def list_endpoints(session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    """The project's receivers (secrets are never listed)."""
    rows = webhooks.list_endpoints(session, project_id=principal.project_id)
    return {"object": "list", "data": [_endpoint(e) for e in rows], "has_more": False}


@router.get("/webhook-endpoints/{endpoint_id}", response_model=schemas.WebhookEndpoint)
def get_endpoint(session: SessionDep, principal: PrincipalDep, endpoint_id: str) -> dict[str, object]:
    """One receiver, with why it was disabled if it was."""
    return _endpoint(webhooks.get_endpoint(session, project_id=principal.project_id, endpoint_id=endpoint_id))


@router.patch("/webhook-endpoints/{endpoint_id}", response_model=schemas.WebhookEndpoint)
def update_endpoint(
    session: SessionDep, principal: PrincipalDep, endpoint_id: str, body: schemas.WebhookEndpointUpdate
) -> dict[str, object]:
    """Change the URL, the event filter or the description, or enable/disable the receiver."""
    endpoint = webhooks.update_endpoint(
        session,
        project_id=principal.project_id,
        endpoint_id=endpoint_id,
        url=str(body.url) if body.url is not None else None,
        events=body.events,
        enabled=body.enabled,
        description=body.description,
    )
    return _endpoint(endpoint)


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(session: SessionDep, principal: PrincipalDep, endpoint_id: str) -> None:
    """Stop sending to a receiver."""
    webhooks.delete_endpoint(session, project_id=principal.project_id, endpoint_id=endpoint_id)


@router.post("/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=schemas.CreatedWebhookEndpoint)
def rotate_secret(
    session: SessionDep,
    principal: PrincipalDep,
    endpoint_id: str,
    body: schemas.RotateSecretRequest | None = None,
) -> dict[str, object]:
    """A new secret (shown once); the old one also signs until the grace period ends."""
    grace = (body or schemas.RotateSecretRequest()).grace_period()
    rotated = webhooks.rotate_secret(
        session, project_id=principal.project_id, endpoint_id=endpoint_id, grace=grace
    )
    return {**_endpoint(rotated.endpoint), "secret": rotated.secret}


@router.post("/webhook-endpoints/{endpoint_id}/test", status_code=202, response_model=schemas.WebhookDelivery)
def send_test(session: SessionDep, principal: PrincipalDep, endpoint_id: str) -> dict[str, object]:
    """Send a `webhook.test` event to this receiver; follow it in its delivery log."""
    return webhooks.delivery_dict(
        webhooks.send_test(session, project_id=principal.project_id, endpoint_id=endpoint_id)
    )


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries", response_model=schemas.Page[schemas.WebhookDelivery]
)
def list_deliveries(session: SessionDep, principal: PrincipalDep, endpoint_id: str) -> dict[str, object]:
    """The latest deliveries to a receiver: status, attempts, last answer, next attempt."""
    rows = webhooks.list_deliveries(session, project_id=principal.project_id, endpoint_id=endpoint_id)
    return {"object": "list", "data": [webhooks.delivery_dict(d) for d in rows], "has_more": False}


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver", status_code=202, response_model=schemas.WebhookDelivery
)
def redeliver(session: SessionDep, principal: PrincipalDep, delivery_id: str) -> dict[str, object]:
    """Send a delivery again now, under the same `webhook-id`."""
    return webhooks.delivery_dict(
        webhooks.redeliver(session, project_id=principal.project_id, delivery_id=delivery_id)
    )


@router.get("/events", response_model=schemas.Page[schemas.Event])
def list_events(
    session: SessionDep,
    principal: PrincipalDep,
    since: Annotated[int | None, Query(description="Unix time; events at or after it")] = None,
    after: Annotated[str | None, Query(description="An event id; events after it")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, object]:
    """Every event of the project, oldest first (whether or not it was delivered), to reconcile."""
    since_at = datetime.fromtimestamp(since, tz=UTC) if since is not None else None
    data, has_more = webhooks.list_events(
        session, project_id=principal.project_id, since=since_at, after=after, limit=limit
    )
    return {"object": "list", "data": data, "has_more": has_more}


@router.get("/webhooks/default/secret", response_model=schemas.WebhookSecret)
def get_default_secret(session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    """The secret that signs per-request callbacks (`webhook_url` on a create call)."""
    return {"secret": webhooks.default_secret(session, project_id=principal.project_id)}
