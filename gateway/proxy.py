"""The only code that talks to upstream providers: pooled HTTP (aiohttp), timeouts, streamed bodies.

aiohttp rather than httpx: under concurrency httpx's connection pool was a measurable share of the
gateway's own CPU (see the README's benchmark section). Transport failures become ProviderErrors
(502 unreachable, 504 timed out, 502 cut stream) whose messages never carry a URL or header, so no
provider key can leak through an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from gateway.providers.base import ProviderError, UpstreamRequest

Timeouts = tuple[float, float, float]  # connect, read, total (seconds)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A whole upstream answer (header names lowercase) and how long it took."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: int


class UpstreamStream(Protocol):
    """An open streaming response: status and headers now, the body as it arrives."""

    status: int
    headers: dict[str, str]  # lowercase names
    first_byte_ms: int

    async def read(self) -> bytes:
        """The whole remaining body (for an error answer)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The raw body, chunk by chunk as it arrives; a transport failure raises ProviderError."""
        ...

    async def close(self) -> None: ...


class Upstream(Protocol):
    """The seam between the request path and the network: `UpstreamClient` in production, a fake in tests."""

    async def send(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> UpstreamResponse:
        """Send a request and read the whole answer; transport failures raise ProviderError."""
        ...

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> UpstreamStream:
        """Send a request and return once the status and headers are in."""
        ...

    async def aclose(self) -> None: ...


def _timed_out() -> ProviderError:
    return ProviderError(504, "The upstream provider timed out.", code="upstream_timeout")


def _unreachable() -> ProviderError:
    return ProviderError(502, "The upstream provider could not be reached.", code="upstream_unreachable")


def _headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


class AiohttpStream:
    """An open aiohttp streaming response (an `UpstreamStream`)."""

    def __init__(self, response: aiohttp.ClientResponse, started: float) -> None:
        self._response = response
        self.status = response.status
        self.headers = _headers(response)
        self.first_byte_ms = int((time.perf_counter() - started) * 1000)

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise _timed_out() from None
        except aiohttp.ClientError:
            raise _unreachable() from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The raw body, chunk by chunk as the network delivers it (no buffering)."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ProviderError(
                504, "The upstream provider stopped sending mid-stream.", code="upstream_timeout"
            ) from None
        except aiohttp.ClientError:
            raise ProviderError(
                502, "The upstream provider ended the stream early.", code="upstream_stream_cut"
            ) from None

    async def close(self) -> None:
        self._response.release()
        if not self._response.closed:
            self._response.close()


class UpstreamClient:
    """One pooled HTTP client (aiohttp) for every provider, created in the app lifespan (an `Upstream`)."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self._defaults: Timeouts = (connect_timeout, read_timeout, connect_timeout + read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (aiohttp binds a session to its loop).
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ttl_dns_cache=300, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
            )
        return self._session

    def _timeout(self, timeouts: Timeouts | None) -> aiohttp.ClientTimeout:
        connect, read, _total = timeouts or self._defaults
        return aiohttp.ClientTimeout(total=None, connect=connect, sock_read=read)

    async def send(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> UpstreamResponse:
        """Send a request and read the whole answer, within the provider's (connect, read, total) timeouts."""
        started = time.perf_counter()
        total = (timeouts or self._defaults)[2]
        try:
            async with asyncio.timeout(total):
                async with self._client().request(
                    req.method, req.url, headers=req.headers, data=req.body, timeout=self._timeout(timeouts),
                    allow_redirects=False,
                ) as response:  # fmt: skip
                    body = await response.read()
                    status, headers = response.status, _headers(response)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise _timed_out() from None
        except aiohttp.ClientError:
            raise _unreachable() from None
        return UpstreamResponse(
            status=status, headers=headers, body=body, elapsed_ms=int((time.perf_counter() - started) * 1000)
        )

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> AiohttpStream:
        """Send a request and return as soon as the status line and headers are in (the total timeout
        bounds the wait for them; the read timeout then bounds each gap between chunks)."""
        started = time.perf_counter()
        total = (timeouts or self._defaults)[2]
        try:
            async with asyncio.timeout(total):
                response = await self._client().request(
                    req.method, req.url, headers=req.headers, data=req.body, timeout=self._timeout(timeouts),
                    allow_redirects=False,
                )  # fmt: skip
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise _timed_out() from None
        except aiohttp.ClientError:
            raise _unreachable() from None
        return AiohttpStream(response, started)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
