"""The cookbook's count of a chat or DPO example (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import tiktoken

from shared.tokens.cache import token_lengths

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3


def count_text_tokens(text: str, encoding: tiktoken.Encoding) -> int:
    return token_lengths(encoding.name)(text)


def example_parts(messages: Iterable[Mapping[str, Any]]) -> tuple[int, list[str]]:
    """A chat example as (fixed tokens, strings to tokenize): its count is the fixed part plus the
    token length of every string. The fixed part is 3 per message, 1 per `name` and 3 for the
    reply; the strings are every string value (the role included), the text of content parts, and
    tool_calls / function_call as JSON."""
    fixed = REPLY_PRIMING_TOKENS
    texts: list[str] = []
    for message in messages:
        fixed += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                texts.append(value)
            elif key == "content" and isinstance(value, list):
                # Content parts: only text parts are countable offline; image parts are priced by
                # the provider from the image itself and are left out of this estimate.
                texts.extend(
                    part["text"]
                    for part in value
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                )
            elif isinstance(value, (list, dict)):
                # tool_calls / function_call reach the model as JSON text, so count them as such.
                texts.append(orjson.dumps(value).decode())
            # weight (0/1), null content and other scalars carry no text to train on.
            if key == "name":
                fixed += TOKENS_PER_NAME
    return fixed, texts


def count_example_tokens(messages: Iterable[Mapping[str, Any]], encoding: tiktoken.Encoding) -> int:
    """Tokens of one chat example as the cookbook counts them (see the module docstring)."""
    fixed, texts = example_parts(messages)
    length = token_lengths(encoding.name)
    return fixed + sum(map(length, texts))


def count_chat_tokens(messages: Iterable[Mapping[str, Any]], encoding: tiktoken.Encoding) -> int:
    """Prompt tokens of a chat request; the same rule as a training example."""
    return count_example_tokens(messages, encoding)


def example_token_upper_bound(messages: Iterable[Mapping[str, Any]]) -> int:
    """A bound the real count never exceeds, computed without tokenizing.

    Every BPE token covers at least one UTF-8 byte and a character is at most 4 bytes, so an
    example whose bound is within a model's limit fits for sure; only the rare longer ones need
    tiktoken before the limit can be checked.
    """
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += 4 * len(value)
            elif isinstance(value, (list, dict)):
                total += len(orjson.dumps(value))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _dpo_messages(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*example["input"]["messages"], *example["preferred_output"], *example["non_preferred_output"]]


def _counted_messages(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "messages" in example:
        return example["messages"]
    if "input" in example:
        return _dpo_messages(example)
    raise ValueError("not a training example: expected 'messages' (chat) or 'input' (DPO)")


def count_training_example(example: Mapping[str, Any], encoding: tiktoken.Encoding) -> int:
    """Tokens of one training line, chat or DPO (see the module docstring for the DPO rule)."""
    return count_example_tokens(_counted_messages(example), encoding)


def training_example_token_upper_bound(example: Mapping[str, Any]) -> int:
    """`example_token_upper_bound` for a whole training line, chat or DPO."""
    return example_token_upper_bound(_counted_messages(example))


def example_messages_for_stats(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The conversation a training line teaches, for role statistics (system/user present?).

    Chat: its messages. DPO: the input messages followed by the preferred output; the
    non-preferred output is what the model is taught to avoid, so it is not part of it.
    """
    if "messages" in example:
        return example["messages"]
    return [*example["input"]["messages"], *example["preferred_output"]]
