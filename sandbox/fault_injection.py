"""Request faults on the wire: the ASGI middleware that applies them (the knobs: `faults.py`).

Closing a connection without a response is something ASGI has no message for: uvicorn answers 500
for an app that raises before `http.response.start`, and for one that returns without answering.
So the sandbox app (`SandboxApp.__call__`, outside every middleware) keeps the server's own `send`
in the scope under `SERVER_SEND`, and a drop reaches through it to uvicorn's per-request cycle and
its asyncio transport: `transport.abort()` closes the socket with nothing written (for `reset`,
after `SO_LINGER 0`, so the peer gets a TCP RST), then waits for uvicorn to see the connection lost,
after which it sends nothing more and logs nothing. Every uvicorn HTTP/1.1 protocol (h11,
httptools, zttp) keeps `transport` on its cycle. Anywhere else (another server, Starlette's
TestClient, uvicorn's trace logging wrapping `send`) the fallback starts a 500 and raises
`ConnectionDropped`, so the server cuts the response short: still a connection error for an HTTP
client, but after a status line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections import deque
from typing import Any

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI copies included routes into app.router.routes
    iter_route_contexts = None  # type: ignore[assignment]
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.faults import (
    APPLIED_HEADER,
    FAULT_HEADER,
    FaultPlane,
    FaultSpecError,
    Fired,
    model_names,
    parse_header_spec,
)

log = logging.getLogger(__name__)

SERVER_SEND = "sandbox.server_send"
JSON_MODEL_BODY_LIMIT = 4 * 1024 * 1024


class ConnectionDropped(Exception):
    """Raised where the connection cannot be closed silently (see the module docstring)."""


class FaultMiddleware:
    """Counts `/v1` requests and applies a header or rule fault to them.

    It sits inside `RequestContextMiddleware` (so the bearer check comes first and faulted answers
    carry `x-request-id`) and outside routing and the handlers (so bodies are not yet validated).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        plane: FaultPlane = app.state.faults
        method, path = scope["method"], scope["path"]
        route, params = _resolve(app, scope)
        entry = plane.record(method, path, route)

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                plane.record_status(entry, message["status"])
            await send(message)

        spec = Headers(scope=scope).get(FAULT_HEADER)
        try:
            fired = Fired(parse_header_spec(spec), "header") if spec is not None else None
        except FaultSpecError as exc:
            await exc.api_error().response()(scope, receive, send_recorded)
            return
        if fired is None:
            models: set[str] | None = None
            if plane.needs_model(method, path, route):
                messages = await _read_body(receive)
                receive = _replay(messages, receive)
                models = _request_models(app.state.store, messages, params, Headers(scope=scope))
            fired = plane.select(method, path, route, models)
        if fired is None:
            await self.app(scope, receive, send_recorded)
            return
        plane.record_fault(entry, fired)
        await self._apply(fired, scope, receive, send_recorded)

    async def _apply(self, fired: Fired, scope: Scope, receive: Receive, send: Send) -> None:
        action = fired.action
        kind = action.action
        wait = action.delay_s if kind != "stall_body" else 0.0
        if kind in ("status", "delay") or wait:
            # The whole body first: an early answer would race a client still uploading, and after a
            # wait the operation must still happen even if the client has timed out and gone.
            receive = _replay(await _read_body(receive), receive)
        if wait:
            await asyncio.sleep(wait)
        if kind == "status":
            error = action.error()
            error.headers[APPLIED_HEADER] = fired.source
            await error.response()(scope, receive, send)
        elif kind == "delay":
            await self.app(scope, receive, send)
        elif kind == "stall_body":
            await self.app(scope, receive, _stalling(send, action.delay_s))
        elif kind == "drop_after":
            await self._run_discarding(scope, receive)
            await drop_connection(scope, send, reset=False)
        else:
            await drop_connection(scope, send, reset=True)

    async def _run_discarding(self, scope: Scope, receive: Receive) -> None:
        async def discard(_: Message) -> None:
            return None

        try:
            await self.app(scope, receive, discard)
        except Exception:
            log.exception("sandbox handler failed before its response was dropped")


async def drop_connection(scope: Scope, send: Send, *, reset: bool) -> None:
    """Close the client's connection without a response (a TCP RST when `reset`)."""
    cycle = getattr(scope.get(SERVER_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-length", b"1")]})
        raise ConnectionDropped("sandbox fault: connection dropped")
    if reset:
        with contextlib.suppress(OSError, AttributeError):
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # connection_lost runs on a later loop turn; until it has, uvicorn would answer 500 for us.
    for _ in range(100):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)


def _resolve(app: Any, scope: Scope) -> tuple[str | None, dict[str, Any]]:
    """The route template this request goes to (`/v1/models/{model}`) with its path params, or None."""
    partial: tuple[str | None, dict[str, Any]] | None = None
    for route in _routes(app):
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        found = (getattr(route, "path_format", None) or route.path, child.get("path_params", {}))
        if match is Match.FULL:
            return found
        partial = partial or found
    return partial or (None, {})


def _routes(app: Any) -> list[Any]:
    """The app's routes, flattened (newer FastAPI keeps included routers as a nested branch)."""
    routes: list[Any] | None = getattr(app.state, "fault_routes", None)
    if routes is None:
        routes = list(iter_route_contexts(app.router.routes)) if iter_route_contexts else app.router.routes
        app.state.fault_routes = routes
    return routes


def _request_models(
    store: Any, messages: list[Message], params: dict[str, Any], headers: Headers
) -> set[str]:
    names: set[str] = set()
    if isinstance(params.get("model"), str):
        names |= model_names(params["model"])
    if isinstance(params.get("job_id"), str):
        for name in store.job_models(params["job_id"]):
            names |= model_names(name)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    if headers.get("content-type", "").startswith("application/json") and len(body) <= JSON_MODEL_BODY_LIMIT:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            names |= model_names(data["model"])
    return names


async def _read_body(receive: Receive) -> list[Message]:
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay


def _stalling(send: Send, delay_s: float) -> Send:
    stalled = False

    async def stalling_send(message: Message) -> None:
        nonlocal stalled
        if message["type"] == "http.response.body" and not stalled:
            stalled = True
            await asyncio.sleep(delay_s)
        await send(message)

    return stalling_send
