"""Shared pieces of the admin API: money in responses, pagination, time ranges."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Request
from litestar.params import QueryParameter

from gateway.errors import GatewayError, bad_request
from pricing.money import format_usd

if TYPE_CHECKING:
    from gateway.app import Runtime

MAX_PAGE = 1000


def money(nano: int, name: str = "amount") -> dict[str, Any]:
    """An amount as an exact decimal string of USD and as integer nano-USD (never a float)."""
    return {f"{name}_usd": format_usd(int(nano)), f"{name}_nano": int(nano)}


def page_limits(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_PAGE:
        raise bad_request(f"'limit' must be between 1 and {MAX_PAGE}.", param="limit")
    if offset < 0:
        raise bad_request("'offset' must be 0 or more.", param="offset")
    return limit, offset


def aware(value: datetime | None, param: str) -> datetime | None:
    """A query datetime as UTC; a naive one is refused (its time zone would be a guess)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise bad_request(f"'{param}' needs a time zone, e.g. 2026-11-01T00:00:00Z.", param=param)
    return value.astimezone(UTC)


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def conflict(message: str, code: str, param: str | None = None) -> GatewayError:
    return GatewayError(409, message, code=code, param=param)


def user_not_found(param: str | None = None) -> GatewayError:
    return GatewayError(404, "No such user.", code="user_not_found", param=param)


Limit = Annotated[int, QueryParameter(description="page size, 1 to 1000")]
Offset = Annotated[int, QueryParameter(description="rows to skip (the order is stable)")]


class Struct(msgspec.Struct, kw_only=True):
    """Response bodies: typed, so the OpenAPI schema documents them."""


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Request bodies: an unknown or mistyped field is a 400 that names it."""
