"""The mock provider as a raw ASGI app: routing, directives, failures, answers, introspection.

No framework, so it is never the bottleneck of a gateway benchmark. Routes: `/v1/chat/completions`,
`/v1/responses` (JSON and SSE) and `/v1/embeddings` (OpenAI), `/v1/messages` and `/v1/messages/count_tokens`
(Anthropic), `/v1beta/models/{model}:generateContent|streamGenerateContent|batchEmbedContents` (Gemini);
`GET /_mock/requests` (JSON list of the last 1000 API requests), `DELETE /_mock/requests`
(clear them and reset the times/key counters), `GET /health` → "ok".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from typing import Any

import msgspec

from devtools.mock_upstream.anthropic import (
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    anthropic_tool,
)
from devtools.mock_upstream.apis import (
    anthropic_count_tokens,
    embeddings_text,
    gemini_batch_embed,
    gemini_embed_text,
    openai_embeddings,
    responses_input_text,
    responses_object,
    responses_stream,
    responses_tool,
)
from devtools.mock_upstream.common import (
    JSON_CONTENT,
    SSE_CONTENT,
    SSE_UTF8,
    Dialect,
    Headers,
    Receive,
    RecordedRequest,
    Scope,
    Send,
    StreamPlan,
    decode,
    encode,
    text_of,
)
from devtools.mock_upstream.directives import (
    RETRYABLE,
    Behaviour,
    DirectiveError,
    MockConfig,
    parse_directives,
)
from devtools.mock_upstream.gemini import gemini_error, gemini_generate, gemini_stream, gemini_tool
from devtools.mock_upstream.openai import openai_completion, openai_error, openai_stream, openai_tool

RECORDED_REQUESTS = 1000


def error_body(dialect: Dialect, status: int, message: str | None = None) -> bytes:
    """The JSON error body the given provider answers `status` with."""
    if dialect == "anthropic":
        return anthropic_error(status, message)
    if dialect == "gemini":
        return gemini_error(status, message)
    return openai_error(status, message)


def _operation(path: str) -> str:
    """Which API of its provider a path is: chat (the default), responses, embeddings, count_tokens,
    batch_embed."""
    if path.endswith("/responses"):
        return "responses"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/messages/count_tokens"):
        return "count_tokens"
    if path.endswith(":batchEmbedContents"):
        return "batch_embed"
    return "chat"


def _last_user_text(dialect: Dialect, body: dict[str, Any], operation: str = "chat") -> str:
    if operation == "responses":
        return responses_input_text(body)
    if operation == "embeddings":
        return embeddings_text(body)
    if operation == "batch_embed":
        return gemini_embed_text(body)
    if dialect == "gemini":
        contents = body.get("contents")
        if isinstance(contents, list):
            for item in reversed(contents):
                if isinstance(item, dict) and item.get("role", "user") == "user":
                    return text_of(item.get("parts"))
        return ""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return text_of(message.get("content"))
    return ""


def _missing_field(dialect: Dialect, body: dict[str, Any], operation: str = "chat") -> str | None:
    """The first required field the real provider would reject the request for lacking."""
    required = {
        "openai": ("model", "messages"),
        "anthropic": ("model", "messages", "max_tokens"),
        "gemini": ("contents",),
        "responses": ("model", "input"),
        "embeddings": ("model", "input"),
        "count_tokens": ("model", "messages"),
        "batch_embed": ("requests",),
    }[dialect if operation == "chat" else operation]
    for name in required:
        if name not in body:
            return name
    return None


def _route(path: str) -> tuple[Dialect, str, bool] | None:
    """(dialect, Gemini model, Gemini streaming) for an API path, or None if it is not one."""
    if path in ("/v1/chat/completions", "/chat/completions", "/v1/responses", "/responses"):
        return ("openai", "", False)
    if path in ("/v1/embeddings", "/embeddings"):
        return ("openai", "", False)
    if path in ("/v1/messages", "/v1/messages/count_tokens"):
        return ("anthropic", "", False)
    for prefix in ("/v1beta/models/", "/v1/models/", "/models/"):
        if path.startswith(prefix):
            model, _, method = path[len(prefix) :].rpartition(":")
            if model and method == "generateContent":
                return ("gemini", model, False)
            if model and method == "streamGenerateContent":
                return ("gemini", model, True)
            if model and method == "batchEmbedContents":
                return ("gemini", model, False)
            return None
    return None


class MockUpstreamApp:
    """The mock provider as an ASGI callable; `requests` holds what it received, newest last."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.requests: deque[RecordedRequest] = deque(maxlen=RECORDED_REQUESTS)
        self.failures: dict[str, int] = {}  # times/key: failures served so far per key
        self._seq = itertools.count(1)

    def reset(self) -> None:
        """Forget recorded requests and the times/key counters."""
        self.requests.clear()
        self.failures.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        route = _route(path)
        if route is None:
            await self._control(path, method, send)
            return
        dialect, model, streaming = route
        operation = _operation(path)
        seq = next(self._seq)
        extra: Headers = (
            [(b"x-request-id", b"req_mock_%d" % seq)]
            if dialect == "openai"
            else [(b"request-id", b"req_mock_%d" % seq)]
            if dialect == "anthropic"
            else []
        )
        if method != "POST":
            await _respond(send, 405, error_body(dialect, 405, f"Method {method} not allowed."), extra)
            return

        raw = await _read_body(receive)
        try:
            body: Any = decode(raw)
        except msgspec.DecodeError:
            body = None
        query = scope["query_string"].decode("latin-1")
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        self.requests.append(RecordedRequest(method, path, query, headers, body))
        if not isinstance(body, dict):
            text = "We could not parse the JSON body of your request." if dialect == "openai" else None
            await _respond(
                send, 400, error_body(dialect, 400, text or "Invalid JSON payload received."), extra
            )
            return
        missing = _missing_field(dialect, body, operation)
        if missing is not None:
            text = (
                f"Missing required parameter: '{missing}'."
                if dialect == "openai"
                else f"{missing}: Field required"
            )
            await _respond(send, 400, error_body(dialect, 400, text), extra)
            return
        try:
            b = parse_directives(_last_user_text(dialect, body, operation), self.config)
        except DirectiveError as exc:
            await _respond(send, 400, error_body(dialect, 400, str(exc)), extra)
            return

        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        if b.status is not None and self._should_fail(b):
            if b.status in RETRYABLE:
                extra.append((b"retry-after", b"0"))
            message = f"Incorrect API key provided: {_received_key(headers)}." if b.echo_key else None
            await _respond(send, b.status, error_body(dialect, b.status, message), extra)
            return

        if operation == "responses":
            tool = responses_tool(body)
            if body.get("stream") is True:
                plan = responses_stream(body, b, seq, tool)
                await self._stream(send, receive, plan, b, [SSE_UTF8, *extra])
            else:
                await _respond(send, 200, responses_object(body, b, seq, tool), extra)
        elif operation == "embeddings":
            await _respond(send, 200, openai_embeddings(body, b, seq), extra)
        elif operation == "count_tokens":
            await _respond(send, 200, anthropic_count_tokens(b), extra)
        elif operation == "batch_embed":
            await _respond(send, 200, gemini_batch_embed(body, b, seq), extra)
        elif dialect == "openai":
            tool = openai_tool(body)
            if body.get("stream") is True:
                plan = openai_stream(body, b, seq, tool)
                await self._stream(send, receive, plan, b, [SSE_UTF8, *extra])
            else:
                await _respond(send, 200, openai_completion(body, b, seq, tool), extra)
        elif dialect == "anthropic":
            tool = anthropic_tool(body)
            if body.get("stream") is True:
                plan = anthropic_stream(body, b, seq, tool)
                await self._stream(send, receive, plan, b, [SSE_UTF8, *extra])
            else:
                await _respond(send, 200, anthropic_message(body, b, seq, tool), extra)
        else:
            tool = gemini_tool(body)
            if streaming:
                sse = "alt=sse" in query.split("&")
                plan = gemini_stream(model, b, seq, tool, sse, body)
                await self._stream(send, receive, plan, b, [SSE_CONTENT if sse else JSON_CONTENT])
            else:
                await _respond(send, 200, gemini_generate(model, b, seq, tool, body), extra)

    def _should_fail(self, b: Behaviour) -> bool:
        """Whether this request fails with `b.status`: always, or the first `times` with its key."""
        if b.times is None:
            return True
        served = self.failures.get(b.key, 0)
        if served >= b.times:
            return False
        self.failures[b.key] = served + 1
        return True

    async def _control(self, path: str, method: str, send: Send) -> None:
        """The non-API endpoints: health, request introspection, and 404 for anything else."""
        if path == "/health" and method in ("GET", "HEAD"):
            await _respond(send, 200, b"ok", [], content_type=b"text/plain; charset=utf-8")
        elif path == "/_mock/requests" and method == "GET":
            await _respond(send, 200, encode(list(self.requests)), [])
        elif path == "/_mock/requests" and method == "DELETE":
            cleared = len(self.requests)
            self.reset()
            await _respond(send, 200, encode({"cleared": cleared}), [])
        else:
            await _respond(send, 404, error_body("openai", 404, f"Unknown request URL: {method} {path}."), [])

    async def _stream(
        self, send: Send, receive: Receive, plan: StreamPlan, b: Behaviour, headers: Headers
    ) -> None:
        """Send a stream event by event (one HTTP chunk each); on `cut_after`, drop the connection."""
        cut = b.cut_after is not None
        events = plan.head + (plan.content[: b.cut_after] if cut else plan.content)
        if not cut:
            events += plan.tail
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        delay = b.chunk_delay_ms / 1000
        last = len(events) - 1
        for i, event in enumerate(events):
            if delay and i:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": event, "more_body": cut or i < last})
        if cut:
            await _drop_connection(send, receive)
        elif not events:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _received_key(headers: dict[str, str]) -> str:
    """The key a request carried, in whichever header its provider uses (for the echo_key directive)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:]
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or "(none)"


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _respond(
    send: Send, status: int, body: bytes, headers: Headers, content_type: bytes = b"application/json"
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop_connection(send: Send, receive: Receive) -> None:
    """End a started response abruptly, as a provider that dies mid-stream does.

    Under uvicorn the app closes the connection itself (the `send` it gets is bound to the request
    cycle, which holds the transport) and waits until uvicorn notices, so it can return without
    uvicorn logging an error. Under another server it just returns an incomplete response, which
    servers answer the same way (close the connection), with a logged complaint.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "close"):
        return
    transport.close()  # flushes what was sent, then FIN: the chunked body never gets its last chunk
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while (await receive())["type"] != "http.disconnect":
                pass


def create_mock_app(config: MockConfig | None = None) -> MockUpstreamApp:
    """The mock provider as an ASGI app (see the module docstring for routes and directives)."""
    return MockUpstreamApp(config or MockConfig())
