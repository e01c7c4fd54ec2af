"""The sandbox ASGI app: `uvicorn --factory sandbox.app:create_app`.

Everything under `/v1` requires some `Authorization: Bearer …` (any key works: the sandbox has
no accounts) and every response carries `x-request-id`, which the SDK surfaces as `_request_id`.
`/sandbox/*` is the fault control plane and request stats, for tests (see `faults.py`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox import azure, chat, control, files, ids, jobs, models
from sandbox.errors import ApiError, install_error_handlers, internal_error_response
from sandbox.fault_injection import SERVER_SEND, FaultMiddleware
from sandbox.faults import FaultPlane
from sandbox.store import Store
from shared.config import get_settings

log = logging.getLogger(__name__)

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


class RequestContextMiddleware:
    """Adds `x-request-id`/`openai-*` headers, enforces the bearer header, and envelopes crashes.

    A plain ASGI middleware (not BaseHTTPMiddleware) so streamed chat responses pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.request_id()
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers["openai-version"] = "2020-10-01"
                headers["openai-organization"] = "tuneforge-sandbox"
            await send(message)

        if scope["path"].startswith("/v1") and not _has_bearer(Headers(scope=scope)):
            response = ApiError(401, MISSING_KEY_MESSAGE).response()
            await response(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("sandbox request failed")
            if started:
                raise
            await internal_error_response()(scope, receive, send_with_headers)


def _has_bearer(headers: Headers) -> bool:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


class SandboxApp(FastAPI):
    """Keeps the server's own `send` in the scope, so a fault can drop the connection (see
    `fault_injection.py`): middleware only ever sees wrapped ones."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(
    time_scale: float | None = None, flavor: str | None = None, engine: Store | None = None
) -> FastAPI:
    """Build a fresh sandbox (state lives in the app); `time_scale` and `flavor` (`openai`, or
    `azure` for an Azure OpenAI resource's URL shape and auth, see `azure.py`) default to the
    settings values. `engine` replaces the simulated store: the self-hosted trainer passes its
    real one (trainer/engine.py) and gets the same routes, validation and object shapes."""
    if time_scale is None:
        time_scale = get_settings().sandbox_time_scale
    flavor = flavor or get_settings().sandbox_flavor
    app = SandboxApp(title="Tuneforge sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = engine if engine is not None else Store(time_scale)
    app.state.faults = FaultPlane()
    install_error_handlers(app)
    for module in (files, jobs, models, chat):
        app.include_router(module.router, prefix="/v1")
    app.include_router(control.router)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Added first, so it runs inside RequestContextMiddleware: the bearer check comes before faults.
    app.add_middleware(FaultMiddleware)
    app.add_middleware(RequestContextMiddleware)
    if flavor == "azure":
        azure.install(app)
    return app
