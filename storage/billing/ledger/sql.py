"""The embedded ledger: balance, reservations and limits in the database, for use without Redis.

Admission is one transaction per reservation that locks the rows it decides on — the workspace (when its
limits apply), the user's account, the key (when limited) — with SELECT … FOR UPDATE on PostgreSQL (on
SQLite the single connection serialises writers), so concurrent reservations cannot together exceed the
balance or any limit. Budgets need no counter: spend is Σ usage_logs.charged_nano of the period (committed
in the same transaction that closes the reservation) plus the open reservations of the scope.

Reservations carry the ledger's lease id; a running ledger renews its own every third of the lease, so a
dead instance's stop counting within `reservation_lease_seconds` (and at most `reservation_ttl_seconds`
after they were made in any case).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.billing.ledger.base import HotMove, InsufficientCredit, Reservation
from storage.billing.ledger.limits import (
    LimitExceeded,
    LimitHold,
    LimitRequest,
    RateStatus,
    ScopeLimits,
    period_bounds,
    retry_after_seconds,
    window_reset_seconds,
    window_start,
)
from storage.dialect import insert_for
from storage.models import (
    ApiKey,
    CreditAccount,
    CreditReservation,
    LimitWindow,
    UsageLog,
    Workspace,
    table_of,
)
from storage.types import utcnow

accounts = table_of(CreditAccount)
reservations = table_of(CreditReservation)
windows = table_of(LimitWindow)
usage = table_of(UsageLog)
api_keys = table_of(ApiKey)
workspaces = table_of(Workspace)

_USAGE_COLUMN = {"k": usage.c.api_key_id, "u": usage.c.user_id, "w": usage.c.workspace_id}
_HELD_COLUMN = {"k": reservations.c.api_key_id, "u": reservations.c.user_id, "w": reservations.c.workspace_id}


def _scope_id(scope: str) -> tuple[str, uuid.UUID]:
    kind, _, ident = scope.partition(":")
    return kind, uuid.UUID(ident)


class SqlLedger:
    """CreditLedger on credit_accounts.held_nano, credit_reservations and limit_windows."""

    def __init__(self, engine: AsyncEngine, reservation_ttl_seconds: int, lease_seconds: int = 30) -> None:
        self._engine = engine
        self._ttl = timedelta(seconds=reservation_ttl_seconds)
        self._lease = timedelta(seconds=lease_seconds)
        self.lease_id = f"sql-{uuid.uuid4()}"
        self._open: dict[str, float] = {}  # request_id → monotonic time it was made (renewed until the TTL)
        self._renewer: asyncio.Task[None] | None = None
        self.clock = utcnow  # injectable: tests roll windows and periods over

    # -- leases --------------------------------------------------------------------------------

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to renew in
                self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        period = max(self._lease.total_seconds() / 3, 0.5)
        while True:
            await asyncio.sleep(period)
            try:
                await self.renew_lease()
            except Exception:  # the database is down: the next round retries; expiry is the fallback
                continue

    async def renew_lease(self) -> int:
        """Push the expiry of this instance's open reservations (younger than the TTL) one lease ahead."""
        cutoff = time.monotonic() - self._ttl.total_seconds()
        for rid in [rid for rid, made in self._open.items() if made <= cutoff]:
            del self._open[rid]  # past the TTL: left to expire
        live = list(self._open)
        if not live:
            return 0
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(reservations)
                .where(reservations.c.lease_id == self.lease_id, reservations.c.request_id.in_(live))
                .values(expires_at=utcnow() + min(self._lease, self._ttl))
            )
        return int(result.rowcount or 0)

    # -- reserve -------------------------------------------------------------------------------

    async def _purge_expired(self, conn: AsyncConnection, user_id: uuid.UUID) -> None:
        now = utcnow()
        expired = reservations.c.user_id == user_id, reservations.c.expires_at <= now
        total = (await conn.execute(select(func.sum(reservations.c.amount_nano)).where(*expired))).scalar()
        rows = (await conn.execute(select(func.count()).where(*expired))).scalar()
        if rows:
            await conn.execute(delete(reservations).where(*expired))
            if total:
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.user_id == user_id)
                    .values(held_nano=accounts.c.held_nano - int(total))
                )

    async def reserve(
        self, user_id: uuid.UUID, request_id: str, amount_nano: int, limits: LimitRequest | None = None
    ) -> Reservation:
        active = limits.active if limits is not None else ()
        tokens = limits.tokens if limits is not None else 0
        key_id = workspace_id = None
        if limits is not None:
            for scope in limits.scopes:
                kind, ident = _scope_id(scope.scope)
                key_id = ident if kind == "k" else key_id
                workspace_id = ident if kind == "w" else workspace_id
        available = 0
        async with self._engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:  # one lock order (workspace, account, key): no deadlock
                for scope in active:
                    kind, ident = _scope_id(scope.scope)
                    if kind == "w":
                        await conn.execute(
                            select(workspaces.c.id).where(workspaces.c.id == ident).with_for_update()
                        )
            query = select(accounts.c.balance_nano, accounts.c.held_nano).where(accounts.c.user_id == user_id)
            if postgres:
                query = query.with_for_update()
            row = (await conn.execute(query)).one_or_none()
            if postgres:
                for scope in active:
                    kind, ident = _scope_id(scope.scope)
                    if kind == "k":
                        await conn.execute(
                            select(api_keys.c.id).where(api_keys.c.id == ident).with_for_update()
                        )
            if row is not None:
                await self._purge_expired(conn, user_id)
                held = (
                    await conn.execute(select(accounts.c.held_nano).where(accounts.c.user_id == user_id))
                ).scalar_one()
                available = int(row.balance_nano) - int(held)
            # A negative balance admits nothing, not even a zero amount (the overrun must be topped up first).
            if available >= amount_nano:  # with amount 0 this refuses a negative balance too
                hold = (
                    await self._hold_limits(conn, active, tokens, amount_nano, self.clock())
                    if active
                    else None
                )
                now = utcnow()
                await conn.execute(
                    reservations.insert().values(
                        request_id=request_id,
                        user_id=user_id,
                        amount_nano=amount_nano,
                        expires_at=now + min(self._lease, self._ttl),
                        lease_id=self.lease_id,
                        api_key_id=key_id,
                        workspace_id=workspace_id,
                        tokens=tokens,
                    )
                )
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.user_id == user_id)
                    .values(held_nano=accounts.c.held_nano + amount_nano)
                )
                self._open[request_id] = time.monotonic()
                self._start_renewing()
                return Reservation(user_id, request_id, amount_nano, hold)
        raise InsufficientCredit(available, amount_nano)

    async def _hold_limits(
        self, conn: AsyncConnection, scopes: Sequence[ScopeLimits], tokens: int, amount: int, now: datetime
    ) -> LimitHold:
        """Check every limit of every scope, then count this request in its window (raises before writing)."""
        start = window_start(now)
        reset = window_reset_seconds(now)
        status: RateStatus | None = None
        counted: list[ScopeLimits] = []
        for scope in scopes:
            kind, ident = _scope_id(scope.scope)
            if scope.rpm is not None or scope.tpm is not None:
                row = (
                    await conn.execute(
                        select(windows.c.requests, windows.c.tokens).where(
                            windows.c.scope == scope.scope, windows.c.window_start == start
                        )
                    )
                ).one_or_none()
                used_requests, used_tokens = (int(row.requests), int(row.tokens)) if row else (0, 0)
                here = RateStatus(
                    scope.rpm,
                    max((scope.rpm or 0) - used_requests - 1, 0),
                    scope.tpm,
                    max((scope.tpm or 0) - used_tokens - tokens, 0),
                    reset,
                )
                retry = max(1, int(reset + 0.999))
                if scope.rpm is not None and used_requests + 1 > scope.rpm:
                    raise LimitExceeded(
                        "requests", scope.scope, scope.rpm, retry, _refused(here, used_requests)
                    )
                if scope.tpm is not None and used_tokens + tokens > scope.tpm:
                    raise LimitExceeded(
                        "tokens", scope.scope, scope.tpm, retry, _refused(here, used_requests)
                    )
                counted.append(scope)
                if kind == "k":
                    status = here
            if scope.budget_nano is not None:
                period_start, period_reset = period_bounds(scope.budget_period, now)
                spent = (
                    await conn.execute(
                        select(func.coalesce(func.sum(usage.c.charged_nano), 0)).where(
                            _USAGE_COLUMN[kind] == ident, usage.c.created_at >= period_start
                        )
                    )
                ).scalar_one()
                held = (
                    await conn.execute(
                        select(func.coalesce(func.sum(reservations.c.amount_nano), 0)).where(
                            _HELD_COLUMN[kind] == ident, reservations.c.expires_at > now
                        )
                    )
                ).scalar_one()
                if int(spent) + int(held) + amount > scope.budget_nano:
                    raise LimitExceeded(
                        "budget",
                        scope.scope,
                        scope.budget_nano,
                        retry_after_seconds(period_reset, now),
                        status,
                    )
        for scope in counted:
            await self._count(conn, scope.scope, start, 1, tokens)
        return LimitHold(tuple(scopes), start, tokens, amount, status)

    async def _count(
        self, conn: AsyncConnection, scope: str, start: datetime, requests: int, tokens: int
    ) -> None:
        stmt: Any = insert_for(conn, windows).values(
            scope=scope, window_start=start, requests=requests, tokens=tokens
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["scope", "window_start"],
                set_={
                    "requests": windows.c.requests + stmt.excluded.requests,
                    "tokens": windows.c.tokens + stmt.excluded.tokens,
                },
            )
        )

    async def window_usage(
        self, scope: str, now: datetime, conn: AsyncConnection | None = None, owner: uuid.UUID | None = None
    ) -> tuple[int, int]:
        query = select(windows.c.requests, windows.c.tokens).where(
            windows.c.scope == scope, windows.c.window_start == window_start(now)
        )
        if conn is not None:
            row = (await conn.execute(query)).one_or_none()
        else:
            async with self._engine.connect() as own:
                row = (await own.execute(query)).one_or_none()
        return (0, 0) if row is None else (int(row.requests), int(row.tokens))

    async def settle_limits(self, reservation: Reservation, actual_nano: int, actual_tokens: int) -> None:
        self._open.pop(reservation.request_id, None)
        hold = reservation.limits
        if hold is None or actual_tokens == hold.tokens:
            return  # budgets need nothing: the usage row is the spend, and it closed the reservation
        scopes = [s.scope for s in hold.scopes if s.rpm is not None or s.tpm is not None]
        if not scopes:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                update(windows)
                .where(windows.c.scope.in_(scopes), windows.c.window_start == hold.window_start)
                .values(tokens=windows.c.tokens + (actual_tokens - hold.tokens))
            )

    # -- settle, release -----------------------------------------------------------------------

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
        await self.settle_limits(reservation, 0, 0)

    async def reservation_counts(self) -> tuple[int, int]:
        """(open, orphaned) reservations: orphaned ones are past their lease and not yet collected."""
        now = utcnow()
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(reservations))).scalar_one()
            stale = (
                await conn.execute(select(func.count()).where(reservations.c.expires_at <= now))
            ).scalar_one()
        return int(total), int(stale)

    async def release_orphans(self) -> int:
        """Drop every reservation past its lease (any user): what a dead instance left. Returns how many."""
        now = utcnow()
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        reservations.c.request_id, reservations.c.user_id, reservations.c.amount_nano
                    ).where(reservations.c.expires_at <= now)
                )
            ).all()
            await self._drop(conn, [Reservation(r.user_id, r.request_id, int(r.amount_nano)) for r in rows])
        return len(rows)

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
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer


def _refused(status: RateStatus, used_requests: int) -> RateStatus:
    """The window as a refused request sees it (it was not counted)."""
    return RateStatus(
        status.limit_requests,
        max((status.limit_requests or 0) - used_requests, 0),
        status.limit_tokens,
        status.remaining_tokens,
        status.reset_seconds,
    )
