"""Users and workspaces: the queries (no rules; those are in accounts/service.py).

Every list is ordered by a unique key last, so limit/offset pages are stable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.errors import DuplicateEmail, UserNotFound
from storage.models import ApiKey, CreditAccount, User, Workspace, WorkspaceMember, table_of
from storage.paging import Page, PageRequest, fetch_page, page_of
from storage.types import utcnow

users = table_of(User)
workspaces = table_of(Workspace)
members = table_of(WorkspaceMember)
accounts = table_of(CreditAccount)
api_keys = table_of(ApiKey)


@dataclass(frozen=True, slots=True)
class CreatedUser:
    user_id: uuid.UUID
    email: str
    workspace_id: uuid.UUID
    workspace_name: str


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
    """A user with their workspaces, settled balance and number of active keys."""

    id: uuid.UUID
    email: str
    name: str | None
    status: str
    created_at: datetime
    workspaces: list[Membership]
    active_keys: int
    balance_nano: int


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


async def create_user(
    conn: AsyncConnection, email: str, *, name: str | None = None, workspace_name: str | None = None
) -> CreatedUser:
    """A user, their workspace (they own it) and their empty credit account, in the caller's transaction."""
    now = utcnow()
    user_id, workspace_id = uuid.uuid4(), uuid.uuid4()
    workspace_name = workspace_name or f"{email}'s workspace"
    try:
        async with conn.begin_nested():
            await conn.execute(
                users.insert().values(id=user_id, email=email, name=name, status="active", created_at=now)
            )
    except IntegrityError:
        raise DuplicateEmail(email) from None
    await conn.execute(workspaces.insert().values(id=workspace_id, name=workspace_name, created_at=now))
    await conn.execute(
        members.insert().values(workspace_id=workspace_id, user_id=user_id, role="owner", created_at=now)
    )
    await conn.execute(
        accounts.insert().values(user_id=user_id, balance_nano=0, held_nano=0, version=0, updated_at=now)
    )
    return CreatedUser(user_id, email, workspace_id, workspace_name)


def _user(row: Any) -> UserInfo:
    return UserInfo(row.id, row.email, row.name, row.status, row.created_at)


async def list_users(
    conn: AsyncConnection,
    page: PageRequest,
    *,
    only_user: uuid.UUID | None = None,
    email: str | None = None,
    status: str | None = None,
) -> Page[UserInfo]:
    """Users oldest first (ties by id); `only_user` narrows the list to one user (a user's own view)."""
    query = select(users).order_by(users.c.created_at, users.c.id)
    if only_user is not None:
        query = query.where(users.c.id == only_user)
    if email is not None:
        query = query.where(users.c.email == email.lower())
    if status is not None:
        query = query.where(users.c.status == status)
    rows, total = await fetch_page(conn, query, page)
    return page_of([_user(r) for r in rows], total, page)


async def get_user(conn: AsyncConnection, user_id: uuid.UUID) -> UserInfo | None:
    row = (await conn.execute(select(users).where(users.c.id == user_id))).one_or_none()
    return None if row is None else _user(row)


async def require_user(conn: AsyncConnection, user_id: uuid.UUID, param: str | None = "user_id") -> UserInfo:
    """The user (the one existence rule every service uses); UserNotFound when there is none."""
    user = await get_user(conn, user_id)
    if user is None:
        raise UserNotFound(user_id, param=param)
    return user


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
    return UserDetail(
        user.id,
        user.email,
        user.name,
        user.status,
        user.created_at,
        memberships,
        int(active_keys),
        int(balance or 0),
    )


async def missing_users(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Those of `user_ids` that name no user."""
    if not user_ids:
        return []
    found = set((await conn.execute(select(users.c.id).where(users.c.id.in_(set(user_ids))))).scalars())
    return [u for u in user_ids if u not in found]


async def user_emails(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The email of each of `user_ids` that exists."""
    if not user_ids:
        return {}
    rows = (await conn.execute(select(users.c.id, users.c.email).where(users.c.id.in_(set(user_ids))))).all()
    return {r.id: r.email for r in rows}


async def insert_workspace(
    conn: AsyncConnection, name: str, members_and_roles: Sequence[tuple[uuid.UUID, str]]
) -> WorkspaceInfo:
    """A workspace with its members (existing users), in the caller's transaction."""
    now = utcnow()
    workspace_id = uuid.uuid4()
    await conn.execute(workspaces.insert().values(id=workspace_id, name=name, created_at=now))
    for user_id, role in members_and_roles:
        await conn.execute(
            members.insert().values(workspace_id=workspace_id, user_id=user_id, role=role, created_at=now)
        )
    return WorkspaceInfo(workspace_id, name, now, [WorkspaceMemberInfo(u, r) for u, r in members_and_roles])


async def list_workspaces(
    conn: AsyncConnection, page: PageRequest, *, member: uuid.UUID | None = None
) -> Page[WorkspaceInfo]:
    """Workspaces oldest first (ties by id), with their members; `member` keeps those that user is in."""
    query = select(workspaces).order_by(workspaces.c.created_at, workspaces.c.id)
    if member is not None:
        query = query.where(
            workspaces.c.id.in_(select(members.c.workspace_id).where(members.c.user_id == member))
        )
    rows, total = await fetch_page(conn, query, page)
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
    return page_of([WorkspaceInfo(r.id, r.name, r.created_at, by_workspace[r.id]) for r in rows], total, page)


async def workspace_exists(conn: AsyncConnection, workspace_id: uuid.UUID) -> bool:
    row = (await conn.execute(select(workspaces.c.id).where(workspaces.c.id == workspace_id))).first()
    return row is not None


async def workspace_role(conn: AsyncConnection, workspace_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """The user's role in the workspace, or None when they are not a member."""
    row = (
        await conn.execute(
            select(members.c.role).where(members.c.user_id == user_id, members.c.workspace_id == workspace_id)
        )
    ).first()
    return None if row is None else str(row[0])


async def default_workspace(conn: AsyncConnection, user_id: uuid.UUID) -> uuid.UUID | None:
    """The workspace a user owns (else the first they belong to)."""
    row = (
        await conn.execute(
            select(members.c.workspace_id)
            .where(members.c.user_id == user_id)
            .order_by((members.c.role == "owner").desc(), members.c.created_at)
            .limit(1)
        )
    ).first()
    return None if row is None else row[0]
