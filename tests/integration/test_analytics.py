"""Analytics endpoints against hand-computed figures, on SQLite and on PostgreSQL + Redis.

Usage is written by the real recorder (`record_completion` / `record_failure`) with exact timestamps,
latencies and costs, or produced through the gateway with the openai SDK and mock directives. Every
number an endpoint returns is compared with a value worked out by hand in the comments next to it.

The rollups (storage/rollups.py) are kept by the recorder's hook `apply_usage_rollup`; until the recorder
calls it, these tests call it after each record themselves (WIRED below), so either way the incremental
path is what the endpoints read.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect as inspect_schema

import storage.usage.recorder
from migrations.runner import downgrade, upgrade
from pricing.cost import Usage
from pricing.money import format_usd
from storage.accounts.keys import create_key
from storage.accounts.users import create_user, default_workspace
from storage.models import Workspace, WorkspaceMember, table_of
from storage.usage.analytics import Window, histogram_percentile, percentile_cont, split_window
from storage.usage.recorder import CompletionRecord, apply_usage_rollups, record_completion, record_failure
from storage.usage.rollups import (
    DAY,
    HOUR,
    LATENCY_BOUNDS,
    UsageFacts,
    apply_facts,
    bucket_value,
    latency_bucket,
    rebuild_usage_rollups,
    rollup_rows,
)
from tests.integration.conftest import Gateway, off_loop

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-analytics-test"
WIRED = "apply_usage_rollup" in inspect.getsource(storage.usage.recorder)


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"  # both backends stay: the analytics SQL differs by dialect


@pytest.fixture
def gateway_database() -> str:
    return "reset"  # one PostgreSQL database for the module, emptied between tests


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def api(gw: Gateway, path: str, key: str | None = ADMIN, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    query = {k: v for k, v in params.items() if v is not None}
    return await gw.request("GET", f"/api/v1{path}", params=query, headers=headers)


async def post(gw: Gateway, path: str, body: dict[str, Any], key: str = ADMIN) -> httpx.Response:
    return await gw.request("POST", f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {key}"})


async def new_user(gw: Gateway) -> tuple[uuid.UUID, str, uuid.UUID]:
    """A user with their own workspace and a key: (user id, key, workspace id)."""
    async with gw.engine.begin() as conn:
        user = await create_user(conn, f"{uuid.uuid4().hex[:10]}@example.com")
        _key_id, key = await create_key(conn, user.user_id, workspace_id=user.workspace_id)
    return user.user_id, key, user.workspace_id


async def llm_of(gw: Gateway, model: str) -> tuple[int, str]:
    row = (await gw.rows("SELECT id, provider FROM llms WHERE name = :n", n=model))[0]
    return int(row[0]), str(row[1])


async def record(
    gw: Gateway,
    user_id: uuid.UUID,
    workspace_id: uuid.UUID | None,
    at: str,
    *,
    model: str = "gpt-4o-mini",
    prompt: int = 0,
    completion: int = 0,
    cached: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    cost: int = 0,
    charged: int | None = None,
    status: str = "success",
    latency: int = 100,
    ttft: int | None = None,
    byok: bool = False,
) -> CompletionRecord:
    """One completion through the real recorder (and the rollup hook, until the recorder calls it)."""
    llm_id, provider = await llm_of(gw, model)
    rec = CompletionRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        user_id=user_id,
        workspace_id=workspace_id,
        api_key_id=None,
        conversation_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        llm_id=llm_id,
        model=model,
        provider=provider,
        price_version=1,
        usage=Usage(prompt, completion, cached, cache_write, reasoning),
        cost_nano=cost,
        charged_nano=cost if charged is None else charged,
        byok=byok,
        is_stream=ttft is not None,
        status=status,
        latency_ms=latency,
        created_at=t(at),
        ttft_ms=ttft,
        finish_reason="stop",
    )
    await record_completion(gw.engine, gw.ledger, rec, None)
    if not WIRED:
        async with gw.engine.begin() as conn:
            await apply_usage_rollups(conn, [rec])
    return rec


def figures(
    requests: int,
    *,
    errors: int = 0,
    cancelled: int = 0,
    input: int = 0,
    cached: int = 0,
    cache_write: int = 0,
    output: int = 0,
    reasoning: int = 0,
    cost: int = 0,
    charged: int | None = None,
) -> dict[str, Any]:
    charged = cost if charged is None else charged
    return {
        "requests": requests,
        "errors": errors,
        "cancelled": cancelled,
        "tokens": {
            "input": input,
            "cached_input": cached,
            "cache_write": cache_write,
            "output": output,
            "reasoning": reasoning,
            "total": input + output,
        },
        "cost_usd": format_usd(cost),
        "cost_nano": cost,
        "charged_usd": format_usd(charged),
        "charged_nano": charged,
    }


def strip(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in keys}


# -- pure pieces ---------------------------------------------------------------------------------


def test_split_window_into_whole_periods_and_edges() -> None:
    a, b = t("2026-11-01T10:30:00+00:00"), t("2026-11-04T05:00:00+00:00")
    whole, edges = split_window(Window(a, b), DAY)
    assert whole == Window(t("2026-11-02T00:00:00+00:00"), t("2026-11-04T00:00:00+00:00"))
    assert edges == [Window(a, t("2026-11-02T00:00:00+00:00")), Window(t("2026-11-04T00:00:00+00:00"), b)]
    # aligned ends: no edges; unbounded ends stay unbounded
    whole, edges = split_window(Window(t("2026-11-01T00:00:00+00:00"), None), DAY)
    assert (whole, edges) == (Window(t("2026-11-01T00:00:00+00:00"), None), [])
    assert split_window(Window(), HOUR) == (Window(), [])
    # inside one period: one edge, no rollup
    inside = Window(t("2026-11-01T10:05:00+00:00"), t("2026-11-01T10:55:00+00:00"))
    assert split_window(inside, HOUR) == (None, [inside])
    # across one boundary: two edges that meet, no rollup
    across = Window(t("2026-11-01T10:05:00+00:00"), t("2026-11-01T11:55:00+00:00"))
    mid = t("2026-11-01T11:00:00+00:00")
    assert split_window(across, HOUR) == (None, [Window(across.start, mid), Window(mid, across.end)])
    # a non-UTC offset is the same instant
    whole, edges = split_window(Window(None, datetime.fromisoformat("2026-11-02T01:30:00+02:00")), DAY)
    assert whole == Window(None, t("2026-11-01T00:00:00+00:00"))
    assert edges == [Window(t("2026-11-01T00:00:00+00:00"), t("2026-11-01T23:30:00+00:00"))]


def test_percentiles_match_postgresql_percentile_cont() -> None:
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7], 0.95) == 7.0
    assert percentile_cont([100, 200, 300, 400], 0.5) == 250.0  # between ranks 1 and 2
    assert percentile_cont([100, 200, 300, 400], 0.95) == 385.0  # rank 2.85: 300 + 0.85 × 100
    assert percentile_cont([1000, 3000], 0.95) == 2900.0
    # buckets: 0…10 one value each, then ~10 % wide: [94, 104) stands for 98.5, [187, 207) for 196
    assert LATENCY_BOUNDS[:13] == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13)
    assert all(b - a <= max(1, a // 10 + 1) for a, b in itertools.pairwise(LATENCY_BOUNDS))
    assert (latency_bucket(100), bucket_value(94)) == (94, 98.5)
    assert (latency_bucket(200), bucket_value(187)) == (187, 196.0)
    assert latency_bucket(7) == 7 and bucket_value(7) == 7.0
    assert latency_bucket(10**9) == LATENCY_BOUNDS[-1]
    hist = {latency_bucket(v): 1 for v in (100, 200, 300, 400)}  # 98.5, 196, 288.5, 386
    assert histogram_percentile(hist, 0.5) == 242.25  # 196 + 0.5 × 92.5
    assert histogram_percentile(hist, 0.95) == 371.375  # 288.5 + 0.85 × 97.5
    assert histogram_percentile({}, 0.5) is None
    assert histogram_percentile({5: 3}, 0.5) == 5.0


# -- usage of one user ---------------------------------------------------------------------------


async def _seed_usage(gw: Gateway) -> tuple[uuid.UUID, str, str]:
    u1, key1, ws1 = await new_user(gw)
    u2, key2, ws2 = await new_user(gw)
    await record(gw, u1, ws1, "2026-10-31T23:30:00+00:00", prompt=100, cached=20, completion=10, cost=1000)
    await record(gw, u1, ws1, "2026-11-01T00:10:00+00:00", prompt=200, completion=20, cost=2000)
    await record(
        gw,
        u1,
        ws1,
        "2026-11-01T12:00:00+00:00",
        model="gpt-4o",
        prompt=300,
        cache_write=30,
        completion=30,
        reasoning=5,
        cost=9000,
    )
    await record(gw, u1, ws1, "2026-11-03T08:00:00+00:00", model="gpt-4o", status="error", latency=50)
    await record(
        gw, u1, ws1, "2026-11-09T10:00:00+00:00", prompt=50, completion=5, cost=500, byok=True, charged=0
    )
    await record(
        gw, u1, ws1, "2026-11-09T11:00:00+00:00", prompt=40, completion=4, cost=400, status="cancelled"
    )
    # someone else's request on the same days is not in u1's figures
    await record(gw, u2, ws2, "2026-11-01T05:00:00+00:00", prompt=999, completion=99, cost=77_777)
    return u1, key1, key2


async def test_usage_totals_series_and_models(gateway: Gateway) -> None:
    u1, key1, _key2 = await _seed_usage(gateway)
    mini_id, _ = await llm_of(gateway, "gpt-4o-mini")
    gpt4o_id, _ = await llm_of(gateway, "gpt-4o")
    response = await api(gateway, f"/analytics/usage/{u1}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["user_id"], body["start"], body["end"], body["granularity"]) == (str(u1), None, None, "day")
    # 6 requests (1 error, 1 cancelled); input 100+200+300+0+50+40 = 690, output 10+20+30+0+5+4 = 69;
    # cost 1000+2000+9000+0+500+400 = 12900; charged: the BYOK call's 500 is not debited → 12400
    assert body["totals"] == figures(
        6,
        errors=1,
        cancelled=1,
        input=690,
        cached=20,
        cache_write=30,
        output=69,
        reasoning=5,
        cost=12_900,
        charged=12_400,
    )
    assert body["totals"]["cost_usd"] == "0.000012900" and body["totals"]["charged_usd"] == "0.000012400"
    assert body["series"] == [
        {"period_start": "2026-10-31T00:00:00Z", **figures(1, input=100, cached=20, output=10, cost=1000)},
        {
            "period_start": "2026-11-01T00:00:00Z",
            **figures(2, input=500, cache_write=30, output=50, reasoning=5, cost=11_000),
        },
        {"period_start": "2026-11-03T00:00:00Z", **figures(1, errors=1)},
        {
            "period_start": "2026-11-09T00:00:00Z",
            **figures(2, cancelled=1, input=90, output=9, cost=900, charged=400),
        },
    ]
    # by model, highest cost first: gpt-4o 9000 (+ the error), gpt-4o-mini 1000+2000+500+400 = 3900
    assert body["by_model"] == [
        {
            "model": "gpt-4o",
            "llm_id": gpt4o_id,
            "provider": "openai",
            **figures(2, errors=1, input=300, cache_write=30, output=30, reasoning=5, cost=9000),
        },
        {
            "model": "gpt-4o-mini",
            "llm_id": mini_id,
            "provider": "openai",
            **figures(4, cancelled=1, input=390, cached=20, output=39, cost=3900, charged=3400),
        },
    ]
    # the user's own key sees the same report
    own = await api(gateway, f"/analytics/usage/{u1}", key=key1)
    assert own.status_code == 200 and own.json() == body


async def test_usage_by_week_and_month(gateway: Gateway) -> None:
    u1, _key1, _ = await _seed_usage(gateway)
    weekly = (await api(gateway, f"/analytics/usage/{u1}", granularity="week")).json()
    # weeks start on Monday: Sat 31 Oct and Sun 1 Nov are in the week of Mon 26 Oct
    assert weekly["series"] == [
        {
            "period_start": "2026-10-26T00:00:00Z",
            **figures(3, input=600, cached=20, cache_write=30, output=60, reasoning=5, cost=12_000),
        },
        {"period_start": "2026-11-02T00:00:00Z", **figures(1, errors=1)},
        {
            "period_start": "2026-11-09T00:00:00Z",
            **figures(2, cancelled=1, input=90, output=9, cost=900, charged=400),
        },
    ]
    monthly = (await api(gateway, f"/analytics/usage/{u1}", granularity="month")).json()
    assert monthly["series"] == [
        {"period_start": "2026-10-01T00:00:00Z", **figures(1, input=100, cached=20, output=10, cost=1000)},
        {
            "period_start": "2026-11-01T00:00:00Z",
            **figures(
                5,
                errors=1,
                cancelled=1,
                input=590,
                cache_write=30,
                output=59,
                reasoning=5,
                cost=11_900,
                charged=11_400,
            ),
        },
    ]
    assert monthly["totals"] == weekly["totals"]


async def test_usage_date_filters_take_time_zones_and_partial_days(gateway: Gateway) -> None:
    u1, _key1, _ = await _seed_usage(gateway)
    # [00:00Z on 1 Nov, 08:00Z on 3 Nov): the 23:30Z request of 31 Oct is out, so is the error at 08:00Z
    body = (
        await api(
            gateway,
            f"/analytics/usage/{u1}",
            start="2026-11-01T01:00:00+01:00",
            end="2026-11-03T09:00:00+01:00",
        )
    ).json()
    assert (body["start"], body["end"]) == ("2026-11-01T00:00:00Z", "2026-11-03T08:00:00Z")
    assert body["totals"] == figures(2, input=500, cache_write=30, output=50, reasoning=5, cost=11_000)
    # from 06:00Z on 1 Nov: that day keeps only its 12:00 request (read from usage_logs, a partial day)
    body = (await api(gateway, f"/analytics/usage/{u1}", start="2026-11-01T06:00:00Z")).json()
    assert body["totals"] == figures(
        4, errors=1, cancelled=1, input=390, cache_write=30, output=39, reasoning=5, cost=9900, charged=9400
    )
    assert [(p["period_start"], p["requests"], p["cost_nano"]) for p in body["series"]] == [
        ("2026-11-01T00:00:00Z", 1, 9000),
        ("2026-11-03T00:00:00Z", 1, 0),
        ("2026-11-09T00:00:00Z", 2, 900),
    ]
    # nothing in range: zeros, no series
    empty = (await api(gateway, f"/analytics/usage/{u1}", start="2027-01-01T00:00:00Z")).json()
    assert empty["totals"] == figures(0) and empty["series"] == [] and empty["by_model"] == []


async def test_usage_validation_errors_name_the_field(gateway: Gateway) -> None:
    u1, _key1, _ = await _seed_usage(gateway)
    naive = await api(gateway, f"/analytics/usage/{u1}", start="2026-11-01T00:00:00")
    assert naive.status_code == 400
    assert naive.json()["error"]["param"] == "start" and "time zone" in naive.json()["error"]["message"]
    naive_end = await api(gateway, f"/analytics/usage/{u1}", end="2026-11-01T00:00:00")
    assert naive_end.status_code == 400 and naive_end.json()["error"]["param"] == "end"
    backwards = await api(
        gateway, f"/analytics/usage/{u1}", start="2026-11-02T00:00:00Z", end="2026-11-01T00:00:00Z"
    )
    assert backwards.status_code == 400 and backwards.json()["error"]["param"] == "end"
    garbage = await api(gateway, f"/analytics/usage/{u1}", start="yesterday")
    assert garbage.status_code == 400 and "start" in garbage.json()["error"]["message"]
    bad = await api(gateway, f"/analytics/usage/{u1}", granularity="hour")
    assert bad.status_code == 400 and "granularity" in bad.json()["error"]["message"]
    assert bad.json()["error"]["type"] == "invalid_request_error"


async def test_usage_scope(gateway: Gateway) -> None:
    u1, key1, key2 = await _seed_usage(gateway)
    assert (await api(gateway, f"/analytics/usage/{u1}", key=key1)).status_code == 200
    other = await api(gateway, f"/analytics/usage/{u1}", key=key2)
    assert other.status_code == 404 and other.json()["error"]["code"] == "user_not_found"
    assert str(u1) not in other.text
    assert (await api(gateway, f"/analytics/usage/{uuid.uuid4()}")).status_code == 404
    assert (await api(gateway, f"/analytics/usage/{u1}", key=None)).status_code == 401
    assert (await api(gateway, f"/analytics/usage/{u1}", key="sk-sg-nope")).status_code == 401


# -- costs of a workspace ------------------------------------------------------------------------


async def _seed_workspace(gw: Gateway) -> dict[str, Any]:
    a, key_a, own_a = await new_user(gw)
    b, key_b, _ = await new_user(gw)
    c, key_c, _ = await new_user(gw)
    _d, key_d, _ = await new_user(gw)
    ws = uuid.uuid4()
    async with gw.engine.begin() as conn:
        await conn.execute(table_of(Workspace).insert().values(id=ws, name="Team"))
        await conn.execute(
            table_of(WorkspaceMember).insert(),
            [
                {"workspace_id": ws, "user_id": a, "role": "owner"},
                {"workspace_id": ws, "user_id": b, "role": "admin"},
                {"workspace_id": ws, "user_id": c, "role": "member"},
            ],
        )
    await record(gw, a, ws, "2026-11-05T10:00:00+00:00", prompt=10, completion=1, cost=1000)
    await record(
        gw, a, ws, "2026-11-05T11:00:00+00:00", prompt=10, completion=1, cost=700, byok=True, charged=0
    )
    await record(gw, b, ws, "2026-11-06T09:30:00+00:00", model="gpt-4o", prompt=10, completion=1, cost=5000)
    await record(gw, c, ws, "2026-11-07T23:59:59+00:00", prompt=10, completion=1, cost=300)
    await record(gw, a, own_a, "2026-11-05T10:00:00+00:00", prompt=10, completion=1, cost=99_999)  # not in ws
    emails = {
        u: await gw.scalar(
            "SELECT email FROM users WHERE id = :u", u=u.hex if gw.settings.is_sqlite else str(u)
        )
        for u in (a, b, c)
    }
    return {"ws": ws, "a": a, "b": b, "c": c, "keys": (key_a, key_b, key_c, key_d), "emails": emails}


def costs(requests: int, cost: int, charged: int | None = None) -> dict[str, Any]:
    charged = cost if charged is None else charged
    return {
        "requests": requests,
        "cost_usd": format_usd(cost),
        "cost_nano": cost,
        "charged_usd": format_usd(charged),
        "charged_nano": charged,
    }


def breakdown(platform: tuple[int, int], byok: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
    """Totals from (platform requests, cost) and (BYOK requests, cost, charged)."""
    return {
        **costs(platform[0] + byok[0], platform[1] + byok[1], platform[1] + byok[2]),
        "platform": costs(*platform),
        "byok": costs(*byok),
    }


async def test_workspace_costs_by_user_and_model(gateway: Gateway) -> None:
    s = await _seed_workspace(gateway)
    response = await api(gateway, f"/analytics/costs/{s['ws']}")
    assert response.status_code == 200, response.text
    body = response.json()
    # 4 requests in the workspace: platform 1000 + 5000 + 300 = 6300; BYOK 700 metered, 0 charged
    assert body["totals"] == breakdown((3, 6300), (1, 700, 0))
    assert body["totals"]["cost_usd"] == "0.000007000" and body["totals"]["charged_usd"] == "0.000006300"
    mini_id, _ = await llm_of(gateway, "gpt-4o-mini")
    gpt4o_id, _ = await llm_of(gateway, "gpt-4o")
    assert body["by_model"] == [
        {"model": "gpt-4o", "llm_id": gpt4o_id, "provider": "openai", **breakdown((1, 5000))},
        {
            "model": "gpt-4o-mini",
            "llm_id": mini_id,
            "provider": "openai",
            **breakdown((2, 1300), (1, 700, 0)),
        },
    ]
    # by user, highest cost first: b 5000, a 1000 + 700 = 1700, c 300
    e = s["emails"]
    assert body["by_user"] == {
        "data": [
            {"user_id": str(s["b"]), "email": e[s["b"]], **breakdown((1, 5000))},
            {"user_id": str(s["a"]), "email": e[s["a"]], **breakdown((1, 1000), (1, 700, 0))},
            {"user_id": str(s["c"]), "email": e[s["c"]], **breakdown((1, 300))},
        ],
        "total": 3,
        "limit": 100,
        "offset": 0,
        "has_more": False,
    }
    first = (await api(gateway, f"/analytics/costs/{s['ws']}", limit=2)).json()["by_user"]
    assert [u["user_id"] for u in first["data"]] == [str(s["b"]), str(s["a"])] and first["has_more"] is True
    rest = (await api(gateway, f"/analytics/costs/{s['ws']}", limit=2, offset=2)).json()["by_user"]
    assert [u["user_id"] for u in rest["data"]] == [str(s["c"])] and rest["has_more"] is False
    assert rest["total"] == 3
    bad = await api(gateway, f"/analytics/costs/{s['ws']}", limit=0)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_workspace_costs_date_range(gateway: Gateway) -> None:
    s = await _seed_workspace(gateway)
    # [10:30Z on 5 Nov, 22:00Z on 6 Nov): a's BYOK call (11:00) and b's call (09:30 on the 6th)
    body = (
        await api(
            gateway,
            f"/analytics/costs/{s['ws']}",
            start="2026-11-05T10:30:00Z",
            end="2026-11-07T00:00:00+02:00",
        )
    ).json()
    assert body["totals"] == breakdown((1, 5000), (1, 700, 0))
    assert [(u["user_id"], u["cost_nano"]) for u in body["by_user"]["data"]] == [
        (str(s["b"]), 5000),
        (str(s["a"]), 700),
    ]
    # the whole days of 6 and 7 Nov (rollup only): b and c
    body = (
        await api(
            gateway, f"/analytics/costs/{s['ws']}", start="2026-11-06T00:00:00Z", end="2026-11-08T00:00:00Z"
        )
    ).json()
    assert body["totals"] == breakdown((2, 5300))


async def test_workspace_costs_scope(gateway: Gateway) -> None:
    s = await _seed_workspace(gateway)
    key_a, key_b, key_c, key_d = s["keys"]
    owner = await api(gateway, f"/analytics/costs/{s['ws']}", key=key_a)
    assert owner.status_code == 200 and owner.json()["totals"]["cost_nano"] == 7000
    assert (
        await api(gateway, f"/analytics/costs/{s['ws']}", key=key_b)
    ).status_code == 200  # workspace admin
    for key in (key_c, key_d):  # a plain member, an outsider
        refused = await api(gateway, f"/analytics/costs/{s['ws']}", key=key)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "workspace_not_found"
    assert (await api(gateway, f"/analytics/costs/{uuid.uuid4()}")).status_code == 404


# -- llm performance and top LLMs ----------------------------------------------------------------


async def _seed_models(gw: Gateway) -> dict[str, Any]:
    p, key_p, ws_p = await new_user(gw)
    q, key_q, ws_q = await new_user(gw)
    day = "2026-11-10T"
    m1 = await record(
        gw, p, ws_p, day + "10:00:00+00:00", prompt=100, completion=10, cost=1234, latency=100, ttft=50
    )
    m2 = await record(gw, p, ws_p, day + "10:10:00+00:00", prompt=100, completion=20, cost=2345, latency=200)
    m3 = await record(
        gw, q, ws_q, day + "10:20:00+00:00", prompt=100, completion=30, cost=3456, latency=300, ttft=70
    )
    m4 = await record(gw, q, ws_q, day + "10:30:00+00:00", prompt=100, completion=40, cost=4567, latency=400)
    await record(gw, p, ws_p, day + "10:40:00+00:00", status="error", latency=999)
    await record(
        gw,
        q,
        ws_q,
        day + "10:50:00+00:00",
        prompt=100,
        completion=7,
        cost=743,
        status="cancelled",
        latency=10,
    )
    g1 = await record(
        gw,
        p,
        ws_p,
        day + "11:00:00+00:00",
        model="gpt-4o",
        prompt=1000,
        completion=50,
        cost=20_000,
        charged=0,
        byok=True,
        latency=1000,
    )
    await record(
        gw,
        q,
        ws_q,
        day + "11:30:00+00:00",
        model="gpt-4o",
        prompt=1000,
        completion=250,
        cost=30_000,
        latency=3000,
    )
    await record(gw, q, ws_q, day + "12:00:00+00:00", model="claude-3-haiku", prompt=10, cost=25, latency=500)
    ratings = [
        (m1, {"rating": 4}, key_p),
        (m2, {"rating": 5, "scale": "stars"}, ADMIN),
        (m3, {"rating": "up"}, key_q),
        (m4, {"rating": -1, "scale": "thumbs"}, ADMIN),
        (g1, {"rating": 2}, key_p),
    ]
    for rec, body, key in ratings:
        response = await post(gw, f"/messages/{rec.message_id}/feedback", body, key=key)
        assert response.status_code == 201, response.text
    return {"p": p, "q": q, "key_p": key_p, "key_q": key_q}


def perf_by_model(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["model"]: m for m in body["data"]}


async def test_llm_performance_for_everyone(gateway: Gateway) -> None:
    await _seed_models(gateway)
    response = await api(gateway, "/analytics/llm-performance")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["scope"], body["user_id"], body["percentile_method"]) == ("all", None, "exact")
    assert [m["model"] for m in body["data"]] == ["gpt-4o-mini", "gpt-4o", "claude-3-haiku"]  # by requests
    mini_id, _ = await llm_of(gateway, "gpt-4o-mini")
    by = perf_by_model(body)
    assert by["gpt-4o-mini"] == {
        "model": "gpt-4o-mini",
        "llm_id": mini_id,
        "provider": "openai",
        "requests": 6,
        "successes": 4,
        "errors": 1,
        "cancelled": 1,
        "error_rate": 0.166667,  # 1 / 6
        "latency_ms": {"p50": 250.0, "p95": 385.0},  # successes 100, 200, 300, 400
        "ttft_ms": {"p50": 60.0},  # 50 and 70 (the streamed ones)
        "output_tokens": 107,  # 10 + 20 + 30 + 40 + 7 (cancelled)
        "tokens_per_second": 100.0,  # successes: 100 tokens in 1000 ms
        "cost_usd": "0.000012345",
        "cost_nano": 12_345,  # 1234 + 2345 + 3456 + 4567 + 743
        # 12345 × 1000 / 107 = 115373.83… → 115374
        "cost_per_1k_output_tokens_usd": "0.000115374",
        "cost_per_1k_output_tokens_nano": 115_374,
        # stars 4 and 5, one thumbs up, one down
        "feedback": {
            "count": 4,
            "stars_count": 2,
            "stars_average": 4.5,
            "thumbs_up": 1,
            "thumbs_down": 1,
            "thumbs_up_rate": 0.5,
            "sentiment": {"positive": 0, "neutral": 0, "negative": 0},
        },
    }
    assert strip(by["gpt-4o"], "model", "llm_id", "provider") == {
        "requests": 2,
        "successes": 2,
        "errors": 0,
        "cancelled": 0,
        "error_rate": 0.0,
        "latency_ms": {"p50": 2000.0, "p95": 2900.0},  # 1000 and 3000
        "ttft_ms": {"p50": None},
        "output_tokens": 300,
        "tokens_per_second": 75.0,  # 300 tokens in 4000 ms
        "cost_usd": "0.000050000",
        "cost_nano": 50_000,
        # 50000 × 1000 / 300 = 166666.67 → 166667
        "cost_per_1k_output_tokens_usd": "0.000166667",
        "cost_per_1k_output_tokens_nano": 166_667,
        "feedback": {
            "count": 1,
            "stars_count": 1,
            "stars_average": 2.0,
            "thumbs_up": 0,
            "thumbs_down": 0,
            "thumbs_up_rate": None,
            "sentiment": {"positive": 0, "neutral": 0, "negative": 0},
        },
    }
    haiku = by["claude-3-haiku"]
    assert (haiku["requests"], haiku["latency_ms"], haiku["tokens_per_second"]) == (
        1,
        {"p50": 500.0, "p95": 500.0},
        0.0,
    )
    assert haiku["cost_per_1k_output_tokens_nano"] is None and haiku["cost_per_1k_output_tokens_usd"] is None
    assert haiku["feedback"] == {
        "count": 0,
        "stars_count": 0,
        "stars_average": None,
        "thumbs_up": 0,
        "thumbs_down": 0,
        "thumbs_up_rate": None,
        "sentiment": {"positive": 0, "neutral": 0, "negative": 0},
    }


async def test_llm_performance_from_histograms_at_scale(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above EXACT_PERCENTILE_MAX_ROWS successes the percentiles come from the daily histograms."""
    await _seed_models(gateway)
    exact = perf_by_model((await api(gateway, "/analytics/llm-performance")).json())
    monkeypatch.setattr(storage.usage.analytics, "EXACT_PERCENTILE_MAX_ROWS", 0)
    body = (await api(gateway, "/analytics/llm-performance")).json()
    assert body["percentile_method"] == "histogram"
    by = perf_by_model(body)
    # buckets stand for 98.5 (100), 196 (200), 288.5 (300), 386 (400), 48 (50), 73 (70)
    assert by["gpt-4o-mini"]["latency_ms"] == {"p50": 242.25, "p95": 371.375}
    assert by["gpt-4o-mini"]["ttft_ms"] == {"p50": 60.5}
    # 1011 (1000) and 2893.5 (3000): p50 1952.25, p95 1011 + 0.95 × 1882.5
    assert by["gpt-4o"]["latency_ms"] == {"p50": 1952.25, "p95": 2799.375}
    assert by["claude-3-haiku"]["latency_ms"] == {"p50": 515.5, "p95": 515.5}  # 500 is in [491, 541)
    for name, model in by.items():  # everything else is the same as the exact report
        assert strip(model, "latency_ms", "ttft_ms") == strip(exact[name], "latency_ms", "ttft_ms")
    # a partial day is bucketed from usage_logs: from 10:05Z the mini successes are 200, 300, 400
    partial = perf_by_model(
        (await api(gateway, "/analytics/llm-performance", start="2026-11-10T10:05:00Z")).json()
    )
    assert partial["gpt-4o-mini"]["latency_ms"] == {"p50": 288.5, "p95": 376.25}  # 288.5 + 0.9 × 97.5
    monkeypatch.undo()
    partial = perf_by_model(
        (await api(gateway, "/analytics/llm-performance", start="2026-11-10T10:05:00Z")).json()
    )
    assert partial["gpt-4o-mini"]["latency_ms"] == {"p50": 300.0, "p95": 390.0}
    assert partial["gpt-4o-mini"]["requests"] == 5 and partial["gpt-4o-mini"]["feedback"]["count"] == 3


async def test_llm_performance_over_a_users_own_requests(gateway: Gateway) -> None:
    s = await _seed_models(gateway)
    mine = await api(gateway, "/analytics/llm-performance", key=s["key_p"])
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert (body["scope"], body["user_id"]) == ("user", str(s["p"]))
    by = perf_by_model(body)
    assert set(by) == {"gpt-4o-mini", "gpt-4o"}
    # p's mini requests: 100 ms and 200 ms successes and the error
    assert strip(by["gpt-4o-mini"], "model", "llm_id", "provider") == {
        "requests": 3,
        "successes": 2,
        "errors": 1,
        "cancelled": 0,
        "error_rate": 0.333333,
        "latency_ms": {"p50": 150.0, "p95": 195.0},
        "ttft_ms": {"p50": 50.0},
        "output_tokens": 30,
        "tokens_per_second": 100.0,
        "cost_usd": "0.000003579",
        "cost_nano": 3579,
        "cost_per_1k_output_tokens_usd": "0.000119300",
        "cost_per_1k_output_tokens_nano": 119_300,
        "feedback": {
            "count": 2,
            "stars_count": 2,
            "stars_average": 4.5,
            "thumbs_up": 0,
            "thumbs_down": 0,
            "thumbs_up_rate": None,
            "sentiment": {"positive": 0, "neutral": 0, "negative": 0},
        },
    }
    assert by["gpt-4o"]["latency_ms"] == {"p50": 1000.0, "p95": 1000.0}
    assert by["gpt-4o"]["cost_per_1k_output_tokens_nano"] == 400_000  # 20000 × 1000 / 50
    assert by["gpt-4o"]["feedback"]["stars_average"] == 2.0
    # the admin may narrow to one user and sees the same; a user may not look at another
    narrowed = (await api(gateway, "/analytics/llm-performance", user_id=str(s["p"]))).json()
    assert narrowed == body
    refused = await api(gateway, "/analytics/llm-performance", key=s["key_p"], user_id=str(s["q"]))
    assert refused.status_code == 404 and str(s["q"]) not in refused.text
    assert (await api(gateway, "/analytics/llm-performance", user_id=str(uuid.uuid4()))).status_code == 404
    naive = await api(gateway, "/analytics/llm-performance", end="2026-11-10T10:00:00")
    assert naive.status_code == 400 and naive.json()["error"]["param"] == "end"


async def test_top_llms_by_cost(gateway: Gateway) -> None:
    s = await _seed_models(gateway)
    response = await api(gateway, "/analytics/top-llms")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["scope"], body["order_by"], body["models_total"]) == ("all", "cost", 3)
    # 50000 + 12345 + 25 = 62370 metered; the BYOK call's 20000 is not charged
    assert body["totals"] == costs(9, 62_370, 42_370)
    gpt4o_id, _ = await llm_of(gateway, "gpt-4o")
    top = body["data"][0]
    assert top == {
        "rank": 1,
        "model": "gpt-4o",
        "llm_id": gpt4o_id,
        "provider": "openai",
        "tokens": {
            "input": 2000,
            "cached_input": 0,
            "cache_write": 0,
            "output": 300,
            "reasoning": 0,
            "total": 2300,
        },
        "cost_share": 0.801667,  # 50000 / 62370
        **breakdown((1, 30_000), (1, 20_000, 0)),
    }
    assert [(m["rank"], m["model"], m["cost_nano"], m["cost_share"]) for m in body["data"]] == [
        (1, "gpt-4o", 50_000, 0.801667),
        (2, "gpt-4o-mini", 12_345, 0.197932),  # 12345 / 62370
        (3, "claude-3-haiku", 25, 0.000401),  # 25 / 62370
    ]
    assert body["data"][1]["tokens"]["total"] == 607  # input 5 × 100, output 107
    two = (await api(gateway, "/analytics/top-llms", limit=2)).json()
    assert [m["model"] for m in two["data"]] == ["gpt-4o", "gpt-4o-mini"] and two["models_total"] == 3
    by_requests = (await api(gateway, "/analytics/top-llms", order_by="requests")).json()
    assert [(m["model"], m["requests"]) for m in by_requests["data"]] == [
        ("gpt-4o-mini", 6),
        ("gpt-4o", 2),
        ("claude-3-haiku", 1),
    ]
    by_tokens = (await api(gateway, "/analytics/top-llms", order_by="tokens")).json()
    assert [m["model"] for m in by_tokens["data"]] == ["gpt-4o", "gpt-4o-mini", "claude-3-haiku"]
    assert (await api(gateway, "/analytics/top-llms", limit=101)).json()["error"]["param"] == "limit"
    assert (await api(gateway, "/analytics/top-llms", order_by="vibes")).status_code == 400

    # whole hours [10:00, 12:00) from the hourly rollup: the haiku call at 12:00 is out
    hours = (
        await api(gateway, "/analytics/top-llms", start="2026-11-10T10:00:00Z", end="2026-11-10T12:00:00Z")
    ).json()
    assert [(m["model"], m["requests"], m["cost_nano"]) for m in hours["data"]] == [
        ("gpt-4o", 2, 50_000),
        ("gpt-4o-mini", 6, 12_345),
    ]
    # [10:35, 11:15) lies across an hour boundary: only usage_logs: the error, the cancelled one, g1
    edges = (
        await api(
            gateway, "/analytics/top-llms", start="2026-11-10T10:35:00Z", end="2026-11-10T12:15:00+01:00"
        )
    ).json()
    assert [(m["model"], m["requests"], m["cost_nano"], m["charged_nano"]) for m in edges["data"]] == [
        ("gpt-4o", 1, 20_000, 0),
        ("gpt-4o-mini", 2, 743, 743),
    ]

    # a user's key: the same figures over its own requests only
    mine = (await api(gateway, "/analytics/top-llms", key=s["key_p"])).json()
    assert (mine["scope"], mine["user_id"]) == ("user", str(s["p"]))
    assert [(m["model"], m["requests"], m["cost_nano"], m["charged_nano"]) for m in mine["data"]] == [
        ("gpt-4o", 1, 20_000, 0),
        ("gpt-4o-mini", 3, 3579, 3579),
    ]
    assert mine["totals"] == costs(4, 23_579, 3579)
    assert (await api(gateway, "/analytics/top-llms", key=s["key_p"], user_id=str(s["q"]))).status_code == 404


# -- the rollups themselves ----------------------------------------------------------------------


async def test_rollups_kept_by_the_recorder_equal_a_rebuild(gateway: Gateway) -> None:
    await _seed_usage(gateway)
    await _seed_models(gateway)
    user, _key, ws = await new_user(gateway)
    # the edges of hours and days, and a time given with another offset (21:30Z on the 13th)
    for at in ("2026-11-13T00:00:00+00:00", "2026-11-13T23:59:59.999999+00:00", "2026-11-14T03:00:00+05:30"):
        await record(gateway, user, ws, at, prompt=1, completion=1, cost=1, latency=7, ttft=3)
    llm_id, provider = await llm_of(gateway, "grok-2")
    failure = CompletionRecord(
        request_id=f"req_{uuid.uuid4().hex}",
        user_id=user,
        workspace_id=None,
        api_key_id=None,
        conversation_id=None,
        message_id=None,
        llm_id=llm_id,
        model="grok-2",
        provider=provider,
        price_version=1,
        usage=Usage(),
        cost_nano=0,
        charged_nano=0,
        byok=False,
        is_stream=False,
        status="error",
        latency_ms=42,
        attempts=3,
        error_code="upstream_error",
        http_status=502,
        created_at=t("2026-11-12T03:04:05+00:00"),
    )
    await record_failure(gateway.engine, failure)
    if not WIRED:
        async with gateway.engine.begin() as conn:
            await apply_usage_rollups(conn, [failure])
    async with gateway.engine.connect() as conn:
        incremental = await conn.run_sync(rollup_rows)
    async with gateway.engine.begin() as conn:
        rows_read = await conn.run_sync(rebuild_usage_rollups)
    async with gateway.engine.connect() as conn:
        rebuilt = await conn.run_sync(rollup_rows)
    assert rows_read == 7 + 9 + 3 + 1 == await gateway.scalar("SELECT COUNT(*) FROM usage_logs")
    assert incremental == rebuilt
    assert len(rebuilt["usage_hourly"]) >= 10 and len(rebuilt["latency_daily"]) >= 10
    # the failure counts as a request with an error, in the no-workspace row of the daily rollup
    grok = [r for r in rebuilt["usage_daily"] if r[3] == "grok-2"]
    assert len(grok) == 1 and grok[0][2] == uuid.UUID(int=0) and grok[0][5:8] == (1, 1, 0)
    hourly_total = await gateway.scalar("SELECT SUM(requests) FROM usage_hourly")
    daily_cost = await gateway.scalar("SELECT SUM(cost_nano) FROM usage_daily")
    logged_cost = int(await gateway.scalar("SELECT SUM(cost_nano) FROM usage_logs"))
    assert (int(hourly_total), int(daily_cost)) == (20, logged_cost)
    days = [r[1] for r in rebuilt["usage_daily"] if r[0] == user]
    assert sorted(set(days)) == [t("2026-11-12T00:00:00+00:00"), t("2026-11-13T00:00:00+00:00")]
    hours = {r[0] for r in rebuilt["usage_hourly"] if r[0] >= t("2026-11-13T00:00:00+00:00")}
    assert hours == {
        t("2026-11-13T00:00:00+00:00"),
        t("2026-11-13T21:00:00+00:00"),
        t("2026-11-13T23:00:00+00:00"),
    }


async def test_a_batch_of_records_is_summed_per_key(gateway: Gateway) -> None:
    """Group commit: one recorder transaction for many requests; the rollups still equal a rebuild."""
    user, _key, ws = await new_user(gateway)
    records = []
    for i, (model, at) in enumerate(
        [
            ("gpt-4o-mini", "10:00:01"),
            ("gpt-4o", "10:00:02"),
            ("gpt-4o-mini", "10:59:59"),
            ("gpt-4o-mini", "11:00:00"),
        ]
    ):
        llm_id, provider = await llm_of(gateway, model)
        records.append(
            CompletionRecord(
                request_id=f"req_batch_{i}_{uuid.uuid4().hex[:8]}",
                user_id=user,
                workspace_id=ws,
                api_key_id=None,
                conversation_id=uuid.uuid4(),
                message_id=uuid.uuid4(),
                llm_id=llm_id,
                model=model,
                provider=provider,
                price_version=1,
                usage=Usage(10 + i, 1 + i),
                cost_nano=100 * (i + 1),
                charged_nano=100 * (i + 1),
                byok=False,
                is_stream=True,
                status="success",
                latency_ms=200 + i,
                created_at=t(f"2026-11-15T{at}+00:00"),
                ttft_ms=20 + i,
            )
        )
    await storage.usage.recorder.record_batch(gateway.engine, gateway.ledger, [(r, None) for r in records])
    if not WIRED:
        async with gateway.engine.begin() as conn:
            await apply_usage_rollups(conn, records)
    async with gateway.engine.connect() as conn:
        incremental = await conn.run_sync(rollup_rows)
    async with gateway.engine.begin() as conn:
        await conn.run_sync(rebuild_usage_rollups)
    async with gateway.engine.connect() as conn:
        assert await conn.run_sync(rollup_rows) == incremental
    # 10:00 holds the two mini requests (cost 100 + 300) and the gpt-4o one; 11:00 the last mini one
    hourly = [(r[0], r[1], r[3], r[11]) for r in incremental["usage_hourly"]]
    assert hourly == [
        (t("2026-11-15T10:00:00+00:00"), "gpt-4o", 1, 200),
        (t("2026-11-15T10:00:00+00:00"), "gpt-4o-mini", 2, 400),
        (t("2026-11-15T11:00:00+00:00"), "gpt-4o-mini", 1, 400),
    ]


async def test_concurrent_batches_in_any_order_do_not_deadlock(gateway: Gateway) -> None:
    """Transactions that count the same rollup keys in opposite orders finish, and nothing is lost."""
    users = [uuid.uuid4(), uuid.uuid4()]
    models = ["gpt-4o", "gpt-4o-mini", "claude-3-haiku"]
    facts = [
        UsageFacts(
            created_at=t(f"2026-11-16T{hour:02d}:30:00+00:00"), user_id=user, workspace_id=None, model=model,
            byok=False, status="success", input_tokens=1, output_tokens=1, cost_nano=1, charged_nano=1,
            latency_ms=100 + hour, ttft_ms=10,
        )
        for hour in (1, 2)
        for model in models
        for user in users
    ]  # fmt: skip
    batches = [facts if i % 2 == 0 else list(reversed(facts)) for i in range(8)]

    async def one(batch: list[UsageFacts]) -> None:
        async with gateway.engine.begin() as conn:
            await apply_facts(conn, batch)
            await asyncio.sleep(0.01)  # hold the locks a moment, as a recorder transaction would

    await asyncio.gather(*(one(b) for b in batches))
    counted = await gateway.rows(
        "SELECT model, SUM(requests), SUM(cost_nano) FROM usage_hourly GROUP BY model"
    )
    assert sorted((m, int(n), int(c)) for m, n, c in counted) == [(m, 8 * 4, 8 * 4) for m in sorted(models)]
    latency = await gateway.scalar("SELECT SUM(count) FROM latency_daily WHERE metric = 'latency'")
    assert int(latency) == 8 * len(facts)


async def test_the_migration_fills_the_rollups_and_feedback_copies_from_existing_rows(
    gateway: Gateway,
) -> None:
    """Upgrading a database that already has usage and feedback (0002 → 0003) derives what 0003 adds."""
    s = await _seed_models(gateway)
    async with gateway.engine.connect() as conn:
        before = await conn.run_sync(rollup_rows)
    copies = "SELECT llm_id, message_user_id, message_created_at FROM message_feedback ORDER BY id"
    copied = await gateway.rows(copies)
    assert len(copied) == 5 and all(None not in r for r in copied)
    await gateway.engine.dispose()
    off_loop(downgrade, gateway.settings.database_url, "0002")
    async with gateway.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect_schema(sync).get_table_names())
        columns = await conn.run_sync(
            lambda sync: [c["name"] for c in inspect_schema(sync).get_columns("message_feedback")]
        )
    assert not {"usage_hourly", "usage_daily", "latency_daily"} & set(tables) and "llm_id" not in columns
    off_loop(upgrade, gateway.settings.database_url)
    async with gateway.engine.connect() as conn:
        after = await conn.run_sync(rollup_rows)
    assert after == before
    assert await gateway.rows(copies) == copied
    report = (await api(gateway, "/analytics/llm-performance", key=s["key_p"])).json()
    assert {m["model"]: m["feedback"]["count"] for m in report["data"]} == {"gpt-4o-mini": 2, "gpt-4o": 1}


# -- end to end through the gateway ----------------------------------------------------------------


async def test_usage_made_through_the_gateway_with_the_sdk(gateway: Gateway) -> None:
    user, key = await gateway.seed_user("1")
    sdk = gateway.openai(key)
    before = datetime.now(UTC) - timedelta(seconds=1)
    for model, directive in [
        ("gpt-4o-mini", "[mock prompt_tokens=1000 completion_tokens=7 latency_ms=30]"),
        ("gpt-4o-mini", "[mock prompt_tokens=1000 completion_tokens=7]"),
        ("gpt-4o", "[mock prompt_tokens=100 completion_tokens=10 cached_tokens=40]"),
    ]:
        await sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"hi {directive}"}]
        )
    if not WIRED:  # the recorder does not keep the rollups yet: derive them from usage_logs
        async with gateway.engine.begin() as conn:
            await conn.run_sync(rebuild_usage_rollups)
    # gpt-4o-mini: 1000 × 0.15 + 7 × 0.60 per 1M = 154.2 µUSD, twice;
    # gpt-4o: 60 × 2.50 + 40 × 1.25 + 10 × 10.00 per 1M = 150 + 50 + 100 = 300 µUSD
    mini, gpt4o = 154_200, 300_000
    body = (await api(gateway, f"/analytics/usage/{user}", key=key, start=before.isoformat())).json()
    assert body["totals"] == figures(3, input=2100, cached=40, output=24, cost=2 * mini + gpt4o)
    # highest cost first: gpt-4o-mini 308400, gpt-4o 300000
    assert [(m["model"], m["requests"], m["cost_nano"]) for m in body["by_model"]] == [
        ("gpt-4o-mini", 2, 2 * mini),
        ("gpt-4o", 1, gpt4o),
    ]
    top = (await api(gateway, "/analytics/top-llms", key=key)).json()
    assert [(m["model"], m["cost_nano"]) for m in top["data"]] == [
        ("gpt-4o-mini", 2 * mini),
        ("gpt-4o", gpt4o),
    ]
    assert top["data"][0]["cost_share"] == 0.506903  # 308400 / 608400
    perf = perf_by_model((await api(gateway, "/analytics/llm-performance", key=key)).json())
    latencies = sorted(
        r[0] for r in await gateway.rows("SELECT latency_ms FROM usage_logs WHERE model = 'gpt-4o-mini'")
    )
    assert perf["gpt-4o-mini"]["requests"] == 2 and perf["gpt-4o-mini"]["error_rate"] == 0.0
    assert latencies[1] >= 30  # the mock waited 30 ms before answering once
    assert perf["gpt-4o-mini"]["latency_ms"]["p50"] == (latencies[0] + latencies[1]) / 2
    assert perf["gpt-4o-mini"]["cost_per_1k_output_tokens_nano"] == 22_028_571  # 308400 × 1000 / 14
    async with gateway.engine.connect() as conn:
        ws_id = await default_workspace(conn, user)
    ws = (await api(gateway, f"/analytics/costs/{ws_id}", key=key)).json()  # they own their workspace
    assert ws["totals"]["cost_nano"] == ws["totals"]["charged_nano"] == 2 * mini + gpt4o
