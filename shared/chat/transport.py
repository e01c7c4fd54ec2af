"""The gateway's HTTP client: one pooled aiohttp session per upstream base URL.

aiohttp rather than httpx on this path: behind 32 concurrent requests httpx's pool spends
about 4 ms of CPU per request walking its connections (encode/httpx#3215), aiohttp about
0.2 ms (BENCHMARKS.md, chat proxy). Bodies are never decompressed or re-encoded: bytes in,
bytes out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp

from shared.config import get_settings

_sessions: dict[str, aiohttp.ClientSession] = {}


class UpstreamResponse:
    """The upstream's answer once its headers are in; read it (or iterate it) once, then close."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        finally:
            self.close()

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in whatever pieces the network delivers."""
        return self._response.content.iter_any()

    def close(self) -> None:
        # release() returns a fully read connection to the pool; close() drops one cut short,
        # which is what tells the upstream that its client went away.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _session(base_url: str) -> aiohttp.ClientSession:
    session = _sessions.get(base_url)
    if session is None or session.closed:
        settings = get_settings()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.chat_upstream_max_connections, keepalive_timeout=60, ttl_dns_cache=60
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=5.0, sock_read=settings.chat_upstream_timeout_seconds
            ),
            auto_decompress=False,
            # The provider key is sent per request; never store cookies between callers.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        _sessions[base_url] = session
    return session


async def post(
    base_url: str, path: str, body: bytes, headers: Mapping[str, str], params: Mapping[str, str] | None = None
) -> UpstreamResponse:
    """POST and return at the status line. Raises aiohttp.ClientError / asyncio.TimeoutError."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    response = await _session(base_url).post(
        url, data=body, headers=headers, params=params, allow_redirects=False
    )
    return UpstreamResponse(response)


async def close_all() -> None:
    for session in list(_sessions.values()):
        await session.close()
    _sessions.clear()
