"""The OpenAI chat-completions wire format of the mock: tool choice, errors, usage, answers, streams."""

from __future__ import annotations

import time
from typing import Any

from devtools.mock_upstream.common import StreamPlan, encode
from devtools.mock_upstream.directives import (
    TOOL_ARGUMENT_FRAGMENTS,
    TOOL_ARGUMENTS,
    Behaviour,
    answer_pieces,
    answer_text,
)
from devtools.mock_upstream.json_mode import halves, openai_json_text


def openai_tool(body: dict[str, Any]) -> str | None:
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


OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Request not allowed."),
    404: ("invalid_request_error", "unknown_url", "Unknown request URL."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 0s."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", "overloaded", "The server is overloaded, please try again later."),
}


def openai_error(status: int, message: str | None = None) -> bytes:
    """OpenAI's error envelope for `status`."""
    kind, code, default = OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"mock error {status}")
    )
    return encode({"error": {"message": message or default, "type": kind, "param": None, "code": code}})


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


def openai_completion(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> bytes:
    """A non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    if tool is None:
        message["content"] = openai_json_text(body) or answer_text(b)
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
    return encode(result)


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
        return b"data: " + encode(event) + b"\n\n"

    plan = StreamPlan()
    if tool is None:
        plan.head.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        json_text = openai_json_text(body)
        pieces = halves(json_text) if json_text else answer_pieces(b)
        plan.content.extend(chunk({"content": piece}) for piece in pieces)
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
        plan.tail.append(b"data: " + encode({**base, "choices": [], "usage": _openai_usage(b)}) + b"\n\n")
    plan.tail.append(b"data: [DONE]\n\n")
    return plan
