"""What every wire format of the mock shares: ASGI types, the recorded request, a stream plan, JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Dialect = Literal["openai", "anthropic", "gemini"]

encode = msgspec.json.encode
decode = msgspec.json.decode

JSON_CONTENT = (b"content-type", b"application/json")
SSE_UTF8 = (b"content-type", b"text/event-stream; charset=utf-8")
SSE_CONTENT = (b"content-type", b"text/event-stream")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One API request as the mock received it (header names lowercase; body None if not JSON)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class StreamPlan:
    """A stream as events: `content` chunks are what `cut_after` counts; `tail` is lost on a cut."""

    head: list[bytes] = field(default_factory=list)
    content: list[bytes] = field(default_factory=list)
    tail: list[bytes] = field(default_factory=list)


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the `text` of its parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""
