"""Shared pieces of the admin API: response base types, the domain-error mapping, time ranges, shaping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from litestar import Controller, Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

from gateway.api.json_body import decode_object
from gateway.errors import bad_request, encode_error
from pricing.money import format_usd
from storage.errors import Conflict, DomainError, InvalidInput, NotConfigured, NotFound, Unavailable
from storage.views import to_dict

S = TypeVar("S")

# The API's one mapping of domain refusals: (status, error type). The code and param come from the error.
API_ERRORS: dict[type[DomainError], tuple[int, str]] = {
    NotFound: (404, "invalid_request_error"),
    InvalidInput: (400, "invalid_request_error"),
    Conflict: (409, "invalid_request_error"),
    NotConfigured: (503, "server_error"),
    Unavailable: (503, "server_error"),
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


async def refuse_hostile_body(request: Request[Any, Any, Any]) -> None:
    """`before_request` of the admin router: a JSON body is checked by `decode_object` before Litestar decodes
    it, so invalid UTF-8, deep nesting, a non-object or an integer beyond 64 bits is a 400 in the envelope
    (not a RecursionError or an int64 overflow deep in the database driver)."""
    if request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()  # cached on the request: the handler's decoding reads it again
        if body.strip():
            decode_object(body)


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


class ErrorDetail(Struct):
    """What went wrong: a sentence, the error type, the offending field (or null) and a stable code."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(Struct):
    """Every error the API answers: OpenAI's envelope, `{"error": {message, type, param, code}}`."""

    error: ErrorDetail


_ERROR_STATUSES: dict[int, str] = {
    400: "Bad input: a malformed or hostile body, or a field or parameter out of range (`param` names it)",
    401: "No key, or neither the admin key nor a live gateway key",
    403: "The caller's key may not do this (an operation for the admin key)",
    404: "No such object, or one that belongs to another user (answered exactly alike)",
    409: "Conflicts with the current state (a duplicate, an overlapping invoice period, a reused key)",
    413: "The request body is larger than the gateway accepts",
    503: "A dependency is not configured or not reachable; retry later",
}
_WRITE_ONLY = frozenset({409, 413})


def error_responses(methods: frozenset[str] | set[str]) -> dict[int, ResponseSpec]:
    """The documented error answers of a route with these HTTP methods, each in the error envelope."""
    writes = bool(set(methods) & {"POST", "PUT", "PATCH", "DELETE"})
    return {
        status: ResponseSpec(data_container=ErrorEnvelope, description=text, generate_examples=False)
        for status, text in _ERROR_STATUSES.items()
        if writes or status not in _WRITE_ONLY
    }


def document_errors(*controllers: type[Controller]) -> None:
    """Declare on every handler of these controllers the error statuses it may answer, in the envelope,
    replacing Litestar's default 400 schema (`{status_code, detail}`), which the API never sends."""
    for controller in controllers:
        for handler in vars(controller).values():
            if isinstance(handler, HTTPRouteHandler):
                documented = error_responses(set(handler.http_methods))
                handler.responses = {**documented, **(handler.responses or {})}
