"""The only code that talks to upstream providers: pooled HTTP, timeouts, and streamed bodies.

Transport failures become ProviderErrors (502 unreachable, 504 timed out) whose messages never carry
a URL or header, so no provider key can leak through an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from gateway.providers.base import ProviderError, UpstreamRequest

Timeouts = tuple[float, float, float]  # connect, read, total (seconds)


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: int


def _transport_error(exc: Exception) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(504, "The upstream provider timed out.", code="upstream_timeout")
    return ProviderError(502, "The upstream provider could not be reached.", code="upstream_unreachable")


class UpstreamStream:
    """An open streaming response: status and headers now, the body as it arrives."""

    def __init__(self, response: httpx.Response, started: float) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}
        self.first_byte_ms = int((time.perf_counter() - started) * 1000)

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The raw body, chunk by chunk as the network delivers it (no buffering)."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TimeoutException:
            raise ProviderError(
                504, "The upstream provider stopped sending mid-stream.", code="upstream_timeout"
            ) from None
        except httpx.HTTPError:
            raise ProviderError(
                502, "The upstream provider ended the stream early.", code="upstream_stream_cut"
            ) from None

    async def close(self) -> None:
        await self._response.aclose()


class UpstreamClient:
    """One pooled HTTP client for every provider, created in the app lifespan."""

    def __init__(self, connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
        )

    def _request(self, req: UpstreamRequest, timeouts: Timeouts | None) -> httpx.Request:
        timeout = None
        if timeouts is not None:
            connect, read, _total = timeouts
            timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=connect)
        return self._client.build_request(
            req.method,
            req.url,
            headers=req.headers,
            content=req.body,
            timeout=timeout or httpx.USE_CLIENT_DEFAULT,
        )

    async def send(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> UpstreamResponse:
        """Send a request and read the whole answer, within the provider's (connect, read, total) timeouts."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeouts[2] if timeouts else None):
                response = await self._client.send(self._request(req, timeouts))
                body = await response.aread()
        except TimeoutError:
            raise ProviderError(504, "The upstream provider timed out.", code="upstream_timeout") from None
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        return UpstreamResponse(
            status=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=body,
            elapsed_ms=int((time.perf_counter() - started) * 1000),
        )

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> UpstreamStream:
        """Send a request and return as soon as the status line and headers are in (the total timeout
        bounds the wait for them; the read timeout then bounds each gap between chunks)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeouts[2] if timeouts else None):
                response = await self._client.send(self._request(req, timeouts), stream=True)
        except TimeoutError:
            raise ProviderError(504, "The upstream provider timed out.", code="upstream_timeout") from None
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        return UpstreamStream(response, started)

    async def aclose(self) -> None:
        await self._client.aclose()
