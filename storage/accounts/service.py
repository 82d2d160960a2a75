"""The accounts rules, held once for the admin API and the CLI.

- an email is one address, stored lower-case, unique among users (`InvalidEmail`, `DuplicateEmail`);
- a key belongs to an existing user (`UserNotFound`), bills a workspace that user is a member of
  (`NotAMember`), and its allow-list names catalog models only (`UnknownModels`);
- a workspace's members are existing users;
- a stored provider key is one token, encrypted with SYNAPGATE_SECRET_KEY (`NotConfigured` without it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config import PROVIDERS
from storage.accounts import credentials, keys, users
from storage.accounts.credentials import ProviderKeyInfo
from storage.accounts.keys import CreatedKey, KeyInfo
from storage.accounts.users import UserDetail, UserInfo, WorkspaceInfo
from storage.billing.ledger.base import CreditLedger, HotMove
from storage.billing.ledger.entries import post_entry
from storage.billing.ledger.limits import PERIODS, WINDOW_SECONDS, period_bounds, window_start
from storage.billing.service import parse_amount
from storage.catalog.repository import unknown_models
from storage.errors import (
    InvalidEmail,
    InvalidInput,
    KeyNotFound,
    NotAMember,
    ProviderKeyNotFound,
    SecretKeyMissing,
    UnknownModels,
    UserNotFound,
    WorkspaceNotFound,
)
from storage.models import UsageLog, table_of
from storage.paging import Page, PageRequest
from storage.types import utcnow
from storage.webhooks.budgets import forget_budget_spend

usage_logs = table_of(UsageLog)

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 320


def normalize_email(value: str, param: str = "email") -> str:
    """The stored form of an email address (lower-case); InvalidEmail when it is not one."""
    email = value.strip().lower()
    if not EMAIL.match(email) or len(email) > MAX_EMAIL:
        raise InvalidEmail(f"not an email address: {value!r}", param=param)
    return email


require_user = users.require_user


# -- users -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewUser:
    """A created user with their own workspace and opening balance."""

    user_id: uuid.UUID
    email: str
    workspace_id: uuid.UUID
    workspace_name: str
    balance_nano: int


async def create_user(
    engine: AsyncEngine,
    ledger: CreditLedger,
    email: str,
    *,
    name: str | None = None,
    workspace_name: str | None = None,
    credits_usd: str | None = None,
) -> NewUser:
    """A user, their workspace (owned) and credit account, and their first credit: all or nothing."""
    email = normalize_email(email)
    credit = parse_amount(credits_usd, "credits_usd") if credits_usd is not None else 0
    posted = None
    async with engine.begin() as conn:
        user = await users.create_user(conn, email, name=name, workspace_name=workspace_name)
        if credit:
            posted = await post_entry(
                conn,
                user_id=user.user_id,
                type="credit",
                amount_nano=credit,
                idempotency_key=f"credit:signup:{user.user_id}",
                description="initial credits",
            )
    if posted is not None:
        await ledger.after_commit([HotMove(user.user_id, None, credit, posted.version)])
    balance = posted.balance_nano if posted is not None else 0
    return NewUser(user.user_id, user.email, user.workspace_id, user.workspace_name, balance)


async def user_detail(conn: AsyncConnection, user_id: uuid.UUID) -> UserDetail:
    """A user with their workspaces, balance and active keys; UserNotFound when there is none."""
    detail = await users.user_detail(conn, user_id)
    if detail is None:
        raise UserNotFound(user_id, param=None)
    return detail


async def list_users(
    conn: AsyncConnection,
    page: PageRequest,
    *,
    only_user: uuid.UUID | None = None,
    email: str | None = None,
    status: str | None = None,
) -> Page[UserInfo]:
    """Users oldest first; an email filter must be an email address."""
    email = normalize_email(email) if email is not None else None
    return await users.list_users(conn, page, only_user=only_user, email=email, status=status)


# -- workspaces ------------------------------------------------------------------------------------


async def create_workspace(
    conn: AsyncConnection, name: str, owner: uuid.UUID | None, member_ids: Sequence[uuid.UUID]
) -> WorkspaceInfo:
    """A workspace with an optional owner and members, all existing users."""
    roles: dict[uuid.UUID, str] = {}
    if owner is not None:
        roles[owner] = "owner"
    for member in member_ids:
        roles.setdefault(member, "member")
    missing = await users.missing_users(conn, list(roles))
    if missing:
        raise UserNotFound(missing[0], param="owner_user_id" if missing[0] == owner else "member_user_ids")
    return await users.insert_workspace(conn, name, list(roles.items()))


async def list_workspaces(
    conn: AsyncConnection, page: PageRequest, *, member: uuid.UUID | None = None
) -> Page[WorkspaceInfo]:
    return await users.list_workspaces(conn, page, member=member)


# -- gateway keys ----------------------------------------------------------------------------------


async def create_key(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    *,
    workspace_id: uuid.UUID | None = None,
    name: str | None = None,
    allowed_models: Sequence[str] | None = None,
    limits: Mapping[str, Any] | None = None,
) -> CreatedKey:
    """A new key of an existing user, billing one of their workspaces (default: their own), limited to
    catalog models when an allow-list is given, with optional limits and expiry (`parse_limit_changes`).
    The plaintext is in the result only."""
    limit_values = parse_limit_changes(limits or {}, key=True)
    await require_user(conn, user_id)
    models: list[str] | None = None
    if allowed_models is not None:
        models = list(dict.fromkeys(m.strip() for m in allowed_models if m.strip()))
        if not models:
            raise InvalidInput(
                "the allow-list is empty: omit it to allow every model", param="allowed_models"
            )
        unknown = await unknown_models(conn, models)
        if unknown:
            raise UnknownModels(unknown)
    if workspace_id is None:
        workspace_id = await users.default_workspace(conn, user_id)
    elif await users.workspace_role(conn, workspace_id, user_id) is None:
        raise NotAMember(user_id, workspace_id)
    key_id, plaintext = await keys.create_key(
        conn, user_id, workspace_id=workspace_id, name=name, allowed_models=models
    )
    if limit_values:
        await conn.execute(update(keys.api_keys).where(keys.api_keys.c.id == key_id).values(**limit_values))
    info = await keys.get_key(conn, key_id)
    assert info is not None
    return CreatedKey(**{f.name: getattr(info, f.name) for f in fields(KeyInfo)}, key=plaintext)


async def get_key(conn: AsyncConnection, key_id: uuid.UUID, *, owner: uuid.UUID | None = None) -> KeyInfo:
    """A key (of `owner`, when given); KeyNotFound otherwise."""
    key = await keys.get_key(conn, key_id)
    if key is None or (owner is not None and key.user_id != owner):
        raise KeyNotFound(f"no key with id {key_id}", param="key_id")
    return key


async def list_keys(
    conn: AsyncConnection, page: PageRequest, *, user_id: uuid.UUID | None = None, status: str | None = None
) -> Page[KeyInfo]:
    return await keys.list_keys(conn, page, user_id=user_id, status=status)


async def revoke_key(conn: AsyncConnection, key_id: uuid.UUID) -> KeyInfo:
    """Revoke a key (idempotent: a revoked key stays revoked); KeyNotFound when there is none."""
    await get_key(conn, key_id)
    await keys.revoke_key(conn, key_id)
    revoked = await keys.get_key(conn, key_id)
    assert revoked is not None
    return revoked


# -- provider keys (BYOK) --------------------------------------------------------------------------


def check_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise InvalidInput(
            f"the provider must be one of {', '.join(PROVIDERS)}, not {provider!r}", param="provider"
        )
    return provider


async def set_provider_key(
    conn: AsyncConnection, secret_key: str | None, user_id: uuid.UUID, provider: str, api_key: str
) -> ProviderKeyInfo:
    """Store (or replace) a user's own provider key, encrypted; only its last four characters come back."""
    check_provider(provider)
    if secret_key is None:
        raise SecretKeyMissing(
            "SYNAPGATE_SECRET_KEY is not set: it is needed to encrypt stored provider keys"
        )
    api_key = api_key.strip()
    if not api_key:
        raise InvalidInput("no provider key was given", param="api_key")
    if any(c.isspace() for c in api_key):
        raise InvalidInput("the provider key contains spaces; give only the key", param="api_key")
    await require_user(conn, user_id, param=None)
    await credentials.set_credential(conn, credentials.cipher_for(secret_key), user_id, provider, api_key)
    stored = await credentials.get_provider_key(conn, user_id, provider)
    assert stored is not None
    return stored


async def delete_provider_key(conn: AsyncConnection, user_id: uuid.UUID, provider: str) -> None:
    check_provider(provider)
    if not await credentials.delete_credential(conn, user_id, provider):
        raise ProviderKeyNotFound(f"no stored {provider} key for this user", param="provider")


async def list_provider_keys(conn: AsyncConnection, user_id: uuid.UUID) -> list[ProviderKeyInfo]:
    await require_user(conn, user_id, param=None)
    return await credentials.list_provider_keys(conn, user_id)


# -- limits: RPM, TPM and period budgets of keys, users and workspaces ------------------------------

LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "budget_usd", "budget_period")
MAX_RATE_LIMIT = 1_000_000_000


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A scope's limits with their current use: spend this period, requests and tokens this minute."""

    scope: str
    rpm_limit: int | None
    tpm_limit: int | None
    budget_nano: int | None
    budget_period: str | None
    spent_nano: int
    requests: int
    tokens: int
    window_resets_at: datetime
    resets_at: datetime | None


def parse_limit_changes(changes: Mapping[str, Any], *, key: bool = False) -> dict[str, Any]:
    """Validated column values of a limits change: only the given fields; None clears a limit.

    `budget_usd` is an exact decimal string; a budget given without `budget_period` is monthly.
    Keys also take `expires_at` (aware datetime, or None for never).
    """
    allowed = (*LIMIT_FIELDS, "expires_at") if key else LIMIT_FIELDS
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in allowed:
            raise InvalidInput(f"not a limit: {name}", param=name)
        if name in ("rpm_limit", "tpm_limit"):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE_LIMIT
            ):
                raise InvalidInput(f"must be a whole number from 1 to {MAX_RATE_LIMIT}", param=name)
            values[name] = value
        elif name == "budget_usd":
            values["budget_nano"] = None if value is None else parse_amount(str(value), "budget_usd")
        elif name == "budget_period":
            if value is not None and value not in PERIODS:
                raise InvalidInput(f"must be one of {', '.join(PERIODS)}", param=name)
            values[name] = value
        elif name == "expires_at":
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise InvalidInput("must be a date-time with a time zone", param=name)
            values[name] = value
    if values.get("budget_nano") is not None and "budget_period" not in values:
        values["budget_period"] = "month"
    if "budget_nano" in values and values["budget_nano"] is None:
        values["budget_period"] = None
    return values


async def _budget_changed(conn: AsyncConnection, scope: str, values: Mapping[str, Any]) -> None:
    """A budget set, changed or cleared: its spend rows for `budget.threshold` are rebuilt from usage_logs."""
    if "budget_nano" in values or "budget_period" in values:
        await forget_budget_spend(conn, scope)


async def update_key_limits(conn: AsyncConnection, key_id: uuid.UUID, changes: Mapping[str, Any]) -> KeyInfo:
    """Change a key's limits and expiry (KeyNotFound when there is none), within the key cache time."""
    values = parse_limit_changes(changes, key=True)
    await get_key(conn, key_id)
    if values:
        await conn.execute(update(keys.api_keys).where(keys.api_keys.c.id == key_id).values(**values))
        await _budget_changed(conn, f"k:{key_id}", values)
    return await get_key(conn, key_id)


async def update_user_limits(conn: AsyncConnection, user_id: uuid.UUID, changes: Mapping[str, Any]) -> None:
    """Change a user's limits (UserNotFound when there is none)."""
    values = parse_limit_changes(changes)
    await require_user(conn, user_id)
    if values:
        await conn.execute(update(keys.users).where(keys.users.c.id == user_id).values(**values))
        await _budget_changed(conn, f"u:{user_id}", values)


async def require_workspace(
    conn: AsyncConnection, workspace_id: uuid.UUID, *, member: uuid.UUID | None = None
) -> None:
    """WorkspaceNotFound unless the workspace exists (and, when `member` is given, they belong to it)."""
    if member is not None:
        found = await users.workspace_role(conn, workspace_id, member) is not None
    else:
        found = (
            await conn.execute(select(keys.workspaces.c.id).where(keys.workspaces.c.id == workspace_id))
        ).first() is not None
    if not found:
        raise WorkspaceNotFound(f"no workspace with id {workspace_id}", param="workspace_id")


async def update_workspace_limits(
    conn: AsyncConnection, workspace_id: uuid.UUID, changes: Mapping[str, Any]
) -> None:
    """Change a workspace's limits (WorkspaceNotFound when there is none)."""
    values = parse_limit_changes(changes)
    await require_workspace(conn, workspace_id)
    if values:
        await conn.execute(
            update(keys.workspaces).where(keys.workspaces.c.id == workspace_id).values(**values)
        )
        await _budget_changed(conn, f"w:{workspace_id}", values)


_LIMIT_TABLES = {"k": keys.api_keys, "u": keys.users, "w": keys.workspaces}


async def limit_usage(
    conn: AsyncConnection, ledger: CreditLedger, kind: str, ident: uuid.UUID, now: datetime | None = None
) -> LimitUsage:
    """A key's (`k`), user's (`u`) or workspace's (`w`) limits with their use now: spend this period from
    usage_logs (the truth), requests and tokens in this minute's window from the (shared) ledger."""
    table = _LIMIT_TABLES[kind]
    row = (
        await conn.execute(
            select(
                table.c.rpm_limit,
                table.c.tpm_limit,
                table.c.budget_nano,
                table.c.budget_period,
                (table.c.user_id if kind == "k" else table.c.id).label("owner"),
            ).where(table.c.id == ident)
        )
    ).one()
    now = now or utcnow()
    start, resets_at = period_bounds(row.budget_period, now)
    column = {"k": usage_logs.c.api_key_id, "u": usage_logs.c.user_id, "w": usage_logs.c.workspace_id}[kind]
    spent = (
        await conn.execute(
            select(func.coalesce(func.sum(usage_logs.c.charged_nano), 0)).where(
                column == ident, usage_logs.c.created_at >= start
            )
        )
    ).scalar_one()
    scope = f"{kind}:{ident}"
    owner = row.owner if kind in ("k", "u") else None  # a key's and a user's counters: the user's slot
    requests, tokens = await ledger.window_usage(scope, now, conn, owner)
    return LimitUsage(
        scope,
        row.rpm_limit,
        row.tpm_limit,
        row.budget_nano,
        row.budget_period,
        int(spent),
        requests,
        tokens,
        window_start(now) + timedelta(seconds=WINDOW_SECONDS),
        resets_at if row.budget_nano is not None else None,
    )
