"""ShareGPT rows: `{"conversations": [{"from": "human", "value": …}, …], "system"?: …, "tools"?: …}`.

Speakers: human/user → user; gpt/assistant/chatgpt/bing → assistant; system → system. Turns
written `{"role", "content"}` instead of `{"from", "value"}` are read the same way. Values are
trimmed and empty user/assistant/system turns are dropped (a conversation with no assistant turn
left is rejected with the cookbook's `example_missing_assistant_message`).

Tool use, as LLaMA-Factory writes it, maps to OpenAI's format: a `function_call` turn (JSON
`{"name", "arguments"}` or a list of them) becomes an assistant message with `tool_calls` (ids
`call_1`, `call_2`, … in order), and each following `observation`/`tool` turn becomes a `tool`
message answering the oldest unanswered call. The top-level `tools` (a list, or a JSON string, of
function specs) becomes OpenAI's `[{"type": "function", "function": spec}]`.
"""

from __future__ import annotations

import json
from typing import Any

from shared.datasets.presets.base import (
    MappingOptions,
    RowRejected,
    as_options,
    json_type,
    optional_text,
    require_object,
)
from shared.datasets.presets.chat import with_system

SPEAKER_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "system": "system",
    "function_call": "tool_call",
    "observation": "tool",
    "tool": "tool",
}


def _turn(where: str, turn: Any) -> tuple[str, Any]:
    if not isinstance(turn, dict):
        raise RowRejected("message_missing_key", f"{where} is not an object with 'from' and 'value'")
    speaker_key, value_key = (
        ("from", "value") if "from" in turn or "role" not in turn else ("role", "content")
    )
    for key in (speaker_key, value_key):
        if key not in turn:
            raise RowRejected("message_missing_key", f"{where} has no '{key}'")
    speaker = turn[speaker_key]
    role = SPEAKER_ROLES.get(speaker.strip().lower()) if isinstance(speaker, str) else None
    if role is None:
        raise RowRejected(
            "unrecognized_role",
            f"{where} has unrecognized '{speaker_key}' {speaker!r}; "
            f"expected one of {', '.join(SPEAKER_ROLES)}",
        )
    return role, turn[value_key]


def _tool_calls(where: str, value: Any, first_id: int) -> list[dict[str, Any]]:
    shape = 'JSON like {"name": "get_weather", "arguments": {"city": "北京"}}'
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowRejected("invalid_tool_turn", f"{where} (function_call) must be {shape}") from None
    calls = value if isinstance(value, list) else [value]
    tool_calls: list[dict[str, Any]] = []
    for call in calls:
        name = call.get("name") if isinstance(call, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise RowRejected("invalid_tool_turn", f"{where} (function_call) must be {shape}")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        tool_calls.append(
            {
                "id": f"call_{first_id + len(tool_calls)}",
                "type": "function",
                "function": {"name": name.strip(), "arguments": arguments},
            }
        )
    if not tool_calls:
        raise RowRejected("invalid_tool_turn", f"{where} (function_call) names no function")
    return tool_calls


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except ValueError:
            raise RowRejected(
                "invalid_field_type", "'tools' must be a list of function specs (or its JSON)"
            ) from None
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(spec, dict) for spec in value):
        raise RowRejected("invalid_field_type", "'tools' must be a list of function specs (or its JSON)")
    return [
        spec if spec.get("type") == "function" else {"type": "function", "function": spec} for spec in value
    ]


def map_sharegpt(row: Any, options: MappingOptions | str | None = None) -> dict[str, Any]:
    options = as_options(options)
    options.require_no_template("sharegpt")
    row = require_object(row)
    turns = row.get("conversations")
    if turns is None:
        raise RowRejected("missing_field", "Row has no 'conversations' field")
    if not isinstance(turns, list):
        raise RowRejected(
            "invalid_field_type", f"'conversations' must be a list, not a JSON {json_type(turns)}"
        )
    messages: list[dict[str, Any]] = []
    unanswered: list[str] = []
    calls = 0
    for index, turn in enumerate(turns):
        where = f"conversations[{index}]"
        role, value = _turn(where, turn)
        if role == "tool_call":
            tool_calls = _tool_calls(where, value, calls + 1)
            calls += len(tool_calls)
            unanswered += [call["id"] for call in tool_calls]
            messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
            continue
        if role == "tool":
            if not unanswered:
                raise RowRejected(
                    "invalid_tool_turn", f"{where} is a tool result with no function_call before it"
                )
            if value is None or isinstance(value, str):
                result = value or ""
            else:
                result = json.dumps(value, ensure_ascii=False)
            if not result.strip():
                raise RowRejected("empty_content", f"{where} (tool result) is empty")
            messages.append({"role": "tool", "tool_call_id": unanswered.pop(0), "content": result})
            continue
        if value is None:
            continue  # a null turn is an empty one
        if not isinstance(value, str):
            raise RowRejected(
                "invalid_field_type", f"{where} value must be a string, not a JSON {json_type(value)}"
            )
        if value.strip():
            messages.append({"role": role, "content": value.strip()})
    if not any(m["role"] == "assistant" for m in messages):
        raise RowRejected(
            "example_missing_assistant_message", "Conversation has no non-empty assistant turn to train on"
        )
    system = optional_text(row, "system") or options.system_prompt
    example: dict[str, Any] = {"messages": with_system(messages, system)}
    tools = _tools(row.get("tools"))
    if tools:
        example["tools"] = tools
    return example
