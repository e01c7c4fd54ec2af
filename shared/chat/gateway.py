"""Forwarding to providers over pooled async HTTP clients, one per upstream base URL.

The body is passed through untouched except for `model`, so every parameter a client sends
(tools, response_format, stream_options…) reaches the provider as it was written."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from shared.chat.routing import Route

TIMEOUT = httpx.Timeout(600.0, connect=5.0)
_clients: dict[str, httpx.AsyncClient] = {}


def _client(base_url: str) -> httpx.AsyncClient:
    client = _clients.get(base_url)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            timeout=TIMEOUT,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        _clients[base_url] = client
    return client


async def send(route: Route, body: dict[str, Any]) -> httpx.Response:
    """Start the upstream request and return once its headers arrive; the caller reads the body
    (streamed or not) and must close the response."""
    client = _client(route.provider.base_url)
    request = client.build_request(
        "POST",
        "chat/completions",
        content=orjson.dumps({**body, "model": route.upstream_model}),
        headers={"Authorization": f"Bearer {route.provider.api_key}", "Content-Type": "application/json"},
    )
    return await client.send(request, stream=True)


async def close_all() -> None:
    for client in list(_clients.values()):
        await client.aclose()
    _clients.clear()
