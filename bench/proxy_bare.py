"""The floor for a Python chat proxy, for bench/proxy.py: no auth, no limits, no accounting.

    python bench/proxy_bare.py --port 9002 --upstream http://127.0.0.1:9001/v1 [--client aiohttp|httpx]

A raw ASGI app under uvicorn (which picks uvloop and httptools when they are installed, asyncio
and h11 otherwise) with one pooled upstream client. It parses the body and rewrites `model`
(any real proxy must read the model to route), then passes the upstream answer through: the
status, content type and body, chunk by chunk as they arrive."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _request(raw: bytes) -> bytes:
    body = orjson.loads(raw)
    return orjson.dumps({**body, "model": body["model"]})


async def _not_found(send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b'{"error":{"message":"not found"}}'})


def aiohttp_app(upstream: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    import aiohttp

    url = upstream.rstrip("/") + "/chat/completions"
    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["session"] = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60),
                        auto_decompress=False,
                        timeout=aiohttp.ClientTimeout(total=600, connect=5),
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await state["session"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if not scope["path"].endswith("/chat/completions"):
            await _not_found(send)
            return
        content = _request(await _body(receive))
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
        async with state["session"].post(url, data=content, headers=headers) as resp:
            out = [(b"content-type", resp.headers.get("Content-Type", "application/json").encode())]
            if resp.content_length is not None:
                out.append((b"content-length", str(resp.content_length).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for piece in resp.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def httpx_app(upstream: str, module: str = "httpx") -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    # httpx2 (the fork the openai SDK ships) has the same API.
    import importlib

    httpx = importlib.import_module(module)

    client = httpx.AsyncClient(
        base_url=upstream.rstrip("/") + "/",
        timeout=httpx.Timeout(600.0, connect=5.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if not scope["path"].endswith("/chat/completions"):
            await _not_found(send)
            return
        content = _request(await _body(receive))
        request = client.build_request(
            "POST",
            "chat/completions",
            content=content,
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
        )
        resp = await client.send(request, stream=True)
        try:
            out = [(b"content-type", resp.headers.get("content-type", "application/json").encode())]
            if "content-length" in resp.headers:
                out.append((b"content-length", resp.headers["content-length"].encode()))
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            async for piece in resp.aiter_raw():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--client", choices=("aiohttp", "httpx", "httpx2"), default="aiohttp")
    # auto: uvloop and httptools when installed; plain: asyncio and h11 (uvicorn without extras).
    p.add_argument("--server", choices=("auto", "plain"), default="auto")
    args = p.parse_args()
    server = {"loop": "asyncio", "http": "h11"} if args.server == "plain" else {}
    app = aiohttp_app(args.upstream) if args.client == "aiohttp" else httpx_app(args.upstream, args.client)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, **server)


if __name__ == "__main__":
    main()
