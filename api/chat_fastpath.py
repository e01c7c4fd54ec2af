"""`POST /v1/chat/completions` served straight from ASGI, ahead of FastAPI's routing.

The chat endpoint is the hot path (DESIGN.md §10) and needs none of what FastAPI adds per
request (dependency solving, request and response objects, the idempotency middleware, which
skips it anyway): this module reads the body, calls the gateway and writes the answer. Errors
use the same map as every other route (api/errors.py). A stream runs beside a watch on the
connection, so a client that hangs up cancels the upstream request at once rather than at the
next chunk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from shared.chat import gateway
from shared.errors import DomainError

log = logging.getLogger(__name__)

PATH = "/v1/chat/completions"
_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class ChatFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            exchange = await gateway.open_exchange(_bearer(scope), await _body(receive))
        except DomainError as exc:
            status, body = errors.status_and_body(exc)
            await _send_json(send, status, body, errors.error_headers(exc, status))
            return
        except (OperationalError, InterfaceError) as exc:
            log.warning("database unavailable on chat: %s", exc)
            body, status, headers = errors.database_unavailable()
            await _send_json(send, status, body, headers)
            return
        headers = [(k.encode(), v.encode()) for k, v in exchange.headers.items()]
        if not exchange.stream:
            content = await exchange.read()
            length = (b"content-length", str(len(content)).encode())
            await send({"type": "http.response.start", "status": 200, "headers": [_JSON, length, *headers]})
            await send({"type": "http.response.body", "body": content})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *headers]})
        pump = asyncio.ensure_future(_pump(exchange, send))
        watch = asyncio.ensure_future(_until_disconnect(receive))
        done, _ = await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, watch):
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if pump in done:
            pump.result()  # re-raise what went wrong mid-stream (logged by the server)


async def _pump(exchange: gateway.Exchange, send: Send) -> None:
    async with contextlib.aclosing(exchange.events()) as events:
        async for piece in events:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
            return None
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None) -> None:
    content = orjson.dumps(body)
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    extra.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": [_JSON, *extra]})
    await send({"type": "http.response.body", "body": content})
