from __future__ import annotations

from fastapi import APIRouter

from api import schemas
from api.deps import PrincipalDep, SessionDep
from shared.models import WebhookDelivery, WebhookEndpoint, unix
from shared.webhooks import service as webhooks

router = APIRouter(prefix="/v1", tags=["webhooks"])


def _endpoint(e: WebhookEndpoint) -> dict[str, object]:
    return {
        "id": e.id,
        "object": "webhook_endpoint",
        "url": e.url,
        "events": (e.events or {}).get("types"),
        "enabled": e.enabled,
        "description": e.description,
        "created_at": unix(e.created_at),
    }


def _delivery(d: WebhookDelivery) -> dict[str, object]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "last_response_body": d.last_response_body,
        "next_attempt_at": unix(d.next_attempt_at),
        "delivered_at": unix(d.delivered_at),
        "created_at": unix(d.created_at),
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


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(session: SessionDep, principal: PrincipalDep, endpoint_id: str) -> None:
    """Stop sending to a receiver."""
    webhooks.delete_endpoint(session, project_id=principal.project_id, endpoint_id=endpoint_id)


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries", response_model=schemas.Page[schemas.WebhookDelivery]
)
def list_deliveries(session: SessionDep, principal: PrincipalDep, endpoint_id: str) -> dict[str, object]:
    """The latest deliveries to a receiver, with their last response."""
    rows = webhooks.list_deliveries(session, project_id=principal.project_id, endpoint_id=endpoint_id)
    return {"object": "list", "data": [_delivery(d) for d in rows], "has_more": False}


@router.get("/webhooks/default/secret", response_model=schemas.WebhookSecret)
def get_default_secret(session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    """The secret that signs per-request callbacks (`webhook_url` on a create call)."""
    return {"secret": webhooks.default_secret(session, project_id=principal.project_id)}
