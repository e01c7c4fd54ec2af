"""A fast fake OpenAI upstream for bench/proxy.py: `POST /v1/chat/completions` only.

    python bench/proxy_upstream.py --port 9001 [--chunks 16]

A raw asyncio protocol (uvloop when installed) so the upstream costs as little CPU as possible
and every millisecond a proxy adds is the proxy's. Non-stream answers a fixed completion with
`usage`; `stream: true` answers `--chunks` content chunks (`tok0 `, `tok1 `…, after a first
chunk carrying the role, as OpenAI does), a usage chunk when `stream_options.include_usage` is
set, then `data: [DONE]`.

A last user message of the form `gap=<ms>` spaces the chunks that many milliseconds apart and
puts each chunk's send time in its content (`tok3@<unix seconds> `), so a client can check that
a proxy passes chunks on as they come instead of buffering them: every proxy forwards
`messages` unchanged, unlike headers or unknown body fields."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

try:
    import orjson

    loads = orjson.loads
    dumps = orjson.dumps
except ImportError:  # the fake also runs under a bare interpreter
    loads = json.loads

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


PROMPT_TOKENS = 23


def completion(model: str, chunks: int) -> bytes:
    return dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(f"tok{i} " for i in range(chunks))},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": chunks,
                "total_tokens": PROMPT_TOKENS + chunks,
            },
        }
    )


def chunk(
    model: str, created: int, delta: dict[str, Any], finish: str | None = None, usage: Any = None
) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_bench",
        "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return b"data: " + dumps(body) + b"\n\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nx-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)


class Upstream(asyncio.Protocol):
    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.step()

    def step(self) -> None:
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            rest = self.buf[head_end + 4 :]
            if headers.get("transfer-encoding", "").lower() == "chunked":
                parsed = _dechunk(rest)
                if parsed is None:
                    return
                body, self.buf = parsed
            else:
                length = int(headers.get("content-length", "0"))
                if len(rest) < length:
                    return
                body, self.buf = rest[:length], rest[length:]
            method, path = lines[0].split(" ")[:2]
            if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                request = loads(body)
                if request.get("stream"):
                    self.busy = True
                    asyncio.get_running_loop().create_task(self.stream(request))
                    return
                self.respond(200, completion(request.get("model", "unknown"), self.chunks))
            elif path == "/healthz":
                self.respond(200, b'{"ok":true}')
            else:
                self.respond(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')

    def respond(self, status: int, body: bytes) -> None:
        assert self.transport is not None
        reason = b"OK" if status == 200 else b"Not Found"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nx-request-id: req_bench\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, reason, len(body), body)
        )

    async def stream(self, request: dict[str, Any]) -> None:
        assert self.transport is not None
        model = request.get("model", "unknown")
        created = int(time.time())
        gap = _gap_seconds(request)
        first = chunk(model, created, {"role": "assistant", "content": "", "refusal": None})
        tail = [chunk(model, created, {}, "stop")]
        opts = request.get("stream_options") or {}
        if opts.get("include_usage"):
            usage = {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": self.chunks,
                "total_tokens": PROMPT_TOKENS + self.chunks,
            }
            tail.append(chunk(model, created, {}, None, usage))
        tail.append(b"data: [DONE]\n\n")
        if gap == 0:
            parts = [STREAM_HEAD, http_chunk(first)]
            parts += [http_chunk(chunk(model, created, {"content": f"tok{i} "})) for i in range(self.chunks)]
            parts += [http_chunk(t) for t in tail]
            parts.append(b"0\r\n\r\n")
            self.transport.write(b"".join(parts))
        else:
            self.transport.write(STREAM_HEAD + http_chunk(first))
            for i in range(self.chunks):
                await asyncio.sleep(gap)
                if self.transport.is_closing():
                    return
                content = f"tok{i}@{time.time():.6f} "
                self.transport.write(http_chunk(chunk(model, created, {"content": content})))
            self.transport.write(b"".join(http_chunk(t) for t in tail) + b"0\r\n\r\n")
        self.busy = False
        if self.buf:
            self.step()


def _gap_seconds(request: dict[str, Any]) -> float:
    messages = request.get("messages") or []
    last = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
    if isinstance(last, str) and last.startswith("gap="):
        return float(last[4:]) / 1000
    return 0.0


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    """A chunked request body and what follows it, or None while it is incomplete."""
    body = b""
    pos = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(data[pos:line_end].split(b";")[0], 16)
        start = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", start)
            if trailer_end < 0:
                return None
            return body, data[trailer_end + 2 :]
        if len(data) < start + size + 2:
            return None
        body += data[start : start + size]
        pos = start + size + 2


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunks", type=int, default=16)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Upstream(args.chunks), args.host, args.port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
