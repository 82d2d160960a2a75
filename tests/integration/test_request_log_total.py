"""The dashboard's request log counts its matches from the rollups (exact), not row by row: the count equals
the rows, for every status, window (whole days and partial edges) and filter, on PostgreSQL and SQLite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from config import Settings
from gateway.dashboard import data
from pricing.cost import Usage
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.factory import build_ledger
from storage.db import create_engine
from storage.types import utcnow
from storage.usage.analytics import UsageFilters, Window
from storage.usage.recorder import record_batch, record_failure
from storage.usage.rollups import DAY, floor_to, usage_logs
from tests.integration.helpers import completion_record

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, uuid.UUID, uuid.UUID]]:
    url = str(
        request.getfixturevalue("pg_reset_database" if request.param == "postgresql" else "sqlite_database")
    )
    engine = create_engine(url, pool_size=2)
    ledger: Any = build_ledger(Settings(database_url=url), engine, None)
    users = []
    for _ in range(2):
        async with engine.begin() as conn:
            users.append((await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id)
        await add_credits(engine, ledger, users[-1], 10**12, f"seed-{users[-1]}")
    today = floor_to(utcnow(), DAY)
    batch = []
    for i in range(30):
        at = today - timedelta(days=2) + timedelta(hours=5 * i)
        status = ("success", "cancelled", "success")[i % 3]
        batch.append(completion_record(users[i % 2], 10, status=status, created_at=at))
    await record_batch(engine, ledger, [(r, None) for r in batch])
    for i in range(7):
        await record_failure(
            engine,
            completion_record(
                users[0], 0, status="error", usage=Usage(), conversation_id=None, message_id=None,
                created_at=today - timedelta(days=1, hours=-3 * i),
            ),
        )  # fmt: skip
    try:
        yield engine, users[0], users[1]
    finally:
        await ledger.close()
        await engine.dispose()


async def test_the_request_logs_total_equals_its_rows(setup: tuple[Any, uuid.UUID, uuid.UUID]) -> None:
    engine, alice, _bob = setup
    today = floor_to(utcnow(), DAY)
    windows = [
        Window(),
        Window(today - timedelta(days=2), today),  # whole days
        Window(today - timedelta(days=1, hours=7, minutes=13), today + timedelta(hours=3)),  # partial edges
    ]
    seen = 0
    for window in windows:
        for filters in (UsageFilters(), UsageFilters(user_id=alice), UsageFilters(model="gpt-4o-mini")):
            for status in (None, "success", "error", "cancelled"):
                where = [*window.filters(usage_logs.c.created_at)]
                where += [usage_logs.c[k] == v for k, v in filters.columns().items()]
                if status is not None:
                    where.append(usage_logs.c.status == status)
                async with engine.connect() as conn:
                    rows = (
                        await conn.execute(select(func.count()).select_from(usage_logs).where(*where))
                    ).scalar_one()
                    found = await data.request_log(conn, window, filters, status=status, limit=5, offset=0)
                assert found.total == rows, (window, filters, status)
                assert len(found.rows) == min(5, rows)
                seen += rows
    assert seen > 100  # the cases are not empty
