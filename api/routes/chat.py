"""The OpenAI-compatible surface frontends call with the plain `openai` SDK."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, SessionDep, bearer_token
from shared import auth
from shared.chat import gateway, routing
from shared.chat.routing import Route
from shared.db import session_scope
from shared.errors import InvalidInput, UpstreamError

router = APIRouter(prefix="/v1", tags=["openai-compatible"])


def _route(token: str | None, model: str) -> Route:
    with session_scope() as session:
        principal = auth.authenticate(session, token)
        return routing.pick(routing.lookup(session, project_id=principal.project_id, model=model))


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.", code="invalid_request")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidInput(
            "'model' is required: a tune id, a fine-tuned model or a base model.",
            code="missing_model",
            param="model",
        )
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise InvalidInput("'messages' must be a non-empty list.", code="invalid_messages", param="messages")
    return body


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Chat with a tuned model (by tune id or `ft:` name) or a base model; `stream` supported."""
    body = _parse(await request.body())
    route = await run_in_threadpool(_route, bearer_token(authorization), body["model"])
    try:
        upstream = await gateway.send(route, body)
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"The model provider could not be reached ({type(exc).__name__}). Retry shortly.",
            status=502,
            code="upstream_unavailable",
        ) from exc
    if upstream.status_code >= 400:
        content = await upstream.aread()
        await upstream.aclose()
        return Response(
            content,
            status_code=upstream.status_code,
            media_type="application/json",
            headers=_passthrough(upstream),
        )
    if body.get("stream"):
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **_passthrough(upstream)},
            background=BackgroundTask(upstream.aclose),
        )
    content = await upstream.aread()
    await upstream.aclose()
    return Response(
        content,
        status_code=upstream.status_code,
        media_type="application/json",
        headers=_passthrough(upstream),
    )


def _passthrough(upstream: httpx.Response) -> dict[str, str]:
    # Rate-limit and request-id headers help clients back off and report issues upstream.
    return {
        k: v
        for k, v in upstream.headers.items()
        if k.startswith("x-ratelimit-") or k in ("retry-after", "x-request-id")
    }


@router.get("/models")
def list_models(session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    """Models this key can call: its fine-tuned models, then base models (with shutdown dates)."""
    return {"object": "list", "data": routing.list_models(session, project_id=principal.project_id)}
