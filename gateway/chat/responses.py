"""`/v1/responses` on the metered path: OpenAI models relayed natively, the others translated.

Native: the client's body goes to OpenAI (model replaced), the answer is relayed unchanged and metered with
`parse_native_response` / `ResponsesStreamMeter`; the stream's `response.completed` (or `.incomplete`) is
held until the record commits. Translated: `to_chat_request` → the chat adapter →
`chat_completion_to_response` / `ResponsesStreamTranslator` (`previous_response_id` is a 400 there).
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from gateway.chat.admit import Call, Inbound, Route
from gateway.chat.apis import Answer, Send, StartResponse, TranslatedStream, complete, sse_bytes, stream
from gateway.chat.service import ChatService
from gateway.errors import GatewayError
from gateway.providers.base import ChatRequest, ProviderError, SSEEvent, UpstreamRequest
from gateway.providers.responses_api import (
    ResponsesRequest,
    ResponsesStreamMeter,
    ResponsesStreamTranslator,
    build_native_request,
    chat_completion_to_response,
    native_error,
    parse_native_response,
    to_chat_request,
)
from pricing.cost import Usage

NATIVE_PROVIDER = "openai"
_FINAL_EVENTS = ("response.completed", "response.incomplete")


def error_bytes(error: GatewayError) -> bytes:
    """A gateway error as a Responses `error` event."""
    event = {"type": "error", "code": error.code, "message": error.message, "param": error.param}
    return b"event: error\ndata: " + msgspec.json.encode(event) + b"\n\n"


def estimate_request(req: ResponsesRequest) -> ChatRequest:
    """The request as the reservation sees it: its input estimate stands in the messages' place."""
    try:
        return to_chat_request(req, supports_reasoning=True)
    except ProviderError:  # native-only input (previous_response_id, built-in tools): count it as JSON
        text = msgspec.json.encode([req.instructions, req.input, req.tools]).decode()
        messages = [{"role": "user", "content": text}]
        return ChatRequest(req.model, messages, req.stream, True, req.max_output_tokens, {})


class _NativeStream:
    """Relays OpenAI's events unchanged, metering them; response.completed waits for `finish`."""

    def __init__(self) -> None:
        self.meter = ResponsesStreamMeter()
        self.held: bytes | None = None

    @property
    def done(self) -> bool:
        return self.meter.done

    @property
    def error(self) -> ProviderError | None:
        return self.meter.error

    def feed(self, event: SSEEvent) -> bytes:
        self.meter.feed(event)
        if self.held is None and self.meter.done and self.meter.error is None:
            self.held = sse_bytes(event)
            return b""
        return sse_bytes(event)

    def usage(self) -> Usage | None:
        return self.meter.usage

    def content_text(self) -> str:
        return self.meter.content_text

    def finish_reason(self) -> str | None:
        return self.meter.status

    def finish(self, usage: Usage) -> bytes:
        return self.held or b""

    def fail(self, error: GatewayError) -> bytes:
        return b"" if self.meter.error is not None else error_bytes(error)  # OpenAI's was relayed


class _TranslatedStream(TranslatedStream):
    """Chat chunks from the route's adapter, turned into the Responses event sequence."""

    translator: ResponsesStreamTranslator

    def __init__(self, route: Route, req: ResponsesRequest) -> None:
        super().__init__(route)
        self.translator = ResponsesStreamTranslator(req, created_at=int(time.time()))

    def fail(self, error: GatewayError) -> bytes:
        return self.translator.fail(ProviderError(error.status, error.message, code=error.code))


class ResponsesCodec:
    """The Responses API on each route: native for OpenAI, translated for the others."""

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req

    def build_request(self, route: Route) -> UpstreamRequest:
        if route.model.provider == NATIVE_PROVIDER:
            return build_native_request(self.req, route.model.upstream_model, route.credential)
        chat = to_chat_request(self.req)
        return route.adapter.build_request(chat, route.model.upstream_model, route.credential)

    def parse_error(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> ProviderError:
        if route.model.provider == NATIVE_PROVIDER:
            return native_error(status, headers, body)
        try:
            route.adapter.parse_response(status, headers, body)
        except ProviderError as exc:
            return exc
        return ProviderError(502, "The upstream provider answered with an unexpected status.")

    def parse_response(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> Answer:
        if route.model.provider == NATIVE_PROVIDER:
            native = parse_native_response(status, headers, body)
            return Answer(native.usage, native.content_text, native.status, lambda _usage: body)
        result = route.adapter.parse_response(status, headers, body)
        req, created = self.req, int(time.time())

        def render(usage: Usage) -> bytes:
            return msgspec.json.encode(
                chat_completion_to_response(result.body, usage, req, created_at=created)
            )

        return Answer(result.usage, result.content_text, result.finish_reason, render)

    def stream_codec(self, route: Route) -> _NativeStream | _TranslatedStream:
        if route.model.provider == NATIVE_PROVIDER:
            return _NativeStream()
        return _TranslatedStream(route, self.req)


async def serve_responses(
    service: ChatService,
    inbound: Inbound,
    req: ResponsesRequest,
    start: StartResponse,
    send: Send,
    disconnected: asyncio.Event,
) -> tuple[bytes, dict[str, str]] | None:
    """One `/v1/responses` request: the JSON answer (body, headers), or None once a stream was sent."""
    call: Call = await service.admission.admit(inbound, endpoint="responses")
    if call.model.provider != NATIVE_PROVIDER:
        to_chat_request(req)  # a translated model: refuse what cannot be carried (400) before reserving
    codec = ResponsesCodec(req)
    if req.stream:
        await stream(service, call, codec, start, send, disconnected, error_bytes)
        return None
    return await complete(service, call, codec)
