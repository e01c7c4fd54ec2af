from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / ".." / "shared"
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(KIT / "tiktoken"))

import tiktoken  # noqa: E402

from shared import tokens  # noqa: E402


def reference_count(messages: list[dict], encoding_name: str) -> int:
    """The cookbook formula, written out independently with tiktoken."""
    enc = tiktoken.get_encoding(encoding_name)
    n = 0
    for message in messages:
        n += 3
        for key, value in message.items():
            if isinstance(value, str):
                n += len(enc.encode(value))
            elif isinstance(value, (list, dict)):
                n += len(enc.encode(json.dumps(value, ensure_ascii=False, separators=(",", ":"))))
            if key == "name":
                n += 1
    return n + 3


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4o", "o200k_base"),
        ("gpt-4.1-nano-2025-04-14", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme:med:abc123", "o200k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0125:acme::xyz", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4", "cl100k_base"),
        ("some-self-hosted-llama", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert tokens.encoding_for_model(model).name == encoding


def test_base_model_name() -> None:
    assert tokens.base_model_name("ft:gpt-4o-2024-08-06:org:suffix:id") == "gpt-4o-2024-08-06"
    assert tokens.base_model_name("gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"


def test_known_small_counts() -> None:
    # "user" and "hello" are one token each in both encodings: 3 + 1 + 1 + 3.
    for name in ("o200k_base", "cl100k_base"):
        enc = tiktoken.get_encoding(name)
        assert tokens.count_example_tokens([{"role": "user", "content": "hello"}], enc) == 8
    enc = tiktoken.get_encoding("o200k_base")
    named = [{"role": "user", "content": "hello", "name": "hello"}]
    assert tokens.count_example_tokens(named, enc) == 10  # + name value (1) + per-name (1)
    assert tokens.count_example_tokens([], enc) == 3


@pytest.mark.parametrize("encoding_name", ["o200k_base", "cl100k_base"])
def test_counts_match_tiktoken_on_sample_data(encoding_name: str) -> None:
    enc = tiktoken.get_encoding(encoding_name)
    path = KIT / "data" / "openai_chat_medicalgpt500.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:60]]
    system = {"role": "system", "content": "你是一名经验丰富的医生，请用简洁的中文回答。"}
    for row in rows:
        messages = [system, *row["messages"]]
        expected = reference_count(messages, encoding_name)
        assert tokens.count_example_tokens(messages, enc) == expected
        # Second time through the cache must give the same figure.
        assert tokens.count_example_tokens(messages, enc) == expected
        assert tokens.example_token_upper_bound(messages) >= expected


def test_weight_skipped_and_tool_calls_json_encoded() -> None:
    enc = tiktoken.get_encoding("o200k_base")
    call = [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "头痛"}'}}
    ]
    messages = [
        {"role": "user", "content": "头痛怎么办"},
        {"role": "assistant", "content": None, "tool_calls": call},
        {"role": "tool", "tool_call_id": "call_1", "content": "多休息"},
        {"role": "assistant", "content": "多休息，多喝水。", "weight": 1},
    ]
    expected = (
        3 * 4
        + 3
        + sum(len(enc.encode(v)) for m in messages for v in m.values() if isinstance(v, str))
        + len(enc.encode(json.dumps(call, ensure_ascii=False, separators=(",", ":"))))
    )
    assert tokens.count_example_tokens(messages, enc) == expected
    assert tokens.count_chat_tokens(messages, enc) == expected


def test_special_token_text_is_ordinary_text() -> None:
    enc = tiktoken.get_encoding("cl100k_base")
    text = "see <|endoftext|> here"
    got = tokens.count_example_tokens([{"role": "user", "content": text}], enc)
    assert got == 3 + len(enc.encode("user")) + len(enc.encode(text, disallowed_special=())) + 3


def test_long_strings_bypass_cache_but_count_right() -> None:
    enc = tiktoken.get_encoding("o200k_base")
    long_text = "发热咳嗽" * 3000  # over the cache's per-string size
    messages = [{"role": "user", "content": long_text}]
    assert tokens.count_example_tokens(messages, enc) == reference_count(messages, "o200k_base")
