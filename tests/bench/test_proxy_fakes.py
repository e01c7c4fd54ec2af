"""The chat proxy benchmark's own parts (bench/proxy_*.py) speak OpenAI's wire format: the fake
upstream's answers and SSE framing parse with the official `openai` SDK, directly and through
the bare pass-through proxy, and the load generator's checks accept them and reject what is
broken. Without this a benchmark could report fast numbers for answers no client can read."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from argparse import Namespace
from collections.abc import Iterator

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from bench import proxy_load
from tests.support.paths import REPO
from tests.support.procs import free_port

CONTENT = "".join(f"tok{i} " for i in range(16))


def _serve(argv: list[str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            httpx.get(url, timeout=0.5)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "exited") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{argv} never answered")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    up_port, bare_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    bare = f"http://127.0.0.1:{bare_port}"
    procs = [_serve(["bench/proxy_upstream.py", "--port", str(up_port)], upstream + "/healthz")]
    try:
        argv = ["bench/proxy_bare.py", "--port", str(bare_port), "--upstream", upstream + "/v1"]
        procs.append(_serve([*argv, "--client", "httpx"], bare + "/"))
        yield {"direct": upstream, "bare": bare}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("target", ["direct", "bare"])
def test_the_openai_sdk_reads_answers_and_streams(servers: dict[str, str], target: str) -> None:
    client = OpenAI(base_url=servers[target] + "/v1", api_key="sk-test", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    done = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert done.choices[0].message.content == CONTENT
    assert done.usage is not None and done.usage.total_tokens == 23 + 16

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CONTENT
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16

    plain = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    assert all(c.usage is None for c in plain), "usage is sent only when include_usage asks for it"


def test_the_async_sdk_streams_spaced_chunks_with_their_send_times(servers: dict[str, str]) -> None:
    async def collect() -> list[str]:
        client = AsyncOpenAI(base_url=servers["bare"] + "/v1", api_key="sk-test", max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "gap=5"}], stream=True
        )
        return [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]

    contents = asyncio.run(collect())
    assert [c.split("@")[0] for c in contents] == [f"tok{i}" for i in range(16)]
    assert all(float(c.split("@")[1]) > 0 for c in contents)


@pytest.mark.parametrize("stream", [False, True])
def test_the_load_generator_checks_every_answer(servers: dict[str, str], stream: bool) -> None:
    args = Namespace(
        url=servers["bare"] + "/v1/chat/completions",
        model="gpt-4o-mini",
        token=None,
        concurrency=2,
        stream=stream,
        warmup=0.0,
        duration=0.3,
    )
    result = asyncio.run(proxy_load.load(args))
    assert result["errors"] == 0, result["error_sample"]
    assert result["total_ok"] > 0
    assert (result["ttfb_p50_ms"] is not None) == stream


def test_the_gap_check_reads_each_chunks_send_time(servers: dict[str, str]) -> None:
    args = Namespace(
        url=servers["direct"] + "/v1/chat/completions", model="m", token=None, gap_check=2, repeat=2
    )
    result = asyncio.run(proxy_load.gap_check(args))
    assert result["error"] == ""
    assert result["chunks"] == 2 * 16


@pytest.mark.parametrize(
    "events, problem",
    [
        ([b'data: {"choices":[{"delta":{"content":"tok0 "}}]}'], "[DONE]"),
        ([b'data: {"choices":[{"delta":{"content":"nope"}}]}', b"data: [DONE]"], "content"),
        ([b"data: [DONE]", b"data: [DONE]"], "after"),
    ],
)
def test_the_stream_check_rejects_broken_streams(events: list[bytes], problem: str) -> None:
    stream = proxy_load.Stream()
    with pytest.raises(proxy_load.BadResponse, match=problem.replace("[", r"\[").replace("]", r"\]")):
        for event in events:
            stream.feed(event)
        stream.check()
