"""The OpenAI-compatible surface: `POST /v1/chat/completions` (raw ASGI) and `GET /v1/models`.

Chat completions are served by a raw ASGI handler: it reads the body itself (with a size limit),
watches `receive()` for the client going away while a stream is relayed (uvicorn's `send` drops data
silently after a disconnect), and writes error envelopes directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, get
from litestar.handlers import asgi

from gateway.api.chat_request import parse_chat_request
from gateway.chat import ChatService, Inbound
from gateway.errors import GatewayError, encode_error
from gateway.outage import backend_unavailable
from pricing.money import TOKENS_PER_PRICE_UNIT
from storage.outage import describe, is_outage

log = logging.getLogger("synapgate.api")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _send_json(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive, limit: int, declared: str | None) -> bytes | None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks += message.get("body", b"")
        if len(chunks) > limit:
            raise GatewayError(
                413, f"The request body is larger than {limit} bytes.", code="request_too_large"
            )
        if not message.get("more_body", False):
            return bytes(chunks)


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return


class StreamStart:
    """Begins a route's SSE answer and from then on watches the client for going away (`disconnected`).

    `started` tells a handler whether anything was sent yet (after that, failures go out as stream events)."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self.disconnected = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._watcher is not None

    async def __call__(self, response_headers: dict[str, str]) -> None:
        raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ] + [(k.encode(), v.encode()) for k, v in response_headers.items()]
        await self._send({"type": "http.response.start", "status": 200, "headers": raw_headers})
        self._watcher = asyncio.create_task(_watch_disconnect(self._receive, self.disconnected))

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


def chat_completions_handler(chat: Callable[[], ChatService], max_body_bytes: int) -> Any:
    """The ASGI route for chat completions, bound to the app's ChatService."""

    @asgi("/v1/chat/completions", copy_scope=False)
    async def chat_completions(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        request_id = f"req_{uuid.uuid4().hex}"
        if scope.get("method") != "POST":
            body = encode_error(
                "Use POST for /v1/chat/completions.", "invalid_request_error", "method_not_allowed"
            )
            await _send_json(send, 405, body, {"x-request-id": request_id, "allow": "POST"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        service = chat()
        start_stream = StreamStart(receive, send)

        try:
            received = await _read_body(receive, max_body_bytes, headers.get("content-length"))
            if received is None:
                return  # the client left before sending its request
            started = time.perf_counter()
            principal = await service.authenticate(headers)
            inbound = Inbound(request_id, headers, principal, parse_chat_request(received), started)
            if inbound.request.stream:
                await service.stream(inbound, start_stream, send, start_stream.disconnected)
            else:
                payload, response_headers = await service.complete(inbound)
                await _send_json(send, 200, payload, response_headers)
        except GatewayError as exc:
            if not start_stream.started:  # nothing sent yet (a stream's own failures are sent as events)
                await _send_json(send, exc.status, exc.body(), {"x-request-id": request_id, **exc.headers})
        except Exception as exc:
            if is_outage(exc):  # a backing service went away on a path that did not expect it: 503, one line
                log.warning(
                    "backing service unreachable", extra={"request_id": request_id, "error": describe(exc)}
                )
                outage = backend_unavailable()
                if not start_stream.started:
                    await _send_json(send, 503, outage.body(), {"x-request-id": request_id, **outage.headers})
                return
            log.exception("unexpected failure", extra={"request_id": request_id})
            if not start_stream.started:
                body = encode_error("Internal gateway error.", "server_error", "internal_error")
                await _send_json(send, 500, body, {"x-request-id": request_id})
        finally:
            start_stream.stop()

    return chat_completions


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The active catalog in OpenAI's list format, with SynapGate's prices (USD per 1M tokens)."""
    catalog = await request.app.state.runtime.chat.catalog.get()
    data = []
    for model in catalog.active():
        base = model.pricing.base
        pricing: dict[str, Any] = {
            "unit": f"USD per {TOKENS_PER_PRICE_UNIT} tokens",
            "input": str(base.input),
            "cached_input": str(base.cached_input_rate),
            "cache_write": str(base.cache_write_rate),
            "output": str(base.output),
            "price_version": model.price_version,
        }
        if model.pricing.long_context is not None:
            long = model.pricing.long_context
            pricing["long_context"] = {
                "above_prompt_tokens": model.pricing.long_context_threshold,
                "input": str(long.input),
                "cached_input": str(long.cached_input_rate),
                "cache_write": str(long.cache_write_rate),
                "output": str(long.output),
            }
        data.append(
            {
                "id": model.name,
                "object": "model",
                "created": 0,
                "owned_by": model.provider,
                "display_name": model.display_name,
                "context_window": model.context_window,
                "max_output_tokens": model.max_output_tokens,
                "capabilities": {
                    "vision": model.supports_vision,
                    "tools": model.supports_tools,
                    "streaming": model.supports_streaming,
                },
                "pricing": pricing,
            }
        )
    return {"object": "list", "data": data}
