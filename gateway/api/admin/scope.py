"""Who is calling the admin API: the operator (SYNAPGATE_ADMIN_KEY) or a user (their own gateway key).

The admin key may do everything. A user key may read only that user's own data; anything else is
answered 404, exactly as if it did not exist, so ids of other users' objects cannot be probed.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from gateway.auth import bearer_token
from gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Scope:
    """The caller of an admin endpoint: `user_id` None means the operator."""

    user_id: uuid.UUID | None
    workspace_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.user_id is None

    def require_admin(self) -> None:
        if not self.is_admin:
            raise GatewayError(
                403, "This operation needs the admin key.", type="permission_error", code="admin_only"
            )

    def require_user(self, user_id: uuid.UUID) -> None:
        """Pass for the operator and for the user themself; 404 for anyone else's data."""
        if not self.is_admin and self.user_id != user_id:
            raise not_found("user")


def not_found(what: str) -> GatewayError:
    return GatewayError(404, f"No such {what}.", code=f"{what}_not_found")


async def resolve_scope(connection: ASGIConnection[Any, Any, Any, Any]) -> Scope:
    """The caller's scope from its bearer key (401 when it is neither the admin key nor a live user key)."""
    runtime = connection.app.state.runtime
    token = bearer_token(connection.headers.get("authorization"))
    admin_key = runtime.settings.admin_key
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.get_secret_value().encode()):
        return Scope(user_id=None)
    principal = await runtime.chat.auth.authenticate(f"Bearer {token}")
    return Scope(user_id=principal.user_id, workspace_id=principal.workspace_id)


_SCOPE_STATE = "synapgate_admin_scope"


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: resolve the caller (admin key or a user's key) before the body is parsed; 401 if neither."""
    scope = await resolve_scope(connection)
    connection.state[_SCOPE_STATE] = scope
    # Another user's id in the path is a 404 before anything else (even a bad body) is looked at.
    path_user = connection.path_params.get("user_id")
    if path_user is not None and not scope.is_admin and str(path_user) != str(scope.user_id):
        raise not_found("user")


GUARDS = [authenticated]


def caller(request: Request[Any, Any, Any]) -> Scope:
    """The Scope the guard resolved for this request."""
    scope: Scope = request.state[_SCOPE_STATE]
    return scope
