"""Tabular files (CSV, TSV, Parquet) with question/answer columns under other names.

Spreadsheets rarely say `questions`/`answers`: Toyhom's Chinese medical dialogues, for one, have
`department,title,ask,answer`. When the preset is `auto` (and no row key names a known preset) or
`huatuo`, and the header has exactly one question-like and one answer-like column, those two are
read as huatuo's `questions` and `answers`; the report names the mapping (`mapped_columns`) and
warns, so nothing is guessed silently. Other columns are ignored. Anything else needs an explicit
field map (preset `map`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

QUESTION_COLUMNS = frozenset({"questions", "question", "ask", "query"})
ANSWER_COLUMNS = frozenset({"answers", "answer", "response", "reply"})
TABULAR_FORMATS = frozenset({"csv", "tsv", "parquet"})


def huatuo_columns(columns: Iterable[str]) -> dict[str, str] | None:
    """{column in the file: huatuo field} when exactly one column of each kind is there, else None."""
    names = list(columns)
    if "questions" in names and "answers" in names:
        return None  # already huatuo
    questions = [c for c in names if c.strip().casefold() in QUESTION_COLUMNS]
    answers = [c for c in names if c.strip().casefold() in ANSWER_COLUMNS]
    if len(questions) != 1 or len(answers) != 1:
        return None
    return {questions[0]: "questions", answers[0]: "answers"}


class TabularColumns:
    """Decides once, on the first row of a tabular file, whether to rename columns, then renames."""

    def __init__(self, format: str) -> None:
        self.active = format in TABULAR_FORMATS
        self.decided = not self.active
        self.columns: list[str] = []
        self.rename: dict[str, str] | None = None

    def decide(self, row: Mapping[str, Any], preset: str, detect: Callable[[Any], str | None]) -> None:
        self.decided = True
        self.columns = list(row)
        if preset == "huatuo" or (preset == "auto" and detect(row) is None):
            self.rename = huatuo_columns(self.columns)

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        rename = self.rename
        return {rename.get(key, key): value for key, value in row.items()} if rename else row

    @property
    def mapped(self) -> dict[str, str] | None:
        """{huatuo field: column}, for the report."""
        return {field: column for column, field in self.rename.items()} if self.rename else None

    def hint(self) -> str:
        return f" (columns: {', '.join(self.columns[:20])})" if self.active else ""

    def warning(self, preset: str) -> dict[str, str] | None:
        if not self.rename:
            return None
        shown = ", ".join(f"'{column}' as {field}" for column, field in self.rename.items())
        return {
            "code": "mapped_columns",
            "message": f"Read column(s) {shown} (preset {preset}); other columns were ignored. "
            "Use preset 'map' with a field_map to choose others.",
        }
