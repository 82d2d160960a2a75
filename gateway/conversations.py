"""Which conversation a request belongs to."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

_NAMESPACE = uuid.UUID("6f1c5d0e-3b9a-4f57-9a55-5e1d2b7c9a01")


def _opening(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat's identity: every message up to and including the first user turn (system prompts
    included). It stays the same as the chat grows, turn after turn."""
    for index, message in enumerate(messages):
        if message.get("role") == "user":
            return messages[: index + 1]
    return messages[:1]


def conversation_id_for(
    header_value: str | None, user_id: uuid.UUID, api_key_id: uuid.UUID, messages: list[dict[str, Any]]
) -> uuid.UUID:
    """The X-Conversation-Id header (a UUID, or any string mapped into the user's space), else a
    deterministic id from the key and the opening messages, so successive turns of one chat share it."""
    if header_value:
        try:
            return uuid.UUID(header_value)
        except ValueError:
            return uuid.uuid5(_NAMESPACE, f"{user_id}:{header_value}")
    digest = hashlib.sha256(str(api_key_id).encode())
    for message in _opening(messages):
        digest.update(b"\x00" + str(message.get("role")).encode() + b"\x01")
        digest.update(repr(message.get("content")).encode())
    return uuid.uuid5(_NAMESPACE, digest.hexdigest())
