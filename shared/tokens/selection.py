"""Which backend counts (TUNEFORGE_TOKENIZER) and in how many threads (TUNEFORGE_TOKENIZER_THREADS)."""

from __future__ import annotations

import os
from functools import cache

from shared.config import get_settings
from shared.tokens.backends import _Backend, _tiktoken_backend
from shared.tokens.fast import fast_backend

TOKENIZERS = ("auto", "tiktoken", "quicktok")


def _choice(tokenizer: str | None) -> str:
    choice = tokenizer or get_settings().tokenizer
    if choice not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {choice!r}")
    return choice


def tokenizer_backend(encoding_name: str, tokenizer: str | None = None) -> _Backend:
    """The backend that counts `encoding_name`: quicktok when usable (`fast_backend`) unless
    `tokenizer` (default: TUNEFORGE_TOKENIZER) is "tiktoken", else tiktoken."""
    return _backend(encoding_name, _choice(tokenizer))


@cache
def _backend(encoding_name: str, choice: str) -> _Backend:
    if choice != "tiktoken":
        fast = fast_backend(encoding_name)
        if fast is not None:
            return fast
    return _tiktoken_backend(encoding_name)


def default_threads() -> int:
    """TUNEFORGE_TOKENIZER_THREADS, else the CPUs this process may run on."""
    configured = get_settings().tokenizer_threads
    if configured:
        return max(1, configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
