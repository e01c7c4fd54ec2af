"""The chat gateway with the plain `openai` SDK: usage accounting, per-key limits, upstream
errors, streaming passthrough. The sandbox is the upstream, over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.story import client
from tests.support.paths import REPO
from tests.support.procs import wait_for

QUESTION = [{"role": "user", "content": "头痛怎么办？"}]
PRICES = json.loads((REPO / "shared" / "data" / "prices.json").read_text())["models"]


def sdk(stack: Any, key: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, **kwargs)


def usage_totals(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/v1/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_usage_totals_equal_the_sum_of_per_response_usage(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    chat = sdk(stack, key)
    seen = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    by_model: dict[str, list[int]] = {}

    def add(model: str, usage: Any) -> None:
        seen["requests"] += 1
        seen["prompt_tokens"] += usage.prompt_tokens
        seen["completion_tokens"] += usage.completion_tokens
        sums = by_model.setdefault(model, [0, 0])
        sums[0] += usage.prompt_tokens
        sums[1] += usage.completion_tokens

    for model in ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o-mini"):
        answer = chat.chat.completions.create(model=model, messages=QUESTION)
        add(answer.model, answer.usage)
    stream = chat.chat.completions.create(
        model="gpt-4.1-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    add(chunks[-1].model, chunks[-1].usage)

    async def async_calls() -> None:
        achat = openai.AsyncOpenAI(base_url=f"{stack.api_url}/v1", api_key=key)
        answer = await achat.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        add(answer.model, answer.usage)
        astream = await achat.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
        last = None
        async for chunk in astream:
            last = chunk
        assert last is not None and last.usage is not None
        add(last.model, last.usage)
        await achat.close()

    asyncio.run(async_calls())

    http = client(stack.api_url, key)
    wait_for(lambda: usage_totals(http)["totals"]["requests"] == seen["requests"], 15, what="usage flush")
    report = usage_totals(http)
    totals = report["totals"]
    assert totals["prompt_tokens"] == seen["prompt_tokens"]
    assert totals["completion_tokens"] == seen["completion_tokens"]
    assert totals["total_tokens"] == seen["prompt_tokens"] + seen["completion_tokens"]
    rows = {row["model"]: row for row in report["data"]}
    assert set(rows) == set(by_model) and all(row["day"] for row in rows.values())
    expected_cost = Decimal(0)
    for model, (prompt, completion) in by_model.items():
        assert (rows[model]["prompt_tokens"], rows[model]["completion_tokens"]) == (prompt, completion)
        # Base models pay the base model's own prices from the price file.
        price = PRICES[model]
        expected_cost += (
            Decimal(prompt) * Decimal(str(price["base_input_per_1m"]))
            + Decimal(completion) * Decimal(str(price["base_output_per_1m"]))
        ) / Decimal(1_000_000)
    assert Decimal(str(totals["cost_usd"])) == pytest.approx(expected_cost, rel=Decimal("1e-6"))
    by_key = usage_totals(http, group_by="key")["data"]
    assert len(by_key) == 1 and by_key[0]["requests"] == seen["requests"]


def test_a_stream_without_include_usage_is_still_accounted(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    chunks = list(
        sdk(stack, key).chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    )
    # The client did not ask for usage, so it gets no usage chunk, but the gateway counted it.
    assert chunks and all(chunk.usage is None for chunk in chunks) and all(chunk.choices for chunk in chunks)
    http = client(stack.api_url, key)
    wait_for(lambda: usage_totals(http)["totals"]["requests"] == 1, 15, what="usage flush")
    assert usage_totals(http)["totals"]["completion_tokens"] > 0


def test_requests_per_minute_answer_429_with_retry_after(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key(requests_per_minute=3)
    raw = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"})
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    answers = [raw.post("/v1/chat/completions", json=body) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0"]
    refused = raw.post("/v1/chat/completions", json=body)
    if refused.status_code == 200:
        # The three calls straddled a minute boundary; the next window is fresh: fill it again.
        for _ in range(3):
            refused = raw.post("/v1/chat/completions", json=body)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        sdk(stack, key, max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)


def test_tokens_per_minute_answer_429_once_used(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key(tokens_per_minute=30)
    chat = sdk(stack, key, max_retries=0)
    first = chat.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert first.usage is not None and first.usage.total_tokens >= 30

    def refused() -> bool:
        try:
            chat.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        except openai.RateLimitError as exc:
            assert exc.response.headers["x-ratelimit-limit-tokens"] == "30"
            assert int(exc.response.headers["retry-after"]) >= 1
            return True
        return False

    wait_for(refused, 10, what="the token limit to refuse")


def test_other_keys_are_not_limited_by_one_keys_use(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    limited = make_key(requests_per_minute=1)
    free = make_key()
    sdk(stack, limited).chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    for _ in range(3):
        assert sdk(stack, free).chat.completions.create(model="gpt-4o-mini", messages=QUESTION).choices


@pytest.mark.parametrize(
    ("upstream_status", "client_error", "code"),
    [
        (400, openai.BadRequestError, None),
        (401, openai.InternalServerError, "upstream_auth_failed"),
        (429, openai.RateLimitError, "upstream_rate_limited"),
        (500, openai.InternalServerError, "upstream_error"),
        (503, openai.InternalServerError, "upstream_error"),
        (504, openai.InternalServerError, "upstream_timeout"),
    ],
)
def test_upstream_errors_become_openai_errors(  # type: ignore[no-untyped-def]
    stack, make_key, upstream_status, client_error, code
) -> None:
    rule = {
        "action": "status",
        "status": upstream_status,
        "path": "/v1/chat/completions",
        "model": "gpt-4o",
        "times": None,
        "code": "sandbox_code",
        "message": "sandbox says no",
        "retry_after": 2,
    }
    added = httpx.post(f"{stack.sandbox_url}/sandbox/faults", json=rule).json()["data"][0]
    try:
        with pytest.raises(client_error) as caught:
            sdk(stack, make_key(), max_retries=0).chat.completions.create(model="gpt-4o", messages=QUESTION)
    finally:
        httpx.delete(f"{stack.sandbox_url}/sandbox/faults/{added['id']}")
    error = caught.value.body
    assert isinstance(error, dict) and error["message"]
    # The provider's key problems are the deployment's, never shown to the caller as theirs.
    assert caught.value.status_code != 401
    if code is None:
        assert error["code"] == "sandbox_code" and "sandbox says no" in error["message"]
    else:
        assert error["code"] == code
    if upstream_status == 429:
        assert caught.value.response.headers.get("retry-after") == "2"


def test_unknown_models_and_bad_bodies_are_openai_errors(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    chat = sdk(stack, make_key(), max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        chat.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]
    raw = httpx.post(
        f"{stack.api_url}/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {make_key()}"},
    )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.AuthenticationError):
        sdk(stack, "tf_wrong").chat.completions.create(model="gpt-4o-mini", messages=QUESTION)


def test_stream_chunks_are_forwarded_as_they_come(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    # The sandbox pauses 150 ms between content chunks; a buffering proxy would deliver them
    # together at the end.
    stream = sdk(stack, make_key()).chat.completions.create(
        model="gpt-4o-mini",
        messages=QUESTION,
        stream=True,
        metadata={"sandbox_chunk_delay_ms": "150"},
    )
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
        if len(arrivals) == 6:
            break
    stream.close()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(gaps) == 5 and sum(gap > 0.075 for gap in gaps) >= 4, gaps


def test_a_client_that_hangs_up_cancels_the_upstream_stream(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    def streams() -> dict[str, int]:
        return httpx.get(f"{stack.sandbox_url}/sandbox/stats").json()["chat_streams"]

    before = streams()
    stream = sdk(stack, make_key()).chat.completions.create(
        model="gpt-4o-mini",
        messages=QUESTION,
        stream=True,
        metadata={"sandbox_chunk_delay_ms": "200"},
    )
    for count, _chunk in enumerate(stream):
        if count == 2:
            break
    stream.close()
    # The sandbox's stream has many chunks left at 200 ms each; only a proxy that closes its
    # upstream connection when the client leaves makes it end cut rather than complete.
    wait_for(lambda: streams()["cut"] > before["cut"], 10, what="the upstream stream to be cut")
    assert streams()["completed"] == before["completed"]


def test_an_alias_change_reaches_another_api_process_at_once(stack, make_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import TEST_ENV
    from tests.support.procs import Proc, free_port, wait_http

    port = free_port()
    second = Proc("api-second", ["api", "--port", str(port)], TEST_ENV, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", second)
        key = make_key()
        admin = client(stack.api_url, key)
        other = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        for target in ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o-mini", "gpt-4.1-mini"):
            # The change is written through the first process; the second has the old route cached.
            assert admin.put("/v1/aliases/frontline", json={"model": target}).status_code == 200
            answer = other.chat.completions.create(model="frontline", messages=QUESTION)
            assert answer.model.startswith(target), (target, answer.model)
    finally:
        second.stop()


def test_an_oversized_chat_body_is_413_before_it_is_parsed(stack, make_key) -> None:  # type: ignore[no-untyped-def]
    huge = (
        b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * (51 * 1024 * 1024) + b'"}]}'
    )
    answer = httpx.post(
        f"{stack.api_url}/v1/chat/completions",
        content=huge,
        headers={"Authorization": f"Bearer {make_key()}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"
