"""The embedded ledger: balance and reservations in the database, for single-node use without Redis.

Admission is one transaction per reservation that locks the user's account row (SELECT … FOR UPDATE on
PostgreSQL; on SQLite the single connection serialises writers), so concurrent reservations cannot
together exceed the balance.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.billing.ledger.base import HotMove, InsufficientCredit, Reservation
from storage.models import CreditAccount, CreditReservation, table_of
from storage.types import utcnow

accounts = table_of(CreditAccount)
reservations = table_of(CreditReservation)


class SqlLedger:
    """CreditLedger on credit_accounts.held_nano and the credit_reservations table."""

    def __init__(self, engine: AsyncEngine, reservation_ttl_seconds: int) -> None:
        self._engine = engine
        self._ttl = timedelta(seconds=reservation_ttl_seconds)

    async def _purge_expired(self, conn: AsyncConnection, user_id: uuid.UUID) -> None:
        now = utcnow()
        expired = reservations.c.user_id == user_id, reservations.c.expires_at <= now
        total = (await conn.execute(select(func.sum(reservations.c.amount_nano)).where(*expired))).scalar()
        if total:
            await conn.execute(delete(reservations).where(*expired))
            await conn.execute(
                update(accounts)
                .where(accounts.c.user_id == user_id)
                .values(held_nano=accounts.c.held_nano - int(total))
            )

    async def reserve(self, user_id: uuid.UUID, request_id: str, amount_nano: int) -> Reservation:
        available = 0
        async with self._engine.begin() as conn:
            query = select(accounts.c.balance_nano, accounts.c.held_nano).where(accounts.c.user_id == user_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            row = (await conn.execute(query)).one_or_none()
            if row is not None:
                await self._purge_expired(conn, user_id)
                held = (
                    await conn.execute(select(accounts.c.held_nano).where(accounts.c.user_id == user_id))
                ).scalar_one()
                available = int(row.balance_nano) - int(held)
                if available >= amount_nano:
                    await conn.execute(
                        reservations.insert().values(
                            request_id=request_id,
                            user_id=user_id,
                            amount_nano=amount_nano,
                            expires_at=utcnow() + self._ttl,
                        )
                    )
                    await conn.execute(
                        update(accounts)
                        .where(accounts.c.user_id == user_id)
                        .values(held_nano=accounts.c.held_nano + amount_nano)
                    )
                    return Reservation(user_id, request_id, amount_nano)
        raise InsufficientCredit(available, amount_nano)

    async def _drop(self, conn: AsyncConnection, batch: Sequence[Reservation]) -> None:
        if not batch:
            return
        removed = await conn.execute(
            delete(reservations)
            .where(reservations.c.request_id.in_([r.request_id for r in batch]))
            .returning(reservations.c.user_id, reservations.c.amount_nano)
        )
        held: dict[uuid.UUID, int] = defaultdict(int)
        for user_id, amount in removed:  # an expired reservation was already purged: not returned
            held[user_id] += int(amount)
        for user_id, amount in held.items():
            await conn.execute(
                update(accounts)
                .where(accounts.c.user_id == user_id)
                .values(held_nano=accounts.c.held_nano - amount)
            )

    async def release(self, reservation: Reservation) -> None:
        async with self._engine.begin() as conn:
            await self._drop(conn, [reservation])

    async def settle_in_transaction(self, conn: AsyncConnection, reservations: Sequence[Reservation]) -> None:
        await self._drop(conn, reservations)

    async def after_commit(self, moves: Sequence[HotMove]) -> None:
        return None  # the posting's own transaction already moved the balance and closed the reservation

    async def available(self, user_id: uuid.UUID) -> int:
        async with self._engine.begin() as conn:
            await self._purge_expired(conn, user_id)
            row = (
                await conn.execute(
                    select(accounts.c.balance_nano, accounts.c.held_nano).where(accounts.c.user_id == user_id)
                )
            ).one_or_none()
        return 0 if row is None else int(row.balance_nano) - int(row.held_nano)

    async def hot_balance(self, user_id: uuid.UUID) -> int | None:
        return None  # no copy: the balance is read from credit_accounts itself

    async def rebuild_hot_copy(self, user_id: uuid.UUID) -> None:
        return None

    async def close(self) -> None:
        return None
