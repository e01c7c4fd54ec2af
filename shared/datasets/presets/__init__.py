"""Row mapping: one parsed row → one training example, or a `RowRejected`.

Presets (`PRESET_NAMES`):
- `huatuo`: `{"questions", "answers"}` → [system?, user, assistant]. Each field may be a string or
  a list. Huatuo-26M's encyclopedia/KG subsets store *paraphrases* of one question as a list
  (sometimes nested: `[["q", "q rephrased"]]`), so a list means "alternatives", not "parts": the
  first non-blank string, depth first, is used.
- `alpaca`: `{"instruction", "input"?, "output", "system"?, "history"?}`. The user message is
  `instruction + "\\n\\n" + input` when `input` is non-blank (either alone when the other is blank);
  `history` is a list of `[user, assistant]` pairs that become earlier turns, in order.
- `sharegpt`: `{"conversations": [{"from", "value"}, …], "system"?, "tools"?}` (see `sharegpt.py`).
- `chat`: OpenAI's `{"messages": [...]}` line, passed through after the cookbook's checks.
- `dpo`: OpenAI's preference line `{"input": {"messages"}, "preferred_output", "non_preferred_output"}`;
  the example stays in that shape (see `dpo.py`).
- `map`: any other row, through the `field_map` option, e.g. `{"question": "ask", "answer": "answer",
  "system": "sys"}` → [system?, user, assistant]. With `field_map` set, `auto` means `map`.
- `auto`: `detect_preset` picks one of the above (not `map`) from a row's keys.

Options (`MappingOptions`): `system_prompt` (added unless the row brings its own system message),
`user_template` (huatuo, alpaca, map; see `MappingOptions`), `field_map`. Cleaning: text fields of
the field presets and ShareGPT turns are trimmed; blank required fields reject the row
(`empty_content`); empty ShareGPT turns and half-empty alpaca history pairs are dropped. Chat and
DPO content is passed through untrimmed (whitespace can be meaningful), but blank is missing.

Row codes: `not_an_object`, `missing_field`, `invalid_field_type`, `empty_content`,
`template_field_missing`, the cookbook's seven (`data_type`, `missing_messages_list`,
`message_missing_key`, `message_unrecognized_key`, `unrecognized_role`, `missing_content`,
`example_missing_assistant_message`), `invalid_weight`, `invalid_tool_turn` (sharegpt), and for dpo
`last_message_not_user`, `invalid_dpo_output`, `identical_outputs`. Option errors are `InvalidInput`:
`unknown_preset`, `invalid_user_template`, `invalid_field_map`, `missing_field_map`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from shared.datasets.presets.base import (
    FIELD_MAP_KEYS,
    TEMPLATE_PRESETS,
    MappingOptions,
    RowRejected,
    as_options,
)
from shared.datasets.presets.chat import CHAT_TOP_LEVEL_KEYS, MESSAGE_KEYS, ROLES, map_chat
from shared.datasets.presets.dpo import map_dpo
from shared.datasets.presets.fields import map_alpaca, map_fields, map_huatuo
from shared.datasets.presets.sharegpt import map_sharegpt
from shared.errors import InvalidInput

__all__ = [
    "CHAT_TOP_LEVEL_KEYS",
    "DETECTION_HINT",
    "FIELD_MAP_KEYS",
    "MAPPERS",
    "MESSAGE_KEYS",
    "PRESETS",
    "PRESET_NAMES",
    "ROLES",
    "TEMPLATE_PRESETS",
    "Mapper",
    "MappingOptions",
    "RowRejected",
    "as_options",
    "detect_preset",
    "map_alpaca",
    "map_chat",
    "map_dpo",
    "map_fields",
    "map_huatuo",
    "map_sharegpt",
    "normalise_question",
    "question_key",
    "resolve_preset",
]

Mapper = Callable[[Any, MappingOptions | str | None], dict[str, Any]]

PRESET_NAMES = ("auto", "huatuo", "alpaca", "sharegpt", "chat", "dpo", "map")
# The name the pipeline has always validated against; the same set.
PRESETS = PRESET_NAMES
MAPPERS: dict[str, Mapper] = {
    "huatuo": map_huatuo,
    "alpaca": map_alpaca,
    "sharegpt": map_sharegpt,
    "chat": map_chat,
    "dpo": map_dpo,
    "map": map_fields,
}
# For "could not detect the preset" messages: the keys `detect_preset` looks for.
DETECTION_HINT = (
    "'messages' (chat), 'conversations' (sharegpt), 'input' with 'preferred_output'/"
    "'non_preferred_output' (dpo), 'questions'/'answers' (huatuo) or 'instruction' + 'output' (alpaca)"
)
_DPO_KEYS = ("preferred_output", "non_preferred_output", "preferred_completion", "non_preferred_completion")
_NON_WORD = re.compile(r"[\W_]+")


def detect_preset(row: Mapping[str, Any]) -> str | None:
    """The preset a row's keys point to, or None. The distinctive container keys are tried first;
    alpaca needs both `instruction` and `output`, because `input`/`output` alone are too generic
    (and `input` is also DPO's)."""
    if "messages" in row:
        return "chat"
    if "conversations" in row:
        return "sharegpt"
    if any(key in row for key in _DPO_KEYS) or isinstance(row.get("input"), Mapping):
        return "dpo"
    if "questions" in row or "answers" in row:
        return "huatuo"
    if "instruction" in row and "output" in row:
        return "alpaca"
    return None


def resolve_preset(preset: str, options: MappingOptions) -> str:
    """Check that `preset` and the options fit together, before any row is read.

    Returns the preset to run: `map` when `auto` comes with a `field_map`, else `preset`. Call it
    again with the detected preset after `auto` detection, so a template on chat rows fails once,
    clearly, instead of on every row.
    """
    if preset not in PRESET_NAMES:
        raise InvalidInput(
            f"Unknown preset '{preset}'; supported presets: {', '.join(PRESET_NAMES)}",
            code="unknown_preset",
            param="preset",
        )
    if options.field_map is not None:
        if preset == "auto":
            return "map"
        if preset != "map":
            raise InvalidInput(
                f"field_map is used with preset 'map' (or 'auto'); preset '{preset}' has fixed fields",
                code="invalid_field_map",
                param="field_map",
            )
    elif preset == "map":
        raise InvalidInput(
            'Preset \'map\' needs the field_map option, e.g. {"question": "ask", "answer": "answer"}',
            code="missing_field_map",
            param="field_map",
        )
    if preset != "auto":
        options.require_no_template(preset)
    return preset


def normalise_question(text: str) -> str:
    """Case-, width- and punctuation-insensitive form, so '头痛怎么办？' and '头痛怎么办?' match."""
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def _text(content: Any) -> str | None:
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else None


def question_key(example: Mapping[str, Any]) -> str:
    """The question, normalised: examples sharing it must share a split.

    Chat examples: the first user message. DPO examples: the last user message of `input.messages`,
    the prompt both outputs answer.
    """
    if "messages" in example:
        users = [m for m in example["messages"] if m.get("role") == "user"]
    else:
        users = [m for m in reversed(example["input"]["messages"]) if m.get("role") == "user"]
    for message in users:
        text = _text(message.get("content"))
        if text is not None:
            return normalise_question(text)
    return ""
