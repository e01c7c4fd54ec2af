"""Talking to the provider over the pooled client in transport.py, OpenAI-shaped errors for
whatever the upstream answers, and a server-sent-events reader that finds the usage chunk."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from shared import providers
from shared.chat import transport
from shared.errors import DomainError, NotFound, UpstreamError


async def send(provider: providers.Provider, body: dict[str, Any]) -> transport.UpstreamResponse:
    """Start the request and return at the status line; the caller reads and closes the body."""
    try:
        return await transport.post(
            provider.base_url,
            provider.chat_path(body["model"]),
            orjson.dumps(body),
            {**provider.auth_headers(), "Content-Type": "application/json"},
            params=provider.chat_query() or None,
        )
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamError(
            f"The model provider did not answer in time ({type(exc).__name__}). Retry shortly.",
            status=504,
            code="upstream_timeout",
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"The model provider could not be reached ({type(exc).__name__}). Retry shortly.",
            status=502,
            code="upstream_unavailable",
        ) from None


def error_for(status: int, content: bytes, headers: Mapping[str, str]) -> DomainError:
    """The client's error for an upstream failure. Request errors pass through with the
    upstream's own message; errors that are the deployment's (its provider key, the provider's
    capacity) become 502/503/504 so clients retry instead of changing their request."""
    upstream = _upstream_error(content)
    message = upstream.get("message") or f"The model provider answered {status}."
    param = upstream.get("param") if isinstance(upstream.get("param"), str) else None
    code = upstream.get("code") if isinstance(upstream.get("code"), str) else None
    if status == 404:
        return NotFound(message, code=code or "model_not_found", param=param)
    if status in (400, 409, 413, 422):
        return UpstreamError(message, status=status, code=code or "invalid_request", param=param)
    if status in (401, 403):
        return UpstreamError(
            "The model provider refused this deployment's credentials; the operator must check the "
            "provider's API key. Your request was not the cause.",
            status=502,
            code="upstream_auth_failed",
        )
    if status == 429:
        return UpstreamError(
            f"The model provider is rate limiting this deployment: {message} Retry after a pause.",
            status=429,
            code="upstream_rate_limited",
            retry_after=headers.get("retry-after") or "1",
        )
    if status in (408, 504):
        return UpstreamError(
            "The model provider timed out. Retry shortly.", status=504, code="upstream_timeout"
        )
    return UpstreamError(
        f"The model provider failed ({status}): {message} Retry shortly.",
        status=503 if status == 503 else 502,
        code="upstream_error",
        retry_after=headers.get("retry-after"),
    )


def _upstream_error(content: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    return {}


# A non-null usage object; with include_usage every other chunk carries `"usage":null`.
_USAGE = re.compile(rb'"usage"\s*:\s*\{')


class EventReader:
    """Finds `usage` in an SSE byte stream as it passes, drops the usage-only chunk unless the
    client asked for it, and (for request logs) joins the text.

    Only the rare event that carries a usage object is parsed; every other byte goes on as it
    came. Bytes after the last complete event wait in `_tail`: when the client wants usage they
    have already been passed on and are kept only so a usage object cut between two reads is
    still found; otherwise they are held back until their event is complete (it might be the
    usage-only chunk, which is dropped)."""

    def __init__(self, *, keep_usage: bool, collect_text: bool) -> None:
        self.keep_usage = keep_usage
        self.collect_text = collect_text
        self.usage: dict[str, Any] | None = None
        self._parts: list[str] = []
        self._tail = b""

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def _passes_through(self) -> bool:
        return self.keep_usage and not self.collect_text

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        end = _start_before(data, len(data))
        complete, self._tail = data[:end], data[end:]
        if complete:
            complete = self._complete(complete)
        if self._passes_through:
            if len(self._tail) > _MAX_TAIL:
                self._tail = b""  # an upstream that never ends an event: stop looking for usage
            return chunk
        return complete

    def flush(self) -> bytes:
        rest, self._tail = self._tail, b""
        kept = self._complete(rest) if rest.strip() else rest
        return b"" if self._passes_through else kept

    def _complete(self, events: bytes) -> bytes:
        """Whole events in, the ones to forward out."""
        if self.collect_text:
            return b"".join(event for event in _split(events) if self._keep(event))
        out, done, read = [], 0, 0
        for match in _USAGE.finditer(events):
            if match.start() < read:
                continue  # inside an event already read
            start = _start_before(events, match.start())
            read = _end_after(events, match.start())
            if not self._keep(events[start:read]):
                out.append(events[done:start])
                done = read
        if not out:
            return events
        out.append(events[done:])
        return b"".join(out)

    def _keep(self, event: bytes) -> bool:
        data = _data(event)
        if not isinstance(data, dict):
            return True
        usage = data.get("usage")
        if self.collect_text:
            for choice in data.get("choices") or ():
                content = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
                if isinstance(content, str):
                    self._parts.append(content)
        if isinstance(usage, dict):
            self.usage = usage
            if not self.keep_usage and not data.get("choices"):
                return False
        return True


# An event ends with a blank line: "\n\n", or "\r\n\r\n" whose last three bytes are "\n\r\n".
_MAX_TAIL = 1024 * 1024


def _start_before(data: bytes, at: int) -> int:
    """Where the event holding byte `at` starts (the end of the one before it), or 0."""
    lf, crlf = data.rfind(b"\n\n", 0, at), data.rfind(b"\n\r\n", 0, at)  # once per read: no genexpr
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def _end_after(data: bytes, at: int) -> int:
    """Where the event holding byte `at` ends, its blank line included (or the data's end)."""
    lf, crlf = data.find(b"\n\n", at), data.find(b"\n\r\n", at)
    return min(lf + 2 if lf >= 0 else len(data), crlf + 3 if crlf >= 0 else len(data))


def _split(events: bytes) -> list[bytes]:
    out, start = [], 0
    while start < len(events):
        stop = _end_after(events, start)
        out.append(events[start:stop])
        start = stop
    return out


def _data(event: bytes) -> Any:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return None
            try:
                return orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
    return None


async def close_all() -> None:
    await transport.close_all()
