"""What an engine answers a chat request with, and the simulated engine's answer.

The HTTP layer (`chat.py`) parses the request and renders JSON or SSE; the engine behind the store
produces a `Completion`: the model name, the prompt's token count and, per choice, the text as an
iterator of pieces. The simulated engine knows its whole answer up front and cuts it into a few
characters at a time; the real trainer (trainer/serving.py) yields pieces as the model decodes
tokens, so a stream is a real token stream. Completion tokens are known once the pieces are read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sandbox import judge, tokens
from sandbox.catalog import Catalog
from sandbox.validation import text_of

STREAM_CHUNK_CHARS = 4
FRAGMENT_CHARS = 40


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
    # Decoding: None means greedy for the real engine (the simulated one ignores both).
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


class Completion(Protocol):
    model: str
    prompt_tokens: int

    def pieces(self, index: int) -> Iterator[str]:
        """The text of choice `index`, piece by piece; each choice is read once, in order."""
        ...

    def finish_reason(self, index: int) -> str: ...

    @property
    def completion_tokens(self) -> int:
        """Tokens of every choice read so far (all of them once the pieces are consumed)."""
        ...


@dataclass
class TextCompletion:
    """A completion whose text is known before it is sent (the simulated engine)."""

    model: str
    prompt_tokens: int
    text: str
    reason: str
    tokens_per_choice: int
    chunk_delay_s: float = 0.0
    _read: int = 0

    def pieces(self, index: int) -> Iterator[str]:
        self._read += 1
        for start in range(0, len(self.text), STREAM_CHUNK_CHARS):
            if self.chunk_delay_s:
                time.sleep(self.chunk_delay_s)
            yield self.text[start : start + STREAM_CHUNK_CHARS]

    def finish_reason(self, index: int) -> str:
        return self.reason

    @property
    def completion_tokens(self) -> int:
        return self.tokens_per_choice * self._read


class TunedLookup(Protocol):
    def find_tuned(self, name: str) -> Any: ...


def simulated(store: TunedLookup, catalog: Catalog, chat: ChatRequest) -> TextCompletion | None:
    """The sandbox's answer, or None when the model is unknown.

    A tuned model replies with the training answer whose question is closest to the last user
    message (see `similarity.py`); a base model with a fixed text, or a verdict for an eval judge's
    prompt (`judge.py`)."""
    question = last_user_text(chat.messages)
    base = catalog.resolve(chat.model)
    if base is not None:
        model_name = base.id
        answer = judge.verdict(question) or base_answer(base.id, question)
    else:
        tuned = store.find_tuned(chat.model)
        if tuned is None:
            return None
        model_name = chat.model
        match = tuned.index.best(question)
        answer = match.answer if match else base_answer(chat.model, question)
    text, reason = _truncate(answer, chat.max_tokens, model_name)
    return TextCompletion(
        model=model_name,
        prompt_tokens=tokens.count_messages(chat.messages, model_name),
        text=text,
        reason=reason,
        tokens_per_choice=tokens.count_text(text, model_name),
        chunk_delay_s=chat.chunk_delay_s,
    )


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
