"""Per-key requests and tokens per minute, in Redis so every API process shares them, at no
Redis round trip on most requests.

Requests: a process takes a *lease* of a key's requests from Redis (one atomic script that
never grants past the limit) and admits locally until the lease is used up; a lease is at most
1/50 of the limit, so a limit of 3 is checked in Redis on every request and a limit of a
million once per thousand. The limit is never exceeded; a lease left over when the minute ends
is simply not used. Tokens are known only when an answer is done: each process adds its tokens
to Redis and reads the key's total every SYNC_SECONDS, so a key may overshoot its token limit by
what is in flight and unsynced, as OpenAI's own limits do. Windows are fixed calendar minutes.

Alias changes reach every process through Redis pub/sub (lookups.py). Without Redis (the
embedded default: one API process) the same counting runs in this process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

import redis.asyncio as aioredis

from shared.chat import lookups
from shared.chat.lookups import Caller
from shared.config import get_settings
from shared.errors import RateLimited

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
SYNC_SECONDS = 0.1
LEASE_SHARE = 50
MAX_LEASE = 1000

# KEYS[1]: the key's requests this window. ARGV: limit, wanted. Returns {granted, count after}.
_LEASE = """
local limit = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), limit - used)
if grant <= 0 then return {0, used} end
used = redis.call('INCRBY', KEYS[1], grant)
if used == grant then redis.call('EXPIRE', KEYS[1], 120) end
return {grant, used}
"""


@dataclass
class _Window:
    """One key's minute as this process sees it."""

    window: int
    leased: int = 0  # requests this process took from Redis
    used: int = 0  # of those, admitted
    counted: int = 0  # the key's requests in Redis after this process's last lease
    tokens_synced: int = 0  # the key's tokens in Redis at the last sync
    tokens_unsynced: int = 0  # this process's tokens not yet added there
    tracks_tokens: bool = False  # the key has a token limit: sync its total even when idle here
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def requests_counted(self) -> int:
        return self.counted - (self.leased - self.used)

    @property
    def tokens(self) -> int:
        return self.tokens_synced + self.tokens_unsynced


def _seconds_left(now: float) -> int:
    return max(1, math.ceil(WINDOW_SECONDS - now % WINDOW_SECONDS))


def _headers(caller: Caller, requests: int, tokens: int, now: float) -> dict[str, str]:
    """The x-ratelimit-* headers OpenAI clients know."""
    headers: dict[str, str] = {}
    reset = f"{_seconds_left(now)}s"
    if caller.requests_per_minute:
        headers["x-ratelimit-limit-requests"] = str(caller.requests_per_minute)
        headers["x-ratelimit-remaining-requests"] = str(max(0, caller.requests_per_minute - requests))
        headers["x-ratelimit-reset-requests"] = reset
    if caller.tokens_per_minute:
        headers["x-ratelimit-limit-tokens"] = str(caller.tokens_per_minute)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, caller.tokens_per_minute - tokens))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def _refuse(what: str, caller: Caller, requests: int, tokens: int, now: float) -> RateLimited:
    limit = caller.requests_per_minute if what == "requests" else caller.tokens_per_minute
    return RateLimited(
        f"Rate limit reached for this key: {limit} {what} per minute. Retry after "
        f"{_seconds_left(now)} s, or ask the operator for a higher limit.",
        code="rate_limit_exceeded",
        retry_after=_seconds_left(now),
        headers=_headers(caller, requests, tokens, now),
    )


class _Counting:
    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    def _window(self, key_id: str, now: float) -> _Window:
        window = int(now // WINDOW_SECONDS)
        state = self._windows.get(key_id)
        if state is None or state.window != window:
            if state is None and len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if v.window == window}
            state = self._windows[key_id] = _Window(window)
        return state

    def add_tokens(self, caller: Caller, tokens: int) -> None:
        if caller.tokens_per_minute and tokens > 0:
            self._window(caller.key_id, time.time()).tokens_unsynced += tokens

    def _check_tokens(self, caller: Caller, state: _Window, now: float) -> None:
        """Checked before the request is counted, so a refused request uses no request quota."""
        if caller.tokens_per_minute:
            state.tracks_tokens = True
            if state.tokens >= caller.tokens_per_minute:
                raise _refuse("tokens", caller, state.requests_counted, state.tokens, now)


class RedisLimiter(_Counting):
    def __init__(self, url: str) -> None:
        super().__init__()
        self._redis = aioredis.Redis.from_url(url)
        self._lease = self._redis.register_script(_LEASE)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._sync_forever()), loop.create_task(self._listen_forever())]

    async def admit(self, caller: Caller) -> dict[str, str]:
        """Count one request of the key, or raise RateLimited; the x-ratelimit-* headers."""
        self.start()
        now = time.time()
        state = self._window(caller.key_id, now)
        self._check_tokens(caller, state, now)
        rpm = caller.requests_per_minute
        if rpm:
            if state.used >= state.leased:
                await self._take_lease(caller, state, rpm, now)
            state.used += 1
        return _headers(caller, state.requests_counted, state.tokens, now)

    async def _take_lease(self, caller: Caller, state: _Window, rpm: int, now: float) -> None:
        async with state.lock:
            if state.used < state.leased:
                return  # another request of this key leased meanwhile
            wanted = max(1, min(rpm // LEASE_SHARE, MAX_LEASE))
            key = f"tuneforge:rl:{caller.key_id}:{state.window}:r"
            try:
                granted, counted = await self._lease(keys=[key], args=[rpm, wanted])
            except aioredis.RedisError as exc:
                # Limits are a guard, not the product: with Redis away, chat keeps working.
                log.warning("rate limits unavailable, admitting without them: %s", exc)
                state.leased += 1
                return
            state.counted = int(counted)
            if int(granted) <= 0:
                raise _refuse("requests", caller, state.counted, state.tokens, now)
            state.leased += int(granted)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            try:
                await self._sync()
            except aioredis.RedisError as exc:
                log.warning("token counts not synced with Redis: %s", exc)

    async def _sync(self) -> None:
        current = int(time.time() // WINDOW_SECONDS)
        states = [(k, s) for k, s in self._windows.items() if s.window == current and s.tracks_tokens]
        if not states:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            sent = []
            for key_id, state in states:
                key = f"tuneforge:rl:{key_id}:{state.window}:t"
                sent.append(state.tokens_unsynced)
                pipe.incrby(key, state.tokens_unsynced)
                pipe.expire(key, 120)
            results = await pipe.execute()
        for (_, state), added, total in zip(states, sent, results[::2], strict=True):
            # Tokens added while the pipeline was out stay unsynced for the next round.
            state.tokens_unsynced -= added
            state.tokens_synced = int(total)

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(lookups.GENERATION_CHANNEL)
                    # Changes published while this process was not listening are unknown.
                    lookups.forget_resolutions()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            lookups.note_change(message["data"].decode())
            except aioredis.RedisError as exc:
                log.warning("alias change feed lost, reconnecting: %s", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(aioredis.RedisError):
            await self._sync()
        await self._redis.aclose()


class LocalLimiter(_Counting):
    """The same windows in this process, for a deployment without Redis (one API process)."""

    def start(self) -> None:
        return None

    async def admit(self, caller: Caller) -> dict[str, str]:
        now = time.time()
        state = self._window(caller.key_id, now)
        self._check_tokens(caller, state, now)
        if caller.requests_per_minute:
            if state.used >= caller.requests_per_minute:
                raise _refuse("requests", caller, state.used, state.tokens, now)
            state.used += 1
            state.leased = state.counted = state.used
        return _headers(caller, state.used, state.tokens, now)

    async def close(self) -> None:
        return None


@lru_cache(maxsize=1)
def get_limiter() -> RedisLimiter | LocalLimiter:
    url = get_settings().chat_redis_url
    return RedisLimiter(url) if url else LocalLimiter()
