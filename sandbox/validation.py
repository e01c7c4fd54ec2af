"""Training-file validation, as OpenAI does it while a job is `validating_files`.

The checks are the cookbook's seven (training-data.md §3: data_type, missing_messages_list,
message_missing_key, message_unrecognized_key, unrecognized_role, missing_content,
example_missing_assistant_message) with its known quirks fixed the way the server behaves:
`tool` messages, assistant `tool_calls` (content may then be null) and `weight` ∈ {0, 1} are valid.
The first problem found is reported, naming its line, because that is what a user can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sandbox.tokens import count_messages

MIN_EXAMPLES = 10
SFT_ROLES = ("system", "user", "assistant", "tool", "function")
MESSAGE_KEYS = ("role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight")


class TrainingFileError(Exception):
    """A file the job cannot train on; becomes the failed job's `error`."""

    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "param": self.param}


@dataclass
class TrainingData:
    examples: list[dict[str, Any]] = field(default_factory=list)
    example_tokens: list[int] = field(default_factory=list)

    @property
    def n_examples(self) -> int:
        return len(self.examples)


def parse_training_file(
    raw: bytes,
    *,
    model: str,
    method: str = "supervised",
    param: str = "training_file",
    min_examples: int = MIN_EXAMPLES,
) -> TrainingData:
    """Parse and check a JSONL training (or validation) file; raise TrainingFileError on the first problem."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TrainingFileError(
            "invalid_training_file", "Invalid file format. The file must be UTF-8 encoded JSONL.", param
        ) from None
    data = TrainingData()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError:
            raise _format_error(number, "is not valid JSON", param) from None
        problem = check_preference(example) if method == "dpo" else check_example(example)
        if problem:
            raise _format_error(number, problem, param)
        data.examples.append(example)
        data.example_tokens.append(count_messages(_all_messages(example), model))
    if data.n_examples < min_examples:
        kind = "Validation" if param == "validation_file" else "Training"
        raise TrainingFileError(
            "invalid_n_examples",
            f"{kind} file has {data.n_examples} example(s), but must have at least {min_examples} examples",
            param,
        )
    return data


def _format_error(line: int, problem: str, param: str) -> TrainingFileError:
    return TrainingFileError("invalid_training_file", f"Invalid file format. Line {line}: {problem}.", param)


def check_example(example: Any) -> str | None:
    """One supervised line; returns a description of its first problem, or None."""
    if not isinstance(example, dict):
        return "example is not a JSON object (data_type)"
    messages = example.get("messages")
    if not messages or not isinstance(messages, list):
        return "missing or empty 'messages' list (missing_messages_list)"
    for index, message in enumerate(messages, start=1):
        problem = check_message(message)
        if problem:
            return f"message {index} {problem}"
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        return "example has no assistant message (example_missing_assistant_message)"
    return None


def check_message(message: Any, roles: tuple[str, ...] = SFT_ROLES) -> str | None:
    if not isinstance(message, dict):
        return "is not a JSON object (data_type)"
    if "role" not in message:
        return "is missing key 'role' (message_missing_key)"
    unknown = [k for k in message if k not in MESSAGE_KEYS]
    if unknown:
        return f"has unrecognized key '{unknown[0]}' (message_unrecognized_key)"
    role = message["role"]
    if role not in roles:
        return f"has unrecognized role {json.dumps(role)} (unrecognized_role)"
    calls = message.get("tool_calls") or message.get("function_call")
    if role == "assistant" and calls:
        # An assistant turn that only calls tools legitimately has no text.
        if message.get("content") is not None and not isinstance(message.get("content"), str):
            return "has non-string content (missing_content)"
        if message.get("tool_calls") is not None and not _valid_tool_calls(message["tool_calls"]):
            return "has malformed 'tool_calls' (message_unrecognized_key)"
    else:
        if "content" not in message:
            return "is missing key 'content' (message_missing_key)"
        if not _has_content(message["content"]):
            return "has empty or non-text content (missing_content)"
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        return "is a tool message without 'tool_call_id' (message_missing_key)"
    if "weight" in message:
        if role != "assistant":
            return "has 'weight', which only assistant messages may carry (message_unrecognized_key)"
        if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
            return "has 'weight' other than 0 or 1"
    return None


def check_preference(example: Any) -> str | None:
    """One DPO line: `input.messages` plus one preferred and one non-preferred assistant output."""
    if not isinstance(example, dict):
        return "example is not a JSON object (data_type)"
    source = example.get("input")
    messages = source.get("messages") if isinstance(source, dict) else None
    if not messages or not isinstance(messages, list):
        return "missing or empty 'input.messages' list (missing_messages_list)"
    for index, message in enumerate(messages, start=1):
        problem = check_message(message)
        if problem:
            return f"input message {index} {problem}"
    for key in ("preferred_output", "non_preferred_output"):
        output = example.get(key)
        if not isinstance(output, list) or len(output) != 1:
            return f"'{key}' must be a list with exactly one assistant message"
        message = output[0]
        if (
            not isinstance(message, dict)
            or message.get("role") != "assistant"
            or not _has_content(message.get("content"))
        ):
            return f"'{key}' must hold an assistant message with text content"
    return None


def _has_content(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content)
    if isinstance(content, list) and content:
        return all(isinstance(p, dict) and p.get("type") in ("text", "image_url") for p in content)
    return False


def _valid_tool_calls(calls: Any) -> bool:
    if not isinstance(calls, list) or not calls:
        return False
    return all(
        isinstance(c, dict)
        and isinstance(c.get("function"), dict)
        and isinstance(c["function"].get("name"), str)
        for c in calls
    )


def _all_messages(example: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" in example:
        messages: list[dict[str, Any]] = example["messages"]
        return messages
    parts = (example["input"]["messages"], example["preferred_output"], example["non_preferred_output"])
    return [message for part in parts for message in part]


def question_and_answer(example: dict[str, Any]) -> tuple[str, str] | None:
    """The (last user message, answer that follows it) pair chat retrieval keys on."""
    if "messages" in example:
        messages = example["messages"]
        answer_at = max(
            (
                i
                for i, m in enumerate(messages)
                if m.get("role") == "assistant" and isinstance(m.get("content"), str)
            ),
            default=None,
        )
        if answer_at is None:
            return None
        answer = messages[answer_at]["content"]
        before = messages[:answer_at]
    else:
        answer = example["preferred_output"][0]["content"]
        before = example["input"]["messages"]
    question = next((text_of(m.get("content")) for m in reversed(before) if m.get("role") == "user"), None)
    if not question or not isinstance(answer, str):
        return None
    return question, answer


def text_of(content: Any) -> str:
    """Plain text of a message's content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""
