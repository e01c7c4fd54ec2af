"""Idempotency keys for creating requests (Stripe's model, DESIGN.md §6).

The first request with a key claims it (`in_flight`); its answer is stored when it finishes.
A later request with the same key and the same body gets that answer again; with another body
it is refused; while the first is still running it is told to retry later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import crypto
from shared.errors import Conflict, InvalidInput, Unprocessable
from shared.ids import new_id
from shared.models import IdempotencyRecord, utcnow

RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255
IN_FLIGHT, COMPLETED = "in_flight", "completed"


class KeyReused(Unprocessable):
    code = "idempotency_key_reused"


class KeyInUse(Conflict):
    code = "idempotency_key_in_use"


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str | None
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters; a UUID works well.",
            code="invalid_idempotency_key",
            param="Idempotency-Key",
        )


def claim(
    session: Session, *, project_id: str, key: str, method: str, path: str, now: datetime | None = None
) -> StoredResponse | str:
    """Claim `key` for a new request and return the record id, or return the stored answer of
    the request that used it before. Raises KeyInUse while that request is still running."""
    now = now or utcnow()
    stmt = (
        select(IdempotencyRecord)
        .where(IdempotencyRecord.project_id == project_id, IdempotencyRecord.key == key)
        .with_for_update()
    )
    record = session.scalar(stmt)
    if record is not None and record.expires_at <= now:
        session.delete(record)
        session.flush()
        record = None
    if record is None:
        record = IdempotencyRecord(
            id=new_id("idem"),
            project_id=project_id,
            key=key,
            method=method,
            path=path,
            state=IN_FLIGHT,
            expires_at=now + RETENTION,
        )
        try:
            with session.begin_nested():
                session.add(record)
        except IntegrityError:
            # Another request inserted the same key a moment ago: it is the first one.
            raise _in_use() from None
        return record.id
    if record.state == IN_FLIGHT:
        raise _in_use()
    return StoredResponse(
        request_hash=record.request_hash,
        method=record.method,
        path=record.path,
        status=record.response_status or 200,
        headers=dict(record.response_headers or {}),
        body=crypto.decrypt_bytes(record.response_body) if record.response_body else b"",
    )


def check_replay(stored: StoredResponse, *, method: str, path: str, request_hash: str) -> None:
    if (stored.method, stored.path, stored.request_hash) != (method, path, request_hash):
        raise KeyReused(
            "This Idempotency-Key was already used with a different request. Use a new key for a "
            "new request, or resend exactly the same request to get its original answer.",
            param="Idempotency-Key",
        )


def complete(
    session: Session, record_id: str, *, request_hash: str, status: int, headers: dict[str, Any], body: bytes
) -> None:
    record = session.get(IdempotencyRecord, record_id)
    if record is None:
        return
    record.state = COMPLETED
    record.request_hash = request_hash
    record.response_status = status
    record.response_headers = headers
    # Stored answers can hold secrets shown once (a new webhook endpoint's), so they are encrypted.
    record.response_body = crypto.encrypt_bytes(body)
    session.flush()


def release(session: Session, record_id: str) -> None:
    """Forget a claim whose request failed in a way the client should simply retry."""
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
    session.flush()


def purge_expired(session: Session, *, now: datetime, limit: int = 1000) -> int:
    ids = list(
        session.scalars(select(IdempotencyRecord.id).where(IdempotencyRecord.expires_at <= now).limit(limit))
    )
    if ids:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids)))
    return len(ids)


def _in_use() -> KeyInUse:
    return KeyInUse(
        "A request with this Idempotency-Key is still being processed; retry in a moment to get its answer.",
        param="Idempotency-Key",
    )
