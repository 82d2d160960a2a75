"""Admin API: users, workspaces, gateway keys and users' own provider keys (BYOK).

Reads are open to the admin key and to a user's own key for that user's data (anything else is 404);
writes need the admin key. A write aimed at another user's object is answered 404 too, so a user key
cannot probe which ids exist; aimed at the caller's own object it is 403 (admin only). The rules live in
storage/accounts/service.py; these handlers check who is calling and shape the answer.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from gateway.api.admin.common import Body, Struct, shape
from gateway.api.admin.scope import AppRuntime, Caller, Engine, Paging
from pricing.money import format_usd
from storage.accounts import service
from storage.paging import Page

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
    expires_at: datetime | None


class LimitsOut(Struct):
    """A scope's limits and their use now: spend this period, requests and tokens this minute."""

    rpm_limit: int | None
    tpm_limit: int | None
    budget_usd: str | None
    budget_nano: int | None
    budget_period: str | None
    spent_usd: str
    spent_nano: int
    requests: int
    tokens: int
    window_resets_at: datetime
    resets_at: datetime | None


class KeyDetailOut(KeyOut):
    """A key with its limits' current use."""

    limits: LimitsOut | None = None


class ScopeLimitsOut(Struct):
    """A user's or workspace's limits and their current use."""

    id: uuid.UUID
    limits: LimitsOut


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


RateLimit = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
BudgetUsd = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
Period = Literal["day", "week", "month", "total"]


class LimitsIn(Body):
    """Limits to set; a field left out is unchanged, `null` clears it."""

    rpm_limit: RateLimit | msgspec.UnsetType | None = msgspec.UNSET
    tpm_limit: RateLimit | msgspec.UnsetType | None = msgspec.UNSET
    budget_usd: BudgetUsd | msgspec.UnsetType | None = msgspec.UNSET
    budget_period: Period | msgspec.UnsetType | None = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        return {
            f: getattr(self, f)
            for f in self.__struct_fields__
            if getattr(self, f) is not msgspec.UNSET and f in _LIMIT_INPUT
        }


class KeyLimitsIn(LimitsIn):
    expires_at: datetime | msgspec.UnsetType | None = msgspec.UNSET


_LIMIT_INPUT = ("rpm_limit", "tpm_limit", "budget_usd", "budget_period", "expires_at")


class CreateKeyIn(Body):
    user_id: uuid.UUID
    name: Name | None = None
    workspace_id: uuid.UUID | None = None
    allowed_models: list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]] | None = None
    rpm_limit: RateLimit | None = None
    tpm_limit: RateLimit | None = None
    budget_usd: BudgetUsd | None = None
    budget_period: Period | None = None
    expires_at: datetime | None = None

    def limits(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _LIMIT_INPUT if getattr(self, f) is not None}


class SetProviderKeyIn(Body):
    api_key: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


def _page(page: Page[Any], cls: type[Any], item: type[Any]) -> Any:
    return cls(
        data=[shape(x, item) for x in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        has_more=page.has_more,
    )


async def _limits(conn: Any, runtime: Any, kind: str, ident: uuid.UUID) -> LimitsOut:
    use = await service.limit_usage(conn, runtime.ledger, kind, ident)
    return LimitsOut(
        rpm_limit=use.rpm_limit,
        tpm_limit=use.tpm_limit,
        budget_usd=format_usd(use.budget_nano) if use.budget_nano is not None else None,
        budget_nano=use.budget_nano,
        budget_period=use.budget_period,
        spent_usd=format_usd(use.spent_nano),
        spent_nano=use.spent_nano,
        requests=use.requests,
        tokens=use.tokens,
        window_resets_at=use.window_resets_at,
        resets_at=use.resets_at,
    )


async def _key_detail(conn: Any, runtime: Any, key: Any) -> KeyDetailOut:
    out = shape(key, KeyOut)
    fields = {f: getattr(out, f) for f in out.__struct_fields__}
    return KeyDetailOut(**fields, limits=await _limits(conn, runtime, "k", key.id))


# -- users ---------------------------------------------------------------------------------------


# -- workspaces ----------------------------------------------------------------------------------


# -- gateway keys --------------------------------------------------------------------------------


# -- provider keys (BYOK) ------------------------------------------------------------------------


class AccountsController(Controller):
    """Users, workspaces, gateway keys, provider keys. (Guard and dependencies: on the admin router.)"""

    path = "/"
    tags = ("accounts",)

    @post("/users", status_code=201)
    async def create_user_route(
        self, caller: Caller, runtime: AppRuntime, data: JSONBody[CreateUserIn]
    ) -> UserDetailOut:
        """Create a user with their own workspace (they own it) and an empty credit account. Admin only."""
        caller.require_admin()
        created = await service.create_user(
            runtime.engine, runtime.ledger, data.email, name=data.name, workspace_name=data.workspace_name
        )
        async with runtime.engine.connect() as conn:
            return shape(await service.user_detail(conn, created.user_id), UserDetailOut)

    @get("/users")
    async def list_users_route(
        self,
        caller: Caller,
        engine: Engine,
        page: Paging,
        email: FromQuery[str | None] = None,
        status: FromQuery[Literal["active", "disabled"] | None] = None,
    ) -> UserPage:
        """Users, oldest first. A user's own key sees only itself."""
        async with engine.connect() as conn:
            users = await service.list_users(conn, page, only_user=caller.user_id, email=email, status=status)
        return _page(users, UserPage, UserOut)  # type: ignore[no-any-return]

    @get("/users/{user_id:uuid}")
    async def get_user_route(
        self, caller: Caller, engine: Engine, user_id: FromPath[uuid.UUID]
    ) -> UserDetailOut:
        """A user with their workspaces, balance and number of active keys."""
        caller.require_user(user_id)
        async with engine.connect() as conn:
            return shape(await service.user_detail(conn, user_id), UserDetailOut)

    @post("/workspaces", status_code=201)
    async def create_workspace_route(
        self, caller: Caller, engine: Engine, data: JSONBody[CreateWorkspaceIn]
    ) -> WorkspaceOut:
        """Create a workspace, optionally with an owner and members (existing users). Admin only."""
        for user_id in [u for u in [data.owner_user_id, *data.member_user_ids] if u is not None]:
            caller.require_user(user_id)
        caller.require_admin()
        async with engine.begin() as conn:
            workspace = await service.create_workspace(
                conn, data.name, data.owner_user_id, data.member_user_ids
            )
        return shape(workspace, WorkspaceOut)

    @get("/workspaces")
    async def list_workspaces_route(self, caller: Caller, engine: Engine, page: Paging) -> WorkspacePage:
        """Workspaces with their members, oldest first. A user's own key sees the workspaces it belongs to."""
        async with engine.connect() as conn:
            found = await service.list_workspaces(conn, page, member=caller.user_id)
        return _page(found, WorkspacePage, WorkspaceOut)  # type: ignore[no-any-return]

    @post("/keys", status_code=201)
    async def create_key_route(
        self, caller: Caller, engine: Engine, data: JSONBody[CreateKeyIn]
    ) -> KeyCreatedOut:
        """Create a gateway key for a user. The plaintext `key` is in this response only. Admin only."""
        caller.require_user(data.user_id)
        caller.require_admin()
        async with engine.begin() as conn:
            key = await service.create_key(
                conn,
                data.user_id,
                workspace_id=data.workspace_id,
                name=data.name,
                allowed_models=data.allowed_models,
                limits=data.limits(),
            )
        return shape(key, KeyCreatedOut)

    @get("/keys/{key_id:uuid}")
    async def get_key_route(
        self, caller: Caller, runtime: AppRuntime, key_id: FromPath[uuid.UUID]
    ) -> KeyDetailOut:
        """A key (prefix only) with its expiry and each limit's current use. A user's key sees its own."""
        async with runtime.engine.connect() as conn:
            key = await service.get_key(conn, key_id, owner=caller.user_id)
            return await _key_detail(conn, runtime, key)

    @patch("/keys/{key_id:uuid}")
    async def update_key_route(
        self, caller: Caller, runtime: AppRuntime, key_id: FromPath[uuid.UUID], data: JSONBody[KeyLimitsIn]
    ) -> KeyDetailOut:
        """Change a key's limits (`rpm_limit`, `tpm_limit`, `budget_usd`, `budget_period`) and `expires_at`;
        `null` clears one. Every worker applies them within the key cache time. Admin only."""
        async with runtime.engine.begin() as conn:
            await service.get_key(conn, key_id, owner=caller.user_id)
            caller.require_admin()
            key = await service.update_key_limits(conn, key_id, data.changes())
            detail = await _key_detail(conn, runtime, key)
        runtime.auth.forget()
        return detail

    @get("/users/{user_id:uuid}/limits")
    async def get_user_limits_route(
        self, caller: Caller, runtime: AppRuntime, user_id: FromPath[uuid.UUID]
    ) -> ScopeLimitsOut:
        """A user's limits with their current use."""
        caller.require_user(user_id)
        async with runtime.engine.connect() as conn:
            await service.require_user(conn, user_id)
            return ScopeLimitsOut(user_id, await _limits(conn, runtime, "u", user_id))

    @patch("/users/{user_id:uuid}")
    async def update_user_route(
        self, caller: Caller, runtime: AppRuntime, user_id: FromPath[uuid.UUID], data: JSONBody[LimitsIn]
    ) -> ScopeLimitsOut:
        """Change a user's limits (over all their keys); `null` clears one. Admin only."""
        caller.require_user(user_id)
        caller.require_admin()
        async with runtime.engine.begin() as conn:
            await service.update_user_limits(conn, user_id, data.changes())
            out = ScopeLimitsOut(user_id, await _limits(conn, runtime, "u", user_id))
        runtime.auth.forget()
        return out

    @get("/workspaces/{workspace_id:uuid}/limits")
    async def get_workspace_limits_route(
        self, caller: Caller, runtime: AppRuntime, workspace_id: FromPath[uuid.UUID]
    ) -> ScopeLimitsOut:
        """A workspace's limits with their current use; a user's key sees those of its own workspaces."""
        async with runtime.engine.connect() as conn:
            await service.require_workspace(conn, workspace_id, member=caller.user_id)
            return ScopeLimitsOut(workspace_id, await _limits(conn, runtime, "w", workspace_id))

    @patch("/workspaces/{workspace_id:uuid}")
    async def update_workspace_route(
        self, caller: Caller, runtime: AppRuntime, workspace_id: FromPath[uuid.UUID], data: JSONBody[LimitsIn]
    ) -> ScopeLimitsOut:
        """Change a workspace's limits (over every key billing it, across its users). Admin only."""
        async with runtime.engine.begin() as conn:
            await service.require_workspace(conn, workspace_id, member=caller.user_id)
            caller.require_admin()
            await service.update_workspace_limits(conn, workspace_id, data.changes())
            out = ScopeLimitsOut(workspace_id, await _limits(conn, runtime, "w", workspace_id))
        runtime.auth.forget()
        return out

    @get("/keys")
    async def list_keys_route(
        self,
        caller: Caller,
        engine: Engine,
        page: Paging,
        user_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[Literal["active", "revoked"] | None] = None,
    ) -> KeyPage:
        """Gateway keys (prefix only), oldest first, optionally of one user; a user's key sees its own."""
        if user_id is not None:
            caller.require_user(user_id)
        async with engine.connect() as conn:
            found = await service.list_keys(conn, page, user_id=user_id or caller.user_id, status=status)
        return _page(found, KeyPage, KeyOut)  # type: ignore[no-any-return]

    @delete("/keys/{key_id:uuid}")
    async def revoke_key_route(
        self, caller: Caller, runtime: AppRuntime, key_id: FromPath[uuid.UUID]
    ) -> None:
        """Revoke a key (idempotent): refused at once here, by every worker within the key cache time."""
        async with runtime.engine.begin() as conn:
            await service.get_key(conn, key_id, owner=caller.user_id)
            caller.require_admin()
            await service.revoke_key(conn, key_id)
        runtime.auth.forget()

    @get("/users/{user_id:uuid}/provider-keys")
    async def list_provider_keys_route(
        self, caller: Caller, engine: Engine, user_id: FromPath[uuid.UUID]
    ) -> ProviderKeyList:
        """The providers a user stored their own key for, with each key's last four characters."""
        caller.require_user(user_id)
        async with engine.connect() as conn:
            keys = await service.list_provider_keys(conn, user_id)
        return ProviderKeyList(data=[shape(p, ProviderKeyOut) for p in keys])

    @put("/users/{user_id:uuid}/provider-keys/{provider:str}")
    async def set_provider_key_route(
        self,
        caller: Caller,
        runtime: AppRuntime,
        user_id: FromPath[uuid.UUID],
        provider: FromPath[str],
        data: JSONBody[SetProviderKeyIn],
    ) -> ProviderKeyOut:
        """Store (or replace) a user's own provider key, encrypted; the key is never returned. Admin only."""
        caller.require_user(user_id)
        caller.require_admin()
        secret = runtime.settings.secret_key
        async with runtime.engine.begin() as conn:
            stored = await service.set_provider_key(
                conn, secret.get_secret_value() if secret else None, user_id, provider, data.api_key
            )
        runtime.credentials.forget()
        return shape(stored, ProviderKeyOut)

    @delete("/users/{user_id:uuid}/provider-keys/{provider:str}")
    async def delete_provider_key_route(
        self, caller: Caller, runtime: AppRuntime, user_id: FromPath[uuid.UUID], provider: FromPath[str]
    ) -> None:
        """Remove a user's stored key for a provider; their calls go back to the platform key. Admin only."""
        caller.require_user(user_id)
        caller.require_admin()
        async with runtime.engine.begin() as conn:
            await service.delete_provider_key(conn, user_id, provider)
        runtime.credentials.forget()
