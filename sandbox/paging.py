"""Cursor pagination as OpenAI lists do it: `after` = id of the last item of the previous page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def page_after(
    items: Sequence[T], key: Callable[[T], str], after: str | None, limit: int
) -> tuple[list[T], bool]:
    """The page following `after` (from the start when None) and whether more items follow it."""
    start = 0
    if after:
        position = next((i for i, item in enumerate(items) if key(item) == after), None)
        # An unknown cursor yields an empty last page rather than restarting (which could loop forever).
        start = position + 1 if position is not None else len(items)
    page = list(items[start : start + limit])
    return page, start + limit < len(items)
