"""Token counting the way OpenAI's fine-tuning cookbook bills chat examples.

tiktoken needs its BPE files; offline they are read from the folder named by `TIKTOKEN_CACHE_DIR`.
The count is the cookbook's estimate ("not exact!"), which is also what the quote is built on:
3 tokens per message, the tokens of every string value (the role included), 1 more per `name`,
and 3 for the reply priming.

DPO examples (`{"input": {"messages"}, "preferred_output", "non_preferred_output"}`) are counted as
one conversation: the input messages followed by both outputs, each message the chat way, with the
reply priming once. OpenAI bills DPO per training token but publishes no counting rule; the prompt
is shared by the pair, so it is counted once, and each output costs what an assistant message costs
in a chat example, which keeps DPO and chat quotes comparable. (If the provider runs the prompt
once per output, the real figure is higher by the input's tokens; the quote is an estimate, like
the cookbook's.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from typing import Any

import orjson
import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# Longest first so `gpt-4o…` is not caught by `gpt-4`.
_ENCODING_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-4", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
)
# Self-hosted / OpenAI-compatible models have no tiktoken encoding of their own; o200k_base is the
# tokenizer of every model OpenAI still fine-tunes, so it is the least surprising estimate.
DEFAULT_ENCODING = "o200k_base"

# Strings are cached by value; role names and a shared system prompt repeat on every row, unique
# answers simply age out. Very long strings are not worth keeping alive in the cache.
_CACHE_SIZE = 8192
_CACHE_MAX_CHARS = 4096


def base_model_name(model: str) -> str:
    """`ft:gpt-4o-mini-2024-07-18:org:suffix:id` → `gpt-4o-mini-2024-07-18`; other names unchanged."""
    if model.startswith("ft:"):
        return model.split(":", 2)[1]
    return model


def encoding_name_for_model(model: str) -> str:
    base = base_model_name(model.strip()).lower()
    for prefix, name in _ENCODING_BY_PREFIX:
        if base.startswith(prefix):
            return name
    return DEFAULT_ENCODING


@cache
def get_encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding of `model` (fine-tuned names use their base model's)."""
    return get_encoding(encoding_name_for_model(model))


@cache
def _length_function(encoding_name: str) -> Callable[[str], int]:
    encoding = get_encoding(encoding_name)

    @lru_cache(maxsize=_CACHE_SIZE)
    def cached(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    def length(text: str) -> int:
        if len(text) > _CACHE_MAX_CHARS:
            return len(encoding.encode_ordinary(text))
        return cached(text)

    return length


def count_text_tokens(text: str, encoding: tiktoken.Encoding) -> int:
    # encode_ordinary: a user's text that happens to contain "<|endoftext|>" is text, not a
    # special token, and must not make tiktoken raise.
    return _length_function(encoding.name)(text)


def _value_tokens(key: str, value: Any, length: Callable[[str], int]) -> int:
    if isinstance(value, str):
        return length(value)
    if key == "content" and isinstance(value, list):
        # Content parts: only text parts are countable offline; image parts are priced by the
        # provider from the image itself and are left out of this estimate.
        return sum(
            length(part["text"])
            for part in value
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    if isinstance(value, (list, dict)):
        # tool_calls / function_call reach the model as JSON text, so count them as such.
        return length(orjson.dumps(value).decode())
    # weight (0/1), null content and other scalars carry no text to train on.
    return 0


def count_example_tokens(messages: Iterable[Mapping[str, Any]], encoding: tiktoken.Encoding) -> int:
    """Tokens of one chat example as the cookbook counts them (see the module docstring)."""
    length = _length_function(encoding.name)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += _value_tokens(key, value, length)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


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
