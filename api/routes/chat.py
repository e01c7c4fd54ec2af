"""The OpenAI-compatible listing and usage routes. `POST /v1/chat/completions` itself is served
by api/chat_fastpath.py, ahead of FastAPI."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PrincipalDep, SessionDep
from shared.chat import routing, usage

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


@router.get("/models")
def list_models(session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    """Models this key can call: aliases, fine-tuned models, then base models (with shutdown dates)."""
    return {"object": "list", "data": routing.list_models(session, project_id=principal.project_id)}


@router.get("/usage")
def get_usage(
    session: SessionDep,
    principal: PrincipalDep,
    start_date: date | None = None,
    end_date: date | None = None,
    group_by: Annotated[list[str] | None, Query()] = None,
) -> dict[str, object]:
    """Chat requests, tokens and cost per day and model (or `group_by` day, model, alias, key);
    the last 30 days by default. Usage is written every TUNEFORGE_CHAT_FLUSH_SECONDS."""
    end = end_date or datetime.now(UTC).date()
    start = start_date or end - timedelta(days=29)
    return usage.summarize(
        session,
        project_id=principal.project_id,
        start=start,
        end=end,
        group_by=group_by if group_by is not None else ["day", "model"],
    )
