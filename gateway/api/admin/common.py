"""Shared pieces of the admin API: response base types, the domain-error mapping, time ranges, shaping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from gateway.errors import bad_request, encode_error
from pricing.money import format_usd
from storage.errors import Conflict, DomainError, InvalidInput, NotConfigured, NotFound
from storage.views import to_dict

S = TypeVar("S")

# The API's one mapping of domain refusals: (status, error type). The code and param come from the error.
API_ERRORS: dict[type[DomainError], tuple[int, str]] = {
    NotFound: (404, "invalid_request_error"),
    InvalidInput: (400, "invalid_request_error"),
    Conflict: (409, "invalid_request_error"),
    NotConfigured: (503, "server_error"),
    DomainError: (400, "invalid_request_error"),
}


def api_error(exc: DomainError) -> tuple[int, str, str]:
    """(status, type, message) of a domain refusal as the admin API answers it."""
    status, kind = next(API_ERRORS[c] for c in type(exc).__mro__ if c in API_ERRORS)
    message = exc.message[:1].upper() + exc.message[1:]
    if exc.param is not None:
        message = f"'{exc.param}': {message}"
    return status, kind, message if message.endswith(".") else message + "."


def domain_error_handler(_: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    status, kind, message = api_error(exc)
    return Response(
        content=encode_error(message, kind, exc.code, exc.param),
        status_code=status,
        media_type="application/json",
    )


def shape(obj: Any, cls: type[S]) -> S:
    """A domain result as its typed response body (the same JSON the CLI prints for it)."""
    return msgspec.convert(to_dict(obj), cls)


def money(nano: int, name: str = "amount") -> dict[str, Any]:
    """An amount as an exact decimal string of USD and as integer nano-USD (never a float)."""
    return {f"{name}_usd": format_usd(int(nano)), f"{name}_nano": int(nano)}


def aware(value: datetime | None, param: str) -> datetime | None:
    """A query datetime as UTC; a naive one is refused (its time zone would be a guess)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise bad_request(f"'{param}' needs a time zone, e.g. 2026-11-01T00:00:00Z.", param=param)
    return value.astimezone(UTC)


class Struct(msgspec.Struct, kw_only=True):
    """Response bodies: typed, so the OpenAPI schema documents them."""


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: an unknown or mistyped field is a 400 that names it."""
