"""An in-process `Upstream` for tests: a handler function answers each request, no sockets involved.

httpx's `MockTransport` idea: `FakeUpstream(handler)` where `handler(request) -> (status, headers, body)`,
`body` being bytes (one answer) or a sequence of chunks (a stream, delivered one by one). A chunk may be a
`ProviderError`, raised when the relay reaches it (a stream cut mid-way); the handler may raise one itself
(a connection failure). Every request is kept in `requests`, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from gateway.providers.base import ProviderError, UpstreamRequest
from gateway.proxy import Timeouts, UpstreamResponse

Chunk = bytes | ProviderError
Body = bytes | Sequence[Chunk]
Answer = tuple[int, dict[str, str], Body]
Handler = Callable[[UpstreamRequest], Answer]


def _joined(body: Body) -> bytes:
    if isinstance(body, bytes):
        return body
    parts = []
    for chunk in body:
        if isinstance(chunk, ProviderError):
            raise chunk
        parts.append(chunk)
    return b"".join(parts)


@dataclass(slots=True)
class FakeStream:
    """An open streamed answer of the fake (an `UpstreamStream`)."""

    status: int
    headers: dict[str, str]
    body: Body
    first_byte_ms: int = 0
    closed: bool = False

    async def read(self) -> bytes:
        return _joined(self.body)

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in [self.body] if isinstance(self.body, bytes) else self.body:
            if isinstance(chunk, ProviderError):
                raise chunk
            yield chunk

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeUpstream:
    """An `Upstream` whose answers come from `handler`; `requests` and `streams` record what happened."""

    handler: Handler
    requests: list[UpstreamRequest] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)
    closed: bool = False

    async def send(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> UpstreamResponse:
        self.requests.append(req)
        status, headers, body = self.handler(req)
        return UpstreamResponse(status=status, headers=_lower(headers), body=_joined(body), elapsed_ms=0)

    async def open_stream(self, req: UpstreamRequest, timeouts: Timeouts | None = None) -> FakeStream:
        self.requests.append(req)
        status, headers, body = self.handler(req)
        stream = FakeStream(status, _lower(headers), body)
        self.streams.append(stream)
        return stream

    async def aclose(self) -> None:
        self.closed = True


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}
