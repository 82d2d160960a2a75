"""`/v1/messages` on the metered path: Claude models relayed natively, the others translated.

Native: the client's body goes to Anthropic (model replaced, anthropic-version/-beta passed through), the
answer is relayed unchanged and metered with `parse_native_response` / `MessagesStreamMeter` (cache reads
and writes priced at their own rates); the stream's `message_stop` is held until the record commits.
Translated: `to_chat_request` → the chat adapter → `chat_completion_to_message` / `MessagesStreamTranslator`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import msgspec

from gateway.chat.admit import Call, Inbound, Route
from gateway.chat.apis import Answer, Send, StartResponse, TranslatedStream, complete, sse_bytes, stream
from gateway.chat.service import ChatService
from gateway.errors import GatewayError
from gateway.providers.base import ChatRequest, ProviderError, SSEEvent, UpstreamRequest
from gateway.providers.messages_api import (
    MessagesApiError,
    MessagesRequest,
    MessagesStreamMeter,
    MessagesStreamTranslator,
    build_native_request,
    chat_completion_to_message,
    encode_event,
    error_event,
    messages_error,
    parse_native_response,
    to_chat_request,
)
from pricing.cost import Usage

NATIVE_PROVIDER = "anthropic"


def gateway_error_of(err: MessagesApiError) -> GatewayError:
    """A Messages validation error as a GatewayError (the route writes it in Anthropic's envelope)."""
    return GatewayError(err.status, err.message, type=err.error_type)


def error_bytes(error: GatewayError) -> bytes:
    """A gateway error as an Anthropic `error` SSE event."""
    return error_event(messages_error(error.status, error.type, error.code, error.message))


def _provider_error(err: MessagesApiError) -> ProviderError:
    return ProviderError(err.status, err.message, type=err.error_type, retry_after=err.retry_after)


def estimate_request(req: MessagesRequest) -> ChatRequest:
    """The request as the reservation sees it (messages and tools as chat completions would send them)."""
    try:
        return to_chat_request(req, supports_reasoning=True)
    except MessagesApiError:  # blocks only Anthropic can take (server tools…): count them as their JSON
        text = msgspec.json.encode([req.system, req.messages, req.tools]).decode()
        messages = [{"role": "user", "content": text}]
        return ChatRequest(req.model, messages, req.stream, True, req.max_tokens, {})


class _NativeStream:
    """Relays Anthropic's events unchanged, metering them; message_stop waits for `finish`."""

    def __init__(self) -> None:
        self.meter = MessagesStreamMeter()
        self.held: bytes | None = None

    @property
    def done(self) -> bool:
        return self.meter.done

    @property
    def error(self) -> ProviderError | None:
        return _provider_error(self.meter.error) if self.meter.error else None

    def feed(self, event: SSEEvent) -> bytes:
        self.meter.feed(event)
        if self.meter.done and self.held is None:
            self.held = sse_bytes(event)  # message_stop: the final event, sent after the record
            return b""
        return sse_bytes(event)

    def usage(self) -> Usage | None:
        return self.meter.usage

    def content_text(self) -> str:
        return self.meter.content_text

    def finish_reason(self) -> str | None:
        return self.meter.stop_reason

    def finish(self, usage: Usage) -> bytes:
        return self.held or encode_event({"type": "message_stop"})

    def fail(self, error: GatewayError) -> bytes:
        return b"" if self.meter.error is not None else error_bytes(error)  # Anthropic's was relayed


class _TranslatedStream(TranslatedStream):
    """Chat chunks from the route's adapter, turned into Messages events."""

    translator: MessagesStreamTranslator

    def __init__(self, route: Route, call: Call, req: MessagesRequest, chat: ChatRequest) -> None:
        super().__init__(route)
        self.translator = MessagesStreamTranslator(
            model=req.model, input_tokens_estimate=call.prompt_estimate, stop_sequences=req.stop_sequences
        )

    def fail(self, error: GatewayError) -> bytes:
        return error_bytes(error)


class MessagesCodec:
    """The Messages API on each route: native for Anthropic, translated for the others."""

    def __init__(self, call: Call, req: MessagesRequest, headers: Mapping[str, str]) -> None:
        self.call, self.req, self.headers = call, req, headers

    def _chat(self) -> ChatRequest:
        try:
            return to_chat_request(self.req, supports_reasoning=False)
        except MessagesApiError as exc:
            raise _provider_error(exc) from None

    def build_request(self, route: Route) -> UpstreamRequest:
        if route.model.provider == NATIVE_PROVIDER:
            return build_native_request(self.req, route.model.upstream_model, route.credential, self.headers)
        return route.adapter.build_request(self._chat(), route.model.upstream_model, route.credential)

    def parse_error(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> ProviderError:
        try:
            route.adapter.parse_response(status, headers, body)
        except ProviderError as exc:
            return exc
        return ProviderError(502, "The upstream provider answered with an unexpected status.")

    def parse_response(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> Answer:
        if route.model.provider == NATIVE_PROVIDER:
            native = parse_native_response(body)
            return Answer(native.usage, native.content_text, native.stop_reason, lambda _usage: body)
        result = route.adapter.parse_response(status, headers, body)
        req = self.req

        def render(usage: Usage) -> bytes:
            message = chat_completion_to_message(
                result.body, usage, model=req.model, stop_sequences=req.stop_sequences
            )
            return msgspec.json.encode(message)

        return Answer(result.usage, result.content_text, result.finish_reason, render)

    def stream_codec(self, route: Route) -> _NativeStream | _TranslatedStream:
        if route.model.provider == NATIVE_PROVIDER:
            return _NativeStream()
        return _TranslatedStream(route, self.call, self.req, self._chat())


async def serve_messages(
    service: ChatService,
    inbound: Inbound,
    req: MessagesRequest,
    start: StartResponse,
    send: Send,
    disconnected: asyncio.Event,
) -> tuple[bytes, dict[str, str]] | None:
    """One `/v1/messages` request: the JSON answer (body, headers), or None once a stream was sent."""
    call = await service.admission.admit(inbound, endpoint="messages")
    if call.model.provider != NATIVE_PROVIDER and req.thinking and req.thinking.get("type") != "disabled":
        raise GatewayError(400, f"thinking: model {req.model!r} does not support extended thinking")
    codec = MessagesCodec(call, req, inbound.headers)
    if req.stream:
        await stream(service, call, codec, start, send, disconnected, error_bytes)
        return None
    return await complete(service, call, codec)
