"""A dataset made from logged conversations (aliases with `log_requests` on).

Each log becomes one chat example, its request messages followed by the answer, written as
chat JSONL and sent through the same intake and preparation as an upload (preset `chat`), so
the report, quote, dedup and validation split are exactly those of an uploaded file."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.chat import routing
from shared.datasets import service
from shared.datasets.presets.chat import MESSAGE_KEYS
from shared.datasets.service import DatasetOptions
from shared.errors import DomainError, InvalidInput, PayloadTooLarge, Unprocessable
from shared.models import ChatLog, Dataset

MAX_LOGS = 100_000
# Below this the JSONL stays in memory; above, it spills to a temporary file.
SPOOL_BYTES = 8 * 1024 * 1024
FILENAME = "chat-logs.jsonl"


@dataclass(frozen=True)
class LogFilter:
    alias: str | None = None
    model: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # The newest `limit` matching logs.
    limit: int = 10_000

    def check(self) -> None:
        if not 1 <= self.limit <= MAX_LOGS:
            raise InvalidInput(f"limit must be from 1 to {MAX_LOGS}.", code="invalid_limit", param="limit")
        if self.since and self.until and _aware(self.since) >= _aware(self.until):
            raise InvalidInput(
                "'since' must be earlier than 'until'.", code="invalid_time_range", param="since"
            )


def create_from_logs(
    session: Session,
    *,
    project_id: str,
    filters: LogFilter,
    options: DatasetOptions,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Dataset:
    """Queue preparation of a new dataset built from the project's matching logs.

    Raises Unprocessable (`no_logs`) when no log matches, so an empty dataset is never made."""
    filters.check()
    options = replace(options, preset="chat", format="jsonl", encoding="utf-8")
    options.check()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as buffer:
        written = 0
        for example in _examples(session, project_id, filters):
            buffer.write(orjson.dumps(example) + b"\n")
            written += 1
        if written == 0:
            raise Unprocessable(
                "No logged conversations match these filters. Logging is opt-in per alias: "
                'PUT /v1/aliases/{name} with "log_requests": true, then chat through the alias.',
                code="no_logs",
                details={"filters": _describe(filters)},
            )
        buffer.seek(0)
        try:
            return service.create(
                session,
                project_id=project_id,
                upload=buffer,  # type: ignore[arg-type]
                filename=FILENAME,
                options=options,
                webhook_url=webhook_url,
                webhook_events=webhook_events,
            )
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(
                f"The {written} matching conversations are larger than the upload limit "
                "(TUNEFORGE_UPLOAD_MAX_BYTES). Lower 'limit' or narrow the filters.",
                code=exc.code,
                param="limit",
            ) from None


def log_example(messages: Any, response: Any) -> dict[str, Any] | None:
    """`{"messages": [...request..., answer]}`, or None when the log holds no answer (an
    upstream error, or a stream the client abandoned)."""
    answer = _answer(response)
    if answer is None or not isinstance(messages, list):
        return None
    return {"messages": [_message(m) for m in messages] + [answer]}


def _examples(session: Session, project_id: str, filters: LogFilter) -> Iterator[dict[str, Any]]:
    # Columns, not ORM objects: a large scan must not fill the session's identity map.
    stmt = select(ChatLog.messages, ChatLog.response).where(ChatLog.project_id == project_id)
    if filters.alias is not None:
        stmt = stmt.where(ChatLog.alias == filters.alias)
    if filters.model is not None:
        stmt = stmt.where(ChatLog.model == _served_name(session, project_id, filters.model))
    if filters.user is not None:
        stmt = stmt.where(ChatLog.user == filters.user)
    if filters.since is not None:
        stmt = stmt.where(ChatLog.created_at >= _aware(filters.since))
    if filters.until is not None:
        stmt = stmt.where(ChatLog.created_at < _aware(filters.until))
    stmt = stmt.order_by(ChatLog.created_at.desc(), ChatLog.id.desc())
    # `limit` counts examples, not rows: logs without an answer are passed over, and the scan
    # stops as soon as enough examples are found.
    found = 0
    rows = session.execute(stmt.execution_options(yield_per=500))
    try:
        for messages, response in rows:
            example = log_example(messages, response)
            if example is not None:
                yield example
                found += 1
                if found >= filters.limit:
                    return
    finally:
        rows.close()  # the server-side cursor, when the scan stops early


def _aware(moment: datetime) -> datetime:
    # A time without an offset is taken as UTC, the zone every stored time is in.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _served_name(session: Session, project_id: str, model: str) -> str:
    """Logs hold the model that answered (a snapshot or `ft:` name): let `gpt-4o-mini` or a tune
    id find them too. A name that no longer resolves (a deleted tune) is matched as written."""
    try:
        return routing.resolve_target(session, project_id=project_id, model=model).upstream_model
    except DomainError:
        return model


def _answer(response: Any) -> dict[str, Any] | None:
    # Logged as the assistant message; a whole completion object is accepted too.
    if isinstance(response, dict) and isinstance(response.get("choices"), list):
        choices = response["choices"]
        response = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    if not isinstance(response, dict):
        return None
    message = _message({"role": "assistant", **response})
    if not (message.get("content") or message.get("tool_calls") or message.get("function_call")):
        return None
    return message


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message  # left for the chat preset to reject with its line number
    # `developer` is the newer name for `system`; fine-tuning files only know `system`. Response
    # extras (refusal, annotations, audio) are not part of the training format.
    kept = {k: v for k, v in message.items() if k in MESSAGE_KEYS and v is not None}
    if kept.get("role") == "developer":
        kept["role"] = "system"
    if message.get("role") == "assistant" and "content" not in kept and "tool_calls" in kept:
        kept["content"] = None
    return kept


def _describe(filters: LogFilter) -> dict[str, Any]:
    return {
        "alias": filters.alias,
        "model": filters.model,
        "user": filters.user,
        "since": filters.since.isoformat() if filters.since else None,
        "until": filters.until.isoformat() if filters.until else None,
        "limit": filters.limit,
    }
