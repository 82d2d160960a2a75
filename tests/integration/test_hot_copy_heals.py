"""A committed record is the answer: Redis failing after the commit neither fails the call nor leaves drift.

Real PostgreSQL and Redis. A connection dying mid-call is injected at the one seam where the hot copy is
moved (the settle script) — once with the script having run, once without; an unreachable Redis is the
scripts failing until they are put back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.base import HotMove
from storage.billing.ledger.entries import account_state, post_entry
from storage.billing.ledger.redis import RedisLedger, _keys
from storage.billing.reconcile import reconcile
from storage.db import create_engine
from storage.usage.recorder import CompletionRecord, record_completion
from tests.integration.helpers import completion_record

CREDIT = 1_000_000


@pytest.fixture
async def env(pg_reset_database: str, redis_url: str) -> AsyncIterator[tuple[AsyncEngine, RedisLedger]]:
    engine = create_engine(pg_reset_database, pool_size=5)
    redis = Redis.from_url(redis_url)
    ledger = RedisLedger(redis, engine, 600)
    try:
        yield engine, ledger
    finally:
        await ledger.close()
        await redis.aclose()
        await engine.dispose()


def completion(user_id: uuid.UUID, charged: int) -> CompletionRecord:
    return completion_record(user_id, charged)


class FlakySettle:
    """The settle script behind a connection that dies: `ran` says whether Redis executed it first."""

    def __init__(self, real: Any, failures: int, *, ran: bool) -> None:
        self.real, self.failures, self.ran = real, failures, ran
        self.sha = real.sha

    async def __call__(self, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            if self.ran:
                await self.real(**kwargs)  # executed, but the reply is lost
            raise RedisConnectionError("Connection closed by server.")
        return await self.real(**kwargs)


@pytest.mark.parametrize("ran", [False, True], ids=["script-not-run", "reply-lost"])
async def test_a_failed_post_commit_move_heals_by_itself(
    env: tuple[AsyncEngine, RedisLedger], ran: bool
) -> None:
    engine, ledger = env
    async with engine.begin() as conn:
        user = (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id
    await add_credits(engine, ledger, user, CREDIT, f"seed-{user}")
    record = completion(user, 7_000)
    reservation = await ledger.reserve(user, record.request_id, 50_000)
    assert await ledger.available(user) == CREDIT - 50_000

    real = ledger._settle
    ledger._settle = FlakySettle(real, failures=3, ran=ran)  # type: ignore[assignment]
    result = await record_completion(engine, ledger, record, reservation)  # does not raise: it committed
    assert result.balance_nano == CREDIT - 7_000 and result.posted
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT status, charged_nano FROM usage_logs"))).all()
    assert [tuple(r) for r in rows] == [("success", 7_000)]

    for _ in range(200):  # the retry queue re-applies the move once "Redis" answers again
        if ledger.pending_moves == 0:
            break
        await asyncio.sleep(0.02)
    assert ledger.pending_moves == 0
    # exact, whether or not the lost call had run: the reservation closed once, the debit counted once
    assert await ledger.available(user) == CREDIT - 7_000  # a stale snapshot reloads from the ledger here
    assert await ledger.hot_balance(user) == CREDIT - 7_000
    report = await reconcile(engine, ledger)
    assert report.mismatches == []


async def test_redis_unreachable_after_commit_is_queued_and_applied_when_it_returns(
    env: tuple[AsyncEngine, RedisLedger],
) -> None:
    engine, ledger = env
    async with engine.begin() as conn:
        user = (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id
    await add_credits(engine, ledger, user, CREDIT, f"seed-{user}")
    settle, mark_stale = ledger._settle, ledger._mark_stale
    ledger._settle = FlakySettle(settle, failures=10**6, ran=False)  # type: ignore[assignment]
    ledger._mark_stale = FlakySettle(mark_stale, failures=10**6, ran=False)  # type: ignore[assignment]
    records = [completion(user, 1_000 * (i + 1)) for i in range(3)]
    for record in records:
        result = await record_completion(engine, ledger, record, None)  # committed: no error
        assert result.posted
    await asyncio.sleep(0.1)
    assert ledger.pending_moves == 3  # kept while Redis does not answer
    ledger._settle, ledger._mark_stale = settle, mark_stale  # Redis is back
    for _ in range(200):
        if ledger.pending_moves == 0:
            break
        await asyncio.sleep(0.02)
    assert ledger.pending_moves == 0
    assert await ledger.available(user) == CREDIT - 6_000
    assert await ledger.hot_balance(user) == CREDIT - 6_000
    assert (await reconcile(engine, ledger)).mismatches == []


async def test_a_stale_snapshot_is_never_reloaded_from_a_read_older_than_the_posting(
    env: tuple[AsyncEngine, RedisLedger],
) -> None:
    """A load that read the account before the posting and lands after the stale mark is refused."""
    engine, ledger = env
    async with engine.begin() as conn:
        user = (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id
    await add_credits(engine, ledger, user, CREDIT, f"seed-{user}")
    async with engine.connect() as conn:
        old_balance, old_version = await account_state(conn, user)  # a slow load's read, before the posting
    async with engine.begin() as conn:
        posted = await post_entry(
            conn,
            user_id=user,
            type="usage",
            amount_nano=-5_000,
            idempotency_key="usage:late",
            request_id="late",
        )
    await ledger.mark_stale([HotMove(user, None, -5_000, posted.version)])  # its move failed: stale
    acct, _res, _exp, pend = _keys(user)
    assert await ledger._load(keys=[acct, pend], args=[old_balance, old_version, ""]) == -1
    assert await ledger.hot_balance(user) is None
    assert await ledger.available(user) == CREDIT - 5_000  # reloaded from a read that holds the posting
    assert (await reconcile(engine, ledger)).mismatches == []


async def test_a_dead_instances_committed_debit_heals_when_its_reservation_expires(
    pg_reset_database: str, redis_url: str
) -> None:
    """kill -9 between the commit and the Redis move: the debit is in the ledger, not in the hot copy. The
    dead instance's reservation stops being renewed; when it expires unsettled, the next use of the account
    reloads the snapshot from the ledger — no `--fix` needed."""
    engine = create_engine(pg_reset_database, pool_size=5)
    redis = Redis.from_url(redis_url)
    dead = RedisLedger(redis, engine, 600, lease_seconds=1)  # the instance that will "die"
    live = RedisLedger(redis, engine, 600, lease_seconds=1)
    try:
        async with engine.begin() as conn:
            user = (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id
        await add_credits(engine, live, user, CREDIT, f"seed-{user}")
        record = completion(user, 7_000)
        reservation = await dead.reserve(user, record.request_id, 50_000)

        async def never(moves: Any) -> None:  # the process died right after its commit
            return None

        dead.after_commit = never  # type: ignore[method-assign]
        await dead.close()  # and stopped renewing its lease
        await record_completion(engine, dead, record, reservation)
        assert await live.hot_balance(user) == CREDIT  # drift: the debit never reached Redis
        assert (await reconcile(engine, live)).mismatches  # reconcile sees it

        await asyncio.sleep(1.2)  # the lease runs out
        assert await live.available(user) == CREDIT - 7_000  # the expired reservation dropped the snapshot
        assert await live.hot_balance(user) == CREDIT - 7_000
        assert (await reconcile(engine, live)).mismatches == []
    finally:
        await live.close()
        await redis.aclose()
        await engine.dispose()
