"""usage_logs partitioned by month on PostgreSQL (migration 0015, storage/usage/partitions.py).

The migration moves the rows in and back out; a record lands in its month's partition; idempotency by
request id holds on every path that writes usage_logs, across months too (the gate table); `ensure` makes
the months ahead, is idempotent, and moves rows out of the default partition; the retention detaches old
months while the analytics still answer from the rollups; SQLite refuses with one clear line.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

import storage.usage.recorder as recorder
from config import Settings
from gateway.cli import main
from migrations.runner import downgrade, upgrade
from pricing.cost import Usage
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.factory import build_ledger
from storage.db import create_engine
from storage.errors import InvalidInput, PartitioningUnsupported
from storage.jobs.runner import JobResources, maintain_usage_partitions
from storage.types import utcnow
from storage.usage.analytics import UsageFilters, Window, usage_totals
from storage.usage.partitions import (
    add_months,
    detach_old_partitions,
    ensure_partitions,
    list_partitions,
    month_start,
    partition_name,
)
from storage.usage.recorder import CompletionRecord, record_batch, record_failure
from tests.integration.conftest import off_loop
from tests.integration.helpers import completion_record

pytestmark = pytest.mark.integration

CREDIT = 1_000_000_000


@pytest.fixture
async def engine(pg_database: str) -> AsyncIterator[AsyncEngine]:
    """A fresh clone per test: these tests add and detach partitions (the schema changes)."""
    eng = create_engine(pg_database, pool_size=3)
    try:
        yield eng
    finally:
        await eng.dispose()


async def fetch(engine: AsyncEngine, query: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(query), params)).all()]


async def new_user(engine: AsyncEngine, ledger: Any) -> uuid.UUID:
    async with engine.begin() as conn:
        user = (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id
    if ledger is not None:
        await add_credits(engine, ledger, user, CREDIT, f"seed-{user}")
    return user


def failure(user: uuid.UUID, at: datetime) -> CompletionRecord:
    """A failed request (no conversation, no usage): `record_failure` writes it, without the messages gate."""
    return completion_record(
        user, 0, status="error", usage=Usage(), conversation_id=None, message_id=None,
        error_code="upstream_error", http_status=502, created_at=at,
    )  # fmt: skip


async def where_is(engine: AsyncEngine, request_id: str) -> list[str]:
    found = await fetch(
        engine, "SELECT tableoid::regclass::text FROM usage_logs WHERE request_id = :r", r=request_id
    )
    return [r[0] for r in found]


# -- the migration -------------------------------------------------------------------------------------


async def test_the_migration_moves_the_rows_in_and_back_out(pg_database: str) -> None:
    off_loop(downgrade, pg_database, "0014")
    engine = create_engine(pg_database, pool_size=2)
    now = utcnow()
    try:
        user = await new_user(engine, None)
        stamps = [now - timedelta(days=400), now - timedelta(days=40), now, now + timedelta(days=400)]
        async with engine.begin() as conn:
            for i, at in enumerate(stamps):
                await conn.execute(
                    text(
                        "INSERT INTO usage_logs (request_id, user_id, provider, model, cost_nano, "
                        "created_at) VALUES (:r, :u, 'openai', 'gpt-4o-mini', :c, :at)"
                    ),
                    {"r": f"req_{i}", "u": user, "c": 1000 + i, "at": at},
                )
        before = await fetch(
            engine, "SELECT id, request_id, cost_nano, created_at FROM usage_logs ORDER BY id"
        )
        sequence = await fetch(engine, "SELECT last_value FROM usage_logs_id_seq")
        await engine.dispose()

        off_loop(upgrade, pg_database)
        assert await fetch(engine, "SELECT relkind::text FROM pg_class WHERE relname = 'usage_logs'") == [
            ("p",)
        ]
        after = await fetch(
            engine, "SELECT id, request_id, cost_nano, created_at FROM usage_logs ORDER BY id"
        )
        assert after == before
        assert await fetch(engine, "SELECT last_value FROM usage_logs_id_seq") == sequence
        # each row in its month's partition; the one beyond the months made ahead in the default
        placed = [(await where_is(engine, f"req_{i}"))[0] for i in range(4)]
        assert placed[:3] == [partition_name(month_start(at)) for at in stamps[:3]]
        assert placed[3] == "usage_logs_default"
        gate = await fetch(engine, "SELECT request_id FROM usage_request_ids ORDER BY 1")
        assert gate == [(f"req_{i}",) for i in range(4)]
        async with engine.begin() as conn:  # the id sequence goes on from where it was
            new_id = (
                await conn.execute(
                    text(
                        "INSERT INTO usage_logs (request_id, user_id, provider, model) "
                        "VALUES ('req_new', :u, 'openai', 'gpt-4o-mini') RETURNING id"
                    ),
                    {"u": user},
                )
            ).scalar_one()
        assert new_id == sequence[0][0] + 1
        await engine.dispose()

        off_loop(downgrade, pg_database, "0014")
        assert await fetch(engine, "SELECT relkind::text FROM pg_class WHERE relname = 'usage_logs'") == [
            ("r",)
        ]
        back = await fetch(engine, "SELECT id, request_id, cost_nano, created_at FROM usage_logs ORDER BY id")
        assert back[:4] == before and back[4][1] == "req_new"
        assert await fetch(engine, "SELECT to_regclass('usage_request_ids') IS NULL") == [(True,)]
        with pytest.raises(IntegrityError):  # the unique index of 0014 is back
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO usage_logs (request_id, user_id, provider, model, created_at) "
                        "VALUES ('req_0', :u, 'openai', 'gpt-4o-mini', :at)"
                    ),
                    {"u": user, "at": now + timedelta(days=1)},
                )
        await engine.dispose()
        off_loop(upgrade, pg_database)
        assert len(await fetch(engine, "SELECT 1 FROM usage_logs")) == 5
    finally:
        await engine.dispose()


# -- the record path -------------------------------------------------------------------------------------


@pytest.fixture(params=["one-trip", "statements"])
async def ledger(
    request: pytest.FixtureRequest, engine: AsyncEngine, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    redis = Redis.from_url(redis_url)
    built: Any = build_ledger(Settings(database_url="postgresql+asyncpg://x/y"), engine, redis)
    assert recorder._one_trip_applies(engine, built)
    if request.param == "statements":
        monkeypatch.setattr(recorder, "_one_trip_applies", lambda _engine, _ledger: False)
    try:
        yield built
    finally:
        await built.close()
        await redis.aclose()


async def test_a_record_lands_in_its_months_partition(engine: AsyncEngine, ledger: Any) -> None:
    user = await new_user(engine, ledger)
    now = utcnow()
    rec = completion_record(user, 1_000, created_at=now)
    await record_batch(engine, ledger, [(rec, None)])
    assert await where_is(engine, rec.request_id) == [partition_name(month_start(now))]


async def test_a_replay_writes_nothing_even_in_another_month(engine: AsyncEngine, ledger: Any) -> None:
    user = await new_user(engine, ledger)
    now = utcnow()
    rec = completion_record(user, 1_000, created_at=now)
    await record_batch(engine, ledger, [(rec, None)])
    # the same request again: as it was, and stamped a month later (another partition)
    later = replace(rec, created_at=add_months(month_start(now), 1) + timedelta(hours=1))
    await record_batch(engine, ledger, [(rec, None)])
    await record_batch(engine, ledger, [(later, None)])
    assert await where_is(engine, rec.request_id) == [partition_name(month_start(now))]
    debits = await fetch(
        engine, "SELECT amount_nano FROM billing_events WHERE request_id = :r", r=rec.request_id
    )
    assert debits == [(-1_000,)]
    balance = await fetch(engine, "SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=user)
    assert balance == [(CREDIT - 1_000,)]
    assert await fetch(
        engine, "SELECT count(*) FROM usage_request_ids WHERE request_id = :r", r=rec.request_id
    ) == [(1,)]


async def test_a_failure_replayed_in_another_month_writes_nothing(engine: AsyncEngine) -> None:
    user = await new_user(engine, None)
    now = utcnow()
    failed = failure(user, now)
    await record_failure(engine, failed)
    await record_failure(engine, replace(failed, created_at=add_months(month_start(now), 2)))
    assert await where_is(engine, failed.request_id) == [partition_name(month_start(now))]


async def test_the_gate_refuses_a_second_row_for_a_request_id(engine: AsyncEngine) -> None:
    """What the paths above rely on: whatever writes usage_logs, a request id has one row (any month)."""
    user = await new_user(engine, None)
    insert = text(
        "INSERT INTO usage_logs (request_id, user_id, provider, model, created_at) "
        "VALUES ('req_once', :u, 'openai', 'gpt-4o-mini', :at)"
    )
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(insert, {"u": user, "at": now})
    for at in (now, add_months(month_start(now), 1), now + timedelta(days=3650)):  # same, next, default
        with pytest.raises(IntegrityError, match="pk_usage_request_ids"):
            async with engine.begin() as conn:
                await conn.execute(insert, {"u": user, "at": at})
    assert len(await where_is(engine, "req_once")) == 1


# -- maintenance -------------------------------------------------------------------------------------------


async def attached(engine: AsyncEngine) -> list[str]:
    return [p.name for p in await list_partitions(engine) if p.attached and p.month is not None]


async def test_ensure_makes_the_months_ahead_and_is_idempotent(engine: AsyncEngine) -> None:
    now = utcnow()
    first = await attached(engine)
    assert first == [partition_name(add_months(month_start(now), n)) for n in range(4)]  # the migration's
    later = add_months(month_start(now), 2) + timedelta(days=3)
    report = await ensure_partitions(engine, later, 3)
    assert report.created == [partition_name(add_months(month_start(now), n)) for n in (4, 5)]
    assert report.moved_rows == 0
    again = await ensure_partitions(engine, later, 3)
    assert again.created == [] and again.moved_rows == 0
    assert await attached(engine) == [partition_name(add_months(month_start(now), n)) for n in range(6)]
    # a partition made by ensure holds the parent's indexes, keys and gate trigger
    user = await new_user(engine, None)
    rec = failure(user, add_months(month_start(now), 5))
    await record_failure(engine, rec)
    assert await where_is(engine, rec.request_id) == [partition_name(add_months(month_start(now), 5))]
    indexes = await fetch(
        engine,
        "SELECT count(*) FROM pg_indexes WHERE tablename = :t",
        t=partition_name(add_months(month_start(now), 5)),
    )
    assert indexes == [(8,)]  # the primary key, the (request_id, created_at) key and the six indexes (0017)


async def test_ensure_moves_the_default_partitions_rows_into_their_month(
    engine: AsyncEngine, ledger: Any
) -> None:
    user = await new_user(engine, ledger)
    now = utcnow()
    far = add_months(month_start(now), 8) + timedelta(days=2)
    old = add_months(month_start(now), -3) + timedelta(days=5)
    records = [completion_record(user, 100, created_at=at) for at in (far, far + timedelta(hours=1), old)]
    await record_batch(engine, ledger, [(r, None) for r in records])
    assert {(await where_is(engine, r.request_id))[0] for r in records} == {"usage_logs_default"}

    report = await ensure_partitions(engine, now, 3)
    assert report.created == [partition_name(month_start(old)), partition_name(month_start(far))]
    assert report.moved_rows == 3
    assert [(await where_is(engine, r.request_id))[0] for r in records] == [
        partition_name(month_start(far)),
        partition_name(month_start(far)),
        partition_name(month_start(old)),
    ]
    assert await fetch(engine, "SELECT count(*) FROM usage_logs_default") == [(0,)]
    # moved rows keep their gate: a replay still writes nothing
    await record_batch(engine, ledger, [(records[0], None)])
    assert len(await where_is(engine, records[0].request_id)) == 1
    assert await fetch(engine, "SELECT count(*) FROM billing_events WHERE type = 'usage'") == [(3,)]


async def test_retention_detaches_old_months_and_analytics_answer_from_rollups(
    engine: AsyncEngine, ledger: Any
) -> None:
    user = await new_user(engine, ledger)
    now = utcnow()
    old_month = add_months(month_start(now), -4)
    old = [completion_record(user, 700, created_at=old_month + timedelta(days=d, hours=3)) for d in (1, 2)]
    recent = completion_record(user, 50, created_at=now)
    await record_batch(engine, ledger, [(r, None) for r in [*old, recent]])
    await ensure_partitions(engine, now, 3)  # the old month's partition, its rows moved in
    month_window = Window(old_month, add_months(old_month, 1))

    async def month_totals() -> tuple[int, int]:
        async with engine.connect() as conn:
            found = await usage_totals(conn, month_window, UsageFilters(user_id=user), [])
        sums = found[()]
        return sums.requests, sums.charged_nano

    assert await month_totals() == (2, 1_400)
    report = await detach_old_partitions(engine, now, 3)
    assert report.detached == [partition_name(old_month)]
    assert partition_name(old_month) not in await attached(engine)
    assert [(p.name, p.attached) for p in await list_partitions(engine) if p.month == old_month] == [
        (partition_name(old_month), False)
    ]
    # usage_logs no longer holds the month; the rollups (whole days) and the ledger still do
    assert await where_is(engine, old[0].request_id) == []
    assert await month_totals() == (2, 1_400)
    ledger_rows = await fetch(
        engine, "SELECT sum(amount_nano) FROM billing_events WHERE user_id = :u", u=user
    )
    assert ledger_rows == [(CREDIT - 1_450,)]
    # retired rows keep their gate: a late replay of one writes nothing (not even into the default)
    await record_batch(engine, ledger, [(old[0], None)])
    assert await fetch(engine, "SELECT count(*) FROM usage_logs_default") == [(0,)]
    # ensure does not make the retired month again; the next detach finds nothing
    assert (await ensure_partitions(engine, now, 3)).created == []
    assert (await detach_old_partitions(engine, now, 3)).detached == []
    # retention 1 keeps the previous month
    previous = add_months(month_start(now), -1)
    await record_failure(engine, failure(user, previous))
    await ensure_partitions(engine, now, 3)
    assert partition_name(previous) not in (await detach_old_partitions(engine, now, 1)).detached
    assert partition_name(previous) in await attached(engine)


async def test_drop_removes_the_detached_months(engine: AsyncEngine) -> None:
    user = await new_user(engine, None)
    now = utcnow()
    old_month = add_months(month_start(now), -6)
    rec = failure(user, old_month)
    await record_failure(engine, rec)
    await ensure_partitions(engine, now, 3)
    report = await detach_old_partitions(engine, now, 2, drop=True)
    assert report.detached == [partition_name(old_month)] and report.dropped
    assert await fetch(engine, "SELECT to_regclass(:t) IS NULL", t=partition_name(old_month)) == [(True,)]


async def test_the_job_maintains_partitions(engine: AsyncEngine, pg_database: str) -> None:
    import aiohttp

    now = utcnow()
    user = await new_user(engine, None)
    stray = add_months(month_start(now), 10)
    rec = failure(user, stray)
    await record_failure(engine, rec)
    settings = Settings(database_url=pg_database, usage_partition_months_ahead=5)
    parent_stats = "SELECT count(*) FROM pg_stats WHERE tablename = 'usage_logs' AND inherited"
    assert await fetch(engine, parent_stats) == [(0,)]
    async with aiohttp.ClientSession() as http:
        await maintain_usage_partitions(JobResources(settings, engine, http))
    assert (await fetch(engine, parent_stats))[0][0] > 0  # the parent's own statistics, made by the job
    assert await attached(engine) == [
        *(partition_name(add_months(month_start(now), n)) for n in range(6)),
        partition_name(stray),
    ]


async def test_sqlite_refuses_with_one_line(sqlite_database: str) -> None:
    engine = create_engine(sqlite_database)
    try:
        with pytest.raises(PartitioningUnsupported, match="PostgreSQL only"):
            await ensure_partitions(engine, datetime.now(UTC), 3)
        with pytest.raises(PartitioningUnsupported):
            await list_partitions(engine)
        import aiohttp

        async with aiohttp.ClientSession() as http:  # the job is a no-op there
            await maintain_usage_partitions(
                JobResources(Settings(database_url=sqlite_database), engine, http)
            )
    finally:
        await engine.dispose()


async def test_ensure_makes_months_back_and_refuses_a_negative_count(engine: AsyncEngine) -> None:
    now = utcnow()
    report = await ensure_partitions(engine, now, 3, months_back=2)
    assert report.created == [partition_name(add_months(month_start(now), n)) for n in (-2, -1)]
    with pytest.raises(InvalidInput) as refused:
        await ensure_partitions(engine, now, -1)
    assert refused.value.param == "months_ahead"


def run_cli(argv: list[str], url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> tuple[int, str, str]:
    for name in [n for n in os.environ if n.upper().startswith("SYNAPGATE_")]:  # the tests' own settings
        monkeypatch.delenv(name)
    monkeypatch.setenv("SYNAPGATE_DATABASE_URL", url)
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_cli_lists_ensures_and_detaches(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["partitions", "ensure", "--months-ahead", "5"], pg_database, monkeypatch, capsys)
    assert code == 0 and len(json.loads(out)["created"]) == 2
    code, out, _ = run_cli(["partitions", "list"], pg_database, monkeypatch, capsys)
    listed = json.loads(out)
    assert code == 0 and listed["total"]["partitions"] == 7  # six months and the default
    code, _, err = run_cli(["partitions", "detach-old"], pg_database, monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("synapgate: error: --retention-months: ")
    code, out, _ = run_cli(
        ["partitions", "detach-old", "--retention-months", "2"], pg_database, monkeypatch, capsys
    )
    assert code == 0 and json.loads(out) == {"detached": [], "dropped": False}


def test_the_cli_says_sqlite_has_no_partitions(
    sqlite_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for action in ("list", "ensure", "detach-old"):
        code, out, err = run_cli(["partitions", action], sqlite_database, monkeypatch, capsys)
        assert code == 1 and out == ""
        assert err == (
            "synapgate: error: usage_logs partitions exist on PostgreSQL only; the embedded SQLite database "
            "keeps one table (nothing to do)\n"
        )
