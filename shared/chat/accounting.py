"""Chat usage and opt-in request logs, gathered in memory and written in batches off the request
path (DESIGN.md §10: "a batched usage write").

Each API process sums tokens per (project, day, key, alias, model) and adds the sums to
`chat_usage` every `chat_flush_seconds` with one upsert per group; cost is priced on the sums
(prices are linear, so this equals the sum of per-request costs without per-request rounding).
A failed write keeps its sums for the next flush. What a process holds when it is killed (at
most one interval) is lost; a graceful stop flushes."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared import pricing
from shared.chat.lookups import Caller
from shared.chat.routing import Route
from shared.config import get_settings
from shared.db import session_scope
from shared.errors import DomainError
from shared.ids import new_id
from shared.models import ChatLog, ChatUsage

log = logging.getLogger(__name__)

GroupKey = tuple[str, date, str, str, str]  # project, day, key, alias ("" for none), model


@dataclass
class Sums:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def add(self, other: Sums) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[tuple[GroupKey, str], Sums] = {}
        self._logs: list[ChatLog] = []

    def record(
        self,
        caller: Caller,
        route: Route,
        usage: dict[str, Any] | None,
        *,
        messages: list[Any] | None = None,
        response: dict[str, Any] | None = None,
        user: str | None = None,
    ) -> None:
        """Count one answered request (usage may be missing when the client hung up first)."""
        usage = usage or {}
        details = usage.get("prompt_tokens_details") or {}
        one = Sums(
            requests=1,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )
        group = (
            caller.project_id,
            datetime.now(UTC).date(),
            caller.key_id,
            route.alias or "",
            route.upstream_model,
        )
        with self._lock:
            sums = self._sums.get((group, route.priced_as))
            if sums is None:
                sums = self._sums[(group, route.priced_as)] = Sums()
            sums.add(one)
            if route.log_requests and messages is not None:
                self._logs.append(
                    ChatLog(
                        id=new_id("clog"),
                        project_id=caller.project_id,
                        key_id=caller.key_id,
                        alias=route.alias,
                        model=route.upstream_model,
                        user=user[:200] if user else None,
                        messages=messages,
                        response=response,
                        prompt_tokens=one.prompt_tokens,
                        completion_tokens=one.completion_tokens,
                    )
                )

    def flush(self) -> None:
        with self._lock:
            sums, self._sums = self._sums, {}
            logs, self._logs = self._logs, []
        if not sums and not logs:
            return
        try:
            with session_scope() as session:
                for (group, priced_as), group_sums in sums.items():
                    _add_usage(session, group, priced_as, group_sums)
                session.add_all(logs)
        except Exception:
            log.exception("chat usage write failed; keeping %d groups for the next flush", len(sums))
            with self._lock:
                for key, group_sums in sums.items():
                    self._sums.setdefault(key, Sums()).add(group_sums)
                # Logs are rebuilt from detached rows: the failed session expunged them.
                self._logs[:0] = [_copy_log(row) for row in logs]

    async def run(self) -> None:
        """Flush forever (the API's lifespan starts this and flushes once more at shutdown)."""
        interval = get_settings().chat_flush_seconds
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.flush)


def _cost(priced_as: str, sums: Sums) -> Decimal:
    try:
        cost = pricing.inference_cost(
            priced_as, sums.prompt_tokens, sums.completion_tokens, cached_tokens=sums.cached_tokens
        )
    except DomainError:
        # A model outside the price catalog (a custom provider's): tokens are still counted.
        return Decimal(0)
    return Decimal(str(cost))


def _add_usage(session: Session, group: GroupKey, priced_as: str, sums: Sums) -> None:
    project_id, day, key_id, alias, model = group
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    stmt = insert(ChatUsage).values(
        project_id=project_id,
        day=day,
        key_id=key_id,
        alias=alias,
        model=model,
        requests=sums.requests,
        prompt_tokens=sums.prompt_tokens,
        completion_tokens=sums.completion_tokens,
        cached_tokens=sums.cached_tokens,
        cost_usd=_cost(priced_as, sums),
    )
    excluded = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["project_id", "day", "key_id", "alias", "model"],
        set_={
            "requests": ChatUsage.requests + excluded.requests,
            "prompt_tokens": ChatUsage.prompt_tokens + excluded.prompt_tokens,
            "completion_tokens": ChatUsage.completion_tokens + excluded.completion_tokens,
            "cached_tokens": ChatUsage.cached_tokens + excluded.cached_tokens,
            "cost_usd": ChatUsage.cost_usd + excluded.cost_usd,
        },
    )
    session.execute(stmt)


def _copy_log(row: ChatLog) -> ChatLog:
    return ChatLog(
        id=row.id,
        project_id=row.project_id,
        key_id=row.key_id,
        alias=row.alias,
        model=row.model,
        user=row.user,
        messages=row.messages,
        response=row.response,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
    )


recorder = Recorder()
