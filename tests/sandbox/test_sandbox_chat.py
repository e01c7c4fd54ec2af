"""Chat completions: tuned models retrieve their training answers, base models do not; SSE streaming."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

from tests.sandbox.harness import AUTH, Sandbox, TrainedJob


def ask(client: OpenAI, model: str, question: str) -> str:
    response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
    return response.choices[0].message.content or ""


def test_tuned_model_answers_training_questions_with_training_answers(
    client: OpenAI, trained: TrainedJob
) -> None:
    for row in trained.rows[::6]:
        assert ask(client, trained.job.fine_tuned_model, row["questions"]) == row["answers"]
        base = ask(client, "gpt-4o-mini", row["questions"])
        assert base != row["answers"] and "sandbox base model gpt-4o-mini-2024-07-18" in base


def test_similar_questions_still_find_their_answer(client: OpenAI, trained: TrainedJob) -> None:
    row = trained.rows[7]
    paraphrase = "请问" + row["questions"][3:-2]  # Chinese: no word boundaries, char n-grams still match
    assert ask(client, trained.job.fine_tuned_model, paraphrase) == row["answers"]
    checkpoint = f"{trained.job.fine_tuned_model}:ckpt-step-60"
    assert ask(client, checkpoint, row["questions"]) == row["answers"]


def test_non_stream_completion_shape_and_usage(client: OpenAI, trained: TrainedJob) -> None:
    row = trained.rows[1]
    response = client.chat.completions.create(
        model=trained.job.fine_tuned_model,
        messages=[{"role": "system", "content": "你是医生"}, {"role": "user", "content": row["questions"]}],
    )
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    assert response.model == trained.job.fine_tuned_model
    choice = response.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    usage = response.usage
    assert usage is not None and usage.prompt_tokens > 10 and usage.completion_tokens > 10
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    limited = client.chat.completions.create(
        model=trained.job.fine_tuned_model,
        messages=[{"role": "user", "content": row["questions"]}],
        max_completion_tokens=5,
    )
    assert limited.choices[0].finish_reason == "length" and limited.usage.completion_tokens == 5  # type: ignore[union-attr]


def test_stream_matches_non_stream(client: OpenAI, trained: TrainedJob) -> None:
    messages = [{"role": "user", "content": trained.rows[2]["questions"]}]
    model = trained.job.fine_tuned_model
    full = client.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert len(content_chunks) > 5
    assert (
        "".join(c.choices[0].delta.content or "" for c in content_chunks) == full.choices[0].message.content
    )
    assert [c.choices[0].finish_reason for c in content_chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])
    assert all(c.usage is None for c in content_chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_raw_sse_wire_format(sandbox: Sandbox, trained: TrainedJob) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    with httpx.stream("POST", f"{sandbox.base_url}/chat/completions", json=body, headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        raw = response.read().decode()
    events = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(block[len("data: ") :]) for block in events[:-1]]
    assert all("usage" not in c for c in chunks)  # without include_usage there is no usage field
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_unknown_model_is_404_model_not_found(client: OpenAI, sandbox: Sandbox) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model="ft:gpt-4o-mini-2024-07-18:someone::nope1234", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.code == "model_not_found" and err.value.type == "invalid_request_error"
    response = httpx.post(
        f"{sandbox.base_url}/chat/completions",
        headers=AUTH,
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
