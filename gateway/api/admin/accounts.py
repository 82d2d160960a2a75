"""Admin API: users, workspaces, gateway keys and users' own provider keys (BYOK).

Reads are open to the admin key and to a user's own key for that user's data (anything else is 404);
writes need the admin key. A write aimed at another user's object is answered 404 too, so a user key
cannot probe which ids exist; aimed at the caller's own object it is 403 (admin only).

This module also holds the pieces the other admin modules share: the caller guard, the runtime, pages.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from litestar import Request, delete, get, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from config import PROVIDERS
from gateway.api.admin.common import (
    Body,
    Limit,
    Offset,
    Struct,
    conflict,
    money,
    page_limits,
    runtime_of,
    user_not_found,
)
from gateway.api.admin.scope import GUARDS, caller, not_found
from gateway.errors import GatewayError, bad_request
from storage import admin as queries
from storage.accounts.credentials import cipher_for, delete_credential, set_credential
from storage.accounts.keys import create_key
from storage.accounts.users import DuplicateUser, create_user, default_workspace

if TYPE_CHECKING:
    pass

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# -- response shapes -----------------------------------------------------------------------------


class UserOut(Struct):
    id: uuid.UUID
    email: str
    name: str | None
    status: str
    created_at: datetime


class MembershipOut(Struct):
    workspace_id: uuid.UUID
    name: str
    role: str


class UserDetailOut(UserOut):
    workspaces: list[MembershipOut]
    active_keys: int
    balance_usd: str
    balance_nano: int


class UserPage(Struct):
    data: list[UserOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class WorkspaceMemberOut(Struct):
    user_id: uuid.UUID
    role: str


class WorkspaceOut(Struct):
    id: uuid.UUID
    name: str
    created_at: datetime
    members: list[WorkspaceMemberOut]


class WorkspacePage(Struct):
    data: list[WorkspaceOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class KeyOut(Struct):
    """A gateway key as listed: its visible prefix only, never the key or its hash."""

    id: uuid.UUID
    key_prefix: str
    name: str | None
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    status: str
    allowed_models: list[str] | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreatedOut(KeyOut):
    """A new key: `key` is its plaintext, returned this once and stored nowhere."""

    key: str
    note: str = "the key is shown only once; store it now"


class KeyPage(Struct):
    data: list[KeyOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class ProviderKeyOut(Struct):
    """A stored provider key: only its last four characters are ever shown."""

    user_id: uuid.UUID
    provider: str
    key_last4: str
    created_at: datetime
    updated_at: datetime


class ProviderKeyList(Struct):
    data: list[ProviderKeyOut]


def user_out(user: queries.UserInfo) -> UserOut:
    return UserOut(
        id=user.id, email=user.email, name=user.name, status=user.status, created_at=user.created_at
    )


def user_detail_out(detail: queries.UserDetail) -> UserDetailOut:
    u = detail.user
    return UserDetailOut(
        id=u.id,
        email=u.email,
        name=u.name,
        status=u.status,
        created_at=u.created_at,
        workspaces=[
            MembershipOut(workspace_id=m.workspace_id, name=m.name, role=m.role) for m in detail.workspaces
        ],
        active_keys=detail.active_keys,
        **money(detail.balance_nano, "balance"),
    )


def workspace_out(w: queries.WorkspaceInfo) -> WorkspaceOut:
    return WorkspaceOut(
        id=w.id,
        name=w.name,
        created_at=w.created_at,
        members=[WorkspaceMemberOut(user_id=m.user_id, role=m.role) for m in w.members],
    )


def _key_fields(k: queries.KeyInfo) -> dict[str, Any]:
    return {
        "id": k.id,
        "key_prefix": k.key_prefix,
        "name": k.name,
        "user_id": k.user_id,
        "workspace_id": k.workspace_id,
        "status": k.status,
        "allowed_models": k.allowed_models,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    }


def provider_key_out(p: queries.ProviderKeyInfo) -> ProviderKeyOut:
    return ProviderKeyOut(
        user_id=p.user_id,
        provider=p.provider,
        key_last4=p.key_last4,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


# -- request shapes ------------------------------------------------------------------------------

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CreateUserIn(Body):
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    name: Name | None = None
    workspace_name: Name | None = None


class CreateWorkspaceIn(Body):
    name: Name
    owner_user_id: uuid.UUID | None = None
    member_user_ids: list[uuid.UUID] = msgspec.field(default_factory=list)


class CreateKeyIn(Body):
    user_id: uuid.UUID
    name: Name | None = None
    workspace_id: uuid.UUID | None = None
    allowed_models: list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]] | None = None


class SetProviderKeyIn(Body):
    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


# -- users ---------------------------------------------------------------------------------------


@post("/users", guards=GUARDS, status_code=201, tags=["accounts"])
async def create_user_route(request: Request[Any, Any, Any], data: JSONBody[CreateUserIn]) -> UserDetailOut:
    """Create a user with their own workspace (they own it) and an empty credit account. Admin only."""
    caller(request).require_admin()
    email = data.email.strip().lower()
    if not EMAIL.match(email):
        raise bad_request(f"'email' is not an email address: {data.email!r}.", param="email")
    engine = runtime_of(request).engine
    try:
        async with engine.begin() as conn:
            created = await create_user(conn, email, name=data.name, workspace_name=data.workspace_name)
            detail = await queries.user_detail(conn, created.user_id)
    except DuplicateUser:
        raise conflict(f"A user with email {email} exists already.", "user_exists", "email") from None
    assert detail is not None
    return user_detail_out(detail)


@get("/users", guards=GUARDS, tags=["accounts"])
async def list_users_route(
    request: Request[Any, Any, Any],
    limit: Limit = 100,
    offset: Offset = 0,
    email: FromQuery[str | None] = None,
    status: FromQuery[Literal["active", "disabled"] | None] = None,
) -> UserPage:
    """Users, oldest first. A user's own key sees only itself."""
    scope = caller(request)
    limit, offset = page_limits(limit, offset)
    async with runtime_of(request).engine.connect() as conn:
        page = await queries.list_users(
            conn, only_user=scope.user_id, email=email, status=status, limit=limit, offset=offset
        )
    return UserPage(
        data=[user_out(u) for u in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        has_more=offset + len(page.items) < page.total,
    )


@get("/users/{user_id:uuid}", guards=GUARDS, tags=["accounts"])
async def get_user_route(request: Request[Any, Any, Any], user_id: FromPath[uuid.UUID]) -> UserDetailOut:
    """A user with their workspaces, balance and number of active keys."""
    caller(request).require_user(user_id)
    async with runtime_of(request).engine.connect() as conn:
        detail = await queries.user_detail(conn, user_id)
    if detail is None:
        raise not_found("user")
    return user_detail_out(detail)


# -- workspaces ----------------------------------------------------------------------------------


@post("/workspaces", guards=GUARDS, status_code=201, tags=["accounts"])
async def create_workspace_route(
    request: Request[Any, Any, Any], data: JSONBody[CreateWorkspaceIn]
) -> WorkspaceOut:
    """Create a workspace, optionally with an owner and members (existing users). Admin only."""
    scope = caller(request)
    roles: dict[uuid.UUID, str] = {}
    if data.owner_user_id is not None:
        roles[data.owner_user_id] = "owner"
    for member in data.member_user_ids:
        roles.setdefault(member, "member")
    for user_id in roles:
        scope.require_user(user_id)
    scope.require_admin()
    try:
        async with runtime_of(request).engine.begin() as conn:
            workspace = await queries.create_workspace(conn, data.name, list(roles.items()))
    except queries.UnknownUser as exc:
        param = "owner_user_id" if exc.user_id == data.owner_user_id else "member_user_ids"
        raise GatewayError(404, f"No such user: {exc.user_id}.", code="user_not_found", param=param) from None
    return workspace_out(workspace)


@get("/workspaces", guards=GUARDS, tags=["accounts"])
async def list_workspaces_route(
    request: Request[Any, Any, Any], limit: Limit = 100, offset: Offset = 0
) -> WorkspacePage:
    """Workspaces with their members, oldest first. A user's own key sees the workspaces it belongs to."""
    scope = caller(request)
    limit, offset = page_limits(limit, offset)
    async with runtime_of(request).engine.connect() as conn:
        page = await queries.list_workspaces(conn, member=scope.user_id, limit=limit, offset=offset)
    return WorkspacePage(
        data=[workspace_out(w) for w in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        has_more=offset + len(page.items) < page.total,
    )


# -- gateway keys --------------------------------------------------------------------------------


@post("/keys", guards=GUARDS, status_code=201, tags=["accounts"])
async def create_key_route(request: Request[Any, Any, Any], data: JSONBody[CreateKeyIn]) -> KeyCreatedOut:
    """Create a gateway key for a user. The plaintext `key` is in this response only. Admin only."""
    scope = caller(request)
    scope.require_user(data.user_id)
    scope.require_admin()
    async with runtime_of(request).engine.begin() as conn:
        if await queries.get_user(conn, data.user_id) is None:
            raise user_not_found("user_id")
        if data.allowed_models is not None:
            if not data.allowed_models:
                raise bad_request(
                    "'allowed_models' is empty: omit it to allow every model.", param="allowed_models"
                )
            unknown = await queries.unknown_models(conn, data.allowed_models)
            if unknown:
                raise bad_request(
                    f"'allowed_models' names models not in the catalog: {', '.join(unknown)}.",
                    param="allowed_models",
                )
        if data.workspace_id is None:
            workspace_id = await default_workspace(conn, data.user_id)
        elif await queries.is_member(conn, data.user_id, data.workspace_id):
            workspace_id = data.workspace_id
        else:
            raise bad_request("The user is not a member of 'workspace_id'.", param="workspace_id")
        models = list(dict.fromkeys(data.allowed_models)) if data.allowed_models else None
        key_id, plaintext = await create_key(
            conn, data.user_id, workspace_id=workspace_id, name=data.name, allowed_models=models
        )
        key = await queries.get_key(conn, key_id)
    assert key is not None
    return KeyCreatedOut(**_key_fields(key), key=plaintext)


@get("/keys", guards=GUARDS, tags=["accounts"])
async def list_keys_route(
    request: Request[Any, Any, Any],
    user_id: FromQuery[uuid.UUID | None] = None,
    status: FromQuery[Literal["active", "revoked"] | None] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> KeyPage:
    """Gateway keys (prefix only), oldest first, optionally of one user. A user's own key sees its user's."""
    scope = caller(request)
    if user_id is not None:
        scope.require_user(user_id)
    limit, offset = page_limits(limit, offset)
    async with runtime_of(request).engine.connect() as conn:
        page = await queries.list_keys(
            conn, user_id=user_id or scope.user_id, status=status, limit=limit, offset=offset
        )
    return KeyPage(
        data=[KeyOut(**_key_fields(k)) for k in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        has_more=offset + len(page.items) < page.total,
    )


@delete("/keys/{key_id:uuid}", guards=GUARDS, tags=["accounts"])
async def revoke_key_route(request: Request[Any, Any, Any], key_id: FromPath[uuid.UUID]) -> None:
    """Revoke a key (idempotent). This worker refuses it at once, every worker within the key cache time."""
    from storage.accounts.keys import revoke_key

    scope = caller(request)
    runtime = runtime_of(request)
    async with runtime.engine.begin() as conn:
        key = await queries.get_key(conn, key_id)
        if key is None or (not scope.is_admin and key.user_id != scope.user_id):
            raise not_found("key")
        scope.require_admin()
        await revoke_key(conn, key_id)
    runtime.chat.auth.forget()


# -- provider keys (BYOK) ------------------------------------------------------------------------


def _provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise bad_request(
            f"'provider' must be one of {', '.join(PROVIDERS)}, not {provider!r}.", param="provider"
        )
    return provider


@get("/users/{user_id:uuid}/provider-keys", guards=GUARDS, tags=["accounts"])
async def list_provider_keys_route(
    request: Request[Any, Any, Any], user_id: FromPath[uuid.UUID]
) -> ProviderKeyList:
    """The providers a user stored their own key for, with each key's last four characters."""
    caller(request).require_user(user_id)
    async with runtime_of(request).engine.connect() as conn:
        if await queries.get_user(conn, user_id) is None:
            raise not_found("user")
        keys = await queries.list_provider_keys(conn, user_id)
    return ProviderKeyList(data=[provider_key_out(p) for p in keys])


@put("/users/{user_id:uuid}/provider-keys/{provider:str}", guards=GUARDS, tags=["accounts"])
async def set_provider_key_route(
    request: Request[Any, Any, Any],
    user_id: FromPath[uuid.UUID],
    provider: FromPath[str],
    data: JSONBody[SetProviderKeyIn],
) -> ProviderKeyOut:
    """Store (or replace) a user's own provider key, encrypted; the key is never returned. Admin only."""
    scope = caller(request)
    scope.require_user(user_id)
    scope.require_admin()
    provider = _provider(provider)
    runtime = runtime_of(request)
    secret = runtime.settings.secret_key
    if secret is None:
        raise GatewayError(
            503,
            "SYNAPGATE_SECRET_KEY is not set: it is needed to encrypt stored provider keys.",
            type="server_error",
            code="secret_key_not_configured",
        )
    api_key = data.api_key.strip()
    if not api_key or any(c.isspace() for c in api_key):
        raise bad_request("'api_key' must be the key alone, without spaces.", param="api_key")
    async with runtime.engine.begin() as conn:
        if await queries.get_user(conn, user_id) is None:
            raise not_found("user")
        await set_credential(conn, cipher_for(secret.get_secret_value()), user_id, provider, api_key)
        stored = await queries.get_provider_key(conn, user_id, provider)
    runtime.chat.credentials.forget()
    assert stored is not None
    return provider_key_out(stored)


@delete("/users/{user_id:uuid}/provider-keys/{provider:str}", guards=GUARDS, tags=["accounts"])
async def delete_provider_key_route(
    request: Request[Any, Any, Any], user_id: FromPath[uuid.UUID], provider: FromPath[str]
) -> None:
    """Remove a user's stored key for a provider; their calls go back to the platform key. Admin only."""
    scope = caller(request)
    scope.require_user(user_id)
    scope.require_admin()
    provider = _provider(provider)
    runtime = runtime_of(request)
    async with runtime.engine.begin() as conn:
        if not await delete_credential(conn, user_id, provider):
            raise GatewayError(404, f"No stored {provider} key for this user.", code="provider_key_not_found")
    runtime.chat.credentials.forget()


ROUTES: list[Any] = [
    create_user_route,
    list_users_route,
    get_user_route,
    create_workspace_route,
    list_workspaces_route,
    create_key_route,
    list_keys_route,
    revoke_key_route,
    list_provider_keys_route,
    set_provider_key_route,
    delete_provider_key_route,
]
