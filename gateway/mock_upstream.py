"""A mock upstream LLM provider: OpenAI, Anthropic and Gemini wire formats, steerable from the prompt.

A raw ASGI app (no framework, so it is never the bottleneck of a gateway benchmark). Tests steer it with
a directive in the text of the last user message, because a gateway forwards only the body::

    [mock status=529 times=1 key=abc cut_after=3 usage=none prompt_tokens=100 completion_tokens=50
          cached_tokens=20 cache_write_tokens=10 reasoning_tokens=5 latency_ms=30 chunk_delay_ms=10]

Any subset, any order; several `[mock ...]` blocks merge (the later wins); an unknown key or a bad value
is answered with a 400 in the format's error envelope, so a typo never passes silently.

- `status=N`: answer HTTP N with the provider's real error envelope (`retry-after: 0` on 429/503/529).
- `times=K key=X`: only the first K requests carrying key X fail with `status`; later ones succeed.
  Counters are per app (the key defaults to ""); `DELETE /_mock/requests` resets them.
- `cut_after=N` (streams): send at most N content chunks, then close the connection without the
  finish chunk, the usage and `[DONE]`. The client sees a chunked body that ends early: httpx raises
  `httpx.RemoteProtocolError` ("peer closed connection without sending complete message body
  (incomplete chunked read)") after yielding the chunks that did arrive; the openai SDK's stream raises
  `openai.APIConnectionError` ("Connection error.") whose `__cause__` is its HTTP client's
  RemoteProtocolError (httpx2 in openai 3.x), after yielding the chunks that arrived.
- `usage=none`: no usage at all (no `usage` key, no usage chunk, no `usageMetadata`).
- token counts set each provider's own usage fields as given, no arithmetic between them:
  `prompt_tokens` → prompt_tokens / input_tokens / promptTokenCount; `completion_tokens` (also the
  number of words in the reply, "mock0 mock1 ...") → completion_tokens / output_tokens /
  candidatesTokenCount; `cached_tokens` → prompt_tokens_details.cached_tokens / cache_read_input_tokens /
  cachedContentTokenCount; `cache_write_tokens` → prompt_tokens_details.cache_write_tokens (when > 0) /
  cache_creation_input_tokens; `reasoning_tokens` → completion_tokens_details.reasoning_tokens /
  thoughtsTokenCount (Gemini's totalTokenCount adds it; Anthropic has no such field).
- `latency_ms`: delay before the first byte; `chunk_delay_ms`: delay between stream events.

Tools: when the request offers tools, tool choice is not "none" and the last message is the user's
(not a tool result), the reply is a call of the first tool (or the one tool_choice names) with
arguments `{"mock": true}`.

Introspection: `app.requests` (the last 1000 API requests as `RecordedRequest`), `GET /_mock/requests`
(JSON list), `DELETE /_mock/requests` (clear, and reset the times/key counters), `GET /health` → "ok".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import msgspec
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Dialect = Literal["openai", "anthropic", "gemini"]

RECORDED_REQUESTS = 1000
TOOL_ARGUMENTS = '{"mock": true}'
# The tool arguments as they arrive in a stream: two fragments, so clients must concatenate.
TOOL_ARGUMENT_FRAGMENTS = ('{"mock"', ": true}")

_encode = msgspec.json.encode
_decode = msgspec.json.decode
_DIRECTIVE = re.compile(r"\[mock\b([^\]]*)\]")
_INT_DIRECTIVES = frozenset(
    {
        "status",
        "times",
        "cut_after",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    }
)
_FLOAT_DIRECTIVES = frozenset({"latency_ms", "chunk_delay_ms"})
_RETRYABLE = frozenset({429, 503, 529})

_JSON = (b"content-type", b"application/json")
_SSE_UTF8 = (b"content-type", b"text/event-stream; charset=utf-8")
_SSE = (b"content-type", b"text/event-stream")


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Defaults for every answer; a request's `[mock ...]` directive overrides them."""

    latency_ms: float = 0.0
    prompt_tokens: int = 12
    completion_tokens: int = 8
    chunk_delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One API request as the mock received it (header names lowercase; body None if not JSON)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class Behaviour:
    """How to answer one request: the config merged with the request's directives."""

    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    chunk_delay_ms: float
    status: int | None = None
    times: int | None = None
    key: str = ""
    cut_after: int | None = None
    usage: bool = True
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class DirectiveError(ValueError):
    """A `[mock ...]` directive the mock does not understand."""


@dataclass(slots=True)
class StreamPlan:
    """A stream as events: `content` chunks are what `cut_after` counts; `tail` is lost on a cut."""

    head: list[bytes] = field(default_factory=list)
    content: list[bytes] = field(default_factory=list)
    tail: list[bytes] = field(default_factory=list)


def parse_directives(text: str, config: MockConfig) -> Behaviour:
    """The behaviour for a request whose last user message is `text`; raises DirectiveError."""
    behaviour = Behaviour(
        prompt_tokens=config.prompt_tokens,
        completion_tokens=config.completion_tokens,
        latency_ms=config.latency_ms,
        chunk_delay_ms=config.chunk_delay_ms,
    )
    if "[mock" not in text:
        return behaviour
    for match in _DIRECTIVE.finditer(text):
        for item in match.group(1).split():
            name, sep, value = item.partition("=")
            if not sep or not value:
                raise DirectiveError(f"mock directive {item!r} is not name=value")
            if name in _INT_DIRECTIVES:
                if not value.isdigit():
                    raise DirectiveError(f"mock directive {name} needs a non-negative integer, got {value!r}")
                number = int(value)
                if name == "status" and not 400 <= number <= 599:
                    raise DirectiveError(f"mock directive status must be 400-599, got {number}")
                setattr(behaviour, name, number)
            elif name in _FLOAT_DIRECTIVES:
                try:
                    seconds = float(value)
                except ValueError:
                    raise DirectiveError(f"mock directive {name} needs a number, got {value!r}") from None
                if not seconds >= 0:
                    raise DirectiveError(f"mock directive {name} must be >= 0, got {value!r}")
                setattr(behaviour, name, seconds)
            elif name == "key":
                behaviour.key = value
            elif name == "usage":
                if value != "none":
                    raise DirectiveError(f"mock directive usage only takes 'none', got {value!r}")
                behaviour.usage = False
            else:
                raise DirectiveError(f"unknown mock directive {name!r}")
    return behaviour


@lru_cache(maxsize=64)
def reply_words(count: int) -> tuple[str, ...]:
    """The reply as stream pieces: "mock0", " mock1", ... (joined: `count` space-separated words)."""
    return tuple(f"mock{i}" if i == 0 else f" mock{i}" for i in range(count))


def reply_text(count: int) -> str:
    """The full reply text of `count` words."""
    return "".join(reply_words(count))


# ---------------------------------------------------------------------------------------------------
# Reading requests: the last user message and the tool to call, per wire format.


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the `text` of its parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(dialect: Dialect, body: dict[str, Any]) -> str:
    if dialect == "gemini":
        contents = body.get("contents")
        if isinstance(contents, list):
            for item in reversed(contents):
                if isinstance(item, dict) and item.get("role", "user") == "user":
                    return _text_of(item.get("parts"))
        return ""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
    return ""


def _openai_tool(body: dict[str, Any]) -> str | None:
    tools, choice, messages = body.get("tools"), body.get("tool_choice"), body.get("messages")
    if not tools or not isinstance(tools, list) or choice == "none":
        return None
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        named = choice["function"].get("name")
        if isinstance(named, str):
            return named
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None


def _anthropic_tool(body: dict[str, Any]) -> str | None:
    tools, choice, messages = body.get("tools"), body.get("tool_choice"), body.get("messages")
    if not tools or not isinstance(tools, list):
        return None
    if isinstance(choice, dict):
        if choice.get("type") == "none":
            return None
        if choice.get("type") == "tool" and isinstance(choice.get("name"), str):
            return str(choice["name"])
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    # Anthropic sends tool results in a user message: answering those with another call would loop.
    content = messages[-1].get("content")
    if isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    ):
        return None
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            return str(tool["name"])
    return None


def _gemini_tool(body: dict[str, Any]) -> str | None:
    tools, contents = body.get("tools"), body.get("contents")
    if not tools or not isinstance(tools, list) or not contents or not isinstance(contents, list):
        return None
    tool_config = body.get("toolConfig") or body.get("tool_config") or {}
    calling = tool_config.get("functionCallingConfig") or tool_config.get("function_calling_config") or {}
    if isinstance(calling, dict) and str(calling.get("mode", "")).upper() == "NONE":
        return None
    last = contents[-1]
    if not isinstance(last, dict) or last.get("role", "user") != "user":
        return None
    parts = last.get("parts")
    # Gemini returns function results as user parts: answering those with another call would loop.
    if isinstance(parts, list) and any(
        isinstance(p, dict) and ("functionResponse" in p or "function_response" in p) for p in parts
    ):
        return None
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        declarations = tool.get("functionDeclarations") or tool.get("function_declarations") or []
        for declaration in declarations:
            if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                return str(declaration["name"])
    return None


def _missing_field(dialect: Dialect, body: dict[str, Any]) -> str | None:
    """The first required field the real provider would reject the request for lacking."""
    required = {
        "openai": ("model", "messages"),
        "anthropic": ("model", "messages", "max_tokens"),
        "gemini": ("contents",),
    }[dialect]
    for name in required:
        if name not in body:
            return name
    return None


# ---------------------------------------------------------------------------------------------------
# Error envelopes, each as the provider sends it.

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Request not allowed."),
    404: ("invalid_request_error", "unknown_url", "Unknown request URL."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 0s."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", "overloaded", "The server is overloaded, please try again later."),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GEMINI_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out."),
    529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def error_body(dialect: Dialect, status: int, message: str | None = None) -> bytes:
    """The JSON error body the given provider answers `status` with."""
    if dialect == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        text = message or {"overloaded_error": "Overloaded", "rate_limit_error": "Rate limited"}.get(
            kind, f"mock error {status}"
        )
        return _encode({"type": "error", "error": {"type": kind, "message": text}})
    if dialect == "gemini":
        state, default = _GEMINI_ERRORS.get(
            status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", "")
        )
        error: dict[str, Any] = {"code": status, "message": message or default or f"mock error {status}"}
        error["status"] = state
        if status == 429:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]
        return _encode({"error": error})
    kind, code, default = _OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"mock error {status}")
    )
    return _encode({"error": {"message": message or default, "type": kind, "param": None, "code": code}})


# ---------------------------------------------------------------------------------------------------
# Successful answers.


def _openai_usage(b: Behaviour) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": b.cached_tokens, "audio_tokens": 0}
    if b.cache_write_tokens:
        prompt_details["cache_write_tokens"] = b.cache_write_tokens
    return {
        "prompt_tokens": b.prompt_tokens,
        "completion_tokens": b.completion_tokens,
        "total_tokens": b.prompt_tokens + b.completion_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": b.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _anthropic_usage(b: Behaviour, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": b.prompt_tokens,
        "cache_creation_input_tokens": b.cache_write_tokens,
        "cache_read_input_tokens": b.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": b.cache_write_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _gemini_usage(b: Behaviour, candidates: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": b.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": b.prompt_tokens + candidates + b.reasoning_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": b.prompt_tokens}],
    }
    if b.cached_tokens:
        usage["cachedContentTokenCount"] = b.cached_tokens
    if b.reasoning_tokens:
        usage["thoughtsTokenCount"] = b.reasoning_tokens
    return usage


def openai_completion(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> bytes:
    """A non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    if tool is None:
        message["content"] = reply_text(b.completion_tokens)
    else:
        message["tool_calls"] = [
            {
                "id": f"call_mock_{seq}",
                "type": "function",
                "function": {"name": tool, "arguments": TOOL_ARGUMENTS},
            }
        ]
    result: dict[str, Any] = {
        "id": f"chatcmpl-mock-{seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "stop" if tool is None else "tool_calls",
            }
        ],
        "service_tier": "default",
        "system_fingerprint": None,
    }
    if b.usage:
        result["usage"] = _openai_usage(b)
    return _encode(result)


def openai_stream(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> StreamPlan:
    """`chat.completion.chunk` events; the usage chunk only if asked for (and usage is not off)."""
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base: dict[str, Any] = {
        "id": f"chatcmpl-mock-{seq}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        event = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            event["usage"] = None  # as OpenAI does: every chunk carries `usage: null` until the last
        return b"data: " + _encode(event) + b"\n\n"

    plan = StreamPlan()
    if tool is None:
        plan.head.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        plan.content.extend(chunk({"content": piece}) for piece in reply_words(b.completion_tokens))
        plan.tail.append(chunk({}, "stop"))
    else:
        call = {"index": 0, "id": f"call_mock_{seq}", "type": "function"}
        call["function"] = {"name": tool, "arguments": ""}
        plan.head.append(chunk({"role": "assistant", "content": None, "tool_calls": [call]}))
        plan.content.extend(
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
            for fragment in TOOL_ARGUMENT_FRAGMENTS
        )
        plan.tail.append(chunk({}, "tool_calls"))
    if include_usage and b.usage:
        plan.tail.append(b"data: " + _encode({**base, "choices": [], "usage": _openai_usage(b)}) + b"\n\n")
    plan.tail.append(b"data: [DONE]\n\n")
    return plan


def anthropic_message(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> bytes:
    """A non-streaming Messages API `message` object."""
    if tool is None:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply_text(b.completion_tokens)}]
    else:
        content = [{"type": "tool_use", "id": f"toolu_mock_{seq}", "name": tool, "input": {"mock": True}}]
    result: dict[str, Any] = {
        "id": f"msg_mock_{seq}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": "end_turn" if tool is None else "tool_use",
        "stop_sequence": None,
    }
    if b.usage:
        result["usage"] = _anthropic_usage(b, b.completion_tokens)
    return _encode(result)


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def anthropic_stream(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> StreamPlan:
    """Messages API events: message_start … message_stop, with `event:` lines."""
    message: dict[str, Any] = {
        "id": f"msg_mock_{seq}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if b.usage:
        message["usage"] = _anthropic_usage(b, min(1, b.completion_tokens))
    plan = StreamPlan()
    plan.head.append(_anthropic_event("message_start", {"type": "message_start", "message": message}))
    if tool is None:
        block: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in reply_words(b.completion_tokens)]
    else:
        block = {"type": "tool_use", "id": f"toolu_mock_{seq}", "name": tool, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": part} for part in TOOL_ARGUMENT_FRAGMENTS]
    plan.head.append(
        _anthropic_event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
        )
    )
    plan.head.append(_anthropic_event("ping", {"type": "ping"}))
    plan.content.extend(
        _anthropic_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        for delta in deltas
    )
    plan.tail.append(_anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    message_delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn" if tool is None else "tool_use", "stop_sequence": None},
    }
    if b.usage:
        usage = _anthropic_usage(b, b.completion_tokens)
        del usage["cache_creation"], usage["service_tier"]
        message_delta["usage"] = usage
    plan.tail.append(_anthropic_event("message_delta", message_delta))
    plan.tail.append(_anthropic_event("message_stop", {"type": "message_stop"}))
    return plan


def _gemini_response(
    model: str, seq: int, parts: list[dict[str, Any]], finish: bool, usage: dict[str, Any] | None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    result: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        result["usageMetadata"] = usage
    result["modelVersion"] = model
    result["responseId"] = f"mock-{seq}"
    return result


def gemini_generate(model: str, b: Behaviour, seq: int, tool: str | None) -> bytes:
    """A non-streaming `generateContent` response."""
    if tool is None:
        parts: list[dict[str, Any]] = [{"text": reply_text(b.completion_tokens)}]
    else:
        parts = [{"functionCall": {"name": tool, "args": {"mock": True}}}]
    usage = _gemini_usage(b, b.completion_tokens) if b.usage else None
    return _encode(_gemini_response(model, seq, parts, True, usage))


def gemini_stream(model: str, b: Behaviour, seq: int, tool: str | None, sse: bool) -> StreamPlan:
    """`streamGenerateContent` events; usageMetadata is cumulative on every chunk, as Gemini sends it."""
    responses: list[dict[str, Any]] = []
    if tool is None:
        for count, piece in enumerate(reply_words(b.completion_tokens), start=1):
            usage = _gemini_usage(b, count) if b.usage else None
            responses.append(_gemini_response(model, seq, [{"text": piece}], False, usage))
    else:
        usage = _gemini_usage(b, b.completion_tokens) if b.usage else None
        call = {"functionCall": {"name": tool, "args": {"mock": True}}}
        responses.append(_gemini_response(model, seq, [call], False, usage))
    # Gemini ends with a chunk holding finishReason (its only part an empty text when nothing is left).
    final_usage = _gemini_usage(b, b.completion_tokens) if b.usage else None
    final = _gemini_response(model, seq, [{"text": ""}], True, final_usage)
    plan = StreamPlan()
    if sse:
        plan.content = [b"data: " + _encode(r) + b"\r\n\r\n" for r in responses]
        plan.tail = [b"data: " + _encode(final) + b"\r\n\r\n"]
    else:
        # Without alt=sse Gemini streams one JSON array, element by element.
        plan.content = [(b"[" if i == 0 else b",\r\n") + _encode(r) for i, r in enumerate(responses)]
        plan.tail = [(b",\r\n" if responses else b"[") + _encode(final) + b"]"]
    return plan


# ---------------------------------------------------------------------------------------------------
# The ASGI application.


def _route(path: str) -> tuple[Dialect, str, bool] | None:
    """(dialect, Gemini model, Gemini streaming) for an API path, or None if it is not one."""
    if path in ("/v1/chat/completions", "/chat/completions"):
        return ("openai", "", False)
    if path == "/v1/messages":
        return ("anthropic", "", False)
    for prefix in ("/v1beta/models/", "/v1/models/", "/models/"):
        if path.startswith(prefix):
            model, _, method = path[len(prefix) :].rpartition(":")
            if model and method == "generateContent":
                return ("gemini", model, False)
            if model and method == "streamGenerateContent":
                return ("gemini", model, True)
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
            body: Any = _decode(raw)
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
        missing = _missing_field(dialect, body)
        if missing is not None:
            text = (
                f"Missing required parameter: '{missing}'."
                if dialect == "openai"
                else f"{missing}: Field required"
            )
            await _respond(send, 400, error_body(dialect, 400, text), extra)
            return
        try:
            b = parse_directives(_last_user_text(dialect, body), self.config)
        except DirectiveError as exc:
            await _respond(send, 400, error_body(dialect, 400, str(exc)), extra)
            return

        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        if b.status is not None and self._should_fail(b):
            if b.status in _RETRYABLE:
                extra.append((b"retry-after", b"0"))
            await _respond(send, b.status, error_body(dialect, b.status), extra)
            return

        if dialect == "openai":
            tool = _openai_tool(body)
            if body.get("stream") is True:
                plan = openai_stream(body, b, seq, tool)
                await self._stream(send, receive, plan, b, [_SSE_UTF8, *extra])
            else:
                await _respond(send, 200, openai_completion(body, b, seq, tool), extra)
        elif dialect == "anthropic":
            tool = _anthropic_tool(body)
            if body.get("stream") is True:
                plan = anthropic_stream(body, b, seq, tool)
                await self._stream(send, receive, plan, b, [_SSE_UTF8, *extra])
            else:
                await _respond(send, 200, anthropic_message(body, b, seq, tool), extra)
        else:
            tool = _gemini_tool(body)
            if streaming:
                sse = "alt=sse" in query.split("&")
                plan = gemini_stream(model, b, seq, tool, sse)
                await self._stream(send, receive, plan, b, [_SSE if sse else _JSON])
            else:
                await _respond(send, 200, gemini_generate(model, b, seq, tool), extra)

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
            await _respond(send, 200, _encode(list(self.requests)), [])
        elif path == "/_mock/requests" and method == "DELETE":
            cleared = len(self.requests)
            self.reset()
            await _respond(send, 200, _encode({"cleared": cleared}), [])
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


# ---------------------------------------------------------------------------------------------------
# Running it.


def _uvicorn_config(app: MockUpstreamApp, host: str, port: int, *, quiet_logging: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        # In a host process (tests) leave its logging set-up alone instead of installing uvicorn's.
        log_config=None if quiet_logging else uvicorn.config.LOGGING_CONFIG,
    )


def serve_mock(host: str = "127.0.0.1", port: int = 9100, config: MockConfig | None = None) -> None:
    """Run the mock with uvicorn (uvloop, httptools, no access log) until interrupted."""
    uvicorn.Server(_uvicorn_config(create_mock_app(config), host, port, quiet_logging=False)).run()


class MockServerThread:
    """The mock under uvicorn in a background thread on a free port: `with MockServerThread() as m: m.url`."""

    def __init__(self, config: MockConfig | None = None, host: str = "127.0.0.1") -> None:
        self.app = create_mock_app(config)
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self._server = uvicorn.Server(_uvicorn_config(self.app, host, self.port, quiet_logging=True))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="mock-upstream", daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the mock upstream did not start")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread.is_alive()

    def __enter__(self) -> MockServerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m gateway.mock_upstream --port 9100`: serve the mock until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m gateway.mock_upstream", description=main.__doc__)
    defaults = MockConfig()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens)
    parser.add_argument("--completion-tokens", type=int, default=defaults.completion_tokens)
    parser.add_argument("--chunk-delay-ms", type=float, default=defaults.chunk_delay_ms)
    args = parser.parse_args(argv)
    config = MockConfig(
        latency_ms=args.latency_ms,
        prompt_tokens=args.prompt_tokens,
        completion_tokens=args.completion_tokens,
        chunk_delay_ms=args.chunk_delay_ms,
    )
    print(f"mock upstream on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    serve_mock(args.host, args.port, config)


if __name__ == "__main__":
    main()
