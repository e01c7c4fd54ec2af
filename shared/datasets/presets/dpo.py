"""DPO preference pairs, OpenAI's line (training-data.md §2.2):

    {"input": {"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool},
     "preferred_output": [{"role": "assistant", "content": "…"}],
     "non_preferred_output": [{"role": "assistant", "content": "…"}]}

Only the current key names are accepted; the 2025-04 names `preferred_completion` /
`non_preferred_completion` are rejected with a message saying what to rename. Checks: the input
messages pass the chat checks and end with a user message (OpenAI trains DPO on one-turn
conversations whose preferred/non-preferred messages are the last assistant message); each output
is a list of exactly one assistant message with non-blank string content (DPO is text-only); the
two outputs differ (an identical pair carries no preference). Content is not trimmed, as for chat.
Other top-level and input keys are dropped so a stray field cannot fail the provider's check.
"""

from __future__ import annotations

from typing import Any

from shared.datasets.presets.base import MappingOptions, RowRejected, as_options, json_type, require_object
from shared.datasets.presets.chat import check_message, with_system

DPO_OUTPUT_KEYS = ("preferred_output", "non_preferred_output")
DPO_INPUT_KEYS = ("messages", "tools", "parallel_tool_calls")
_OLD_NAMES = {"preferred_output": "preferred_completion", "non_preferred_output": "non_preferred_completion"}
_OUTPUT_MESSAGE_KEYS = frozenset({"role", "content", "name"})


def _input_messages(row: dict[str, Any]) -> dict[str, Any]:
    prompt = row.get("input")
    if prompt is None:
        raise RowRejected("missing_field", "Row has no 'input' field (an object with a 'messages' list)")
    if not isinstance(prompt, dict):
        raise RowRejected(
            "invalid_field_type",
            f"'input' must be an object with a 'messages' list, not a JSON {json_type(prompt)}",
        )
    messages = prompt.get("messages")
    if not messages or not isinstance(messages, list):
        raise RowRejected("missing_messages_list", "'input' has no non-empty 'messages' list")
    for index, message in enumerate(messages):
        check_message(index, message, "input.messages")
    last = messages[-1].get("role")
    if last != "user":
        raise RowRejected(
            "last_message_not_user",
            f"The last message of input.messages must be the user's prompt, not a {last!r} message",
        )
    return prompt


def _output(row: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = row.get(key)
    if value is None:
        old = _OLD_NAMES[key]
        hint = f"; rename '{old}' to '{key}' (OpenAI's current name)" if old in row else ""
        raise RowRejected("missing_field", f"Row has no '{key}' field{hint}")
    if not isinstance(value, list) or len(value) != 1:
        found = f"{len(value)} items" if isinstance(value, list) else f"a JSON {json_type(value)}"
        raise RowRejected(
            "invalid_dpo_output", f"'{key}' must be a list of exactly 1 assistant message; found {found}"
        )
    message = value[0]
    where = f"{key}[0]"
    if not isinstance(message, dict) or message.get("role") != "assistant":
        role = message.get("role") if isinstance(message, dict) else None
        raise RowRejected("invalid_dpo_output", f"{where} must be an assistant message (role {role!r})")
    unknown = sorted(k for k in message if k not in _OUTPUT_MESSAGE_KEYS)
    if unknown:
        raise RowRejected(
            "message_unrecognized_key",
            f"{where} has unrecognized key(s): {', '.join(unknown)} (DPO outputs are text-only)",
        )
    content = message.get("content")
    if not isinstance(content, str):
        raise RowRejected(
            "invalid_dpo_output", f"{where} content must be a string, not a JSON {json_type(content)}"
        )
    if not content.strip():
        raise RowRejected("empty_content", f"{where} content is empty")
    return value


def map_dpo(row: Any, options: MappingOptions | str | None = None) -> dict[str, Any]:
    options = as_options(options)
    options.require_no_template("dpo")
    row = require_object(row)
    prompt = _input_messages(row)
    preferred = _output(row, "preferred_output")
    non_preferred = _output(row, "non_preferred_output")
    if preferred[0]["content"].strip() == non_preferred[0]["content"].strip():
        raise RowRejected(
            "identical_outputs",
            "'preferred_output' and 'non_preferred_output' are the same text; nothing to prefer",
        )
    example_input = {key: prompt[key] for key in DPO_INPUT_KEYS if key in prompt}
    example_input["messages"] = with_system(prompt["messages"], options.system_prompt)
    return {"input": example_input, "preferred_output": preferred, "non_preferred_output": non_preferred}
