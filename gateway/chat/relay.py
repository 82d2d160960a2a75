"""Step 3 (streams), the relay: upstream events → OpenAI chunks → the client, as they arrive.

The adapter turns each upstream SSE event into OpenAI chunks; the usage chunk the gateway always asks for
is hidden when the client did not ask for it (`client_chunks`). When the stream ends, `classify_stream_end`
(pure) says how: success, cancelled (the client left), error (the provider sent one) or cut (the stream
ended before the provider said it was done). The service then records, and only then `finish_stream`
sends `[DONE]` (or the error event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from gateway.chat.admit import Call
from gateway.chat.record import Outcome, unfinished_usage
from gateway.errors import GatewayError, credential_safe, encode_error, from_provider_error
from gateway.providers.base import JSONObject, ProviderError, StreamState
from gateway.providers.sse import SSEDecoder
from gateway.proxy import UpstreamStream

Send = Callable[[dict[str, Any]], Awaitable[None]]
EndKind = Literal["success", "cancelled", "error", "cut"]


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a relayed stream ended: its kind, the status and error code recorded, and what the client is told
    (`error` None: `[DONE]`, or nobody is listening)."""

    kind: EndKind
    status: str  # the usage_logs status: success | cancelled | error
    code: str | None
    error: ProviderError | None


def classify_stream_end(*, disconnected: bool, error: ProviderError | None, upstream_done: bool) -> StreamEnd:
    """Decide how a stream ended. A client that left outranks everything (nobody to tell); then an error the
    provider sent; then a stream that stopped before the provider said it was complete (cut)."""
    if disconnected:
        return StreamEnd("cancelled", "cancelled", "client_disconnected", None)
    if error is not None:
        return StreamEnd("error", "error", error.code or "upstream_stream_error", error)
    if not upstream_done:
        cut = ProviderError(502, "The upstream provider ended the stream early.", code="upstream_stream_cut")
        return StreamEnd("cut", "error", "upstream_stream_cut", cut)
    return StreamEnd("success", "success", None, None)


def client_chunks(chunks: Sequence[JSONObject], include_usage: bool) -> Iterator[JSONObject]:
    """The chunks as the client asked for them: the gateway always asks upstream for usage, so when the
    client did not, the usage-only chunk is dropped and `usage` is removed from the others (DeepSeek puts
    it on the chunk that also carries finish_reason)."""
    for chunk in chunks:
        if not include_usage and "usage" in chunk:
            if not chunk.get("choices"):
                continue
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
        yield chunk


def sse_event(data: bytes) -> dict[str, Any]:
    """One `data:` event as an ASGI body message (more to come)."""
    return {"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True}


@dataclass(slots=True)
class Relayed:
    """What a relay saw: the adapter's stream state, the time to the first chunk sent, and how it ended."""

    state: StreamState
    ttft_ms: int | None
    end: StreamEnd


async def relay_chunks(
    call: Call, stream: UpstreamStream, send: Send, disconnected: asyncio.Event
) -> Relayed:
    """Relay every chunk to the client until the upstream ends, fails or the client leaves; close it."""
    adapter = call.adapter
    state = adapter.new_stream_state()
    decoder = SSEDecoder()
    include_usage = call.request.include_usage
    ttft_ms: int | None = None
    error: ProviderError | None = None
    try:
        async for raw in stream.chunks():
            for event in decoder.feed(raw):
                for chunk in client_chunks(adapter.parse_stream_event(state, event), include_usage):
                    if ttft_ms is None:
                        ttft_ms = int((time.perf_counter() - call.started) * 1000)
                    await send(sse_event(msgspec.json.encode(chunk)))
            if disconnected.is_set():
                break
        if not disconnected.is_set():  # an event the upstream did not close with a blank line
            for event in decoder.flush():
                for chunk in client_chunks(adapter.parse_stream_event(state, event), include_usage):
                    await send(sse_event(msgspec.json.encode(chunk)))
    except ProviderError as exc:
        error = credential_safe(exc, call.credential)
    finally:
        await stream.close()
    end = classify_stream_end(disconnected=disconnected.is_set(), error=error, upstream_done=state.done)
    return Relayed(state, ttft_ms, end)


def stream_outcome(call: Call, relayed: Relayed, upstream_ms: int | None) -> Outcome:
    """The outcome to record: the provider's usage for a finished stream, else what was generated, counted."""
    state, end = relayed.state, relayed.end
    if end.kind == "success" and state.usage is not None:
        usage = state.usage
    else:
        usage = unfinished_usage(call, state.usage, state.content_text)
    return Outcome(
        usage=usage,
        content_text=state.content_text,
        finish_reason=state.finish_reason,
        status=end.status,
        error_code=end.code,
        http_status=200,
        ttft_ms=relayed.ttft_ms,
        upstream_ms=upstream_ms,
    )


async def finish_stream(
    send: Send, end: StreamEnd, record_error: GatewayError | None, disconnected: asyncio.Event
) -> None:
    """Close the client's stream after the record: `[DONE]`, the upstream's error, or the record failure."""
    if disconnected.is_set():
        return
    if record_error is not None:
        await send(sse_event(record_error.body()))
    elif end.error is not None:
        gw = from_provider_error(end.error)
        await send(sse_event(encode_error(gw.message, gw.type, gw.code, gw.param)))
    else:
        await send(sse_event(b"[DONE]"))
    await send({"type": "http.response.body", "body": b"", "more_body": False})
