"""The credit ledgers against real PostgreSQL, SQLite and Redis: reservation, expiry, concurrency, and the
versioned Redis snapshot under every interleaving of load and posting."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.base import HotMove, InsufficientCredit
from storage.billing.ledger.entries import account_state, post_entry
from storage.billing.ledger.factory import build_ledger
from storage.billing.ledger.redis import RedisLedger
from storage.billing.ledger.sql import SqlLedger
from storage.billing.reconcile import Mismatch, reconcile
from storage.db import create_engine
from storage.models import CreditReservation

KINDS = ["sql-sqlite", "sql-postgres", "redis-postgres"]


@pytest.fixture(params=KINDS)
async def ledger_env(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[AsyncEngine, Any]]:
    kind = request.param
    url = request.getfixturevalue("sqlite_database" if kind == "sql-sqlite" else "pg_reset_database")
    engine = create_engine(url, pool_size=20)
    redis = Redis.from_url(request.getfixturevalue("redis_url")) if kind.startswith("redis") else None
    ledger: Any = build_ledger(Settings(database_url=url, reservation_ttl_seconds=600), engine, redis)
    assert isinstance(ledger, RedisLedger if redis is not None else SqlLedger)
    try:
        yield engine, ledger
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


async def new_user(engine: AsyncEngine, ledger: Any, credit_nano: int) -> uuid.UUID:
    async with engine.begin() as conn:
        user = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
    if credit_nano:
        await add_credits(engine, ledger, user.user_id, credit_nano, f"seed-{user.user_id}")
    return user.user_id


async def settle(engine: AsyncEngine, ledger: Any, reservation: Any, cost: int) -> None:
    """What the recorder does for a debit: post in a transaction, close the reservation, then the hot copy."""
    async with engine.begin() as conn:
        posted = await post_entry(
            conn,
            user_id=reservation.user_id,
            type="usage",
            amount_nano=-cost,
            idempotency_key=f"usage:{reservation.request_id}",
            request_id=reservation.request_id,
        )
        await ledger.settle_in_transaction(conn, [reservation])
    await ledger.after_commit(
        [HotMove(reservation.user_id, reservation, -cost if posted.created else 0,
                 posted.version if posted.created else None)]
    )  # fmt: skip


async def test_reserve_settle_release(ledger_env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = ledger_env
    user = await new_user(engine, ledger, 1_000)
    first = await ledger.reserve(user, "r1", 600)
    assert await ledger.available(user) == 400
    with pytest.raises(InsufficientCredit) as refused:
        await ledger.reserve(user, "r2", 401)
    assert refused.value.available_nano == 400 and refused.value.needed_nano == 401
    second = await ledger.reserve(user, "r2", 400)
    assert await ledger.available(user) == 0
    await settle(engine, ledger, first, 250)  # actual cost below the reservation: the rest comes back
    assert await ledger.available(user) == 350
    await ledger.release(second)
    await ledger.release(second)  # idempotent
    assert await ledger.available(user) == 750
    async with engine.connect() as conn:
        assert (await account_state(conn, user))[0] == 750
    report = await reconcile(engine, ledger)
    assert report.mismatches == [] and report.users >= 1


async def test_replayed_debit_and_credit_move_nothing(ledger_env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = ledger_env
    user = await new_user(engine, ledger, 1_000)
    again = await add_credits(engine, ledger, user, 1_000, f"seed-{user}")
    assert again.created is False and again.balance_nano == 1_000
    reservation = await ledger.reserve(user, "r1", 100)
    await settle(engine, ledger, reservation, 100)
    await settle(engine, ledger, reservation, 100)  # a replayed debit of the same request
    assert await ledger.available(user) == 900
    async with engine.connect() as conn:
        assert (await account_state(conn, user))[0] == 900


async def test_expired_reservations_stop_counting(ledger_env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = ledger_env
    ledger._ttl_ms = 300
    if isinstance(ledger, SqlLedger):
        from datetime import timedelta

        ledger._ttl = timedelta(milliseconds=300)
    user = await new_user(engine, ledger, 1_000)
    await ledger.reserve(user, "crashed-request", 1_000)
    assert await ledger.available(user) == 0
    await asyncio.sleep(0.5)
    assert await ledger.available(user) == 1_000
    await ledger.reserve(user, "next", 1_000)  # the expired hold no longer blocks


async def test_concurrent_reservations_never_exceed_the_balance(ledger_env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = ledger_env
    user = await new_user(engine, ledger, 10_000)

    async def attempt(i: int) -> bool:
        try:
            await ledger.reserve(user, f"r{i}", 1_000)
            return True
        except InsufficientCredit:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(60)))
    assert sum(results) == 10
    assert await ledger.available(user) == 0


@pytest.mark.parametrize("ledger_env", ["redis-postgres"], indirect=True)
async def test_snapshot_includes_postings_exactly_once_in_every_order(
    ledger_env: tuple[AsyncEngine, Any],
) -> None:
    """The three interleavings of a lazy snapshot load and a committed posting all end exact."""
    engine, ledger = ledger_env
    assert isinstance(ledger, RedisLedger)

    async def post(user: uuid.UUID, amount: int, key: str) -> tuple[int, int]:
        async with engine.begin() as conn:
            posted = await post_entry(
                conn, user_id=user, type="credit", amount_nano=amount, idempotency_key=key
            )
        return amount, posted.version

    # 1. committed, snapshot loaded (includes it), then the posting reaches Redis: not counted twice.
    user = await new_user(engine, ledger, 0)
    delta, version = await post(user, 500, "a1")
    await ledger.load_snapshot(user)
    await ledger.after_commit([HotMove(user, None, delta, version)])
    assert await ledger.hot_balance(user) == 500

    # 2. the posting reaches Redis before any snapshot, and the snapshot was read before the commit.
    user = await new_user(engine, ledger, 0)
    async with engine.connect() as conn:
        stale_balance, stale_version = await account_state(conn, user)  # read before the commit
    delta, version = await post(user, 700, "b1")
    await ledger.after_commit([HotMove(user, None, delta, version)])  # no snapshot yet: waits in pending
    acct, pend = f"sg:{{{user}}}:acct", f"sg:{{{user}}}:pend"
    await ledger._load(keys=[acct, pend], args=[stale_balance, stale_version])
    assert await ledger.hot_balance(user) == 700

    # 3. pending posting that the (fresh) snapshot already holds: not counted twice.
    user = await new_user(engine, ledger, 0)
    delta, version = await post(user, 300, "c1")
    await ledger.after_commit([HotMove(user, None, delta, version)])
    await ledger.load_snapshot(user)
    assert await ledger.hot_balance(user) == 300
    assert (await reconcile(engine, ledger)).mismatches == []


@pytest.mark.parametrize("ledger_env", ["redis-postgres"], indirect=True)
async def test_reconcile_finds_and_fixes_a_drifted_redis_copy(ledger_env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = ledger_env
    user = await new_user(engine, ledger, 5_000)
    await ledger.available(user)  # load the snapshot
    await ledger._redis.hincrby(f"sg:{{{user}}}:acct", "bal", 123)
    report = await reconcile(engine, ledger)
    assert report.mismatches == [Mismatch(user, 5_000, hot_nano=5_123)]
    assert report.to_dict()["mismatches"] == [
        {"user_id": str(user), "account_nano": 5_000, "redis_nano": 5_123}
    ]
    fixed = await reconcile(engine, ledger, fix=True)
    assert fixed.fixed is True
    assert await ledger.hot_balance(user) == 5_000
    assert (await reconcile(engine, ledger)).mismatches == []


async def test_reconcile_reports_open_reservations_and_fix_releases_orphans(
    ledger_env: tuple[AsyncEngine, Any],
) -> None:
    """A dead instance stops renewing its lease: its reservations become orphans that `--fix` releases."""
    engine, ledger = ledger_env
    user = await new_user(engine, ledger, 1_000)
    dead: Any = build_ledger(Settings(database_url="sqlite://", reservation_ttl_seconds=600), engine, None)
    if isinstance(ledger, RedisLedger):
        dead = ledger
    await dead.reserve(user, "held-by-the-dead", 600)
    dead._open.clear()  # the instance dies: nothing renews its lease any more
    await dead.close()
    live = await ledger.reserve(user, "held-by-the-living", 100)
    report = await reconcile(engine, ledger)
    assert report.open_reservations == 2 and report.orphaned_reservations == 0
    # The dead instance's lease runs out (moved to the past here rather than waited for: a sleep against a
    # short lease made the first check above flaky on a loaded machine).
    past = int(time.time() * 1000) - 1_000
    if isinstance(ledger, RedisLedger):
        await ledger._redis.zadd(f"sg:{{{user}}}:exp", {"held-by-the-dead": past})
    else:
        async with engine.begin() as conn:
            await conn.execute(
                update(CreditReservation)
                .where(CreditReservation.request_id == "held-by-the-dead")
                .values(expires_at=datetime.fromtimestamp(past / 1000, UTC))
            )
    report = await reconcile(engine, ledger)
    assert report.open_reservations == 2 and report.orphaned_reservations == 1
    fixed = await reconcile(engine, ledger, fix=True)
    assert fixed.released_reservations == 1
    after = await reconcile(engine, ledger)
    assert after.open_reservations == 1 and after.orphaned_reservations == 0
    assert await ledger.available(user) == 900
    await ledger.release(live)
