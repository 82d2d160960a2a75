"""The admin, billing and analytics REST API under /api/v1 (JSON in and out, OpenAI-style error envelope).

Each module exports `ROUTES`, its Litestar route handlers; `admin_router()` mounts them all. Every handler
is guarded by `scope.authenticated`, which resolves who is calling (the operator or one user).
"""

from __future__ import annotations

from litestar import Router

from gateway.api.admin import accounts, analytics, billing, catalog, conversations


def admin_router() -> Router:
    handlers = [*accounts.ROUTES, *billing.ROUTES, *catalog.ROUTES, *analytics.ROUTES, *conversations.ROUTES]
    return Router(path="/api/v1", route_handlers=handlers)
