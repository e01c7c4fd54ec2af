from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api import schemas
from api.deps import PrincipalDep, SessionDep
from api.schemas_providers import RetuneRequest
from shared.datasets import service as datasets
from shared.models import unix
from shared.tunes import retune
from shared.tunes import service as tunes
from shared.tunes.serialize import tune_dict

router = APIRouter(prefix="/v1", tags=["tunes"])


@router.post("/quotes", response_model=schemas.Quote)
def create_quote(
    session: SessionDep, principal: PrincipalDep, body: schemas.QuoteRequest
) -> dict[str, object]:
    """What training on a dataset would cost, without starting anything."""
    dataset = datasets.get(session, project_id=principal.project_id, dataset_id=body.dataset_id)
    return datasets.quote(session, dataset, model=body.model, n_epochs=body.n_epochs)


@router.post("/tunes", status_code=202, response_model=schemas.Tune)
def create_tune(
    session: SessionDep, principal: PrincipalDep, body: schemas.TuneRequest, response: Response
) -> dict[str, object]:
    """Start a fine-tuning job from a ready dataset; follow it by polling or webhooks."""
    tune = tunes.create(
        session,
        project_id=principal.project_id,
        dataset_id=body.dataset_id,
        base_model=body.base_model,
        n_epochs=body.n_epochs,
        suffix=body.suffix,
        provider=body.provider,
        metadata=body.metadata,
        max_cost_usd=body.max_cost_usd,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        webhook_events=body.webhook_events,
    )
    response.headers["Location"] = f"/v1/tunes/{tune.id}"
    return tune_dict(tune)


@router.get("/tunes", response_model=schemas.Page[schemas.Tune])
def list_tunes(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, object]:
    """The project's tunes, newest first."""
    rows, has_more = tunes.list_tunes(session, project_id=principal.project_id, limit=limit, after=after)
    return {"object": "list", "data": [tune_dict(t) for t in rows], "has_more": has_more}


@router.get("/tunes/{tune_id}", response_model=schemas.Tune)
def get_tune(session: SessionDep, principal: PrincipalDep, tune_id: str) -> dict[str, object]:
    """One tune with its provider job and fine-tuned model."""
    return tune_dict(tunes.get(session, project_id=principal.project_id, tune_id=tune_id))


@router.get("/tunes/{tune_id}/events", response_model=schemas.Page[schemas.TuneEvent])
def list_tune_events(session: SessionDep, principal: PrincipalDep, tune_id: str) -> dict[str, object]:
    """Status changes and the provider's events, oldest first."""
    events = tunes.list_events(session, project_id=principal.project_id, tune_id=tune_id)
    data = [
        {
            "id": e.id,
            "object": "tune.event",
            "source": e.source,
            "kind": e.kind,
            "level": e.level,
            "message": e.message,
            "data": e.data,
            "created_at": unix(e.created_at),
        }
        for e in events
    ]
    return {"object": "list", "data": data, "has_more": False}


@router.get("/tunes/{tune_id}/metrics", response_model=schemas.Page[schemas.MetricPoint])
def get_tune_metrics(session: SessionDep, principal: PrincipalDep, tune_id: str) -> dict[str, object]:
    """The loss curve: one point per training step."""
    points = tunes.metrics(session, project_id=principal.project_id, tune_id=tune_id)
    return {"object": "list", "data": points, "has_more": False}


@router.get("/tunes/{tune_id}/checkpoints", response_model=schemas.Page[schemas.Checkpoint])
def list_tune_checkpoints(session: SessionDep, principal: PrincipalDep, tune_id: str) -> dict[str, object]:
    """The provider's checkpoints of a finished tune (each usable as a chat model), by step."""
    data = tunes.checkpoints(session, project_id=principal.project_id, tune_id=tune_id)
    return {"object": "list", "data": data, "has_more": False}


@router.post("/tunes/{tune_id}/cancel", status_code=202, response_model=schemas.Tune)
def cancel_tune(session: SessionDep, principal: PrincipalDep, tune_id: str) -> dict[str, object]:
    """Cancel a tune; a submitted job is cancelled at the provider."""
    return tune_dict(tunes.cancel(session, project_id=principal.project_id, tune_id=tune_id))


@router.post("/tunes/{tune_id}/pause", status_code=202, response_model=schemas.Tune)
def pause_tune(session: SessionDep, principal: PrincipalDep, tune_id: str) -> dict[str, object]:
    """Pause a queued or running job at the provider (it keeps its progress)."""
    return tune_dict(tunes.pause(session, project_id=principal.project_id, tune_id=tune_id))


@router.post("/tunes/{tune_id}/resume", status_code=202, response_model=schemas.Tune)
def resume_tune(session: SessionDep, principal: PrincipalDep, tune_id: str) -> dict[str, object]:
    """Resume a paused job."""
    return tune_dict(tunes.resume(session, project_id=principal.project_id, tune_id=tune_id))


@router.post("/tunes/{tune_id}/retune", status_code=202, response_model=schemas.Tune)
def retune_tune(
    session: SessionDep, principal: PrincipalDep, tune_id: str, body: RetuneRequest, response: Response
) -> dict[str, object]:
    """Start the same tune (dataset, epochs, suffix, metadata) on another provider and/or base
    model; with `alias`, point it at the new tune once that succeeds."""
    tune = retune.retune(
        session,
        project_id=principal.project_id,
        tune_id=tune_id,
        provider=body.provider,
        base_model=body.base_model,
        alias=body.alias,
        require_eval=body.require_eval
        if isinstance(body.require_eval, bool)
        else body.require_eval.model_dump(),
    )
    response.headers["Location"] = f"/v1/tunes/{tune.id}"
    return tune_dict(tune)
