"""The Litestar application: `create_app(settings)`; the lifespan owns the engine, Redis and HTTP client."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy import text

from config import Settings, load_settings
from gateway.api.admin import admin_router
from gateway.api.apis import api_handlers
from gateway.api.openai import chat_completions_handler, list_models
from gateway.dashboard import dashboard_router
from gateway.errors import GatewayError, encode_error
from gateway.logging_setup import configure_logging
from gateway.outage import backend_unavailable
from gateway.runtime import Runtime, runtime_of
from storage.billing.ledger.factory import ping_redis
from storage.outage import is_outage

log = logging.getLogger("synapgate.app")


def _envelope(
    status: int,
    message: str,
    type: str,
    code: str | None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> Response[bytes]:
    return Response(
        content=encode_error(message, type, code, param),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _gateway_error(_: Request[Any, Any, Any], exc: GatewayError) -> Response[bytes]:
    response = _envelope(exc.status, exc.message, exc.type, exc.code, exc.headers)
    response.content = exc.body()
    return response


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    detail = exc.detail
    param = None
    extra = getattr(exc, "extra", None)
    if isinstance(extra, list) and extra:  # validation errors: name the field
        first = extra[0] if isinstance(extra[0], dict) else {}
        message = str(first.get("message", ""))
        param = _field_named(str(first.get("key") or ""), message)
        detail = f"{detail}: {param or first.get('source', '')}: {message}".strip()
    return _envelope(exc.status_code, detail, kind, None, exc.headers, param)


_BODY_PATH = re.compile(r"`\$\.([^`]+)`")
_MISSING = re.compile(r"(?:required|unknown) field `([^`]+)`")


def _field_named(key: str, message: str) -> str | None:
    """The offending field: a query/path parameter's name, or the body path msgspec puts in its message."""
    if key and key not in ("data", "body"):
        return key
    missing = _MISSING.search(message)
    path = _BODY_PATH.search(message)
    if missing:
        return f"{path.group(1)}.{missing.group(1)}" if path else missing.group(1)
    return path.group(1) if path else None


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if is_outage(exc):  # PostgreSQL or Redis unreachable: 503 + Retry-After, logged once per outage
        runtime = getattr(request.app.state, "runtime", None)
        watch = getattr(runtime, "database_health", None)
        if watch is not None:
            watch.failed(exc)
        outage = backend_unavailable()
        return _envelope(503, outage.message, outage.type, outage.code, outage.headers)
    log.error("unhandled error", exc_info=exc)
    return _envelope(
        HTTP_500_INTERNAL_SERVER_ERROR, "Internal gateway error.", "server_error", "internal_error"
    )


@get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get(
    "/ready",
    responses={
        503: ResponseSpec(
            data_container=dict[str, Any],
            description="The database or Redis is unreachable: `checks` says which",
            generate_examples=False,
        )
    },
)
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Readiness: the database (and Redis, when configured) answer."""
    runtime = runtime_of(request.app)
    checks: dict[str, str] = {}
    try:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if runtime.redis is not None:
        try:
            await ping_redis(runtime.redis)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return Response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """A SynapGate app for `settings` (read from the environment when not given)."""
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.stop()

    return Litestar(
        route_handlers=[
            health,
            ready,
            list_models,
            chat_completions_handler(lambda: runtime.chat, settings.max_body_bytes),
            *api_handlers(lambda: runtime.chat, settings.max_body_bytes),
            admin_router(),
            dashboard_router(),
        ],
        lifespan=[lifespan],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        request_max_body_size=settings.max_body_bytes,
        debug=False,
    )
