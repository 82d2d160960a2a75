"""The admin, billing and analytics REST API under /api/v1 (JSON in and out, OpenAI-style error envelope).

Each module exports `ROUTES`, its Litestar route handlers; `admin_router()` mounts them all with the
`scope` dependency (who is calling: the operator or one user).
"""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide

from gateway.api.admin import accounts, analytics, billing, catalog, conversations
from gateway.api.admin.scope import provide_scope


def admin_router() -> Router:
    # "scope" is a reserved Litestar kwarg (the ASGI scope), so the dependency is named "caller".
    handlers = [*accounts.ROUTES, *billing.ROUTES, *catalog.ROUTES, *analytics.ROUTES, *conversations.ROUTES]
    return Router(path="/api/v1", route_handlers=handlers, dependencies={"caller": Provide(provide_scope)})
