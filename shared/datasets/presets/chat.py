"""OpenAI's chat line (`{"messages": [...]}`): passed through after the cookbook's format checks.

Message content is not trimmed (whitespace can be meaningful, e.g. code), but whitespace-only
content counts as missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.datasets.presets.base import MappingOptions, RowRejected, as_options, json_type

if TYPE_CHECKING:
    from shared.datasets.dedup import Plain

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


def has_text(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    # Content parts (text / image_url); a non-empty list of typed parts is content.
    return (
        isinstance(content, list)
        and bool(content)
        and all(isinstance(part, dict) and "type" in part for part in content)
    )


def check_message(index: int, message: Any, path: str = "messages") -> None:
    """The cookbook's four message-level checks, plus `weight`; `path` names the list in messages."""
    where = f"{path}[{index}]"
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
    if not calls_tool and not has_text(content):
        raise RowRejected("missing_content", f"{where} ({role}) has no content")
    if calls_tool and content is not None and not isinstance(content, str):
        raise RowRejected("missing_content", f"{where} content must be a string or null")
    if "weight" in message:
        weight = message["weight"]
        if role != "assistant" or isinstance(weight, bool) or weight not in (0, 1):
            raise RowRejected(
                "invalid_weight", f"{where}: 'weight' must be 0 or 1, on assistant messages only"
            )


def with_system(messages: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """The configured prompt goes first, unless the conversation brings its own system message."""
    if system_prompt and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def map_chat(row: Any, options: MappingOptions | str | None = None) -> dict[str, Any]:
    options = as_options(options)
    options.require_no_template("chat")
    if not isinstance(row, dict):
        raise RowRejected("data_type", f"Row is a JSON {json_type(row)}, not an object")
    messages = row.get("messages")
    if not messages or not isinstance(messages, list):
        raise RowRejected("missing_messages_list", "Row has no non-empty 'messages' list")
    for index, message in enumerate(messages):
        check_message(index, message)
    if not any(m.get("role") == "assistant" for m in messages):
        raise RowRejected("example_missing_assistant_message", "Example has no assistant message to train on")
    example = {key: row[key] for key in CHAT_TOP_LEVEL_KEYS if key in row}
    example["messages"] = with_system(messages, options.system_prompt)
    return example


def plain_chat_example(row: dict[str, Any], system_prompt: str | None) -> tuple[dict[str, Any], Plain] | None:
    """What `map_chat` makes of the commonest chat row, `{"messages": [...]}` whose every message is
    exactly a known role and non-blank string content with an assistant among them, and the
    example's `plain_messages`, without the general checks; None for any other row (then `map_chat`
    decides, and reports what is wrong)."""
    messages = row.get("messages")
    if type(messages) is not list or not messages:
        return None
    roles: list[str] = []
    contents: list[str] = []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role = message.get("role")
        content = message.get("content")
        if type(role) is not str or type(content) is not str or role not in ROLES:
            return None
        if not content or content.isspace():
            return None
        roles.append(role)
        contents.append(content)
    if "assistant" not in roles:
        return None
    if system_prompt and "system" not in roles:
        messages = [{"role": "system", "content": system_prompt}, *messages]
        roles.insert(0, "system")
        contents.insert(0, system_prompt)
        row = {"messages": messages}
    # Otherwise the row is the example already: exactly {"messages": messages}.
    return row, (tuple(roles), tuple(contents))
