"""The gateway's per-process caches: API keys and resolved models, so a chat request makes no
database round trip once warm (DESIGN.md §10).

An alias change must be seen by the very next request in every API process, so resolved models
carry the project's *generation*: a counter in Redis (or in this process when there is no
Redis) that alias writes bump after they commit. The gateway reads it in the same Redis call as
the rate limits and drops any entry cached under an older generation. Keys and tunes change
rarely and are only bounded by `chat_cache_seconds`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from sqlalchemy.orm import Session

from shared import auth, crypto, db
from shared.chat import routing
from shared.config import get_settings
from shared.models import ApiKey

_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Caller:
    project_id: str
    key_id: str
    requests_per_minute: int | None
    tokens_per_minute: int | None


def generation_key(project_id: str) -> str:
    return f"tuneforge:chat:generation:{project_id}"


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


def _bump(project_id: str) -> None:
    _local_generations[project_id] = _local_generations.get(project_id, 0) + 1
    client = _redis()
    if client is not None:
        client.incr(generation_key(project_id))


@lru_cache(maxsize=1)
def _redis() -> redis.Redis | None:
    url = get_settings().chat_redis_url
    return redis.Redis.from_url(url) if url else None


def _bounded(cache: dict) -> None:  # type: ignore[type-arg]
    # Keys and models are few per deployment; a flood of random bearer tokens must not grow
    # the cache without limit (failed lookups are never cached, but be safe).
    if len(cache) >= _MAX_ENTRIES:
        cache.clear()


def forget_key_hash(key_hash: str) -> None:
    """Drop a revoked key from this process at once (other processes within chat_cache_seconds)."""
    for token in [t for t in _callers if crypto.hash_api_key(t) == key_hash]:
        _callers.pop(token, None)
