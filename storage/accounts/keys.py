"""Gateway API keys: generated here, shown once, stored only as a SHA-256 hash with a visible prefix."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.billing.ledger.limits import ScopeLimits
from storage.models import ApiKey, User, Workspace, table_of
from storage.paging import Page, PageRequest, fetch_page, page_of
from storage.types import utcnow

api_keys = table_of(ApiKey)
users = table_of(User)
workspaces = table_of(Workspace)

KEY_PREFIX = "sk-sg-"
VISIBLE_PREFIX_LENGTH = 12


def hash_key(plaintext: str) -> str:
    """The stored form of a gateway key. Keys carry 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who a key speaks for, and its limits: what authentication hands to the rest of the request."""

    key_id: uuid.UUID
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    allowed_models: frozenset[str] | None
    budget_nano: int | None
    rpm_limit: int | None
    tpm_limit: int | None
    budget_period: str | None = None
    expires_at: datetime | None = None
    user_limits: ScopeLimits | None = None
    workspace_limits: ScopeLimits | None = None

    @property
    def key_limits(self) -> ScopeLimits:
        return ScopeLimits(
            f"k:{self.key_id}", self.rpm_limit, self.tpm_limit, self.budget_nano, self.budget_period
        )

    def limit_scopes(self) -> tuple[ScopeLimits, ...]:
        """The key's, its user's and its workspace's limits, key first (the headers report the key's)."""
        found = [self.key_limits, self.user_limits, self.workspace_limits]
        return tuple(s for s in found if s is not None and s.limited)


async def create_key(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    *,
    workspace_id: uuid.UUID | None,
    name: str | None = None,
    allowed_models: list[str] | None = None,
    budget_nano: int | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    budget_period: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[uuid.UUID, str]:
    """A new key for a user: (its id, its plaintext). The plaintext is not stored anywhere."""
    plaintext = new_key()
    key_id = uuid.uuid4()
    await conn.execute(
        api_keys.insert().values(
            id=key_id,
            key_hash=hash_key(plaintext),
            key_prefix=plaintext[:VISIBLE_PREFIX_LENGTH],
            name=name,
            user_id=user_id,
            workspace_id=workspace_id,
            status="active",
            allowed_models=allowed_models,
            budget_nano=budget_nano,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
            budget_period=budget_period,
            expires_at=expires_at,
            created_at=utcnow(),
        )
    )
    return key_id, plaintext


async def principal_for_key(conn: AsyncConnection, plaintext: str) -> KeyPrincipal | None:
    """The principal of an active key whose user is active, or None."""
    return await _principal_where(conn, api_keys.c.key_hash == hash_key(plaintext))


async def principal_for_key_id(conn: AsyncConnection, key_id: uuid.UUID) -> KeyPrincipal | None:
    """The principal of an active key (by id) whose user is active, or None: for the platform's own calls
    through the chat service, which hold no plaintext key."""
    return await _principal_where(conn, api_keys.c.id == key_id)


async def _principal_where(conn: AsyncConnection, which: ColumnElement[bool]) -> KeyPrincipal | None:
    row = (
        await conn.execute(
            select(
                api_keys.c.id,
                api_keys.c.user_id,
                api_keys.c.workspace_id,
                api_keys.c.allowed_models,
                api_keys.c.budget_nano,
                api_keys.c.rpm_limit,
                api_keys.c.tpm_limit,
                api_keys.c.budget_period,
                api_keys.c.expires_at,
                users.c.rpm_limit.label("u_rpm"),
                users.c.tpm_limit.label("u_tpm"),
                users.c.budget_nano.label("u_budget"),
                users.c.budget_period.label("u_period"),
                workspaces.c.rpm_limit.label("w_rpm"),
                workspaces.c.tpm_limit.label("w_tpm"),
                workspaces.c.budget_nano.label("w_budget"),
                workspaces.c.budget_period.label("w_period"),
            )
            .join(users, users.c.id == api_keys.c.user_id)
            .outerjoin(workspaces, workspaces.c.id == api_keys.c.workspace_id)
            .where(
                which,
                api_keys.c.status == "active",
                users.c.status == "active",
            )
        )
    ).first()
    if row is None:
        return None
    return KeyPrincipal(
        key_id=row.id,
        user_id=row.user_id,
        workspace_id=row.workspace_id,
        allowed_models=frozenset(row.allowed_models) if row.allowed_models is not None else None,
        budget_nano=row.budget_nano,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        budget_period=row.budget_period,
        expires_at=row.expires_at,
        user_limits=ScopeLimits(f"u:{row.user_id}", row.u_rpm, row.u_tpm, row.u_budget, row.u_period),
        workspace_limits=(
            ScopeLimits(f"w:{row.workspace_id}", row.w_rpm, row.w_tpm, row.w_budget, row.w_period)
            if row.workspace_id is not None
            else None
        ),
    )


async def revoke_key(conn: AsyncConnection, key_id: uuid.UUID) -> bool:
    """Revoke a key; False when no active key has that id."""
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.status == "active")
        .values(status="revoked", revoked_at=utcnow())
    )
    return bool(result.rowcount)


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
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey(KeyInfo):
    """A new key: `key` is its plaintext, returned this once and stored nowhere."""

    key: str
    note: str = "the key is shown only once; store it now"


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
    api_keys.c.expires_at,
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
        row.expires_at,
    )


async def list_keys(
    conn: AsyncConnection, page: PageRequest, *, user_id: uuid.UUID | None = None, status: str | None = None
) -> Page[KeyInfo]:
    """Keys oldest first (ties by id), optionally of one user and in one status."""
    query = select(*_KEY_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    if status is not None:
        query = query.where(api_keys.c.status == status)
    rows, total = await fetch_page(conn, query, page)
    return page_of([_key(r) for r in rows], total, page)


async def get_key(conn: AsyncConnection, key_id: uuid.UUID) -> KeyInfo | None:
    row = (await conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.id == key_id))).one_or_none()
    return None if row is None else _key(row)
