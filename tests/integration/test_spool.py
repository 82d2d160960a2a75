"""The durable local spool against real PostgreSQL and Redis: spooled while the database is unreachable,
replayed exactly once, the Redis copy counting each debit once in every order of reload and move.

The outage is injected at one seam, the group-commit recorder the spool wraps: it raises the connection error
PostgreSQL's driver raises (`ConnectionRefusedError` — nothing was sent — or `ConnectionResetError` after the
commit went through: the commit outcome is unknown). Everything else is real: the spool file on disk, the
replay through `record_batch`, the Redis scripts, `reconcile`. The fault suite (tests/faults/test_spool.py)
stops a real PostgreSQL under load.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import storage.usage.spool as spool_module
from pricing.cost import Usage
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.base import Reservation
from storage.billing.ledger.redis import RedisLedger
from storage.billing.reconcile import reconcile
from storage.db import create_engine
from storage.outage import OutageWatch
from storage.usage.group_commit import GroupCommitRecorder
from storage.usage.recorder import CompletionRecord, RecordResult, record_completion
from storage.usage.spool import SpoolFile, SpoolingRecorder, encode_frame, replay_ledger_for, spool_status
from tests.integration.helpers import completion_record

CREDIT = 1_000_000


class Database:
    """The group-commit recorder behind a switch: `up`, `refused` (nothing reaches PostgreSQL), or
    `ack_lost` (the commit happens, then the connection dies before its acknowledgement)."""

    def __init__(self, inner: GroupCommitRecorder) -> None:
        self.inner = inner
        self.mode = "up"

    async def record(self, record: CompletionRecord, reservation: Reservation | None) -> RecordResult:
        if self.mode == "refused":
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        result = await self.inner.record(record, reservation)
        if self.mode == "ack_lost":
            raise ConnectionResetError(104, "Connection reset by peer")
        return result


@dataclass
class Env:
    engine: AsyncEngine
    ledger: RedisLedger
    database: Database
    watch: OutageWatch
    spool: SpoolingRecorder
    directory: Path

    async def user(self) -> uuid.UUID:
        async with self.engine.begin() as conn:
            user = (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id
        await add_credits(self.engine, self.ledger, user, CREDIT, f"seed-{user}")
        return user

    async def request(self, user: uuid.UUID, charged: int, **fields: Any) -> RecordResult:
        """One request as the chat service makes it: reserve, then record through the spool."""
        record = completion(user, charged, **fields)
        reservation = await self.ledger.reserve(user, record.request_id, 50_000)
        return await self.spool.record(record, reservation)

    async def rows(self, user: uuid.UUID) -> list[tuple[str, int]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT request_id, amount_nano FROM billing_events WHERE user_id = :u AND type = 'usage'"
                ),
                {"u": user},
            )
            return [(r[0], int(r[1])) for r in result]

    async def assert_exact(self, user: uuid.UUID, debited: int) -> None:
        assert await self.ledger.available(user) == CREDIT - debited
        assert await self.ledger.serving_balance(user) == CREDIT - debited
        assert (await reconcile(self.engine, self.ledger)).mismatches == []


def completion(user_id: uuid.UUID, charged: int, **fields: Any) -> CompletionRecord:
    return completion_record(user_id, charged, **fields)


async def _never() -> None:
    raise ConnectionRefusedError(111, "down")


@pytest.fixture
async def env(pg_reset_database: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    engine = create_engine(pg_reset_database, pool_size=5)
    redis = Redis.from_url(redis_url)
    ledger = RedisLedger(redis, engine, 600)
    inner = GroupCommitRecorder(engine, ledger)
    inner.start()
    database = Database(inner)
    watch = OutageWatch("database", _never, interval=3600)
    spool_file = SpoolFile(tmp_path / "spool", "test", 1 << 20)
    spool_file.open()
    spool = SpoolingRecorder(database, engine, ledger, spool_file, database=watch)
    try:
        yield Env(engine, ledger, database, watch, spool, tmp_path / "spool")
    finally:
        await spool.stop()
        await inner.stop()
        await watch.close()
        await ledger.close()
        await redis.aclose()
        await engine.dispose()


async def test_an_outage_is_spooled_settled_in_redis_and_replayed_exactly_once(env: Env) -> None:
    user = await env.user()
    env.database.mode = "refused"
    results = [await env.request(user, 1_000 * (i + 1)) for i in range(3)]
    assert [r.posted for r in results] == [True] * 3
    assert results[-1].balance_nano == CREDIT - 6_000  # the answer's balance header counts the spooled debits
    assert spool_status(env.directory).pending_records == 3
    assert await env.rows(user) == []  # nothing in PostgreSQL yet
    # the hot copy serves the spooled debits (reservations closed, not held); reconcile says the ledger agrees
    assert await env.ledger.available(user) == CREDIT - 6_000
    assert await env.ledger.spooled_nano(user) == -6_000
    pending = await reconcile(env.engine, env.ledger, spool=spool_status(env.directory))
    assert pending.mismatches == [] and pending.to_dict()["spool_pending_records"] == 3

    env.database.mode = "up"
    env.watch.succeeded()
    report = await env.spool.replay()
    assert (report.replayed, report.skipped, report.dead, report.done) == (3, 0, 0, True)
    assert sorted(amount for _, amount in await env.rows(user)) == [-3_000, -2_000, -1_000]
    assert spool_status(env.directory).pending_records == 0
    assert await env.ledger.spooled_nano(user) == 0
    await env.assert_exact(user, 6_000)
    again = await env.spool.replay()  # nothing left: replaying again changes nothing
    assert again.replayed == 0
    await env.assert_exact(user, 6_000)


async def test_commit_outcome_unknown_but_landed_is_answered_without_spooling(env: Env) -> None:
    user = await env.user()
    env.database.mode = "ack_lost"  # the commit went through; the connection died before its ack
    result = await env.request(user, 7_000)
    assert result.posted
    assert env.spool.counters.landed_after_unknown == 1 and env.spool.counters.spooled == 0
    assert spool_status(env.directory).pending_records == 0
    assert len(await env.rows(user)) == 1
    await env.assert_exact(user, 7_000)  # the lost Redis move healed from the ledger: counted once


async def test_commit_outcome_unknown_and_not_landed_is_spooled(env: Env) -> None:
    user = await env.user()
    env.database.mode = "refused"  # the connection died, the database answers the check: not there
    await env.request(user, 7_000)
    assert env.spool.counters.spooled == 1 and env.spool.counters.landed_after_unknown == 0
    env.database.mode = "up"
    await env.spool.replay()
    await env.assert_exact(user, 7_000)


async def test_a_landed_record_that_could_not_be_checked_is_skipped_on_replay(env: Env) -> None:
    """The database was known down, so the lost acknowledgement could not be checked: spooled anyway; the
    replay finds the request id in usage_logs and skips it — debited once, in PostgreSQL and in Redis."""
    user = await env.user()
    env.watch.failed(ConnectionRefusedError(111, "down"))
    env.database.mode = "ack_lost"
    await env.request(user, 7_000)
    assert env.spool.counters.spooled == 1
    env.database.mode = "up"
    env.watch.succeeded()
    report = await env.spool.replay()
    assert (report.replayed, report.skipped) == (0, 1)
    assert len(await env.rows(user)) == 1
    await env.assert_exact(user, 7_000)


@pytest.mark.parametrize("batch", ["alone", "with-a-fresh-one"])
async def test_a_record_that_landed_after_the_replays_check_is_debited_once(
    env: Env, monkeypatch: pytest.MonkeyPatch, batch: str
) -> None:
    """The replay's usage_logs check misses a record that is there (it landed in between): the recorder,
    idempotent by request id (sg_record_usage's fresh ids on PostgreSQL + Redis), writes nothing for it, and
    the replay skips it like a landed one — its spooled debit leaves the hot copy, so it counts once."""
    user = await env.user()
    env.watch.failed(ConnectionRefusedError(111, "down"))
    env.database.mode = "ack_lost"
    await env.request(user, 7_000)  # committed, spooled anyway (the database was known down)
    if batch == "with-a-fresh-one":
        env.database.mode = "refused"
        await env.request(user, 3_000)
    assert env.spool.counters.spooled == (2 if batch == "with-a-fresh-one" else 1)
    env.database.mode = "up"
    env.watch.succeeded()

    async def missed(_conn: Any, _request_ids: Any) -> dict[str, uuid.UUID]:
        return {}

    monkeypatch.setattr(spool_module, "_landed", missed)
    report = await env.spool.replay()
    fresh = 1 if batch == "with-a-fresh-one" else 0
    assert (report.replayed, report.skipped, report.dead) == (fresh, 1, 0)
    assert len(await env.rows(user)) == 1 + fresh
    await env.assert_exact(user, 7_000 + 3_000 * fresh)


@pytest.mark.parametrize("order", ["reload-before-replay", "move-lost", "reload-between-commit-and-move"])
async def test_the_redis_copy_counts_a_replayed_debit_once_in_every_order(env: Env, order: str) -> None:
    user = await env.user()
    env.database.mode = "refused"
    await env.request(user, 4_000)
    env.database.mode = "up"
    if order == "reload-before-replay":  # PostgreSQL is back, the snapshot is reloaded before the replay
        await env.ledger.forget(user)
        assert await env.ledger.available(user) == CREDIT - 4_000  # the spooled debit is still counted
    if order == "move-lost":  # the replay commits, its Redis move fails (marked stale, reloaded later)
        real = env.ledger._settle_replayed

        async def lost(**kwargs: Any) -> Any:
            raise RedisConnectionError("Connection closed by server.")

        env.ledger._settle_replayed = lost  # type: ignore[assignment]
        await env.spool.replay()
        env.ledger._settle_replayed = real
    elif order == "reload-between-commit-and-move":
        real_after = env.ledger.after_replay

        async def reload_first(moves: Any, spooled: Any) -> None:
            await env.ledger.forget(user)  # a reload reads the ledger with the posting in it ...
            await env.ledger.available(user)
            await real_after(moves, spooled)  # ... and only then does the move arrive

        env.ledger.after_replay = reload_first  # type: ignore[method-assign]
        await env.spool.replay()
    else:
        await env.spool.replay()
    await env.assert_exact(user, 4_000)


async def test_a_record_refused_on_replay_is_dead_lettered_with_one_error_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    owner, user = await env.user(), await env.user()
    foreign = uuid.uuid4()
    async with env.engine.begin() as conn:  # a conversation of another user (created meanwhile)
        await conn.execute(
            text(
                "INSERT INTO conversations (id, user_id, created_at, updated_at)"
                " VALUES (:i, :u, now(), now())"
            ),
            {"i": foreign, "u": owner},
        )
    env.database.mode = "refused"
    await env.request(user, 1_000)
    await env.request(user, 2_000, conversation_id=foreign)
    await env.request(user, 3_000)
    env.database.mode = "up"
    with caplog.at_level(logging.INFO, logger="synapgate.spool"):
        report = await env.spool.replay()
    assert (report.replayed, report.dead) == (2, 1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "dead letter" in errors[0].getMessage() and not errors[0].exc_info
    assert spool_status(env.directory).dead_letters == 1
    assert sorted(a for _, a in await env.rows(user)) == [-3_000, -1_000]
    await env.assert_exact(user, 4_000)  # the hot copy follows the ledger, which refused the 2_000
    report = (await reconcile(env.engine, env.ledger, spool=spool_status(env.directory))).to_dict()
    assert report["mismatches"] == [] and report["spool_dead_letters"] == 1
    assert "spool_pending_records" not in report  # replayed: nothing waits


async def test_a_crash_mid_replay_and_a_torn_tail_are_replayed_once_at_start_up(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A previous run died mid-replay (the file renamed for replay, one record committed) and mid-append (a
    torn last frame). A new run replays at start-up: the committed record skipped, the torn tail kept."""
    user = await env.user()
    env.database.mode = "refused"
    for charged in (1_000, 2_000, 3_000):
        await env.request(user, charged)
    env.database.mode = "up"
    env.watch.succeeded()  # the watch's probe: PostgreSQL answers again
    assert await env.spool.spool.rotate()
    contents, data = env.spool.spool.read_replaying()
    first = contents.records[0]
    await record_completion(env.engine, replay_ledger_for(env.ledger, [first]), first.record, None)
    torn = encode_frame(first)[:-7]
    env.spool.spool.replaying.write_bytes(data + torn)  # and a crash mid-append

    with caplog.at_level(logging.WARNING, logger="synapgate.spool"):
        env.spool.start()  # start-up replays what is left
        for _ in range(100):
            if not env.spool.spool.pending:
                break
            await asyncio.sleep(0.05)
    assert not env.spool.spool.pending
    assert sorted(a for _, a in await env.rows(user)) == [-3_000, -2_000, -1_000]
    assert spool_status(env.directory).torn_bytes == len(torn)
    assert any("torn" in r.getMessage() for r in caplog.records)
    replayed = [r for r in caplog.records if r.getMessage().startswith("spool replayed")]
    assert len(replayed) == 1 and "2 records" in replayed[0].getMessage()
    await env.assert_exact(user, 6_000)


async def test_a_full_spool_fails_the_record_as_before(env: Env, tmp_path: Path) -> None:
    user = await env.user()
    env.spool.spool.max_bytes = 100  # no frame fits
    env.database.mode = "refused"
    assert not env.spool.accepting
    with pytest.raises(ConnectionRefusedError):
        await env.request(user, 1_000)
    assert env.spool.counters.spooled == 0


async def test_redis_failing_at_spool_time_still_answers_and_the_replay_applies_the_debit_once(
    env: Env,
) -> None:
    """The record is durable in the spool, so the answer stands although Redis did not take the debit; the
    replay's move applies it under the version rule (nothing spooled to subtract); the reservation closes."""
    user = await env.user()
    env.database.mode = "refused"
    real = env.ledger._settle_spooled

    async def lost(**kwargs: Any) -> Any:
        raise RedisConnectionError("Connection closed by server.")

    env.ledger._settle_spooled = lost  # type: ignore[assignment]
    result = await env.request(user, 5_000)
    env.ledger._settle_spooled = real
    assert result.posted and env.spool.counters.spooled == 1
    assert await env.ledger.spooled_nano(user) == 0  # Redis never heard of it
    env.database.mode = "up"
    await env.spool.replay()
    await env.assert_exact(user, 5_000)  # available = balance − held: the reservation is closed too


async def test_a_failed_requests_row_is_spooled_while_the_database_is_unreachable_and_replayed(
    env: Env,
) -> None:
    """The error row of a request the provider failed (no usage, no charge) is spooled too: written by an
    instance whose database is unreachable (nothing listens on its port), replayed by its successor."""
    user = await env.user()
    failure = completion(
        user,
        0,
        conversation_id=None,
        message_id=None,
        usage=Usage(),
        status="error",
        error_code="upstream_error",
        http_status=502,
    )
    await env.spool.stop()  # this test's instance: one whose PostgreSQL is away
    unreachable = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none", pool_size=1)
    spool_file = SpoolFile(env.directory, "test", 1 << 20)
    spool_file.open()
    cut_off = SpoolingRecorder(env.database, unreachable, env.ledger, spool_file)
    try:
        await cut_off.record_failure(failure)
        assert cut_off.counters.spooled == 1
    finally:
        await cut_off.stop()
        await unreachable.dispose()
    successor_file = SpoolFile(env.directory, "test", 1 << 20)
    successor_file.open()
    successor = SpoolingRecorder(env.database, env.engine, env.ledger, successor_file)
    try:
        report = await successor.replay()
    finally:
        await successor.stop()
    assert report.replayed == 1
    async with env.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT status, http_status, charged_nano FROM usage_logs WHERE request_id = :r"),
                {"r": failure.request_id},
            )
        ).all()
    assert [tuple(r) for r in rows] == [("error", 502, 0)]
    await env.assert_exact(user, 0)


async def test_a_replay_that_meets_an_outage_keeps_the_spool_and_waits_for_the_database(env: Env) -> None:
    user = await env.user()
    env.database.mode = "refused"
    await env.request(user, 1_000)
    await env.spool.stop()  # the same spool, opened by an instance whose PostgreSQL is away again
    unreachable = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none", pool_size=1)
    spool_file = SpoolFile(env.directory, "test", 1 << 20)
    spool_file.open()
    watch = OutageWatch("database", _never, interval=3600)
    replayer = SpoolingRecorder(env.database, unreachable, env.ledger, spool_file, database=watch)
    try:
        report = await replayer.replay()
        assert not report.done and report.replayed == 0
        assert watch.down  # the replay loop now waits for the probe, not for its next interval
        assert spool_status(env.directory).pending_records == 1  # kept for the next attempt
    finally:
        await replayer.stop()
        await watch.close()
        await unreachable.dispose()
