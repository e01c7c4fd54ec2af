"""The gateway's per-process caches: API keys and resolved models, so a chat request makes no
database round trip once warm (DESIGN.md §10).

An alias change must be seen by the very next request in every API process, so resolved models
carry their project's *generation*, a per-process counter: a write bumps it in its own process
after it commits and publishes the change on Redis (GENERATION_CHANNEL), where every other API
process listens (limits.py) and bumps its own; an entry cached under an older generation is not
used. Keys and tunes change rarely and are only bounded by `chat_cache_seconds`.

Concurrent misses of one entry share one database lookup (a burst of requests after an entry
expires must not become a burst of queries)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import redis
from sqlalchemy.orm import Session

from shared import auth, db
from shared.chat import routing
from shared.config import get_settings
from shared.models import ApiKey

_MAX_ENTRIES = 10_000
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    project_id: str
    key_id: str
    requests_per_minute: int | None
    tokens_per_minute: int | None


GENERATION_CHANNEL = "tuneforge:chat:changes"


_callers: dict[str, tuple[Caller, float]] = {}
_resolutions: dict[tuple[str, str], tuple[routing.Resolution, int, float]] = {}
_local_generations: dict[str, int] = {}


def cached_caller(token: str) -> Caller | None:
    entry = _callers.get(token)
    if entry is None or entry[1] < time.monotonic():
        return None
    return entry[0]


def load_caller(token: str | None) -> Caller:
    """Authenticate against the database (raises Unauthorized) and cache the result."""
    settings = get_settings()
    with db.session_scope() as session:
        principal = auth.authenticate(session, token)
        key = session.get(ApiKey, principal.key_id)
        caller = Caller(
            project_id=principal.project_id,
            key_id=principal.key_id,
            requests_per_minute=(key.rpm_limit if key else None) or settings.chat_requests_per_minute,
            tokens_per_minute=(key.tpm_limit if key else None) or settings.chat_tokens_per_minute,
        )
    assert token is not None  # authenticate refused a missing token
    _bounded(_callers)
    _callers[token] = (caller, time.monotonic() + settings.chat_cache_seconds)
    return caller


def cached_resolution(project_id: str, model: str, generation: int) -> routing.Resolution | None:
    entry = _resolutions.get((project_id, model))
    if entry is None or entry[1] != generation or entry[2] < time.monotonic():
        return None
    return entry[0]


def load_resolution(
    project_id: str, model: str, generation: int, provider: str | None = None
) -> routing.Resolution:
    """Resolve from the database (raises NotFound) and cache under the generation read *before*
    this lookup, so a change committed meanwhile is not hidden behind a stale entry."""
    with db.session_scope() as session:
        resolution = routing.lookup(session, project_id=project_id, model=model, provider=provider)
    _bounded(_resolutions)
    _resolutions[(project_id, f"{model}\0{provider}" if provider else model)] = (
        resolution,
        generation,
        time.monotonic() + get_settings().chat_cache_seconds,
    )
    return resolution


def local_generation(project_id: str) -> int:
    return _local_generations.get(project_id, 0)


def invalidate_after_commit(session: Session, project_id: str) -> None:
    """Make every API process re-resolve this project's models once `session` commits."""
    db.after_commit(session, lambda: _bump(project_id))


def note_change(project_id: str) -> None:
    _local_generations[project_id] = _local_generations.get(project_id, 0) + 1


def forget_resolutions() -> None:
    _resolutions.clear()


def _bump(project_id: str) -> None:
    note_change(project_id)
    client = _redis()
    if client is not None:
        client.publish(GENERATION_CHANNEL, project_id)


_in_flight: dict[object, asyncio.Future[Any]] = {}


async def _once(key: object, load: Callable[[], T]) -> T:
    """Run `load` in a thread, once for all concurrent callers with the same key."""
    while (pending := _in_flight.get(key)) is not None:
        try:
            return await asyncio.shield(pending)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if not pending.cancelled():
                raise  # this request was cancelled
            # The request doing the lookup was cancelled (its client left): look up again.
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    _in_flight[key] = future
    try:
        result = await asyncio.to_thread(load)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
        raise
    else:
        future.set_result(result)
        return result
    finally:
        _in_flight.pop(key, None)


async def caller_for(token: str | None) -> Caller:
    caller = cached_caller(token) if token else None
    if caller is not None:
        return caller
    return await _once(("key", token), lambda: load_caller(token))


async def resolution_for(project_id: str, model: str, provider: str | None = None) -> routing.Resolution:
    # Read before any lookup, so a change committed during it is not hidden behind the result.
    generation = local_generation(project_id)
    key = f"{model}\0{provider}" if provider else model
    resolution = cached_resolution(project_id, key, generation)
    if resolution is not None:
        return resolution
    return await _once(
        ("model", project_id, key, generation),
        lambda: load_resolution(project_id, model, generation, provider),
    )


@lru_cache(maxsize=1)
def _redis() -> redis.Redis | None:
    url = get_settings().chat_redis_url
    return redis.Redis.from_url(url) if url else None


def _bounded(cache: dict) -> None:  # type: ignore[type-arg]
    # Keys and models are few per deployment; a flood of random bearer tokens must not grow
    # the cache without limit (failed lookups are never cached, but be safe).
    if len(cache) >= _MAX_ENTRIES:
        cache.clear()
