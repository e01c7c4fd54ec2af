"""What every mapper shares: the row rejection, the mapping options and small field helpers.

Two kinds of failure, kept apart on purpose: `RowRejected` is a bad row (counted and reported with
its line, the run goes on); `InvalidInput` is a bad option (the whole request is wrong, so it is
raised before any row is read, or as soon as auto-detection reveals the mismatch).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from shared.errors import InvalidInput

FIELD_MAP_KEYS = ("question", "answer", "system")
_FIELD_MAP_REQUIRED = ("question", "answer")
# Presets whose rows hold one question; the others are already conversations, and rewriting their
# user turns with a template would be guesswork about which turn is "the question".
TEMPLATE_PRESETS = ("huatuo", "alpaca", "map")
_FIELD_MAP_EXAMPLE = '{"question": "ask", "answer": "answer", "system": "sys"}'


class RowRejected(Exception):
    """A row that cannot become an example; never escapes the pipeline."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MappingOptions:
    """Options of the mapping step, validated when built (so a bad template fails the request, not
    every row).

    - `system_prompt`: trimmed; blank means none. Rows that carry their own system message keep it.
    - `user_template`: `str.format`-style, e.g. "科室：{department}\\n问题：{question}". `{question}` is
      the question the preset found (required, so a typo cannot silently drop it); any other
      `{name}` is the row's field `name`. Only plain names: no `{}`/`{0}`, attribute or index
      access, conversion or format spec (`{x.__class__}` would let a caller walk Python objects).
    - `field_map`: for preset `map`: `{"question": column, "answer": column, "system"?: column}`; a
      JSON string is accepted too (it arrives as a form field).
    """

    system_prompt: str | None = None
    user_template: str | None = None
    field_map: Mapping[str, str] | None = field(default=None, hash=False)
    _template: tuple[tuple[str, str | None], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise InvalidInput(
                "system_prompt must be a string", code="invalid_system_prompt", param="system_prompt"
            )
        object.__setattr__(self, "system_prompt", (self.system_prompt or "").strip() or None)
        template = self.user_template or None
        object.__setattr__(self, "user_template", template)
        object.__setattr__(self, "_template", _parse_template(template) if template is not None else ())
        object.__setattr__(self, "field_map", _check_field_map(self.field_map))

    def render_user(self, row: Mapping[str, Any], question: str) -> str:
        if not self._template:
            return question
        parts: list[str] = []
        for literal, name in self._template:
            parts.append(literal)
            if name == "question":
                parts.append(question)
            elif name is not None:
                parts.append(_template_value(row, name))
        return "".join(parts)

    def require_no_template(self, preset: str) -> None:
        if self.user_template is not None and preset not in TEMPLATE_PRESETS:
            raise InvalidInput(
                f"user_template applies to presets {', '.join(TEMPLATE_PRESETS)} (rows with one question); "
                f"'{preset}' rows are already conversations. Remove user_template or change the preset.",
                code="invalid_user_template",
                param="user_template",
            )


def as_options(value: MappingOptions | str | None) -> MappingOptions:
    """Mappers take `MappingOptions`; a bare system prompt (or None) is the pre-options call."""
    if isinstance(value, MappingOptions):
        return value
    if value is None or isinstance(value, str):
        return _prompt_only(value)
    raise TypeError(f"expected MappingOptions, a system prompt or None, not {type(value).__name__}")


@lru_cache(maxsize=32)
def _prompt_only(system_prompt: str | None) -> MappingOptions:
    # The old call passes the same prompt for every row; build (and validate) it once.
    return MappingOptions(system_prompt=system_prompt)


def _template_error(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_user_template", param="user_template")


def _parse_template(template: Any) -> tuple[tuple[str, str | None], ...]:
    if not isinstance(template, str):
        raise _template_error("user_template must be a string")
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise _template_error(
            f"user_template is malformed ({exc}); write fields as {{name}} "
            "and literal braces as {{ and }}"
        ) from None
    parsed: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in pieces:
        if name is not None and (
            not name or name.isdigit() or any(c in name for c in ".[]") or spec or conversion
        ):
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise _template_error(
                f"user_template placeholder {{{shown}}} is not supported; use plain field names such as "
                "{question} or {department} (write a literal brace as {{ or }})"
            )
        parsed.append((literal, name))
    if not any(name == "question" for _, name in parsed):
        raise _template_error("user_template must contain {question}, where the row's question goes")
    return tuple(parsed)


def _template_value(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None:
        raise RowRejected(
            "template_field_missing", f"user_template uses {{{name}}}, but the row has no '{name}' field"
        )
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)):
        return str(value)
    raise RowRejected(
        "invalid_field_type",
        f"'{name}' (used by user_template) must be a string or a number, not a JSON {json_type(value)}",
    )


def _field_map_error(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_field_map", param="field_map")


def _check_field_map(value: Any) -> Mapping[str, str] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _field_map_error(f"field_map must be a JSON object, e.g. {_FIELD_MAP_EXAMPLE}") from None
    if not isinstance(value, Mapping):
        raise _field_map_error(f"field_map must be an object, e.g. {_FIELD_MAP_EXAMPLE}")
    unknown = sorted(str(key) for key in value if key not in FIELD_MAP_KEYS)
    if unknown:
        raise _field_map_error(
            f"field_map has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(FIELD_MAP_KEYS)}"
        )
    missing = [key for key in _FIELD_MAP_REQUIRED if key not in value]
    if missing:
        raise _field_map_error(
            f"field_map must name the column of {' and '.join(missing)}, e.g. {_FIELD_MAP_EXAMPLE}"
        )
    for key, column in value.items():
        if not isinstance(column, str) or not column.strip():
            raise _field_map_error(f"field_map['{key}'] must be a column name (a non-empty string)")
    return MappingProxyType(dict(value))


def json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def require_object(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RowRejected("not_an_object", f"Row is a JSON {json_type(row)}, not an object")
    return row


def first_text(value: Any, depth: int = 0) -> str | None:
    """First non-blank string of a string or (nested) list; "" when there is none, None on a bad type."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and depth < 3:
        for item in value:
            text = first_text(item, depth + 1)
            if text is None:
                return None
            if text.strip():
                return text
        return ""
    return None


def text_field(row: Mapping[str, Any], name: str, mapped_as: str | None = None) -> str:
    """A required text field (string or list of alternatives), trimmed and non-empty."""
    via = f" (the {mapped_as} column in field_map)" if mapped_as else ""
    if row.get(name) is None:
        raise RowRejected("missing_field", f"Row has no '{name}' field{via}")
    text = first_text(row[name])
    if text is None:
        raise RowRejected("invalid_field_type", f"'{name}'{via} must be a string or a list of strings")
    text = text.strip()
    if not text:
        raise RowRejected("empty_content", f"'{name}'{via} is empty after trimming whitespace")
    return text


def optional_text(row: Mapping[str, Any], name: str) -> str | None:
    """An optional string field, trimmed; None when absent, null or blank."""
    value = row.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowRejected("invalid_field_type", f"'{name}' must be a string, not a JSON {json_type(value)}")
    return value.strip() or None


def single_turn(
    options: MappingOptions,
    row: Mapping[str, Any],
    question: str,
    answer: str,
    *,
    system: str | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """[system?, *history, user, assistant]; the row's own system prompt wins over the configured one."""
    messages: list[dict[str, Any]] = []
    system = system or options.system_prompt
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(history or ())
    messages.append({"role": "user", "content": options.render_user(row, question)})
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}
