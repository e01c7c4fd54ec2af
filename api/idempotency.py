"""`Idempotency-Key` on POSTs, as an ASGI middleware so a replayed request never reaches a route.

The body is hashed while it streams to the route (uploads are never buffered). Multipart bodies
are hashed without their boundary, which clients pick at random on every attempt."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import bearer_token
from api.errors import status_and_body
from shared import auth, idempotency
from shared.db import session_scope
from shared.errors import DomainError, Unauthorized

# Streaming chat answers are not worth storing, and retrying a chat request is harmless.
EXCLUDED_PATHS = frozenset({"/v1/chat/completions"})
MAX_STORED_BODY = 1024 * 1024
# Statuses worth replaying: the request ran. Others (auth, conflicts, rate limits, server errors)
# release the key so the client can simply try again.
NOT_STORED = frozenset({401, 403, 409, 429})
REPLAYED_HEADERS = ("content-type", "location")


class BodyHasher:
    def __init__(self, content_type: str) -> None:
        self._digest = hashlib.sha256()
        boundary = ""
        if content_type.startswith("multipart/") and "boundary=" in content_type:
            boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"')
        self._boundary = boundary.encode()
        self._tail = b""

    def update(self, chunk: bytes) -> None:
        if not self._boundary:
            self._digest.update(chunk)
            return
        data = (self._tail + chunk).replace(self._boundary, b"")
        # Hold back what could be the start of a boundary that the next chunk completes.
        cut = max(len(data) - (len(self._boundary) - 1), 0)
        self._digest.update(data[:cut])
        self._tail = data[cut:]

    def hexdigest(self) -> str:
        self._digest.update(self._tail)
        self._tail = b""
        return self._digest.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] in EXCLUDED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        key = headers.get("idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        hasher = BodyHasher(headers.get("content-type", ""))
        try:
            idempotency.check_key(key)
            claimed = await run_in_threadpool(_claim, headers.get("authorization"), key, method, path)
        except Unauthorized:
            await self.app(scope, receive, send)  # the route answers 401 as it always does
            return
        except DomainError as exc:
            await _send_error(send, exc)
            return
        if isinstance(claimed, idempotency.StoredResponse):
            await _replay(claimed, receive, send, hasher, method, path)
            return
        await self._run_and_store(claimed, scope, receive, send, hasher)

    async def _run_and_store(
        self, record_id: str, scope: Scope, receive: Receive, send: Send, hasher: BodyHasher
    ) -> None:
        status = 500
        stored_headers: dict[str, str] = {}
        body = bytearray()
        settled = False

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                hasher.update(message.get("body", b""))
            return message

        async def capturing_send(message: Message) -> None:
            nonlocal status, settled
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    if k.decode().lower() in REPLAYED_HEADERS:
                        stored_headers[k.decode().lower()] = v.decode()
            elif message["type"] == "http.response.body":
                if len(body) <= MAX_STORED_BODY:
                    body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    # Store before the client sees the end of the answer, so a retry sent the
                    # moment it arrives is a replay, not a 409.
                    await _settle(record_id, status, stored_headers, bytes(body), hasher)
                    settled = True
            await send(message)

        try:
            await self.app(scope, hashing_receive, capturing_send)
        finally:
            if not settled:
                await run_in_threadpool(_release, record_id)


async def _settle(
    record_id: str, status: int, headers: dict[str, str], body: bytes, hasher: BodyHasher
) -> None:
    if status >= 500 or status in NOT_STORED or len(body) > MAX_STORED_BODY:
        await run_in_threadpool(_release, record_id)
    else:
        await run_in_threadpool(_complete, record_id, hasher.hexdigest(), status, headers, body)


def _claim(authorization: str | None, key: str, method: str, path: str) -> idempotency.StoredResponse | str:
    with session_scope() as session:
        principal = auth.authenticate(session, bearer_token(authorization))
        return idempotency.claim(session, project_id=principal.project_id, key=key, method=method, path=path)


def _complete(record_id: str, request_hash: str, status: int, headers: dict[str, str], body: bytes) -> None:
    with session_scope() as session:
        idempotency.complete(
            session, record_id, request_hash=request_hash, status=status, headers=headers, body=body
        )


def _release(record_id: str) -> None:
    with session_scope() as session:
        idempotency.release(session, record_id)


async def _replay(
    stored: idempotency.StoredResponse,
    receive: Receive,
    send: Send,
    hasher: BodyHasher,
    method: str,
    path: str,
) -> None:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        hasher.update(message.get("body", b""))
        more = message.get("more_body", False)
    try:
        idempotency.check_replay(stored, method=method, path=path, request_hash=hasher.hexdigest())
    except DomainError as exc:
        await _send_error(send, exc)
        return
    headers = [(k.encode(), v.encode()) for k, v in stored.headers.items()]
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body})


async def _send_error(send: Send, exc: DomainError) -> None:
    status, payload = status_and_body(exc)
    body: Any = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
