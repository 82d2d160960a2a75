"""Posting to the ledger: one billing_events row and the matching move of the user's credit account.

Both happen in the caller's transaction. The event's idempotency key is unique, so a replayed top-up or
debit posts nothing and reports the balance as it stands.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import built_once, dialect_insert, insert_for
from storage.models import BillingEvent, CreditAccount, table_of
from storage.types import utcnow

events = table_of(BillingEvent)
accounts = table_of(CreditAccount)


@dataclass(frozen=True, slots=True)
class PostedEntry:
    """The outcome of a posting: the account after it, and whether this call created the event."""

    event_id: int | None
    balance_nano: int
    version: int
    created: bool


async def post_entry(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID,
    type: str,
    amount_nano: int,
    idempotency_key: str,
    workspace_id: uuid.UUID | None = None,
    request_id: str | None = None,
    description: str | None = None,
) -> PostedEntry:
    """Append one completed ledger event and move the account by `amount_nano` (signed), atomically."""
    now = utcnow()
    inserted = await conn.execute(
        insert_for(conn, events)
        .values(
            user_id=user_id,
            workspace_id=workspace_id,
            type=type,
            amount_nano=amount_nano,
            status="completed",
            request_id=request_id,
            idempotency_key=idempotency_key,
            description=description,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(events.c.id)
    )
    event_id = inserted.scalar_one_or_none()
    if event_id is None:  # replay: the first posting stands
        balance, version = await account_state(conn, user_id)
        return PostedEntry(None, balance, version, created=False)
    balance, version = (await move_accounts(conn, {user_id: amount_nano}))[user_id]
    return PostedEntry(int(event_id), balance, version, created=True)


async def move_accounts(
    conn: AsyncConnection, deltas: Mapping[uuid.UUID, int]
) -> dict[uuid.UUID, tuple[int, int]]:
    """Move each user's account by its (already posted) delta, one version step each.

    Returns (balance_nano, version) per user. The row lock this takes orders concurrent postings,
    which is what makes `version` a faithful sequence for the Redis snapshot.
    """
    now = utcnow()
    stmt = _account_move(conn)
    moved: dict[uuid.UUID, tuple[int, int]] = {}
    for user_id, delta in sorted(
        deltas.items(), key=lambda item: str(item[0])
    ):  # one lock order: no deadlock
        row = (await conn.execute(stmt, {"mv_user": user_id, "mv_delta": delta, "mv_now": now})).one()
        moved[user_id] = (int(row.balance_nano), int(row.version))
    return moved


@built_once
def _account_move(dialect: str) -> Any:
    stmt = dialect_insert(dialect, accounts).values(
        user_id=bindparam("mv_user"),
        balance_nano=bindparam("mv_delta"),
        held_nano=0,
        version=1,
        updated_at=bindparam("mv_now"),
    )
    return stmt.on_conflict_do_update(
        index_elements=["user_id"],
        set_={
            "balance_nano": accounts.c.balance_nano + stmt.excluded.balance_nano,
            "version": accounts.c.version + 1,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(accounts.c.balance_nano, accounts.c.version)


async def account_state(conn: AsyncConnection, user_id: uuid.UUID) -> tuple[int, int]:
    """(balance_nano, version) of a user's credit account; (0, 0) when it has none yet."""
    row = (
        await conn.execute(
            select(accounts.c.balance_nano, accounts.c.version).where(accounts.c.user_id == user_id)
        )
    ).one_or_none()
    return (0, 0) if row is None else (int(row.balance_nano), int(row.version))
