"""Users and workspaces."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.models import CreditAccount, User, Workspace, WorkspaceMember, table_of
from storage.types import utcnow

users = table_of(User)
workspaces = table_of(Workspace)
members = table_of(WorkspaceMember)
accounts = table_of(CreditAccount)


class DuplicateUser(Exception):
    """A user with that email exists already."""


@dataclass(frozen=True, slots=True)
class CreatedUser:
    user_id: uuid.UUID
    email: str
    workspace_id: uuid.UUID
    workspace_name: str


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
        raise DuplicateUser(email) from None
    await conn.execute(workspaces.insert().values(id=workspace_id, name=workspace_name, created_at=now))
    await conn.execute(
        members.insert().values(workspace_id=workspace_id, user_id=user_id, role="owner", created_at=now)
    )
    await conn.execute(
        accounts.insert().values(user_id=user_id, balance_nano=0, held_nano=0, version=0, updated_at=now)
    )
    return CreatedUser(user_id, email, workspace_id, workspace_name)


async def user_exists(engine: AsyncEngine, user_id: uuid.UUID) -> bool:
    async with engine.connect() as conn:
        return (await conn.execute(select(users.c.id).where(users.c.id == user_id))).first() is not None


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
