"""The chat hot path: authenticate, admit, resolve, forward, account (DESIGN.md §10).

Warm, most requests make no database or Redis round trip, only the upstream call: keys and
resolved models come from per-process caches (lookups), request limits from leases (limits),
and usage is written in batches (accounting). The body
is passed through untouched except for `model` (and `stream_options.include_usage`, which is
turned on upstream so every stream can be accounted; the usage chunk is dropped again for a
client that did not ask for it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.chat import accounting, limits, lookups, routing, transport, upstream
from shared.chat.lookups import Caller
from shared.chat.routing import Route
from shared.errors import InvalidInput


def parse(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.", code="invalid_request")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidInput(
            "'model' is required: an alias, a tune id, a fine-tuned model or a base model.",
            code="missing_model",
            param="model",
        )
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise InvalidInput("'messages' must be a non-empty list.", code="invalid_messages", param="messages")
    return body


@dataclass
class Exchange:
    """One admitted request whose upstream answered with a success status; read it once."""

    caller: Caller
    route: Route
    response: transport.UpstreamResponse
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    async def read(self) -> bytes:
        content = await self.response.read()
        usage, message = None, None
        try:
            data = orjson.loads(content)
            usage = data.get("usage")
            if self.route.log_requests:
                message = data["choices"][0]["message"]
        except (orjson.JSONDecodeError, AttributeError, LookupError, TypeError):
            pass
        self._account(usage, message)
        return content

    async def events(self) -> AsyncIterator[bytes]:
        """Server-sent events, each forwarded as soon as the upstream completes it."""
        wants_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        reader = upstream.EventReader(keep_usage=wants_usage, collect_text=self.route.log_requests)
        try:
            async for chunk in self.response.chunks():
                out = reader.feed(chunk)
                if out:
                    yield out
            rest = reader.flush()
            if rest:
                yield rest
        finally:
            self.response.close()
            message = {"role": "assistant", "content": reader.text} if self.route.log_requests else None
            self._account(reader.usage, message)

    def _account(self, usage: dict[str, Any] | None, message: dict[str, Any] | None) -> None:
        accounting.recorder.record(
            self.caller,
            self.route,
            usage,
            messages=self.body.get("messages") if self.route.log_requests else None,
            response=message,
            user=self.body.get("user") if isinstance(self.body.get("user"), str) else None,
        )
        if usage:
            limits.get_limiter().add_tokens(self.caller, int(usage.get("total_tokens") or 0))


async def open_exchange(token: str | None, raw: bytes) -> Exchange:
    """Everything up to the upstream's status line; raises a DomainError for the client."""
    body = parse(raw)
    caller = await lookups.caller_for(token)
    limit_headers = await limits.get_limiter().admit(caller)
    # A Tuneforge field (which provider serves a base model), never sent upstream.
    provider = body.pop("provider", None)
    if provider is not None and (not isinstance(provider, str) or not provider):
        raise InvalidInput("'provider' must be a provider name.", code="invalid_provider", param="provider")
    resolution = await lookups.resolution_for(caller.project_id, body["model"], provider)
    user = body.get("user")
    route = routing.pick(resolution, user if isinstance(user, str) else None)
    upstream_body = {**body, "model": route.upstream_model}
    if body.get("stream"):
        options = body.get("stream_options")
        upstream_body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    response = await upstream.send(route.provider, upstream_body)
    if response.status >= 400:
        raise upstream.error_for(response.status, await response.read(), response.headers)
    headers = {**limit_headers, "x-tuneforge-model": route.upstream_model}
    if route.alias:
        headers["x-tuneforge-alias"] = route.alias
    request_id = response.headers.get("x-request-id")
    if request_id:
        headers["x-upstream-request-id"] = request_id
    return Exchange(caller=caller, route=route, response=response, body=body, headers=headers)


async def close_all() -> None:
    accounting.recorder.flush()
    await upstream.close_all()
    await limits.get_limiter().close()
