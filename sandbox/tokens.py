"""Token counting with tiktoken, the way OpenAI's fine-tuning cookbook estimates it.

tiktoken downloads its BPE files on first use unless `TIKTOKEN_CACHE_DIR` points at a cache; the
reference kit ships one (`shared/tiktoken`), so tests and offline runs set that variable.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import tiktoken

from sandbox.catalog import encoding_for

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


@lru_cache(maxsize=4)
def _encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


def count_text(text: str, model: str) -> int:
    # disallowed_special=() so user text that happens to contain "<|endoftext|>" is counted, not refused.
    return len(_encoding(encoding_for(model)).encode(text, disallowed_special=()))


def encode(text: str, model: str) -> list[int]:
    return _encoding(encoding_for(model)).encode(text, disallowed_special=())


def decode(tokens: list[int], model: str) -> str:
    return _encoding(encoding_for(model)).decode(tokens)


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        # Content parts: count their text; other structured values (tool_calls) as their JSON.
        texts = [str(p["text"]) for p in value if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if texts and len(texts) == len(value):
            return "".join(texts)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    # The cookbook would crash on ints (`weight`); they carry no text, so they count nothing.
    return ""


def count_messages(messages: list[dict[str, Any]], model: str) -> int:
    """Cookbook rule: 3 per message + tokens of every value + 1 per name + 3 for reply priming."""
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            text = _value_text(value)
            if text:
                total += count_text(text, model)
            if key == "name":
                total += TOKENS_PER_NAME
    return total + REPLY_PRIMING
