"""`POST /v1/chat/completions` served straight from ASGI, ahead of FastAPI.

The chat endpoint is the hot path (DESIGN.md §10) and needs none of what FastAPI adds per
request (its middleware, dependency solving, request and response objects): `create_app` puts
this class outside the FastAPI app, and it reads the body, calls the gateway and writes the
answer. Errors use the same map as every other route (api/errors.py). A stream is watched for
the client hanging up, which cancels the upstream request at once (uvicorn's `send` to a gone
client just returns, so without the watch the upstream would run to its end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors
from api.access_log import AccessLog
from shared.chat import gateway
from shared.config import get_settings
from shared.errors import DomainError, PayloadTooLarge

log = logging.getLogger(__name__)

PATH = "/v1/chat/completions"
_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class ChatFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._chat: ASGIApp = AccessLog(self._serve) if get_settings().chat_access_log else self._serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        await self._chat(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Everything that can fail before the answer starts is answered in OpenAI's envelope;
        # a stream that breaks later can only be cut (the server logs it).
        try:
            exchange = await gateway.open_exchange(_bearer(scope), await _body(receive))
            content = None if exchange.stream else await exchange.read()
        except DomainError as exc:
            status, body = errors.status_and_body(exc)
            await _send_json(send, status, body, errors.error_headers(exc, status))
            return
        except (OperationalError, InterfaceError) as exc:
            log.warning("database unavailable on chat: %s", exc)
            body, status, headers = errors.database_unavailable()
            await _send_json(send, status, body, headers)
            return
        except Exception:
            log.exception("unhandled error on chat")
            body = errors.error_body("server_error", "internal_error", "Internal error; it has been logged.")
            await _send_json(send, 500, body, None)
            return
        headers = [(k.encode(), v.encode()) for k, v in exchange.headers.items()]
        if content is not None:
            length = (b"content-length", str(len(content)).encode())
            await send({"type": "http.response.start", "status": 200, "headers": [_JSON, length, *headers]})
            await send({"type": "http.response.body", "body": content})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, *headers]})
            await _stream(exchange, receive, send)


async def _stream(exchange: gateway.Exchange, receive: Receive, send: Send) -> None:
    this = asyncio.current_task()
    hung_up = asyncio.Event()
    watch = asyncio.ensure_future(_cancel_on_disconnect(receive, this, hung_up))
    try:
        async with contextlib.aclosing(exchange.events()) as events:
            async for piece in events:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        if not hung_up.is_set():
            raise  # the server is stopping, not the client leaving
    finally:
        watch.cancel()


async def _cancel_on_disconnect(
    receive: Receive, task: asyncio.Task[Any] | None, hung_up: asyncio.Event
) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    hung_up.set()
    if task is not None:
        task.cancel()


async def _body(receive: Receive) -> bytes:
    limit = get_settings().chat_max_body_bytes
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(
                f"The request body is over {limit} bytes (TUNEFORGE_CHAT_MAX_BODY_BYTES). Send "
                "fewer or smaller messages, or images by URL instead of inline.",
                code="request_too_large",
            )
        parts.append(part)
        if not message.get("more_body"):
            return parts[0] if len(parts) == 1 else b"".join(parts)


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
