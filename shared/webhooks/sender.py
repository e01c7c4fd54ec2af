"""One HTTP POST of a webhook: to the SSRF-checked, pinned address, no redirects, bounded time,
and at most a little of the answer read (a receiver's body is only kept for the delivery log)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import httpx

from shared.config import get_settings
from shared.webhooks import ssrf

BODY_LIMIT = 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@lru_cache
def _client() -> httpx.Client:
    """One pooled client per process, shared by every sender thread (httpx.Client is thread-safe),
    so keep-alive connections to a receiver are reused across batches."""
    settings = get_settings()
    timeout = settings.webhook_timeout_seconds
    most = settings.webhook_worker_concurrency * settings.webhook_endpoint_concurrency
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=most, max_keepalive_connections=most),
    )


@lru_cache
def pool() -> ThreadPoolExecutor:
    """Threads that carry a batch's requests (at most one per in-flight slot a batch holds, and
    every sender thread may hold a destination's worth)."""
    settings = get_settings()
    most = settings.webhook_worker_concurrency * settings.webhook_endpoint_concurrency
    return ThreadPoolExecutor(max_workers=most, thread_name_prefix="webhook-send")


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """Raises InvalidInput for a forbidden destination and httpx.HTTPError for transport failures."""
    target = ssrf.resolve(url)
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    with _client().stream(
        "POST", target.url, content=body, headers={**headers, "host": target.host}, extensions=extensions
    ) as response:
        kept = b""
        for chunk in response.iter_bytes():
            kept += chunk
            if len(kept) >= BODY_LIMIT:
                break
    return Answer(
        status=response.status_code,
        body=kept[:BODY_LIMIT].decode("utf-8", "replace"),
        retry_after=_seconds(response.headers.get("retry-after")),
    )


def _seconds(value: str | None) -> float | None:
    # Only the delta-seconds form: an HTTP date from a receiver's clock is not worth trusting.
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
