"""Closed-loop load for bench/proxy.py: `--concurrency` keep-alive connections, each sending the
next chat request as soon as the last one is answered; prints one JSON object.

    python bench/proxy_load.py --url http://127.0.0.1:9002/v1/chat/completions --model gpt-4o-mini \
        --concurrency 32 [--stream] [--warmup 1] [--duration 5] [--token sk-…]
    python bench/proxy_load.py --url … --model … --gap-check 40   # chunk arrival vs send times

A raw asyncio HTTP/1.1 client (uvloop when installed) that decodes chunked framing and SSE itself,
so it costs the machine far less than the proxies it measures (the `direct` row is its ceiling).
Only answers completed within the measured window (after the warm-up) count. Every
response is checked: status 200, the JSON parses, the content and `usage` are the fake upstream's;
for streams, every event parses, the content chunks join to the expected text, the usage chunk and
`data: [DONE]` arrive. Time to first byte is to the first chunk with non-empty content."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

try:
    import orjson

    loads = orjson.loads
except ImportError:
    loads = json.loads

CHUNKS = 16
EXPECTED = "".join(f"tok{i} " for i in range(CHUNKS))
SYSTEM = "You are a terse assistant for a benchmark. Answer in one short sentence."
QUESTION = "What is the capital of France, and why is it famous?"


class BadResponse(Exception):
    pass


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    errors: int = 0
    ok: int = 0  # every answered request, warm-up included
    error_sample: str = ""


def request_bytes(url: str, model: str, token: str | None, stream: bool, question: str = QUESTION) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    raw = json.dumps(body).encode()
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nContent-Length: {len(raw)}\r\n"
    )
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    return (head + "\r\n").encode() + raw


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    async def fill(self) -> None:
        data = await self.reader.read(65536)
        if not data:
            raise BadResponse("connection closed by the server")
        self.buf += data

    async def exchange(self, request: bytes, stream: bool) -> tuple[float | None, list[tuple[float, str]]]:
        """Send one request and read its answer; returns the time of the first content chunk and,
        for streams, the wall-clock arrival time of every content chunk (for the gap check)."""
        self.writer.write(request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            await self.fill()
        head = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4 :]
        status = int(head[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                await self.fill()
            body, self.buf = self.buf[:length], self.buf[length:]
            if status != 200:
                raise BadResponse(f"HTTP {status}: {body[:300]!r}")
            if stream:
                sse = Stream()
                for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
                    sse.feed(event)
                sse.check()
                return sse.first, sse.arrivals
            _check_completion(body)
            return None, []
        if headers.get("transfer-encoding", "").lower() != "chunked":
            raise BadResponse(f"HTTP {status} with neither content-length nor chunked framing")
        return await self._chunked(status, stream)

    async def _chunked(self, status: int, stream: bool) -> tuple[float | None, list[tuple[float, str]]]:
        payload = b""
        sse = Stream()
        pending = b""  # SSE text not yet ending in a blank line
        while True:
            while (line_end := self.buf.find(b"\r\n")) < 0:
                await self.fill()
            size = int(self.buf[:line_end].split(b";")[0], 16)
            while len(self.buf) < line_end + 2 + size + 2:
                await self.fill()
            data = self.buf[line_end + 2 : line_end + 2 + size]
            self.buf = self.buf[line_end + 2 + size + 2 :]
            if size == 0:
                break
            if not stream or status != 200:
                payload += data
                continue
            pending += data
            *complete, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
            for event in complete:
                sse.feed(event)
        if status != 200:
            raise BadResponse(f"HTTP {status}: {payload[:300]!r}")
        if not stream:
            _check_completion(payload)
            return None, []
        sse.check()
        return sse.first, sse.arrivals


class Stream:
    """The SSE events of one streamed answer, checked as they arrive."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.arrivals: list[tuple[float, str]] = []  # (unix time, content) of each content chunk
        self.text: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, event: bytes) -> None:
        if not event.strip():
            return
        data = _event_data(event)
        if self.done:
            raise BadResponse("events after data: [DONE]")
        if data == b"[DONE]":
            self.done = True
            return
        doc = loads(data)
        for choice in doc.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                if self.first is None:
                    self.first = time.perf_counter()
                self.arrivals.append((time.time(), content))
                self.text.append(content)
        self.usage = doc.get("usage") or self.usage

    def check(self) -> None:
        if not self.done:
            raise BadResponse("the stream does not end with data: [DONE]")
        content = "".join(self.text)
        # The gap check's chunks carry their send times: `tok3@1732540000.123456 `.
        if content != EXPECTED and [w.split("@")[0] for w in content.split()] != EXPECTED.split():
            raise BadResponse(f"unexpected streamed content {content[:80]!r}")
        if not self.usage or self.usage.get("completion_tokens") != CHUNKS:
            raise BadResponse(f"no usage chunk with the upstream's counts (got {self.usage!r})")


def _event_data(event: bytes) -> bytes:
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    raise BadResponse(f"an SSE event without data: {event[:200]!r}")


def _check_completion(body: bytes) -> None:
    doc = loads(body)
    content = doc["choices"][0]["message"]["content"]
    if content != EXPECTED:
        raise BadResponse(f"unexpected content {content[:80]!r}")
    if doc.get("usage", {}).get("completion_tokens") != CHUNKS:
        raise BadResponse(f"unexpected usage {doc.get('usage')!r}")


async def connect(url: str) -> Conn:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
    return Conn(reader, writer)


async def load(args: argparse.Namespace) -> dict[str, Any]:
    request = request_bytes(args.url, args.model, args.token, args.stream)
    conns = [await connect(args.url) for _ in range(args.concurrency)]
    start = time.perf_counter()
    measure_from = start + args.warmup
    measure_to = measure_from + args.duration
    result = Result()

    async def worker(conn: Conn) -> None:
        while (t0 := time.perf_counter()) < measure_to:
            try:
                first, _ = await conn.exchange(request, args.stream)
            except (BadResponse, KeyError, IndexError, TypeError, ValueError) as exc:
                result.errors += 1
                result.error_sample = result.error_sample or f"{type(exc).__name__}: {exc}"
                conn.writer.close()
                conn = await connect(args.url)
                continue
            t1 = time.perf_counter()
            result.ok += 1
            # Throughput is answers completed in the window, so a target slower than the window
            # is still measured (its requests start in the warm-up and end inside the window).
            if measure_from <= t1 <= measure_to:
                result.latencies.append(t1 - t0)
                if first is not None:
                    result.ttfb.append(first - t0)

    await asyncio.gather(*(worker(c) for c in conns))
    for conn in conns:
        conn.writer.close()
    return {
        "requests": len(result.latencies),
        "rps": len(result.latencies) / args.duration,
        "p50_ms": pct(result.latencies, 50),
        "p99_ms": pct(result.latencies, 99),
        "ttfb_p50_ms": pct(result.ttfb, 50) if result.ttfb else None,
        "ttfb_p99_ms": pct(result.ttfb, 99) if result.ttfb else None,
        "total_ok": result.ok,
        "errors": result.errors,
        "error_sample": result.error_sample,
    }


async def gap_check(args: argparse.Namespace) -> dict[str, Any]:
    """Chunks sent `gap` ms apart must each arrive before the next is sent: the delay between a
    chunk's send time (in its content) and its arrival shows any buffering. One unmeasured stream
    first, so a proxy's first-request start-up (lazy imports, a worker's first connection) is not
    taken for buffering; a proxy that holds chunks back delays most of them, not just one."""
    request = request_bytes(args.url, args.model, args.token, True, question=f"gap={args.gap_check:g}")
    conn = await connect(args.url)
    lags: list[float] = []
    error = ""
    for attempt in range(args.repeat + 1):
        try:
            _, arrivals = await conn.exchange(request, True)
        except (BadResponse, KeyError, IndexError, TypeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        if attempt:
            lags += [1000 * (arrived - float(content.split("@")[1])) for arrived, content in arrivals]
    conn.writer.close()
    lags.sort()
    return {
        "total_ok": attempt + 1 if not error else attempt,
        "chunks": len(lags),
        "max_lag_ms": lags[-1] if lags else None,
        "p90_lag_ms": lags[int(len(lags) * 0.9)] if lags else None,
        "error": error,
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--token")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--gap-check", type=float, help="milliseconds between chunks; checks buffering")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(gap_check(args) if args.gap_check else load(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
