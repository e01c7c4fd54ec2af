"""`/v1/chat/completions`, answered without a language model.

A sandbox-tuned model replies with the answer of the training example whose question is most
similar to the last user message (see `similarity.py`); a base model replies with a fixed,
deterministic general-assistant text. So a training question gets its training answer from the
tuned model and something visibly different from the base model — enough for offline evals.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import StreamingResponse

from sandbox import ids, judge, tokens
from sandbox.catalog import resolve_base
from sandbox.errors import bad_request
from sandbox.models import model_not_found
from sandbox.store import store_of
from sandbox.validation import text_of

router = APIRouter()

JsonBody = Annotated[dict[str, Any], Body()]

STREAM_CHUNK_CHARS = 4
FRAGMENT_CHARS = 40
FINGERPRINT = "fp_sandbox"
CHUNK_DELAY_KEY = "sandbox_chunk_delay_ms"
CHAT_ROLES = ("developer", "system", "user", "assistant", "tool", "function")


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int | None
    # Sandbox-only knob (`metadata.sandbox_chunk_delay_ms`): pause between stream chunks, so a
    # test can see whether a proxy forwards each chunk as it comes.
    chunk_delay_s: float = 0.0


@router.post("/chat/completions", response_model=None)
def create_chat_completion(request: Request, body: JsonBody) -> dict[str, Any] | StreamingResponse:
    chat = parse_chat_request(body)
    store = store_of(request)
    base = resolve_base(chat.model)
    if base is not None:
        model_name = base.id
        # An eval's judge prompt gets a verdict (sandbox/judge.py), anything else the fixed text.
        answer = judge.verdict(last_user_text(chat.messages)) or base_answer(
            base.id, last_user_text(chat.messages)
        )
    else:
        tuned = store.find_tuned(chat.model)
        if tuned is None:
            raise model_not_found(chat.model)
        model_name = chat.model
        match = tuned.index.best(last_user_text(chat.messages))
        answer = match.answer if match else base_answer(chat.model, last_user_text(chat.messages))
    text, finish_reason = _truncate(answer, chat.max_tokens, model_name)
    prompt_tokens = tokens.count_messages(chat.messages, model_name)
    completion_tokens = tokens.count_text(text, model_name) * chat.n
    usage = _usage(prompt_tokens, completion_tokens)
    head = {
        "id": ids.completion_id(),
        "created": int(time.time()),
        "model": model_name,
        "system_fingerprint": FINGERPRINT,
    }
    if chat.stream:
        chunks = _counted(
            _stream(
                head, text, finish_reason, chat.n, usage if chat.include_usage else None, chat.chunk_delay_s
            ),
            store.stream_ended,
        )
        return StreamingResponse(
            chunks, media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )
    choices: list[dict[str, Any]] = [
        {
            "index": i,
            "finish_reason": finish_reason,
            "logprobs": None,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
        }
        for i in range(chat.n)
    ]
    return {
        **head,
        "object": "chat.completion",
        "choices": choices,
        "usage": usage,
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
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    metadata = body.get("metadata")
    delay_ms = metadata.get(CHUNK_DELAY_KEY) if isinstance(metadata, dict) else None
    try:
        chunk_delay_s = min(max(float(delay_ms or 0), 0.0), 5000.0) / 1000
    except (TypeError, ValueError):
        raise bad_request(
            f"metadata.{CHUNK_DELAY_KEY} must be a number of milliseconds.", param="metadata"
        ) from None
    return ChatRequest(model, messages, stream, include_usage, n, max_tokens, chunk_delay_s)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def base_answer(model: str, question: str) -> str:
    fragment = question.strip()[:FRAGMENT_CHARS]
    if len(question.strip()) > FRAGMENT_CHARS:
        fragment += "…"
    text = (
        f"I am a general assistant (sandbox base model {model}). "
        "For medical questions, please consult a qualified doctor."
    )
    return f"{text} You asked: \u201c{fragment}\u201d" if fragment else text


def _truncate(answer: str, max_tokens: int | None, model: str) -> tuple[str, str]:
    if max_tokens is None:
        return answer, "stop"
    encoded = tokens.encode(answer, model)
    if len(encoded) <= max_tokens:
        return answer, "stop"
    return tokens.decode(encoded[:max_tokens], model), "length"


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


def _stream(
    head: dict[str, Any],
    text: str,
    finish_reason: str,
    n: int,
    usage: dict[str, Any] | None,
    chunk_delay_s: float = 0.0,
) -> Iterator[str]:
    """SSE chunks: role first, content a few characters at a time, finish_reason, then optional usage."""
    with_usage = usage is not None

    def chunk(index: int, delta: dict[str, Any], finish: str | None) -> str:
        body: dict[str, Any] = {
            **head,
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            # With include_usage every chunk carries `usage`, null until the final one.
            body["usage"] = None
        return _sse(body)

    for index in range(n):
        yield chunk(index, {"role": "assistant", "content": "", "refusal": None}, None)
        for start in range(0, len(text), STREAM_CHUNK_CHARS):
            if chunk_delay_s:
                time.sleep(chunk_delay_s)
            yield chunk(index, {"content": text[start : start + STREAM_CHUNK_CHARS]}, None)
        yield chunk(index, {}, finish_reason)
    if usage is not None:
        yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _counted(chunks: Iterator[str], ended: Callable[[bool], None]) -> Iterator[str]:
    """Tell the store whether the stream was read to the end or its client left (the server
    closes the generator then), so tests can see a proxy hang up upstream."""
    completed = False
    try:
        yield from chunks
        completed = True
    finally:
        ended(completed)


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"
