"""Row mapping: one parsed JSONL row → one chat example (`{"messages": [...]}`), or a `RowRejected`.

Presets:
- `huatuo`: `{"questions": …, "answers": …}` → [system?, user=question, assistant=answer].
  Each field may be a string or a list. Huatuo-26M's encyclopedia/KG subsets store *paraphrases*
  of one question as a list (sometimes nested: `[["q", "q rephrased"]]`) and one answer in a
  list, so a list means "alternatives", not "parts": the first non-blank string, depth first,
  is used. Joining would glue several phrasings of the same question into one odd prompt.
  Strings are trimmed; a field that is blank after trimming rejects the row (`empty_content`).
- `chat`: OpenAI's `{"messages": [...]}` line, passed through after the cookbook's format checks.
  Message content is not trimmed (whitespace can be meaningful, e.g. code), but whitespace-only
  content counts as missing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

PRESETS = ("auto", "huatuo", "chat")

# The cookbook checker (training-data.md §3) only knows role/content/name/function_call/weight and
# the roles system/user/assistant/function. OpenAI's current chat fine-tuning format
# (FineTuneChatRequestInput) also has tool messages, assistant `tool_calls` (content may then be
# null) and `weight`, so rejecting them would refuse files the provider accepts. `developer` is not
# listed for SFT, so it stays unrecognized.
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"})
ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
# Top-level keys the provider understands; anything else (ids, sources, metadata) is dropped so a
# stray field cannot make the provider reject the whole file.
CHAT_TOP_LEVEL_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")

_NON_WORD = re.compile(r"[\W_]+")


class RowRejected(Exception):
    """A row that cannot become an example; never escapes the pipeline."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def detect_preset(row: Mapping[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "questions" in row or "answers" in row:
        return "huatuo"
    return None


def _first_text(value: Any, depth: int = 0) -> str | None:
    """First non-blank string of a string or (nested) list; "" when there is none, None on a bad type."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and depth < 3:
        for item in value:
            text = _first_text(item, depth + 1)
            if text is None:
                return None
            if text.strip():
                return text
        return ""
    return None


def _text_field(row: Mapping[str, Any], field: str) -> str:
    if row.get(field) is None:
        raise RowRejected("missing_field", f"Row has no '{field}' field")
    text = _first_text(row[field])
    if text is None:
        raise RowRejected("invalid_field_type", f"'{field}' must be a string or a list of strings")
    text = text.strip()
    if not text:
        raise RowRejected("empty_content", f"'{field}' is empty after trimming whitespace")
    return text


def map_huatuo(row: Any, system_prompt: str | None) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RowRejected("not_an_object", f"Row is a JSON {_json_type(row)}, not an object")
    question = _text_field(row, "questions")
    answer = _text_field(row, "answers")
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": question})
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


def _has_text(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    # Content parts (text / image_url); a non-empty list of typed parts is content.
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(part, dict) and "type" in part for part in content)
    )


def _check_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise RowRejected("message_missing_key", f"{where} is not an object with 'role' and 'content'")
    role = message.get("role")
    calls_tool = role == "assistant" and bool(message.get("tool_calls") or message.get("function_call"))
    if "role" not in message or ("content" not in message and not calls_tool):
        missing = "role" if "role" not in message else "content"
        raise RowRejected("message_missing_key", f"{where} has no '{missing}'")
    unknown = sorted(k for k in message if k not in MESSAGE_KEYS)
    if unknown:
        raise RowRejected(
            "message_unrecognized_key", f"{where} has unrecognized key(s): {', '.join(unknown)}"
        )
    if role not in ROLES:
        raise RowRejected("unrecognized_role", f"{where} has unrecognized role {role!r}")
    content = message.get("content")
    if not calls_tool and not _has_text(content):
        raise RowRejected("missing_content", f"{where} ({role}) has no content")
    if calls_tool and content is not None and not isinstance(content, str):
        raise RowRejected("missing_content", f"{where} content must be a string or null")
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant" or isinstance(weight, bool) or weight not in (0, 1):
            raise RowRejected(
                "invalid_weight", f"{where}: 'weight' must be 0 or 1, on assistant messages only"
            )


def map_chat(row: Any, system_prompt: str | None) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RowRejected("data_type", f"Row is a JSON {_json_type(row)}, not an object")
    messages = row.get("messages")
    if not messages or not isinstance(messages, list):
        raise RowRejected("missing_messages_list", "Row has no non-empty 'messages' list")
    for index, message in enumerate(messages):
        _check_message(index, message)
    if not any(m.get("role") == "assistant" for m in messages):
        raise RowRejected("example_missing_assistant_message", "Example has no assistant message to train on")
    example = {key: row[key] for key in CHAT_TOP_LEVEL_KEYS if key in row}
    if system_prompt and not any(m.get("role") == "system" for m in messages):
        example["messages"] = [{"role": "system", "content": system_prompt}, *messages]
    return example


MAPPERS = {"huatuo": map_huatuo, "chat": map_chat}


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def normalise_question(text: str) -> str:
    """Case-, width- and punctuation-insensitive form, so '头痛怎么办？' and '头痛怎么办?' match."""
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def question_key(example: Mapping[str, Any]) -> str:
    """The first user message, normalised: examples sharing it must share a split."""
    for message in example["messages"]:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p["text"] for p in content if isinstance(p.get("text"), str))
            if isinstance(content, str):
                return normalise_question(content)
    return ""
