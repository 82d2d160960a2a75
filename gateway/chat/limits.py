"""Limits at the edge: what a request asks of its key's, user's and workspace's limits, and how refusals and
the key's window are told to the client (OpenAI's 429 shapes and `x-ratelimit-*` headers).

The check and the hold are the ledger's (storage/billing/ledger), in the same atomic step as credit.
"""

from __future__ import annotations

import math

from gateway.errors import GatewayError
from pricing.money import format_usd
from storage.accounts.keys import KeyPrincipal
from storage.billing.ledger.base import Reservation
from storage.billing.ledger.limits import LimitExceeded, LimitRequest, RateStatus
from storage.types import utcnow


def check_key_expiry(principal: KeyPrincipal) -> None:
    """An expired key is refused like an unknown one: 401."""
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise GatewayError(401, "This API key has expired.", code="invalid_api_key")


def limit_request(principal: KeyPrincipal, worst_tokens: int) -> LimitRequest | None:
    """What the request asks of its scopes' limits (None when no scope is limited)."""
    scopes = principal.limit_scopes()
    return LimitRequest(scopes, worst_tokens) if scopes else None


def ratelimit_headers(status: RateStatus | None) -> dict[str, str]:
    """OpenAI's six `x-ratelimit-*` headers for the key's window (empty without a key rate limit)."""
    if status is None:
        return {}
    reset = f"{max(status.reset_seconds, 0.0):.3f}".rstrip("0").rstrip(".") + "s"
    headers: dict[str, str] = {}
    if status.limit_requests is not None:
        headers["x-ratelimit-limit-requests"] = str(status.limit_requests)
        headers["x-ratelimit-remaining-requests"] = str(status.remaining_requests)
        headers["x-ratelimit-reset-requests"] = reset
    if status.limit_tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(status.limit_tokens)
        headers["x-ratelimit-remaining-tokens"] = str(status.remaining_tokens)
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def call_ratelimit_headers(reservation: Reservation | None) -> dict[str, str]:
    """The headers of an admitted call's reservation (what service.py adds to every answer)."""
    hold = reservation.limits if reservation is not None else None
    return ratelimit_headers(hold.status if hold is not None else None)


_SCOPE_NAMES = {"k": "API key", "u": "user", "w": "workspace"}


def limit_error(exc: LimitExceeded) -> GatewayError:
    """The 429 of a refused limit: retry after the window; a budget not before its period resets."""
    what = _SCOPE_NAMES.get(exc.scope[:1], "scope")
    headers = ratelimit_headers(exc.status)
    if exc.kind == "budget":
        headers["x-should-retry"] = "false"
        if exc.retry_after is not None:
            headers["retry-after"] = str(exc.retry_after)
        return GatewayError(
            429,
            f"The {what}'s budget of ${format_usd(exc.limit)} for this period is exhausted.",
            type="insufficient_quota",
            code="budget_exceeded",
            headers=headers,
        )
    headers["retry-after"] = str(math.ceil(exc.retry_after or 1))
    unit = "requests" if exc.kind == "requests" else "tokens"
    return GatewayError(
        429,
        f"Rate limit reached for the {what}: {exc.limit} {unit} per minute. Retry after the window resets.",
        type=unit,
        code="rate_limit_exceeded",
        headers=headers,
    )
