"""Which tiktoken encoding a model uses."""

from __future__ import annotations

from functools import cache

import tiktoken

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
