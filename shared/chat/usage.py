"""`GET /v1/usage`: chat tokens and cost of a project, summed per day and model by default."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.errors import InvalidInput
from shared.models import ChatUsage

GROUPS = {"day": ChatUsage.day, "model": ChatUsage.model, "alias": ChatUsage.alias, "key": ChatUsage.key_id}
MAX_DAYS = 366


def summarize(
    session: Session, *, project_id: str, start: date, end: date, group_by: list[str]
) -> dict[str, Any]:
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise InvalidInput(
            f"Cannot group usage by {', '.join(unknown)}; use any of {', '.join(GROUPS)}.",
            code="invalid_group_by",
            param="group_by",
        )
    if end < start or (end - start).days >= MAX_DAYS:
        raise InvalidInput(
            f"'end_date' must be on or after 'start_date' and at most {MAX_DAYS} days later.",
            code="invalid_date_range",
            param="end_date",
        )
    columns = [GROUPS[g].label(g) for g in group_by]
    sums = [
        func.sum(ChatUsage.requests).label("requests"),
        func.sum(ChatUsage.prompt_tokens).label("prompt_tokens"),
        func.sum(ChatUsage.completion_tokens).label("completion_tokens"),
        func.sum(ChatUsage.cached_tokens).label("cached_tokens"),
        func.sum(ChatUsage.cost_usd).label("cost_usd"),
    ]
    where = (ChatUsage.project_id == project_id, ChatUsage.day >= start, ChatUsage.day <= end)
    stmt = select(*columns, *sums).where(*where)
    if columns:
        stmt = stmt.group_by(*columns).order_by(*columns)
    data = [_row(row._mapping, group_by) for row in session.execute(stmt)]
    totals = _row(session.execute(select(*sums).where(*where)).one()._mapping, [])
    return {
        "object": "list",
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "group_by": group_by,
        "data": data,
        "totals": totals,
    }


def _row(mapping: Any, group_by: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in group_by:
        value = mapping[name]
        row[name] = value.isoformat() if isinstance(value, date) else (value or None)
    prompt, completion = int(mapping["prompt_tokens"] or 0), int(mapping["completion_tokens"] or 0)
    row |= {
        "requests": int(mapping["requests"] or 0),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": int(mapping["cached_tokens"] or 0),
        "cost_usd": float(mapping["cost_usd"] or 0),
    }
    return row
