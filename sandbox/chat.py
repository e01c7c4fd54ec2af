"""`/v1/chat/completions`: the request parsed and the answer rendered as JSON or SSE; the answer
itself comes from the engine behind the store (`store.complete`, see `completion.py`).

In the sandbox, a tuned model replies with the answer of the training example whose question is most
similar to the last user message (see `similarity.py`); a base model replies with a fixed,
deterministic general-assistant text. So a training question gets its training answer from the
tuned model and something visibly different from the base model — enough for offline evals.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from sandbox import ids
from sandbox.completion import ChatRequest, Completion
from sandbox.errors import bad_request
from sandbox.models import model_not_found
from sandbox.store import store_of

router = APIRouter()

JsonBody = Annotated[dict[str, Any], Body()]

FINGERPRINT = "fp_sandbox"
CHUNK_DELAY_KEY = "sandbox_chunk_delay_ms"
CHAT_ROLES = ("developer", "system", "user", "assistant", "tool", "function")


@router.post("/chat/completions", response_model=None)
def create_chat_completion(request: Request, body: JsonBody) -> dict[str, Any] | StreamingResponse:
    chat = parse_chat_request(body)
    store = store_of(request)
    completion = store.complete(chat)
    if completion is None:
        raise model_not_found(chat.model)
    head = {
        "id": ids.completion_id(),
        "created": int(time.time()),
        "model": completion.model,
        "system_fingerprint": FINGERPRINT,
    }
    if chat.stream:
        chunks = _counted(_stream(head, completion, chat.n, chat.include_usage), store.stream_ended)
        return StreamingResponse(
            chunks, media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )
    texts = ["".join(completion.pieces(i)) for i in range(chat.n)]
    choices: list[dict[str, Any]] = [
        {
            "index": i,
            "finish_reason": completion.finish_reason(i),
            "logprobs": None,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
        }
        for i, text in enumerate(texts)
    ]
    return {
        **head,
        "object": "chat.completion",
        "choices": choices,
        "usage": _usage(completion.prompt_tokens, completion.completion_tokens),
        "service_tier": "default",
    }


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise bad_request(
                f"Invalid value for 'messages[{i}].role'.", param=f"messages[{i}].role", code="invalid_value"
            )
    stream = bool(body.get("stream") or False)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    n = body.get("n") or 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise bad_request("n must be an integer between 1 and 128.", param="n")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        raise bad_request("temperature must be a number between 0 and 2.", param="temperature")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise bad_request("max_completion_tokens must be a positive integer.", param="max_completion_tokens")
    top_p = body.get("top_p")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise bad_request("top_p must be a number in (0, 1].", param="top_p")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise bad_request("seed must be an integer.", param="seed")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(x, str) and x for x in stops):
        raise bad_request("stop must be a string or a list of up to 4 strings.", param="stop")
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    metadata = body.get("metadata")
    delay_ms = metadata.get(CHUNK_DELAY_KEY) if isinstance(metadata, dict) else None
    try:
        chunk_delay_s = min(max(float(delay_ms or 0), 0.0), 5000.0) / 1000
    except (TypeError, ValueError):
        raise bad_request(
            f"metadata.{CHUNK_DELAY_KEY} must be a number of milliseconds.", param="metadata"
        ) from None
    return ChatRequest(
        model,
        messages,
        stream,
        include_usage,
        n,
        max_tokens,
        chunk_delay_s,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=stops,
    )


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _stream(head: dict[str, Any], completion: Completion, n: int, include_usage: bool) -> Iterator[str]:
    """SSE chunks: role first, content as the engine produces it, finish_reason, then optional usage."""

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> str:
        body: dict[str, Any] = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            # With include_usage every chunk carries `usage`, null until the final one.
            body["usage"] = None
        return _sse(body)

    for index in range(n):
        yield chunk(index, {"role": "assistant", "content": "", "refusal": None}, None)
        for piece in completion.pieces(index):
            if piece:
                yield chunk(index, {"content": piece}, None)
        yield chunk(index, {}, completion.finish_reason(index))
    if include_usage:
        usage = _usage(completion.prompt_tokens, completion.completion_tokens)
        yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


async def _counted(chunks: Iterator[str], ended: Callable[[bool], None]) -> AsyncIterator[str]:
    """Tell the store whether the stream was read to the end or its client left, so tests can
    see a proxy hang up upstream. Async, so that when the server cancels the response on a
    disconnect the cancellation lands in this frame (waiting for the next chunk) and `finally`
    runs at once, not whenever the garbage collector reaches an abandoned sync generator."""
    completed = False
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield chunk
        completed = True
    finally:
        ended(completed)


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"
