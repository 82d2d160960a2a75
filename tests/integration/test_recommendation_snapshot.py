"""The stored recommendations snapshot (issue 13 with 14), on both backends through the real HTTP path: the
`insights.daily` job stores the platform's and each user's recommendations, `?source=snapshot` reads them
back equal to the live API of the same scope to the nano, and a rerun replaces them in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from insights.recommend import RecommendationRule
from pricing.cost import price_usage
from storage.catalog.repository import load_catalog
from storage.insights import repository
from storage.insights.service import run_recommendations
from storage.jobs.runner import JobResources, insights_daily
from tests.integration.conftest import Gateway
from tests.integration.test_insights import ADMIN, _plant_traffic, api

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


async def _snapshot(gw: Gateway, key: str = ADMIN, **params: str) -> dict[str, Any]:
    response = await api(
        gw, "GET", "/analytics/recommendations", key=key, params={"source": "snapshot", **params}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["source"] == "snapshot"
    return body


async def _after_startup_jobs(gw: Gateway) -> None:
    """SQLite runs its jobs in the gateway's process, insights.daily once at start: wait for that run, so
    it cannot replace the snapshot in the middle of a test. (PostgreSQL: the worker runs them, not here.)"""
    if not gw.settings.is_sqlite:
        return
    for _ in range(600):
        async with gw.engine.connect() as conn:
            if await repository.stored_recommendations(conn) is not None:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the in-process insights.daily did not run")


async def test_daily_job_snapshot_equals_the_live_api_to_the_nano(gateway: Gateway) -> None:
    user_a, key_a = await gateway.seed_user("1")
    user_b, key_b = await gateway.seed_user("1")
    before = await _snapshot(gateway)
    if gateway.settings.is_sqlite:  # its in-process insights.daily ran at start, on no traffic
        await _after_startup_jobs(gateway)
        assert (await _snapshot(gateway))["data"] == []
    else:  # never computed: not "computed, nothing found"
        assert before["data"] == [] and before["computed_at"] is None

    async with gateway.engine.connect() as conn:
        catalog = await load_catalog(conn)
    big, small = catalog.get("gpt-4o"), catalog.get("gpt-4o-mini")
    assert big is not None and small is not None
    # A: a cheaper-equal model of their own. B: only the expensive one — nothing to recommend to B alone,
    # but B's requests add to the platform's current arm (its figures differ from A's).
    current_a = await _plant_traffic(gateway, user_a, "gpt-4o", big.id, 220, 90, 10, (900, 300))
    await _plant_traffic(gateway, user_a, "gpt-4o-mini", small.id, 300, 97, 3, (900, 300))
    current_b = await _plant_traffic(gateway, user_b, "gpt-4o", big.id, 220, 90, 10, (700, 200))

    async with aiohttp.ClientSession() as http:  # the job itself, as the worker runs it
        await insights_daily(JobResources(gateway.settings, gateway.engine, http))

    async def live(key: str = ADMIN, **params: str) -> list[dict[str, Any]]:
        response = await api(gateway, "GET", "/analytics/recommendations", key=key, params=params)
        assert response.status_code == 200 and response.json()["computed_at"] is None, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    snap = await _snapshot(gateway)
    assert snap["computed_at"] is not None and snap["since"] < snap["computed_at"]
    assert snap["data"] == await live()  # every field: money (nano and USD), percent, evidence
    [platform] = snap["data"]
    assert (platform["tag"], platform["current_model"], platform["recommended_model"]) == (
        "coding",
        "gpt-4o",
        "gpt-4o-mini",
    )
    both = current_a + current_b
    assert platform["requests"] == 440
    assert platform["current_cost_nano"] == sum(price_usage(u, big).total_nano for u in both)
    assert platform["projected_cost_nano"] == sum(price_usage(u, small).total_nano for u in both)

    # A user key reads its own snapshot, equal to its own live answer; the operator narrowing to the user
    # reads the same; B, with no cheaper arm of their own, gets none (computed, so computed_at is set).
    mine = await _snapshot(gateway, key_a)
    assert mine["computed_at"] == snap["computed_at"]
    assert mine["data"] == await live(key_a) == (await _snapshot(gateway, user_id=str(user_a)))["data"]
    [rec] = mine["data"]
    assert (rec["tag"], rec["current_model"], rec["recommended_model"], rec["requests"]) == (
        "coding",
        "gpt-4o",
        "gpt-4o-mini",
        220,
    )
    expected_current = sum(price_usage(u, big).total_nano for u in current_a)
    expected_projected = sum(price_usage(u, small).total_nano for u in current_a)
    assert rec["current_cost_nano"] == expected_current
    assert rec["projected_cost_nano"] == expected_projected
    assert rec["savings_nano"] == expected_current - expected_projected > 0
    assert rec["evidence"]["current"]["requests"] == 220 and rec["evidence"]["candidate"]["requests"] == 300
    assert rec["evidence"]["current"]["ratings"] == 100 and rec["evidence"]["candidate"]["ratings"] == 100
    theirs = await _snapshot(gateway, key_b)
    assert theirs["data"] == await live(key_b) == [] and theirs["computed_at"] == snap["computed_at"]
    # Another user's id with a user key: 404, as the live API. A workspace is not snapshotted: none.
    other = await api(
        gateway,
        "GET",
        "/analytics/recommendations",
        key=key_a,
        params={"source": "snapshot", "user_id": str(user_b)},
    )
    assert other.status_code == 404, other.text
    space = await _snapshot(gateway, workspace_id=str(uuid.uuid4()))
    assert space["data"] == [] and space["computed_at"] is None

    # Bad input: a clear 400 in the error envelope.
    for params in ({"source": "snapshot", "start": "2026-01-01T00:00:00Z"}, {"source": "cached"}):
        bad = await api(gateway, "GET", "/analytics/recommendations", params=params)
        assert bad.status_code == 400, bad.text
        assert set(bad.json()) == {"error"}


async def test_a_rerun_replaces_the_snapshot_atomically(gateway: Gateway) -> None:
    user, _key = await gateway.seed_user("1")
    await _after_startup_jobs(gateway)
    async with gateway.engine.connect() as conn:
        catalog = await load_catalog(conn)
    big, small = catalog.get("gpt-4o"), catalog.get("gpt-4o-mini")
    assert big is not None and small is not None
    await _plant_traffic(gateway, user, "gpt-4o", big.id, 220, 90, 10, (900, 300))
    await _plant_traffic(gateway, user, "gpt-4o-mini", small.id, 300, 97, 3, (900, 300))

    first = await run_recommendations(gateway.engine)
    again = await run_recommendations(gateway.engine)
    assert first.recommendations == again.recommendations == 1
    assert (again.users, again.user_recommendations) == (1, 1)
    snap = await _snapshot(gateway)
    assert len(snap["data"]) == 1  # replaced, not appended
    assert datetime.fromisoformat(snap["computed_at"]) == again.computed_at

    # A failure inside the replacing transaction leaves the previous snapshot whole.
    with pytest.raises(RuntimeError):
        async with gateway.engine.begin() as conn:
            await repository.replace_recommendations(
                conn, {}, computed_at=again.computed_at, since=again.since
            )
            raise RuntimeError("the job died half-way")
    assert (await _snapshot(gateway))["data"] == snap["data"]

    # Computed and nothing found is not "never computed": empty data, computed_at set.
    strict = await run_recommendations(gateway.engine, rule=RecommendationRule(min_requests=10**6))
    assert strict.recommendations == 0
    empty = await _snapshot(gateway)
    assert empty["data"] == [] and empty["computed_at"] is not None
