"""Training examples → token ids and labels, with the loss on assistant turns only.

The text comes from the base model's own chat template. Each assistant turn is located by
rendering the conversation up to it twice — once ending in the generation prompt, once with the
turn — so the template decides every token, and only the difference (the turn, with its end
marker) is trained. Turns with `weight: 0` are context, as at OpenAI. Pieces are tokenized one at a
time and concatenated, so a piece boundary is a token boundary whatever the tokenizer merges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss is taken

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: string content (parts joined, tool calls as JSON)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not content and message.get("tool_calls"):
            content = json.dumps(message["tool_calls"], ensure_ascii=False)
        out.append({"role": message.get("role", "user"), "content": content or ""})
    return out


def render(tokenizer: Any, messages: list[dict[str, Any]], *, generation_prompt: bool) -> str:
    text: str = tokenizer.apply_chat_template(
        plain_messages(messages), tokenize=False, add_generation_prompt=generation_prompt
    )
    return text


def encode_example(tokenizer: Any, messages: list[dict[str, Any]], max_tokens: int) -> Encoded:
    """Ids and labels for one conversation, cut to `max_tokens` (the loss needs at least one label)."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render(tokenizer, messages[:index], generation_prompt=True)
        after = render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not before.startswith(done) or not after.startswith(before):
            # A template that rewrites earlier turns (some drop past reasoning): train the turn as
            # rendered last, with everything before it as context.
            pieces, done = [(before, False)], before
        else:
            pieces.append((before[len(done) :], False))
        pieces.append((after[len(before) :], message.get("weight", 1) != 0))
        done = after
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in pieces:
        if not text:
            continue
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if trained else [IGNORE] * len(piece))
    return Encoded(ids[:max_tokens], labels[:max_tokens])


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The ids a chat request's answer is generated after."""
    text = render(tokenizer, messages, generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids
