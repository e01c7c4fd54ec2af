"""Evals: models side by side on a dataset split, with metrics and intervals."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api import schemas
from api.deps import PrincipalDep, SessionDep
from api.schemas_evals import Eval, EvalRequest
from shared.evals import service as evals

router = APIRouter(prefix="/v1/evals", tags=["evals"])


@router.post("", status_code=202, response_model=Eval)
def create_eval(
    session: SessionDep, principal: PrincipalDep, body: EvalRequest, response: Response
) -> dict[str, object]:
    """Answer a dataset split's prompts with every model, then score them against the references."""
    row = evals.create(
        session,
        project_id=principal.project_id,
        dataset_id=body.dataset_id,
        models=body.models,
        options=body.options(),
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        webhook_events=body.webhook_events,
    )
    response.headers["Location"] = f"/v1/evals/{row.id}"
    return evals.eval_dict(row, done=0)


@router.get("", response_model=schemas.Page[Eval])
def list_evals(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, object]:
    """The project's evals, newest first (without their items)."""
    rows, has_more = evals.list_evals(session, project_id=principal.project_id, limit=limit, after=after)
    return {"object": "list", "data": [evals.eval_dict(r) for r in rows], "has_more": has_more}


@router.get(
    "/{eval_id}",
    response_model=Eval,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or the item table as CSV"}},
)
def get_eval(
    session: SessionDep,
    principal: PrincipalDep,
    eval_id: str,
    format: Annotated[Literal["json", "csv"], Query(description="csv: the per-item table")] = "json",
) -> object:
    """Metrics per model with bootstrap 95% intervals, and every item side by side."""
    row = evals.get(session, project_id=principal.project_id, eval_id=eval_id)
    if format == "csv":
        return Response(
            evals.to_csv(session, row),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{row.id}.csv"'},
        )
    return {
        **evals.eval_dict(row, done=evals.progress(session, row)),
        "items": evals.items_table(session, row),
    }
