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


# --- request fields an adapter cannot honour --------------------------------------------------------

# Fields every adapter acts on itself (the gateway reads them, or the adapter rebuilds them).
COMMON_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens"}
)

# A field set to its "off" value asks for nothing an adapter must do: accepting it is honouring it.
_NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "store": (False,),
    "parallel_tool_calls": (True,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
}


def _is_neutral(name: str, value: Any) -> bool:
    if value is None:
        return True
    # bool is an int in Python: `n: true` is not `n: 1`, nor `logprobs: 0` `logprobs: false`.
    neutral = _NEUTRAL_VALUES.get(name, ())
    return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in neutral)


def unhonoured_field(body: Mapping[str, Any], handled: frozenset[str]) -> str | None:
    """The first field of a client body the adapter would not honour (neither passes nor translates).

    A field that is null or set to its neutral value (`n: 1`, `logprobs: false`, ...) asks for nothing and
    is accepted. Used by adapters that build their provider's body themselves (Anthropic, Gemini): anything
    they would otherwise drop is refused, so translation is never silent.
    """
    for name, value in body.items():
        if name in COMMON_FIELDS or name in handled or _is_neutral(name, value):
            continue
        return name
    return None


def refuse_unhonoured(body: Mapping[str, Any], handled: frozenset[str], provider: str) -> None:
    """Raise a 400 naming the first field `provider`'s adapter cannot honour (see `unhonoured_field`)."""
    name = unhonoured_field(body, handled)
    if name is not None:
        raise ProviderError(
            400,
            f"'{name}' is not supported for {provider} models: SynapGate can neither pass it to {provider} "
            "nor translate it; remove it or use a model of another provider",
            type="invalid_request_error",
            code="unsupported_parameter",
            param=name,
        )


# OpenAI `reasoning_effort` as a thinking budget in tokens, as Google's own OpenAI compatibility layer maps it
# for Gemini (low 1,024, medium 8,192, high 24,576); Claude's extended thinking takes the same budgets.
REASONING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}


def reasoning_budget(effort: Any) -> int:
    """The thinking budget for an OpenAI `reasoning_effort` ("none": 0); a 400 for any other value."""
    if effort == "none":
        return 0
    if not isinstance(effort, str) or effort not in REASONING_BUDGETS:
        raise ProviderError(
            400,
            f"reasoning_effort must be one of none, {', '.join(REASONING_BUDGETS)}",
            type="invalid_request_error",
            param="reasoning_effort",
        )
    return REASONING_BUDGETS[effort]
