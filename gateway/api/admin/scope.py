"""Who is calling the admin API, and the dependencies every admin handler is given.

The admin key (SYNAPGATE_ADMIN_KEY) may do everything. A user key may read only that user's own data;
anything else is answered 404, exactly as if it did not exist, so ids of other users' objects cannot be
probed. The guard and the providers below are declared once, on the admin router.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.params import QueryParameter
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import bearer_token
from gateway.errors import GatewayError
from gateway.runtime import Runtime
from storage.paging import MAX_LIMIT, MAX_OFFSET, PageRequest


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


# What handlers declare to be given, by name, from DEPENDENCIES.
Caller = NamedDependency[Scope]
AppRuntime = NamedDependency[Runtime]
Engine = NamedDependency[AsyncEngine]
Paging = NamedDependency[PageRequest]


def not_found(what: str) -> GatewayError:
    return GatewayError(404, f"No such {what}.", code=f"{what}_not_found")


async def resolve_scope(connection: ASGIConnection[Any, Any, Any, Any]) -> Scope:
    """The caller's scope from its bearer key (401 when it is neither the admin key nor a live user key)."""
    runtime: Runtime = connection.app.state.runtime
    token = bearer_token(connection.headers.get("authorization"))
    admin_key = runtime.settings.admin_key
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.get_secret_value().encode()):
        return Scope(user_id=None)
    principal = await runtime.auth.authenticate(f"Bearer {token}")
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


def provide_scope(request: Request[Any, Any, Any]) -> Scope:
    """The Scope the guard resolved for this request."""
    scope: Scope = request.state[_SCOPE_STATE]
    return scope


def provide_runtime(state: State) -> Runtime:
    runtime: Runtime = state.runtime
    return runtime


def provide_engine(runtime: AppRuntime) -> AsyncEngine:
    return runtime.engine


def provide_page(
    limit: Annotated[int, QueryParameter(description=f"page size, 1 to {MAX_LIMIT}")] = 100,
    offset: Annotated[
        int, QueryParameter(description=f"rows to skip, 0 to {MAX_OFFSET} (the order is stable)")
    ] = 0,
) -> PageRequest:
    """The page of a list; out of bounds is a 400 naming `limit` or `offset` (InvalidPage)."""
    return PageRequest(limit, offset)


GUARDS = [authenticated]
DEPENDENCIES = {
    "caller": Provide(provide_scope, sync_to_thread=False),
    "runtime": Provide(provide_runtime, sync_to_thread=False),
    "engine": Provide(provide_engine, sync_to_thread=False),
    "page": Provide(provide_page, sync_to_thread=False),
}
