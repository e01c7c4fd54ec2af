"""Presets whose rows hold one question and one answer in named fields: huatuo, alpaca, map."""

from __future__ import annotations

from typing import Any

from shared.datasets.presets.base import (
    MappingOptions,
    RowRejected,
    as_options,
    json_type,
    optional_text,
    require_object,
    single_turn,
    text_field,
)
from shared.errors import InvalidInput


def map_huatuo(row: Any, options: MappingOptions | str | None = None) -> dict[str, Any]:
    options = as_options(options)
    row = require_object(row)
    return single_turn(options, row, text_field(row, "questions"), text_field(row, "answers"))


def _alpaca_string(row: dict[str, Any], name: str, *, required: bool) -> str:
    value = row.get(name)
    if value is None:
        if required:
            raise RowRejected("missing_field", f"Row has no '{name}' field")
        return ""
    if not isinstance(value, str):
        raise RowRejected("invalid_field_type", f"'{name}' must be a string, not a JSON {json_type(value)}")
    return value.strip()


def _alpaca_history(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowRejected(
            "invalid_field_type",
            f"'history' must be a list of [user, assistant] pairs, not a JSON {json_type(value)}",
        )
    turns: list[dict[str, Any]] = []
    for index, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            raise RowRejected(
                "invalid_field_type", f"history[{index}] must be a [user, assistant] pair of strings"
            )
        user, assistant = pair[0].strip(), pair[1].strip()
        # Half an exchange cannot be trained on, and keeping one side would put two turns of the
        # same role next to each other.
        if user and assistant:
            turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return turns


def map_alpaca(row: Any, options: MappingOptions | str | None = None) -> dict[str, Any]:
    options = as_options(options)
    row = require_object(row)
    instruction = _alpaca_string(row, "instruction", required=True)
    extra = _alpaca_string(row, "input", required=False)
    # Some exports leave the instruction blank and put the whole prompt in `input`; either alone is a
    # usable question, so only both blank is an error.
    question = "\n\n".join(part for part in (instruction, extra) if part)
    if not question:
        raise RowRejected(
            "empty_content", "'instruction' and 'input' are both empty after trimming whitespace"
        )
    answer = _alpaca_string(row, "output", required=True)
    if not answer:
        raise RowRejected("empty_content", "'output' is empty after trimming whitespace")
    return single_turn(
        options,
        row,
        question,
        answer,
        system=optional_text(row, "system"),
        history=_alpaca_history(row.get("history")),
    )


def map_fields(row: Any, options: MappingOptions | str | None = None) -> dict[str, Any]:
    """Preset `map`: the columns named by `options.field_map` become [system?, user, assistant]."""
    options = as_options(options)
    field_map = options.field_map
    if field_map is None:
        raise InvalidInput(
            'Preset \'map\' needs the field_map option, e.g. {"question": "ask", "answer": "answer"}',
            code="missing_field_map",
            param="field_map",
        )
    row = require_object(row)
    question = text_field(row, field_map["question"], "question")
    answer = text_field(row, field_map["answer"], "answer")
    system = optional_text(row, field_map["system"]) if "system" in field_map else None
    return single_turn(options, row, question, answer, system=system)
