"""The monthly tier (issue 15): closed months of the per-user and per-key rollups and per-user latency
histograms, compacted by the `usage.monthly` job behind a watermark, on SQLite and on PostgreSQL.

Every answer read through the tier equals the same figures computed from the records themselves (sums by
hand, histograms bucketed by hand); a late write into a compacted month (a spool replay, with its original
time) lowers the watermark in its own transaction, so answers stay exact until the job compacts the month
again; a rebuild writes the same tier as the job.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

import storage.usage.analytics as analytics
from pricing.cost import Usage
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.types import utcnow
from storage.usage.analytics import (
    UsageFilters,
    Window,
    histogram_percentile,
    llm_performance,
    split_months,
    usage_totals,
)
from storage.usage.partitions import add_months
from storage.usage.recorder import CompletionRecord, record_completion
from storage.usage.rollups import (
    DAY,
    compact_closed_months,
    compactable_until,
    latency_bucket,
    latency_user_monthly,
    read_watermark,
    rebuild_usage_rollups,
    usage_key_monthly,
    usage_user_monthly,
)
from tests.integration.conftest import Gateway
from tests.integration.helpers import by_hand

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_database() -> str:
    return "reset"


@pytest.fixture(autouse=True)
def _no_monthly_job_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests run the `usage.monthly` job's function themselves. On SQLite the gateway runs its jobs in
    process, and a run of its own between a test's seed and its call compacted the months first (seen once
    in a full run): its registry here has every job but that one."""
    import gateway.runtime
    from storage.jobs import runner

    real = runner.start_jobs_in_process

    def registry_without_monthly(settings: Any) -> runner.JobRegistry:
        registry = runner.default_registry(settings)
        del registry.jobs["usage.monthly"]
        return registry

    async def start(settings: Any, engine: Any, registry: Any = None) -> Any:
        return await real(settings, engine, registry or registry_without_monthly(settings))

    monkeypatch.setattr(gateway.runtime, "start_jobs_in_process", start)


def _months() -> list[datetime]:
    """Three closed months and the first month the job may not compact yet (the current one)."""
    until = compactable_until(utcnow())
    return [add_months(until, -3), add_months(until, -2), add_months(until, -1), until]


class Seeder:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.records: list[CompletionRecord] = []
        self.n = 0

    async def setup(self) -> None:
        async with self.gw.engine.begin() as conn:
            self.a = await create_user(conn, f"a-{uuid.uuid4().hex[:8]}@example.com")
            self.b = await create_user(conn, f"b-{uuid.uuid4().hex[:8]}@example.com")
            self.key_a, _ = await create_key(conn, self.a.user_id, workspace_id=self.a.workspace_id)
            self.key_b, _ = await create_key(conn, self.b.user_id, workspace_id=None)
        self.llms = {
            str(r[0]): (int(r[1]), str(r[2]))
            for r in await self.gw.rows(
                "SELECT name, id, provider FROM llms WHERE name IN ('gpt-4o-mini', 'gpt-4o')"
            )
        }

    async def record(self, user: Any, key: Any, at: datetime) -> CompletionRecord:
        i = self.n
        self.n += 1
        model = "gpt-4o" if i % 3 == 0 else "gpt-4o-mini"
        llm_id, provider = self.llms[model]
        status = "error" if i % 7 == 3 else ("cancelled" if i % 11 == 5 else "success")
        rec = CompletionRecord(
            request_id=f"req_{uuid.uuid4().hex}",
            user_id=user.user_id,
            workspace_id=user.workspace_id if key == self.key_a else None,
            api_key_id=key,
            conversation_id=uuid.uuid4(),
            message_id=uuid.uuid4(),
            llm_id=llm_id,
            model=model,
            provider=provider,
            price_version=1,
            usage=Usage(100 + i, 10 + i, i, 0, i % 2),
            cost_nano=1_000_003 * (i + 1),
            charged_nano=0 if i % 4 == 1 else 1_000_003 * (i + 1),
            byok=i % 4 == 1,
            is_stream=i % 2 == 0,
            status=status,
            latency_ms=40 + 37 * (i % 13) + i,
            created_at=at,
            ttft_ms=(5 + 3 * i) if i % 2 == 0 and status == "success" else None,
            finish_reason="stop",
        )
        await record_completion(self.gw.engine, self.gw.ledger, rec, None)
        self.records.append(rec)
        return rec

    async def seed(self) -> None:
        """Both users, with and without a key, at a month's first minute, its middle and last minute."""
        await self.setup()
        owners = [(self.a, self.key_a), (self.a, None), (self.b, self.key_b)]
        for month, (user, key) in itertools.product(_months(), owners):
            for at in (
                month + timedelta(minutes=1),
                month + 14 * DAY + timedelta(hours=13),
                add_months(month, 1) - timedelta(minutes=1),
            ):
                if at <= utcnow():
                    await self.record(user, key, at)


def _windows() -> list[Window]:
    m = _months()
    return [
        Window(None, None),
        Window(m[0], add_months(m[3], 1)),  # whole months
        Window(m[0] + 10 * DAY, m[3] + DAY),  # days around whole months (the dashboard's long ranges)
        Window(m[0] + 10 * DAY + timedelta(hours=3), m[2] + timedelta(hours=5)),  # cut inside days
        Window(m[1], None),
        Window(m[1] + DAY, m[1] + 20 * DAY),  # inside one month: no whole month
    ]


GROUPINGS = [["user_id", "user_api_key_used"], ["api_key_id", "user_api_key_used"], ["api_key_id", "user_id"]]


async def _check_totals(gw: Gateway, records: list[CompletionRecord], s: Seeder) -> int:
    filters = [UsageFilters(), UsageFilters(user_id=s.a.user_id), UsageFilters(key_id=s.key_b)]
    checked = 0
    async with gw.engine.connect() as conn:
        for window, narrowing, keys in itertools.product(_windows(), filters, GROUPINGS):
            found = await usage_totals(conn, window, narrowing, keys)
            assert found == by_hand(records, window, narrowing, keys), (window, narrowing, keys)
            checked += 1
        window = _windows()[2]
        among = await usage_totals(conn, window, UsageFilters(), ["user_id"], among_users=[s.b.user_id])
        assert among == by_hand(records, window, UsageFilters(user_id=s.b.user_id), ["user_id"])
    return checked


async def _execute(gw: Gateway, sql: str) -> None:
    async with gw.engine.begin() as conn:
        await conn.execute(text(sql))


async def _monthly_rows(gw: Gateway) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with gw.engine.connect() as conn:
        for table in (usage_user_monthly, usage_key_monthly, latency_user_monthly):
            keys = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in (await conn.execute(select(table).order_by(*keys))).all()]
    return out


async def test_the_job_compacts_closed_months_and_answers_stay_exact(gateway: Gateway) -> None:
    s = Seeder(gateway)
    await s.seed()
    months = _months()
    async with gateway.engine.connect() as conn:
        # None (nothing compacted), or: the job ran at start-up (SQLite runs it in process) with nothing
        # recorded, and the seed's late writes lowered the mark to their first month
        assert await read_watermark(conn) in (None, months[0])
    await _check_totals(gateway, s.records, s)  # the daily tier alone
    done = await compact_closed_months(gateway.engine, utcnow())
    assert done == months[:3]
    async with gateway.engine.connect() as conn:
        assert await read_watermark(conn) == months[3]
    assert await compact_closed_months(gateway.engine, utcnow()) == []  # nothing more is closed
    rows = await _monthly_rows(gateway)
    assert {r[1] for r in rows["usage_user_monthly"]} == set(months[:3])
    assert len(rows["latency_user_monthly"]) > 0
    assert await _check_totals(gateway, s.records, s) == len(_windows()) * 3 * len(GROUPINGS)
    # the tier answers the whole months: a change in it shows in the totals (then put back)
    await _execute(gateway, "UPDATE usage_user_monthly SET requests = requests + 1000")
    async with gateway.engine.connect() as conn:
        found = await usage_totals(conn, _windows()[1], UsageFilters(user_id=s.b.user_id), ["user_id"])
    expected = by_hand(s.records, _windows()[1], UsageFilters(user_id=s.b.user_id), ["user_id"])
    held = len([r for r in rows["usage_user_monthly"] if r[0] == s.b.user_id])  # (month, byok) rows
    assert held >= 3
    assert found[(s.b.user_id,)].requests == expected[(s.b.user_id,)].requests + 1000 * held
    await _execute(gateway, "UPDATE usage_user_monthly SET requests = requests - 1000")
    # a rebuild writes the same tier and the same watermark as the job
    async with gateway.engine.begin() as conn:
        await conn.run_sync(rebuild_usage_rollups)
        assert await read_watermark(conn) == months[3]
    assert await _monthly_rows(gateway) == rows


async def test_a_late_write_into_a_compacted_month_lowers_the_watermark(gateway: Gateway) -> None:
    s = Seeder(gateway)
    await s.seed()
    months = _months()
    await compact_closed_months(gateway.engine, utcnow())
    before = await _monthly_rows(gateway)
    # a spool replay: records written now with their original times, two months back
    await s.record(s.b, s.key_b, months[1] + 3 * DAY)
    await s.record(s.a, s.key_a, months[2] + 5 * DAY)
    async with gateway.engine.connect() as conn:
        assert await read_watermark(conn) == months[1]  # months[1] and later are read from the days again
    assert await _monthly_rows(gateway) == before  # the tier itself is not touched by the write
    await _check_totals(gateway, s.records, s)
    # the job compacts the months again from the mark
    assert await compact_closed_months(gateway.engine, utcnow()) == months[1:3]
    async with gateway.engine.connect() as conn:
        assert await read_watermark(conn) == months[3]
    await _check_totals(gateway, s.records, s)
    after = await _monthly_rows(gateway)
    async with gateway.engine.begin() as conn:
        await conn.run_sync(rebuild_usage_rollups)
    assert await _monthly_rows(gateway) == after
    # a write in the current month leaves the mark alone
    await s.record(s.a, s.key_a, utcnow())
    async with gateway.engine.connect() as conn:
        assert await read_watermark(conn) == months[3]


def _histogram_by_hand(
    records: list[CompletionRecord], window: Window, user_id: uuid.UUID
) -> dict[tuple[str, str], dict[int, int]]:
    out: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        inside = (window.start is None or r.created_at >= window.start) and (
            window.end is None or r.created_at < window.end
        )
        if not inside or r.user_id != user_id or r.status != "success":
            continue
        out[(r.model, "latency")][latency_bucket(r.latency_ms)] += 1
        if r.ttft_ms is not None:
            out[(r.model, "ttft")][latency_bucket(r.ttft_ms)] += 1
    return out


async def test_a_users_own_percentiles_come_from_histograms_above_the_cut_over(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Seeder(gateway)
    await s.seed()
    user = s.a.user_id

    async def check(window: Window) -> None:
        by_hand_histograms = _histogram_by_hand(s.records, window, user)
        async with gateway.engine.connect() as conn:
            report = await llm_performance(conn, window, user)
            histograms = await analytics.user_latency_histograms(conn, window, user)
        assert report.percentile_method == "histogram" and by_hand_histograms
        expected = {k: dict(v) for k, v in by_hand_histograms.items()}
        assert {k: dict(v) for k, v in histograms.items()} == expected
        for m in report.models:
            latency = by_hand_histograms.get((m.model.name, "latency"), {})
            ttft = by_hand_histograms.get((m.model.name, "ttft"), {})
            assert m.percentiles.latency_p50 == histogram_percentile(latency, 0.5)
            assert m.percentiles.latency_p95 == histogram_percentile(latency, 0.95)
            assert m.percentiles.ttft_p50 == histogram_percentile(ttft, 0.5)

    async with gateway.engine.connect() as conn:
        exact = await llm_performance(conn, Window(), user)
    assert exact.percentile_method == "exact"  # few requests: sorted
    monkeypatch.setattr(analytics, "EXACT_PERCENTILE_MAX_ROWS", 0)
    for window in _windows():
        await check(window)  # no month compacted: usage_logs, bucketed
    await compact_closed_months(gateway.engine, utcnow())
    for window in _windows():
        await check(window)  # the months the tier holds, usage_logs around them
    # the tier answers the whole months
    await _execute(gateway, "UPDATE latency_user_monthly SET count = count + 100")
    async with gateway.engine.connect() as conn:
        histograms = await analytics.user_latency_histograms(conn, Window(), user)
    by_hand_all = _histogram_by_hand(s.records, Window(), user)
    assert sum(map(sum, (h.values() for h in histograms.values()))) > sum(
        map(sum, (h.values() for h in by_hand_all.values()))
    )


def test_split_months() -> None:
    m = _months()
    mark = m[3]
    assert split_months(Window(), None) == (None, [Window()])
    assert split_months(Window(), mark) == (Window(None, mark), [Window(mark, None)])
    inside = Window(m[0] + DAY, m[0] + 2 * DAY)
    assert split_months(inside, mark) == (None, [inside])
    cut = Window(m[0] + DAY, m[3] + DAY)
    assert split_months(cut, mark) == (
        Window(m[1], mark),
        [Window(m[0] + DAY, m[1]), Window(mark, m[3] + DAY)],
    )
    aligned = Window(m[1], m[2])
    assert split_months(aligned, mark) == (aligned, [])
    assert split_months(Window(m[1], m[2]), m[1]) == (None, [Window(m[1], m[2])])  # nothing held yet


async def test_the_watermark_row_is_locked_by_a_late_write(gateway: Gateway) -> None:
    """PostgreSQL: the compaction waits for a late write's transaction (which holds the watermark row)."""
    if gateway.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: transactions never overlap")
    s = Seeder(gateway)
    await s.seed()
    months = _months()
    await compact_closed_months(gateway.engine, utcnow())
    import asyncio

    from storage.usage.rollups import lower_watermark

    async with gateway.engine.connect() as writer:
        await writer.begin()
        await writer.execute(lower_watermark(months[0]))
        job = asyncio.create_task(compact_closed_months(gateway.engine, utcnow()))
        await asyncio.sleep(0.5)
        assert not job.done()  # waiting for the row
        await writer.commit()
    assert await asyncio.wait_for(job, 30) == months[:3]
    async with gateway.engine.connect() as conn:
        assert await read_watermark(conn) == months[3]
        assert (await conn.execute(text("SELECT count(*) FROM usage_user_monthly"))).scalar_one() > 0
