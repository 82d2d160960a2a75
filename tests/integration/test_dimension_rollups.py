"""The one-dimension daily rollups (per model, user, workspace, key) and `usage_totals`, the reader the
admin API and the dashboard share: every answer equals the same sums computed by hand from the records,
whichever rollup answers it, on SQLite and on PostgreSQL.

Usage is written by the real recorder (`record_completion`), with real keys and workspaces, some requests
without a workspace or a key, around UTC midnights; windows are day-aligned (the dashboard's), cut inside
hours and days (the API's), and open-ended.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import storage.usage.recorder as recorder
from migrations.runner import downgrade, upgrade
from pricing.cost import Usage
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.usage.analytics import Sums, UsageFilters, Window, choose_rollup, usage_totals
from storage.usage.recorder import CompletionRecord, record_completion
from storage.usage.rollups import DAY, HOUR, rebuild_usage_rollups, rollup_rows
from tests.integration.conftest import Gateway, off_loop
from tests.integration.helpers import by_hand

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 10, tzinfo=UTC)


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_database() -> str:
    return "reset"


async def _seed(gw: Gateway) -> list[CompletionRecord]:
    """45 records over three days: two users (one with two keys), a workspace or none, a key or none,
    two models, BYOK or not, successes, errors and a cancellation, some a minute from midnight."""
    async with gw.engine.begin() as conn:
        a = await create_user(conn, f"a-{uuid.uuid4().hex[:8]}@example.com")
        b = await create_user(conn, f"b-{uuid.uuid4().hex[:8]}@example.com")
        key_a1, _ = await create_key(conn, a.user_id, workspace_id=a.workspace_id)
        key_a2, _ = await create_key(conn, a.user_id, workspace_id=a.workspace_id)
        key_b, _ = await create_key(conn, b.user_id, workspace_id=b.workspace_id)
    llms = {
        str(r[0]): (int(r[1]), str(r[2]))
        for r in await gw.rows("SELECT name, id, provider FROM llms WHERE name IN ('gpt-4o-mini', 'gpt-4o')")
    }
    owners = [
        (a.user_id, a.workspace_id, key_a1),
        (a.user_id, a.workspace_id, key_a2),
        (a.user_id, None, None),
        (b.user_id, b.workspace_id, key_b),
        (b.user_id, None, key_b),
    ]
    offsets = [timedelta(minutes=1), timedelta(hours=13, minutes=30), timedelta(hours=23, minutes=59)]
    records = []
    for i, ((user, workspace, key), day, offset) in enumerate(itertools.product(owners, range(3), offsets)):
        model = "gpt-4o" if i % 3 == 0 else "gpt-4o-mini"
        status = "error" if i % 7 == 3 else ("cancelled" if i == 10 else "success")
        llm_id, provider = llms[model]
        rec = CompletionRecord(
            request_id=f"req_{uuid.uuid4().hex}",
            user_id=user,
            workspace_id=workspace,
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
            is_stream=False,
            status=status,
            latency_ms=50 + i,
            created_at=T0 + timedelta(days=day) + offset,
            ttft_ms=None,
            finish_reason="stop",
        )
        await record_completion(gw.engine, gw.ledger, rec, None)
        records.append(rec)
    return records


WINDOWS = [
    Window(T0, T0 + 3 * DAY),  # whole days: the one-dimension daily rollups
    Window(T0 + DAY, T0 + 2 * DAY),
    Window(T0 + timedelta(hours=13), T0 + 2 * DAY + timedelta(hours=23, minutes=59, seconds=30)),  # cut
    Window(T0 + timedelta(minutes=1, microseconds=1), None),  # open-ended, cut inside the first minute
    Window(None, None),
]


async def test_every_grouping_and_filter_equals_the_records(gateway: Gateway) -> None:
    records = await _seed(gateway)
    a, b = records[0].user_id, records[27].user_id
    key_a1, workspace_a = records[0].api_key_id, records[0].workspace_id
    assert a != b and key_a1 is not None and workspace_a is not None
    groupings: list[list[str]] = [
        [],
        ["user_api_key_used"],
        ["user_id", "user_api_key_used"],
        ["workspace_id", "user_api_key_used"],
        ["api_key_id", "user_api_key_used"],
        ["model", "user_api_key_used"],
        ["user_id", "model"],
        ["api_key_id", "model"],  # no rollup holds a key with its model: usage_logs
    ]
    filters = [
        UsageFilters(),
        UsageFilters(user_id=a),
        UsageFilters(workspace_id=workspace_a),
        UsageFilters(key_id=key_a1),
        UsageFilters(model="gpt-4o"),
        UsageFilters(user_id=b, model="gpt-4o-mini"),
    ]
    checked = 0
    async with gateway.engine.connect() as conn:
        for window, narrowing, keys in itertools.product(WINDOWS, filters, groupings):
            found = await usage_totals(conn, window, narrowing, keys)
            assert found == by_hand(records, window, narrowing, keys), (window, narrowing, keys)
            checked += 1
        # a page of users reads only their rows
        window = WINDOWS[0]
        found = await usage_totals(conn, window, UsageFilters(), ["user_id"], among_users=[b])
        assert found == by_hand(records, window, UsageFilters(user_id=b), ["user_id"])
        # per day: the UTC day first in each key, whichever rollup (daily, or hourly floored to days)
        for window, narrowing in itertools.product(WINDOWS[:3], filters[:5]):
            per_day = await usage_totals(conn, window, narrowing, ["user_api_key_used"], per=DAY)
            expected: dict[tuple[Any, ...], Sums] = defaultdict(Sums)
            for r in records:
                one = by_hand([r], window, narrowing, ["user_api_key_used"])
                for (byok,), s in one.items():
                    expected[(T0 + DAY * ((r.created_at - T0) // DAY), byok)].add(s)
            assert per_day == dict(expected), (window, narrowing)
    assert checked == len(WINDOWS) * len(filters) * len(groupings)


def test_the_smallest_rollup_answers() -> None:
    days, cut = Window(T0, T0 + 90 * DAY), Window(T0 + HOUR, T0 + 90 * DAY)
    name = lambda window, dims, per=None: getattr(choose_rollup(window, dims, per), "table", None)  # noqa: E731
    assert name(days, ["model", "user_api_key_used"]).name == "usage_model_daily"
    assert (
        name(cut, ["model", "user_api_key_used"]).name == "usage_hourly"
    )  # partial hours, not days, of logs
    assert name(days, ["user_id", "user_api_key_used"]).name == "usage_user_daily"
    assert name(cut, ["user_id"]).name == "usage_user_daily"
    assert name(days, ["workspace_id"]).name == "usage_workspace_daily"
    assert name(days, ["api_key_id", "user_api_key_used"]).name == "usage_key_daily"
    assert name(days, ["api_key_id", "user_id"]).name == "usage_key_daily"  # a user's own keys
    assert name(days, ["user_id", "model"]).name == "usage_daily"
    assert name(days, ["workspace_id", "user_id"]).name == "usage_daily"
    assert name(days, []).name == "usage_model_daily"
    assert name(days, [], HOUR).name == "usage_hourly"
    assert name(days, ["user_id"], HOUR) is None
    assert name(days, ["api_key_id", "model"]) is None


async def test_kept_by_the_recorder_equal_a_rebuild_and_the_migration_fills_them(gateway: Gateway) -> None:
    """The recorder's upkeep = storage's rebuild = what migration 0011 derives from existing usage_logs.

    On PostgreSQL + Redis the recorder writes through `sg_record_usage` (one round trip, migration 0014 keeps
    these rollups); on SQLite through the statement path (`apply_facts`)."""
    one_trip = recorder._one_trip_applies(gateway.engine, gateway.ledger)
    assert one_trip == (gateway.engine.dialect.name == "postgresql")
    await _seed(gateway)
    async with gateway.engine.begin() as conn:
        incremental = await conn.run_sync(rollup_rows)
        await conn.run_sync(rebuild_usage_rollups)
        rebuilt = await conn.run_sync(rollup_rows)
    assert incremental == rebuilt
    assert len(rebuilt["usage_key_daily"]) > 0 and len(rebuilt["usage_workspace_daily"]) > 0
    await gateway.engine.dispose()
    off_loop(downgrade, gateway.settings.database_url, "0010")
    off_loop(upgrade, gateway.settings.database_url)
    async with gateway.engine.connect() as conn:
        migrated = await conn.run_sync(rollup_rows)
    assert migrated == rebuilt
