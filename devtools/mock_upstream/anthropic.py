"""The Anthropic Messages wire format of the mock: tool choice, errors, usage, answers, event streams."""

from __future__ import annotations

from typing import Any

from devtools.mock_upstream.common import StreamPlan, encode
from devtools.mock_upstream.directives import TOOL_ARGUMENT_FRAGMENTS, Behaviour, answer_pieces, answer_text
from devtools.mock_upstream.json_mode import PLAIN_OBJECT, forced_anthropic_input, halves


def anthropic_tool(body: dict[str, Any]) -> str | None:
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


ANTHROPIC_ERRORS: dict[int, str] = {
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


def anthropic_error(status: int, message: str | None = None) -> bytes:
    """Anthropic's error envelope for `status`."""
    kind = ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    text = message or {"overloaded_error": "Overloaded", "rate_limit_error": "Rate limited"}.get(
        kind, f"mock error {status}"
    )
    return encode({"type": "error", "error": {"type": kind, "message": text}})


def _anthropic_usage(b: Behaviour, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": b.prompt_tokens,
        "cache_creation_input_tokens": b.cache_write_tokens,
        "cache_read_input_tokens": b.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": b.cache_write_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def anthropic_message(body: dict[str, Any], b: Behaviour, seq: int, tool: str | None) -> bytes:
    """A non-streaming Messages API `message` object."""
    if tool is None:
        content: list[dict[str, Any]] = [{"type": "text", "text": answer_text(b)}]
    else:
        tool_input = forced_anthropic_input(body, tool)
        content = [{"type": "tool_use", "id": f"toolu_mock_{seq}", "name": tool, "input": tool_input}]
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
    return encode(result)


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + encode(data) + b"\n\n"


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
        deltas = [{"type": "text_delta", "text": piece} for piece in answer_pieces(b)]
    else:
        block = {"type": "tool_use", "id": f"toolu_mock_{seq}", "name": tool, "input": {}}
        tool_input = forced_anthropic_input(body, tool)
        forced = tool_input is not PLAIN_OBJECT
        fragments = halves(encode(tool_input).decode()) if forced else TOOL_ARGUMENT_FRAGMENTS
        deltas = [{"type": "input_json_delta", "partial_json": part} for part in fragments]
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
