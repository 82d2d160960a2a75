"""Parsing a chat-completions body: the fields the gateway acts on, validated, the rest passed through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.api.json_body import decode_object
from gateway.errors import bad_request
from gateway.providers.base import ChatRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_CHOICES = 128


def _positive_int(data: Mapping[str, Any], name: str, upper: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper and value > upper):
        bound = f" and at most {upper}" if upper else ""
        raise bad_request(f"'{name}' must be an integer of at least 1{bound}.", param=name)
    return value


def parse_chat_request(body: bytes) -> ChatRequest:
    """Validate a chat-completions body; bad input raises a 400 that names the offending field."""
    data = decode_object(body)  # hostile bodies (deep, not UTF-8, not an object, huge ints) are 400s
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}] must be an object.", param=f"messages[{index}]")
        if message.get("role") not in ROLES:
            raise bad_request(
                f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{index}].role",
            )
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options")
    include_usage = bool(options.get("include_usage")) if options else False
    max_out = _positive_int(data, "max_completion_tokens") or _positive_int(data, "max_tokens")
    _positive_int(data, "n", MAX_CHOICES)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        include_usage=include_usage,
        max_output_tokens=max_out,
        body=data,
    )
