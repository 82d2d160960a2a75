"""The metered path for the other client APIs (`/v1/messages`, `/v1/responses`, `/v1/embeddings`).

Same steps as chat completions and the same owner of the money: `Admission` admits, `ChatService` reserves
(`_holding`), records (`_record`, which settles) and logs failures (`_failed`); `try_routes` runs retries and
fallbacks. What differs per API is only the wire format, given by a `Codec` per route: how to build the
upstream request, how to read its answer (usage, text) and what the client receives. Final events of a
stream (message_stop, response.completed) are sent only after the record commits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.chat.admit import Call, Route
from gateway.chat.call import try_routes
from gateway.chat.record import Outcome, estimated_usage, unfinished_usage
from gateway.chat.relay import classify_stream_end
from gateway.chat.service import ChatService
from gateway.errors import GatewayError, from_provider_error
from gateway.providers.base import ProviderError, SSEEvent, StreamState, UpstreamRequest
from gateway.providers.sse import SSEDecoder
from gateway.proxy import UpstreamResponse
from pricing.cost import Usage
from pricing.money import format_usd

Send = Callable[[dict[str, Any]], Awaitable[None]]
StartResponse = Callable[[dict[str, str]], Awaitable[None]]


@dataclass(slots=True)
class Answer:
    """A whole upstream answer, read: its usage (None: count it), text, finish, and the client's body
    rendered from the usage the call is metered with."""

    usage: Usage | None
    content_text: str
    finish_reason: str | None
    render: Callable[[Usage], bytes]


class StreamCodec(Protocol):
    """Reads one upstream stream and writes the client's: `feed` returns the bytes to relay now; the
    closing events come from `finish` (after the record) or `fail`."""

    @property
    def done(self) -> bool: ...
    @property
    def error(self) -> ProviderError | None: ...

    def feed(self, event: SSEEvent) -> bytes: ...
    def usage(self) -> Usage | None: ...
    def content_text(self) -> str: ...
    def finish_reason(self) -> str | None: ...
    def finish(self, usage: Usage) -> bytes: ...
    def fail(self, error: GatewayError) -> bytes: ...


class Codec(Protocol):
    """One API's wire format on one route: native (relayed) or translated (through the chat adapter)."""

    def build_request(self, route: Route) -> UpstreamRequest: ...
    def parse_response(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> Answer: ...
    def parse_error(
        self, route: Route, status: int, headers: dict[str, str], body: bytes
    ) -> ProviderError: ...
    def stream_codec(self, route: Route) -> StreamCodec: ...


def cost_headers(service: ChatService, call: Call, cost: int, charged: int, balance: int) -> dict[str, str]:
    headers = service.response_headers(call)
    headers["x-synapgate-cost-usd"] = format_usd(cost)
    headers["x-synapgate-charged-usd"] = format_usd(charged)
    headers["x-synapgate-balance-usd"] = format_usd(balance)
    return headers


async def complete(service: ChatService, call: Call, codec: Codec) -> tuple[bytes, dict[str, str]]:
    """A whole answer, recorded before it is returned (body, headers); errors raise GatewayError."""

    async def attempt(route: Route) -> tuple[UpstreamResponse, Answer]:
        response = await service.upstream.send(
            codec.build_request(route), service.settings.timeouts(route.model.provider)
        )
        if not 200 <= response.status < 300:
            raise codec.parse_error(route, response.status, response.headers, response.body)
        return response, codec.parse_response(route, response.status, response.headers, response.body)

    async with service._holding(call):
        try:
            response, answer = await try_routes(call, attempt, service.policy, service.breaker)
        except ProviderError as exc:
            raise await service._failed(call, exc) from None
        usage = answer.usage or estimated_usage(call, answer.content_text)
        outcome = Outcome(
            usage=usage,
            content_text=answer.content_text,
            finish_reason=answer.finish_reason,
            upstream_ms=response.elapsed_ms,
        )
        recorded = await service._record(call, outcome)
    headers = cost_headers(service, call, recorded.cost_nano, recorded.charged_nano, recorded.balance_nano)
    return answer.render(usage), headers


def sse_bytes(event: SSEEvent) -> bytes:
    """An upstream SSE event re-encoded unchanged (its `event:` name and data)."""
    head = f"event: {event.event}\n".encode() if event.event else b""
    return head + b"data: " + event.data.encode() + b"\n\n"


def _body(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def stream(
    service: ChatService,
    call: Call,
    codec: Codec,
    start: StartResponse,
    send: Send,
    disconnected: asyncio.Event,
    on_error: Callable[[GatewayError], bytes],
) -> None:
    """A streamed answer: errors before the upstream stream opens raise; then events are relayed as they
    arrive, the call is recorded, and only then the closing events (or an error event) are sent."""

    async def attempt(route: Route) -> Any:
        upstream_stream = await service.upstream.open_stream(
            codec.build_request(route), service.settings.timeouts(route.model.provider)
        )
        if upstream_stream.status >= 300:
            body = await upstream_stream.read()
            await upstream_stream.close()
            raise codec.parse_error(route, upstream_stream.status, upstream_stream.headers, body)
        return upstream_stream

    async with service._holding(call):
        try:
            upstream_stream = await try_routes(call, attempt, service.policy, service.breaker)
        except ProviderError as exc:
            raise await service._failed(call, exc) from None
        try:
            await start(service.response_headers(call))
        except BaseException:
            await upstream_stream.close()
            raise
        served = next(r for r in call.routes if r.model is call.model)
        reader = codec.stream_codec(served)
        decoder = SSEDecoder()
        ttft_ms: int | None = None
        transport_error: ProviderError | None = None
        try:
            async for raw in upstream_stream.chunks():
                for event in decoder.feed(raw):
                    out = reader.feed(event)
                    if out:
                        if ttft_ms is None:
                            ttft_ms = int((time.perf_counter() - call.started) * 1000)
                        await send(_body(out))
                if disconnected.is_set():
                    break
            if not disconnected.is_set():
                for event in decoder.flush():
                    out = reader.feed(event)
                    if out:
                        await send(_body(out))
        except ProviderError as exc:
            transport_error = exc
        finally:
            await upstream_stream.close()
        end = classify_stream_end(
            disconnected=disconnected.is_set(),
            error=reader.error or transport_error,
            upstream_done=reader.done,
        )
        provider_usage = reader.usage()
        if end.kind == "success" and provider_usage is not None:
            usage = provider_usage
        else:
            usage = unfinished_usage(call, provider_usage, reader.content_text())
        outcome = Outcome(
            usage=usage,
            content_text=reader.content_text(),
            finish_reason=reader.finish_reason(),
            status=end.status,
            error_code=end.code,
            http_status=200,
            ttft_ms=ttft_ms,
            upstream_ms=upstream_stream.first_byte_ms,
        )
        record_error: GatewayError | None = None
        try:
            await service._record(call, outcome)
        except GatewayError as exc:
            record_error = exc
    if disconnected.is_set():
        return
    if record_error is not None:
        await send(_body(on_error(record_error)))
    elif end.error is not None:
        await send(_body(reader.fail(from_provider_error(end.error))))
    else:
        await send(_body(reader.finish(usage)))
    await send(_body(b"", more=False))


class TranslatedStream:
    """A stream served by a chat adapter and re-encoded for another API: the adapter's chunks go through
    `translator` (a Messages or Responses stream translator) as they arrive; `finish` sends its last events
    once the record has committed. Subclasses set the translator and say how a failure is told."""

    translator: Any

    def __init__(self, route: Route) -> None:
        self.adapter = route.adapter
        self.state: StreamState = route.adapter.new_stream_state()

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def error(self) -> ProviderError | None:
        return None  # the adapter raises a provider's error event

    def feed(self, event: SSEEvent) -> bytes:
        return b"".join(self.translator.feed(c) for c in self.adapter.parse_stream_event(self.state, event))

    def usage(self) -> Usage | None:
        return self.state.usage

    def content_text(self) -> str:
        return self.state.content_text

    def finish_reason(self) -> str | None:
        return self.state.finish_reason

    def finish(self, usage: Usage) -> bytes:
        return bytes(self.translator.finish(usage))
