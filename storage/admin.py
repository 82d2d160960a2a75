"""Read and write queries of the admin API and the CLI: users, workspaces, keys, provider keys, ledger events.

SQLAlchemy Core throughout. Every list is ordered by a unique key last, so limit/offset pages are stable:
a row never shows up on two pages and none is skipped while the data does not change.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.models import (
    ApiKey,
    BillingEvent,
    CreditAccount,
    Llm,
    LlmPriceVersion,
    ProviderCredential,
    User,
    Workspace,
    WorkspaceMember,
    table_of,
)
from storage.types import utcnow

users = table_of(User)
workspaces = table_of(Workspace)
members = table_of(WorkspaceMember)
api_keys = table_of(ApiKey)
credentials = table_of(ProviderCredential)
events = table_of(BillingEvent)
accounts = table_of(CreditAccount)
llms = table_of(Llm)
versions = table_of(LlmPriceVersion)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the number of rows of the whole list."""

    items: list[T]
    total: int


class UnknownUser(Exception):
    """No user has that id."""

    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(str(user_id))
        self.user_id = user_id


async def _page(conn: AsyncConnection, query: Select[Any], limit: int, offset: int) -> tuple[list[Any], int]:
    total = (await conn.execute(select(func.count()).select_from(query.order_by(None).subquery()))).scalar()
    rows = (await conn.execute(query.limit(limit).offset(offset))).all()
    return list(rows), int(total or 0)


# -- users -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: uuid.UUID
    email: str
    name: str | None
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Membership:
    """A workspace a user belongs to, and their role in it."""

    workspace_id: uuid.UUID
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class UserDetail:
    user: UserInfo
    workspaces: list[Membership]
    balance_nano: int
    active_keys: int


def _user(row: Any) -> UserInfo:
    return UserInfo(row.id, row.email, row.name, row.status, row.created_at)


async def list_users(
    conn: AsyncConnection,
    *,
    only_user: uuid.UUID | None = None,
    email: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[UserInfo]:
    """Users oldest first (ties by id); `only_user` narrows the list to one user (a user's own view)."""
    query = select(users).order_by(users.c.created_at, users.c.id)
    if only_user is not None:
        query = query.where(users.c.id == only_user)
    if email is not None:
        query = query.where(users.c.email == email.lower())
    if status is not None:
        query = query.where(users.c.status == status)
    rows, total = await _page(conn, query, limit, offset)
    return Page([_user(r) for r in rows], total)


async def get_user(conn: AsyncConnection, user_id: uuid.UUID) -> UserInfo | None:
    row = (await conn.execute(select(users).where(users.c.id == user_id))).one_or_none()
    return None if row is None else _user(row)


async def user_detail(conn: AsyncConnection, user_id: uuid.UUID) -> UserDetail | None:
    """A user with their workspaces, settled balance and number of active keys."""
    user = await get_user(conn, user_id)
    if user is None:
        return None
    memberships = [
        Membership(r.workspace_id, r.name, r.role)
        for r in (
            await conn.execute(
                select(members.c.workspace_id, workspaces.c.name, members.c.role)
                .join(workspaces, workspaces.c.id == members.c.workspace_id)
                .where(members.c.user_id == user_id)
                .order_by(members.c.created_at, members.c.workspace_id)
            )
        ).all()
    ]
    balance = (
        await conn.execute(select(accounts.c.balance_nano).where(accounts.c.user_id == user_id))
    ).scalar_one_or_none()
    active_keys = (
        await conn.execute(
            select(func.count()).where(api_keys.c.user_id == user_id, api_keys.c.status == "active")
        )
    ).scalar_one()
    return UserDetail(user, memberships, int(balance or 0), int(active_keys))


async def missing_users(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Those of `user_ids` that name no user."""
    if not user_ids:
        return []
    found = set((await conn.execute(select(users.c.id).where(users.c.id.in_(set(user_ids))))).scalars())
    return [u for u in user_ids if u not in found]


# -- workspaces ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkspaceMemberInfo:
    user_id: uuid.UUID
    role: str


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    id: uuid.UUID
    name: str
    created_at: datetime
    members: list[WorkspaceMemberInfo]


async def create_workspace(
    conn: AsyncConnection, name: str, members_and_roles: Sequence[tuple[uuid.UUID, str]]
) -> WorkspaceInfo:
    """A workspace with its members, in the caller's transaction; UnknownUser if a member does not exist."""
    missing = await missing_users(conn, [u for u, _ in members_and_roles])
    if missing:
        raise UnknownUser(missing[0])
    now = utcnow()
    workspace_id = uuid.uuid4()
    await conn.execute(workspaces.insert().values(id=workspace_id, name=name, created_at=now))
    for user_id, role in members_and_roles:
        await conn.execute(
            members.insert().values(workspace_id=workspace_id, user_id=user_id, role=role, created_at=now)
        )
    return WorkspaceInfo(workspace_id, name, now, [WorkspaceMemberInfo(u, r) for u, r in members_and_roles])


async def list_workspaces(
    conn: AsyncConnection, *, member: uuid.UUID | None = None, limit: int = 100, offset: int = 0
) -> Page[WorkspaceInfo]:
    """Workspaces oldest first (ties by id), with their members; `member` keeps those that user is in."""
    query = select(workspaces).order_by(workspaces.c.created_at, workspaces.c.id)
    if member is not None:
        query = query.where(
            workspaces.c.id.in_(select(members.c.workspace_id).where(members.c.user_id == member))
        )
    rows, total = await _page(conn, query, limit, offset)
    ids = [r.id for r in rows]
    by_workspace: dict[uuid.UUID, list[WorkspaceMemberInfo]] = {i: [] for i in ids}
    if ids:
        for m in (
            await conn.execute(
                select(members.c.workspace_id, members.c.user_id, members.c.role)
                .where(members.c.workspace_id.in_(ids))
                .order_by(members.c.created_at, members.c.user_id)
            )
        ).all():
            by_workspace[m.workspace_id].append(WorkspaceMemberInfo(m.user_id, m.role))
    return Page([WorkspaceInfo(r.id, r.name, r.created_at, by_workspace[r.id]) for r in rows], total)


async def is_member(conn: AsyncConnection, user_id: uuid.UUID, workspace_id: uuid.UUID) -> bool:
    row = (
        await conn.execute(
            select(members.c.user_id).where(
                members.c.user_id == user_id, members.c.workspace_id == workspace_id
            )
        )
    ).first()
    return row is not None


# -- gateway keys ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A gateway key as it may be shown: its visible prefix, never its hash or plaintext."""

    id: uuid.UUID
    key_prefix: str
    name: str | None
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    status: str
    allowed_models: list[str] | None
    created_at: datetime
    revoked_at: datetime | None


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.key_prefix,
    api_keys.c.name,
    api_keys.c.user_id,
    api_keys.c.workspace_id,
    api_keys.c.status,
    api_keys.c.allowed_models,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
)


def _key(row: Any) -> KeyInfo:
    return KeyInfo(
        row.id,
        row.key_prefix,
        row.name,
        row.user_id,
        row.workspace_id,
        row.status,
        list(row.allowed_models) if row.allowed_models is not None else None,
        row.created_at,
        row.revoked_at,
    )


async def list_keys(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[KeyInfo]:
    """Keys oldest first (ties by id), optionally of one user and in one status."""
    query = select(*_KEY_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    if status is not None:
        query = query.where(api_keys.c.status == status)
    rows, total = await _page(conn, query, limit, offset)
    return Page([_key(r) for r in rows], total)


async def get_key(conn: AsyncConnection, key_id: uuid.UUID) -> KeyInfo | None:
    row = (await conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.id == key_id))).one_or_none()
    return None if row is None else _key(row)


async def unknown_models(conn: AsyncConnection, names: Sequence[str]) -> list[str]:
    """Those of `names` that are not in the catalog."""
    if not names:
        return []
    found = set((await conn.execute(select(llms.c.name).where(llms.c.name.in_(set(names))))).scalars())
    return [n for n in names if n not in found]


# -- provider keys (BYOK) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderKeyInfo:
    """A stored provider key as it may be shown: the provider and the key's last four characters."""

    user_id: uuid.UUID
    provider: str
    key_last4: str
    created_at: datetime
    updated_at: datetime


def _provider_key(row: Any) -> ProviderKeyInfo:
    return ProviderKeyInfo(row.user_id, row.provider, row.key_last4, row.created_at, row.updated_at)


_PROVIDER_KEY_COLUMNS = (
    credentials.c.user_id,
    credentials.c.provider,
    credentials.c.key_last4,
    credentials.c.created_at,
    credentials.c.updated_at,
)


async def list_provider_keys(conn: AsyncConnection, user_id: uuid.UUID) -> list[ProviderKeyInfo]:
    rows = (
        await conn.execute(
            select(*_PROVIDER_KEY_COLUMNS)
            .where(credentials.c.user_id == user_id)
            .order_by(credentials.c.provider)
        )
    ).all()
    return [_provider_key(r) for r in rows]


async def get_provider_key(
    conn: AsyncConnection, user_id: uuid.UUID, provider: str
) -> ProviderKeyInfo | None:
    row = (
        await conn.execute(
            select(*_PROVIDER_KEY_COLUMNS).where(
                credentials.c.user_id == user_id, credentials.c.provider == provider
            )
        )
    ).one_or_none()
    return None if row is None else _provider_key(row)


# -- the ledger ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventInfo:
    """One billing_events row: signed nano-USD (credits positive, debits negative)."""

    id: int
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    type: str
    amount_nano: int
    status: str
    request_id: str | None
    idempotency_key: str
    description: str | None
    invoice_id: uuid.UUID | None
    created_at: datetime


def _event(row: Any) -> EventInfo:
    return EventInfo(
        int(row.id),
        row.user_id,
        row.workspace_id,
        row.type,
        int(row.amount_nano),
        row.status,
        row.request_id,
        row.idempotency_key,
        row.description,
        row.invoice_id,
        row.created_at,
    )


async def list_events(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    *,
    types: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    invoice_id: uuid.UUID | None = None,
    newest_first: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> Page[EventInfo]:
    """A user's ledger events in `[start, end)`, in time order (ties by id) or the reverse."""
    conds = [events.c.user_id == user_id]
    if types:
        conds.append(events.c.type.in_(list(types)))
    if start is not None:
        conds.append(events.c.created_at >= start)
    if end is not None:
        conds.append(events.c.created_at < end)
    if invoice_id is not None:
        conds.append(events.c.invoice_id == invoice_id)
    order = (
        (events.c.created_at.desc(), events.c.id.desc())
        if newest_first
        else (events.c.created_at, events.c.id)
    )
    rows, total = await _page(conn, select(events).where(and_(*conds)).order_by(*order), limit, offset)
    return Page([_event(r) for r in rows], total)


async def event_by_idempotency_key(conn: AsyncConnection, idempotency_key: str) -> EventInfo | None:
    row = (
        await conn.execute(select(events).where(events.c.idempotency_key == idempotency_key))
    ).one_or_none()
    return None if row is None else _event(row)


# -- the catalog -----------------------------------------------------------------------------------

PRICE_COLUMNS = (
    "input_price",
    "cached_input_price",
    "cache_write_price",
    "output_price",
    "long_context_threshold",
    "long_input_price",
    "long_cached_input_price",
    "long_cache_write_price",
    "long_output_price",
)


@dataclass(frozen=True, slots=True)
class Prices:
    """A model's prices as stored, USD per 1M tokens; a missing cached/cache-write price bills at input."""

    input_price: Decimal
    output_price: Decimal
    cached_input_price: Decimal | None
    cache_write_price: Decimal | None
    long_context_threshold: int | None
    long_input_price: Decimal | None
    long_cached_input_price: Decimal | None
    long_cache_write_price: Decimal | None
    long_output_price: Decimal | None


def _prices(row: Any) -> Prices:
    return Prices(**{c: getattr(row, c) for c in PRICE_COLUMNS})


@dataclass(frozen=True, slots=True)
class LlmInfo:
    id: int
    name: str
    provider: str
    upstream_model: str
    display_name: str
    is_active: bool
    price_version: int
    prices: Prices
    context_window: int
    max_output_tokens: int
    supports_vision: bool
    supports_tools: bool
    supports_streaming: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PriceVersionInfo:
    version: int
    effective_from: datetime
    prices: Prices


def _llm(row: Any) -> LlmInfo:
    return LlmInfo(
        id=int(row.id),
        name=row.name,
        provider=row.provider,
        upstream_model=row.upstream_model,
        display_name=row.display_name,
        is_active=bool(row.is_active),
        price_version=int(row.price_version),
        prices=_prices(row),
        context_window=int(row.context_window),
        max_output_tokens=int(row.max_output_tokens),
        supports_vision=bool(row.supports_vision),
        supports_tools=bool(row.supports_tools),
        supports_streaming=bool(row.supports_streaming),
        updated_at=row.updated_at,
    )


async def list_llms(
    conn: AsyncConnection,
    *,
    active: bool | None = None,
    provider: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[LlmInfo]:
    """Catalog entries by id, optionally only (in)active ones or one provider's."""
    query = select(llms).order_by(llms.c.id)
    if active is not None:
        query = query.where(llms.c.is_active == active)
    if provider is not None:
        query = query.where(llms.c.provider == provider)
    rows, total = await _page(conn, query, limit, offset)
    return Page([_llm(r) for r in rows], total)


async def get_llm(conn: AsyncConnection, name: str) -> LlmInfo | None:
    row = (await conn.execute(select(llms).where(llms.c.name == name))).one_or_none()
    return None if row is None else _llm(row)


async def price_history(conn: AsyncConnection, llm_id: int) -> list[PriceVersionInfo]:
    """Every price version of a model, oldest first: charged usage names the version it was priced at."""
    rows = (
        await conn.execute(select(versions).where(versions.c.llm_id == llm_id).order_by(versions.c.version))
    ).all()
    return [PriceVersionInfo(int(r.version), r.effective_from, _prices(r)) for r in rows]
