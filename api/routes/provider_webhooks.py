"""Webhooks *from* providers (OpenAI's `fine_tuning.job.*`): a signed hint that a job changed.
The tune is polled at once; polling stays the safety net when a webhook never comes."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import SessionDep
from shared import providers
from shared.tunes import jobs as tune_jobs

router = APIRouter(prefix="/v1/provider-webhooks", tags=["provider webhooks"])


@router.post("/openai")
async def openai_webhook(request: Request, session: SessionDep) -> dict[str, object]:
    """Receive a signed OpenAI webhook (Standard Webhooks); no API key, the signature authenticates."""
    event = providers.verify_webhook(await request.body(), request.headers)
    tune_id = None
    if str(event.get("type", "")).startswith("fine_tuning.job."):
        tune_id = tune_jobs.nudge(session, provider_job_id=str(event["data"].get("id", "")))
    return {"received": True, "tune_id": tune_id}
