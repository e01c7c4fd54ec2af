"""Per-key requests and tokens per minute, in Redis so every API process shares them.

One Redis round trip per request: a script counts the request (unless it is refused), reads the
tokens already used this minute and the project's alias generation (see lookups). Tokens are
known only when the answer is done, so they are added afterwards and a key may overshoot its
token limit by the requests already in flight, as OpenAI's own limits do. Windows are fixed
calendar minutes. Without Redis (the embedded default: one API process) the same counting
runs in this process."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

import redis.asyncio as aioredis

from shared.chat import lookups
from shared.chat.lookups import Caller
from shared.config import get_settings
from shared.errors import RateLimited

WINDOW_SECONDS = 60

# KEYS: requests counter, tokens counter, project generation. ARGV: requests limit (0 = none).
# Returns the requests counted this window (0 when unlimited), tokens used, and the generation;
# a refused request is taken back out, so a client hammering a full window does not extend it.
_CHECK = """
local limit = tonumber(ARGV[1])
local used = 0
if limit > 0 then
  used = redis.call('INCR', KEYS[1])
  if used == 1 then redis.call('EXPIRE', KEYS[1], 120) end
  if used > limit then redis.call('DECR', KEYS[1]) end
end
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
local generation = tonumber(redis.call('GET', KEYS[3]) or '0')
return {used, tokens, generation}
"""


@dataclass(frozen=True)
class Admission:
    generation: int
    headers: dict[str, str] = field(default_factory=dict)


def _keys(key_id: str, window: int) -> tuple[str, str]:
    return f"tuneforge:rl:{key_id}:{window}:r", f"tuneforge:rl:{key_id}:{window}:t"


def _reset(now: float) -> str:
    seconds = max(1, math.ceil(WINDOW_SECONDS - now % WINDOW_SECONDS))
    return f"{seconds}s"


def _decide(caller: Caller, used: int, tokens: int, now: float) -> dict[str, str]:
    """The x-ratelimit-* headers OpenAI clients know; raises RateLimited past either limit."""
    headers: dict[str, str] = {}
    reset = _reset(now)
    retry_after = max(1, math.ceil(WINDOW_SECONDS - now % WINDOW_SECONDS))
    rpm, tpm = caller.requests_per_minute, caller.tokens_per_minute
    if rpm:
        headers |= {
            "x-ratelimit-limit-requests": str(rpm),
            "x-ratelimit-remaining-requests": str(max(0, rpm - used)),
            "x-ratelimit-reset-requests": reset,
        }
    if tpm:
        headers |= {
            "x-ratelimit-limit-tokens": str(tpm),
            "x-ratelimit-remaining-tokens": str(max(0, tpm - tokens)),
            "x-ratelimit-reset-tokens": reset,
        }
    if rpm and used > rpm:
        raise RateLimited(
            f"Rate limit reached for this key: {rpm} requests per minute. Retry after "
            f"{retry_after} s, or ask the operator for a higher limit.",
            code="rate_limit_exceeded",
            retry_after=retry_after,
            headers=headers,
        )
    if tpm and tokens >= tpm:
        raise RateLimited(
            f"Rate limit reached for this key: {tpm} tokens per minute ({tokens} used). Retry after "
            f"{retry_after} s, or ask the operator for a higher limit.",
            code="rate_limit_exceeded",
            retry_after=retry_after,
            headers=headers,
        )
    return headers


class RedisLimiter:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(url)
        self._check = self._redis.register_script(_CHECK)
        self._pending: set[asyncio.Task[None]] = set()

    async def admit(self, caller: Caller) -> Admission:
        now = time.time()
        requests_key, tokens_key = _keys(caller.key_id, int(now // WINDOW_SECONDS))
        used, tokens, generation = await self._check(
            keys=[requests_key, tokens_key, lookups.generation_key(caller.project_id)],
            args=[caller.requests_per_minute or 0],
        )
        return Admission(generation=int(generation), headers=_decide(caller, int(used), int(tokens), now))

    def add_tokens(self, caller: Caller, tokens: int) -> None:
        if not caller.tokens_per_minute or tokens <= 0:
            return
        task = asyncio.get_running_loop().create_task(self._add(caller.key_id, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _add(self, key_id: str, tokens: int) -> None:
        _, tokens_key = _keys(key_id, int(time.time() // WINDOW_SECONDS))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incrby(tokens_key, tokens)
            pipe.expire(tokens_key, 120)
            await pipe.execute()

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._redis.aclose()


class LocalLimiter:
    """The same windows in this process, for a deployment without Redis (one API process)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], list[int]] = {}

    def _window(self, key_id: str, now: float) -> list[int]:
        window = int(now // WINDOW_SECONDS)
        counts = self._counts.get((key_id, window))
        if counts is None:
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            counts = self._counts[(key_id, window)] = [0, 0]
        return counts

    async def admit(self, caller: Caller) -> Admission:
        now = time.time()
        counts = self._window(caller.key_id, now)
        used = 0
        if caller.requests_per_minute:
            counts[0] += 1
            used = counts[0]
        try:
            headers = _decide(caller, used, counts[1], now)
        except RateLimited:
            if caller.requests_per_minute:
                counts[0] -= 1
            raise
        return Admission(generation=lookups.local_generation(caller.project_id), headers=headers)

    def add_tokens(self, caller: Caller, tokens: int) -> None:
        if caller.tokens_per_minute and tokens > 0:
            self._window(caller.key_id, time.time())[1] += tokens

    async def close(self) -> None:
        return None


@lru_cache(maxsize=1)
def get_limiter() -> RedisLimiter | LocalLimiter:
    url = get_settings().chat_redis_url
    return RedisLimiter(url) if url else LocalLimiter()
