"""Small pieces every adapter needs to read a provider's answer: token counts, Retry-After, JSON objects."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.providers.base import JSONObject, ProviderError


def token_count(value: Any) -> int:
    """A token count; a missing or null field (providers send `null` details) counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def seconds(value: str) -> float | None:
    """A non-negative finite number of seconds, or None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` (OpenAI's finer hint) or `retry-after` in seconds.

    An HTTP-date `retry-after` is not used: turning it into seconds needs the clock, and adapters are pure.
    """
    found: float | None = None
    for key, value in headers.items():
        lower = key.lower()
        if lower == "retry-after-ms":
            ms = seconds(value)
            if ms is not None:
                return ms / 1000
        elif lower == "retry-after":
            found = seconds(value)
    return found


def bad_response(message: str) -> ProviderError:
    """The provider's answer cannot be read: a 502 for the client."""
    return ProviderError(502, message, type="upstream_error", code="bad_upstream_response")


def decode_object(raw: bytes, message: str) -> JSONObject:
    """A JSON object from the provider, or bad_response(message)."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise bad_response(message) from None
    if not isinstance(obj, dict):
        raise bad_response(message)
    return obj
