"""One log line per HTTP request: method, path, status and time taken, in place of uvicorn's
access log.

uvicorn's access log runs for every request, chat answers included, and cost about 7 % of the
API's CPU on the chat hot path (BENCHMARKS.md, chat proxy); chat traffic is counted in
`GET /v1/usage` and, per alias, in request logs. So the management API is always logged here and
chat requests only when `TUNEFORGE_CHAT_ACCESS_LOG` is on (api/chat_fastpath.py). The query
string is left out: callers' URLs are not ours to write to disk."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tuneforge.access")


def line(scope: Scope, status: int, started: float) -> None:
    client = scope.get("client")
    log.info(
        '%s - "%s %s" %d %.1f ms',
        f"{client[0]}:{client[1]}" if client else "-",
        scope["method"],
        scope["path"],
        status,
        (time.perf_counter() - started) * 1000,
    )


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            line(scope, status, started)
