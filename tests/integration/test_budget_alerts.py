"""`budget.threshold` events (issue 12), on both backends (SQLite + SQL ledger, PostgreSQL + Redis ledger).

- A key with a budget for exactly 10 requests, hit by 20 concurrent requests (through two gateway processes
  sharing PostgreSQL and Redis): 10 answers, and exactly three events — 50, 80 and 100 % — one each, queued
  in the recording transactions. The receiver is down while they are first sent (the delivery clock walks
  the backoff schedule: nothing sleeps), then comes up and receives every one, each signature verifying
  with `standardwebhooks`, the money as exact decimal strings. And once more with nothing driving the
  delivery: the gateway's own job runner (in-process; procrastinate on PostgreSQL) retries on a schedule
  shrunk by SYNAPGATE_WEBHOOK_BACKOFF_SCALE while the receiver is down, then delivers all three.
- The next period fires them again (the recorder's path, records dated in the following day).
- A workspace's budget is told to the workspace's endpoints, not to a member's own.
- A budget that is cleared and set again restarts its count from usage_logs, not from a stale count.
- Limit holds settle exactly once to the actual figures (on Redis, with the commit's hot move).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from pricing.cost import reservation_nano
from pricing.money import format_usd
from pricing.tokens import count_prompt_tokens
from storage.accounts import service
from storage.billing.ledger.limits import LimitRequest, ScopeLimits, period_bounds
from storage.catalog.repository import load_catalog
from storage.usage.recorder import CompletionRecord, record_completion
from storage.webhooks import backoff
from storage.webhooks.budgets import crossed_thresholds
from storage.webhooks.payloads import BudgetThreshold, slack_text, to_data
from storage.webhooks.service import WebhookScope, create_endpoint, deliver_due
from tests.environment import free_port
from tests.integration.conftest import Gateway, GatewayThread
from tests.integration.helpers import ADMIN, api, completion_record, db_id, error_of, wait_for_fresh_window

pytestmark = pytest.mark.integration

OUT_TOKENS = 20


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    # The delivery passes run on an injected clock: the in-process runner (SQLite) polls too rarely to race.
    return {"admin_key": ADMIN, "webhook_poll_seconds": 60}


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1, started late (the "down" receiver)."""

    port: int = field(default_factory=free_port)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    yield r
    await r.stop()


async def exact_request(gw: Gateway) -> tuple[list[dict[str, str]], int]:
    """Messages whose actual cost is exactly the reservation's worst case (the mock reports the estimated
    prompt tokens and OUT_TOKENS completion tokens; gpt-4o-mini's rates are whole nano-USD per token), and
    that cost. So a budget of 10 × cost admits exactly 10 requests and is then 100 % spent."""
    async with gw.engine.connect() as conn:
        model = (await load_catalog(conn)).get("gpt-4o-mini")
    assert model is not None
    reported = 0
    for _ in range(10):
        messages = [
            {
                "role": "user",
                "content": f"budget [mock prompt_tokens={reported} completion_tokens={OUT_TOKENS}]",
            }
        ]
        estimate, _ = count_prompt_tokens(model.upstream_model, messages)
        if estimate == reported:
            return messages, reservation_nano(model, estimate, OUT_TOKENS)
        reported = estimate
    raise AssertionError("the prompt estimate did not settle")


async def chat(
    url: str, key: str, messages: list[dict[str, str]], max_tokens: int = OUT_TOKENS
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        return await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": messages, "max_tokens": max_tokens},
        )


def usd(nano: int) -> str:
    return format(Decimal(nano).scaleb(-9).normalize(), "f")


async def test_thresholds_fire_once_each_under_concurrency_and_reach_a_receiver_that_was_down(
    gateway: Gateway, receiver: Receiver
) -> None:
    gw = gateway
    messages, cost = await exact_request(gw)
    budget = cost * 10
    user_id, _ = await gw.seed_user("5")
    created = await api(
        gw,
        "POST",
        "/keys",
        json={"user_id": str(user_id), "budget_usd": format_usd(budget), "budget_period": "month"},
    )
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    hook = await api(
        gw,
        "POST",
        "/webhooks",
        json={"url": receiver.url("/budget"), "events": ["budget.threshold"], "user_id": str(user_id)},
    )
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]

    urls = [gw.url]
    second: GatewayThread | None = None
    if gw.redis_url is not None:  # two gateway processes sharing PostgreSQL and Redis
        second = GatewayThread(gw.settings)
        second.start()
        urls.append(second.url)
    try:
        answers = await asyncio.gather(*(chat(urls[i % len(urls)], key, messages) for i in range(20)))
    finally:
        if second is not None:
            second.stop()
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 10, [r.status_code for r in answers]
    for r in answers:
        if r.status_code != 200:
            assert error_of(r, 429)["code"] == "budget_exceeded"
    charged = await gw.scalar(
        "SELECT SUM(charged_nano) FROM usage_logs WHERE api_key_id = :k", k=db_id(gw, key_id)
    )
    assert int(charged) == budget  # every answer cost exactly its reservation: the budget is 100 % spent

    # One claim row and one outbox row per level, queued with the records that crossed them.
    claims = await gw.rows(
        "SELECT threshold_pct, spent_nano, budget_nano FROM budget_alerts WHERE scope = :s ORDER BY 1",
        s=f"k:{key_id}",
    )
    assert [r.threshold_pct for r in claims] == [50, 80, 100]
    assert all(r.budget_nano == budget for r in claims)
    queued = await gw.scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE event_type = 'budget.threshold'")
    assert queued == 3

    # The receiver is down for a minute: every attempt fails and is rescheduled (0 s, 5 s, 35 s).
    t0 = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        for offset in (0, 5, 35):
            report = await deliver_due(gw.engine, http, now=t0 + timedelta(seconds=offset), http_timeout=2)
            assert (report.delivered, report.retrying) == (0, 3), report
        await receiver.start()
        report = await deliver_due(gw.engine, http, now=t0 + timedelta(seconds=95), http_timeout=2)
        assert (report.delivered, report.retrying) == (3, 0), report
        assert (await deliver_due(gw.engine, http, now=t0 + timedelta(hours=25))).attempted == 0

    assert len(receiver.got) == 3 and len({h["webhook-id"] for h, _ in receiver.got}) == 3
    start, resets_at = period_bounds("month", datetime.now(UTC))
    seen: dict[int, dict[str, Any]] = {}
    for headers, body in receiver.got:
        envelope = Webhook(secret).verify(body, headers)  # raises unless it is our signature over this body
        assert envelope["type"] == "budget.threshold"
        data = envelope["data"]
        seen[data["threshold_pct"]] = data
        assert data["scope"] == "key" and data["id"] == key_id and data["user_id"] == str(user_id)
        assert data["budget_usd"] == usd(budget) and data["budget_nano"] == budget
        assert data["spent_usd"] == usd(data["spent_nano"])
        assert data["period"] == "month"
        assert datetime.fromisoformat(data["period_start"]) == start
        assert resets_at is not None and datetime.fromisoformat(data["resets_at"]) == resets_at
        assert json.loads(body)["data"]["budget_usd"] == usd(budget)  # a string, never a float
    assert sorted(seen) == [50, 80, 100]
    for level, data in seen.items():  # the spend that crossed the level: at or over it, within the budget
        assert level * budget <= data["spent_nano"] * 100 and data["spent_nano"] <= budget
    assert seen[100]["spent_nano"] == budget


@pytest.mark.parametrize(
    ("backend", "gateway_settings_overrides"),
    [  # the real job runner inside `serve`, its backoff shrunk by the setting: 0.25 s, 1.5 s, 3 s, 6 s, …
        ("sqlite", {"admin_key": ADMIN, "webhook_poll_seconds": 1, "webhook_backoff_scale": 0.05}),
        (
            "postgres+redis",
            {
                "admin_key": ADMIN,
                "webhook_poll_seconds": 1,
                "webhook_backoff_scale": 0.05,
                "jobs_in_process": True,
            },
        ),
    ],
)
async def test_the_running_worker_delivers_every_event_to_a_receiver_that_was_down(
    gateway: Gateway, receiver: Receiver
) -> None:
    """Nothing drives the delivery here: the gateway's own job runner retries on the (shortened) schedule
    while the receiver is down, and delivers all three events once it is up."""
    gw = gateway
    messages, cost = await exact_request(gw)
    user_id, _ = await gw.seed_user("5")
    created = await api(
        gw, "POST", "/keys", json={"user_id": str(user_id), "budget_usd": format_usd(cost * 10)}
    )
    key = created.json()["key"]
    hook = await api(
        gw, "POST", "/webhooks", json={"url": receiver.url("/later"), "events": ["budget.threshold"]}
    )
    secret, hook_id = hook.json()["secret"], hook.json()["id"]
    answers = await asyncio.gather(*(chat(gw.url, key, messages) for _ in range(12)))
    assert sorted(r.status_code for r in answers) == [200] * 10 + [429] * 2

    async def deliveries() -> list[dict[str, Any]]:
        return list((await api(gw, "GET", f"/webhooks/{hook_id}/deliveries")).json()["data"])

    deadline = time.monotonic() + 30
    while not (
        len(found := await deliveries()) == 3 and all(d["attempts"] >= 2 and d["last_error"] for d in found)
    ):  # the worker tried each at least twice while the receiver was down
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.2)
    assert all(d["status"] == "pending" for d in found)
    await receiver.start()
    while len(receiver.got) < 3:
        assert time.monotonic() < deadline + 30, await deliveries()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # a fourth would have arrived by now
    assert len(receiver.got) == 3
    levels = sorted(
        Webhook(secret).verify(body, headers)["data"]["threshold_pct"] for headers, body in receiver.got
    )
    assert levels == [50, 80, 100]
    assert {d["status"] for d in await deliveries()} == {"delivered"}


def completion(user_id: uuid.UUID, charged: int, at: datetime) -> CompletionRecord:
    return completion_record(user_id, charged, created_at=at)


async def spend_a_day(gw: Gateway, user_id: uuid.UUID, scope: ScopeLimits, day: datetime, n: int) -> None:
    """`n` requests of 100 nano-USD each on `day`, through the ledger (clock on that day) and the recorder."""
    gw.ledger.clock = lambda: day
    for i in range(n):
        at = day + timedelta(minutes=i)
        reservation = await gw.ledger.reserve(user_id, f"r-{uuid.uuid4()}", 100, LimitRequest((scope,), 10))
        await record_completion(gw.engine, gw.ledger, completion(user_id, 100, at), reservation)
        await gw.ledger.settle_limits(reservation, 100, 10)


async def test_the_next_period_fires_them_again(gateway: Gateway) -> None:
    gw = gateway
    user_id, _ = await gw.seed_user("5")
    async with gw.engine.begin() as conn:
        endpoint = await create_endpoint(
            conn, WebhookScope(user_id=None), url="http://127.0.0.1:9/x", events=["budget.threshold"]
        )
    scope = ScopeLimits(f"u:{user_id}", budget_nano=1_000, budget_period="day")
    today = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)
    await spend_a_day(gw, user_id, scope, today, 10)
    await spend_a_day(gw, user_id, scope, tomorrow, 10)

    rows = await gw.rows(
        "SELECT body FROM webhook_deliveries WHERE endpoint_id = :e ORDER BY created_at",
        e=db_id(gw, endpoint.endpoint.id),
    )
    events = [json.loads(r.body)["data"] for r in rows]
    got = sorted(
        (datetime.fromisoformat(d["period_start"]), d["threshold_pct"], d["spent_nano"]) for d in events
    )
    day0 = today.replace(hour=0)
    assert got == [
        (day0, 50, 500), (day0, 80, 800), (day0, 100, 1_000),
        (day0 + timedelta(days=1), 50, 500), (day0 + timedelta(days=1), 80, 800),
        (day0 + timedelta(days=1), 100, 1_000),
    ]  # fmt: skip
    assert all(d["scope"] == "user" and d["id"] == str(user_id) and d["period"] == "day" for d in events)
    assert {datetime.fromisoformat(d["resets_at"]) for d in events} == {
        day0 + timedelta(days=1),
        day0 + timedelta(days=2),
    }


async def test_a_workspace_budget_is_told_to_the_workspaces_endpoints(gateway: Gateway) -> None:
    """A workspace's budget, spent by two members: its events go to the workspace's endpoint (and the
    operator's), not to a member's own endpoint; each level once, whoever's request crossed it."""
    gw = gateway
    first, _ = await gw.seed_user("5")
    second, _ = await gw.seed_user("5")
    async with gw.engine.begin() as conn:
        team = await service.create_workspace(conn, "team", first, [second])
        admin = WebhookScope(user_id=None)
        url = "http://127.0.0.1:9/x"
        team_hook = await create_endpoint(
            conn, admin, url=url, events=["budget.threshold"], workspace_id=team.id
        )
        member_hook = await create_endpoint(conn, admin, url=url, events=["budget.threshold"], user_id=first)
    scope = ScopeLimits(f"w:{team.id}", budget_nano=1_000, budget_period="month")
    now = datetime.now(UTC)
    for i in range(10):
        user_id = (first, second)[i % 2]
        reservation = await gw.ledger.reserve(user_id, f"r-{uuid.uuid4()}", 100, LimitRequest((scope,), 10))
        rec = completion(user_id, 100, now)
        rec = dataclasses.replace(rec, workspace_id=team.id)
        await record_completion(gw.engine, gw.ledger, rec, reservation)
    team_events = await gw.rows(
        "SELECT body FROM webhook_deliveries WHERE endpoint_id = :e", e=db_id(gw, team_hook.endpoint.id)
    )
    data = sorted((json.loads(r.body)["data"] for r in team_events), key=lambda d: d["threshold_pct"])
    assert [(d["threshold_pct"], d["spent_nano"]) for d in data] == [(50, 500), (80, 800), (100, 1_000)]
    assert all(d["scope"] == "workspace" and d["id"] == str(team.id) for d in data)
    assert all(d["workspace_id"] == str(team.id) and d["user_id"] is None for d in data)
    member_events = await gw.scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = :e", e=db_id(gw, member_hook.endpoint.id)
    )
    assert member_events == 0


async def test_a_budget_set_again_recounts_from_usage_logs(gateway: Gateway) -> None:
    """The spend row is rebuilt from usage_logs after a budget change: spend made while the user had no
    budget counts, so the 50 % level is crossed by the request that really crosses it."""
    gw = gateway
    user_id, _ = await gw.seed_user("5")
    day = datetime.now(UTC)
    patched = await api(
        gw, "PATCH", f"/users/{user_id}", json={"budget_usd": "0.000001", "budget_period": "day"}
    )
    assert patched.status_code == 200, patched.text
    scope = ScopeLimits(f"u:{user_id}", budget_nano=1_000, budget_period="day")
    await spend_a_day(gw, user_id, scope, day, 2)  # 20 %: counted in budget_spend
    cleared = await api(gw, "PATCH", f"/users/{user_id}", json={"budget_usd": None})
    assert cleared.status_code == 200, cleared.text
    # 20 % more while there is no budget: no spend row moves
    await record_completion(gw.engine, gw.ledger, completion(user_id, 200, day), None)
    await api(gw, "PATCH", f"/users/{user_id}", json={"budget_usd": "0.000001", "budget_period": "day"})
    await spend_a_day(gw, user_id, scope, day, 1)  # 40 % → 50 %: this one crosses
    claims = await gw.rows(
        "SELECT threshold_pct, spent_nano FROM budget_alerts WHERE scope = :s", s=scope.scope
    )
    assert [(r.threshold_pct, r.spent_nano) for r in claims] == [(50, 500)]


def test_crossed_thresholds_compare_exact_integers() -> None:
    assert crossed_thresholds(0, 499, 1_000) == []
    assert crossed_thresholds(499, 500, 1_000) == [50]
    assert crossed_thresholds(500, 799, 1_000) == []
    assert crossed_thresholds(0, 1_000, 1_000) == [50, 80, 100]
    assert crossed_thresholds(999, 1_300, 1_000) == [100]  # an overrun crosses 100 % once
    assert crossed_thresholds(1_000, 1_300, 1_000) == []
    assert crossed_thresholds(1, 2, 3) == [50]  # 1/3 → 2/3: exactly, no float
    assert crossed_thresholds(0, 10, 0) == []


async def test_limit_holds_settle_once_to_the_actual_figures(gateway: Gateway) -> None:
    """Each limited request's holds settle exactly once to its actual tokens and cost (on Redis in the same
    round trip as its credit, after the commit; the later settle_limits call then does nothing)."""
    gw = gateway
    wait_for_fresh_window()
    messages, cost = await exact_request(gw)
    prompt = int(messages[0]["content"].split("prompt_tokens=")[1].split()[0])
    user_id, _ = await gw.seed_user("5")
    created = await api(
        gw,
        "POST",
        "/keys",
        json={"user_id": str(user_id), "tpm_limit": 100_000, "budget_usd": "1", "budget_period": "day"},
    )
    key, key_id = created.json()["key"], created.json()["id"]
    for n in (1, 2, 3):
        # 30 tokens fewer than the worst case reserved: the settle moves each window by -30, once
        answer = await chat(gw.url, key, messages, max_tokens=OUT_TOKENS + 30)
        assert answer.status_code == 200, answer.text
        limits = (await api(gw, "GET", f"/keys/{key_id}")).json()["limits"]
        assert limits["requests"] == n
        assert limits["tokens"] == n * (prompt + OUT_TOKENS)  # the worst case moved to the actual, once
        assert limits["spent_nano"] == n * cost


def test_the_backoff_scale_shrinks_every_wait_and_the_24_hours() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    assert backoff.next_attempt_at(t0, t0, 1, 0.05) == t0 + timedelta(milliseconds=250)
    assert backoff.next_attempt_at(t0, t0, 2, 0.05) == t0 + timedelta(milliseconds=1500)
    assert backoff.next_attempt_at(t0, t0 + timedelta(hours=1, minutes=12), 9, 0.05) is None  # 24 h × 0.05
    assert backoff.schedule(t0) == [t0 + (t - t0) * 20 for t in _scaled_schedule(t0, 0.05)]


def _scaled_schedule(t0: datetime, scale: float) -> list[datetime]:
    times = [t0]
    while (following := backoff.next_attempt_at(t0, times[-1], len(times), scale)) is not None:
        times.append(following)
    return times


def test_the_slack_text_of_a_budget_threshold() -> None:
    payload = BudgetThreshold(
        scope="workspace",
        id=uuid.UUID(int=7),
        threshold_pct=80,
        budget_nano=25_000_000_000,
        spent_nano=20_000_000_001,
        period="month",
        period_start=datetime(2026, 12, 1, tzinfo=UTC),
        resets_at=datetime(2027, 1, 1, tzinfo=UTC),
        workspace_id=uuid.UUID(int=7),
    )
    data = to_data(payload)
    assert data["budget_usd"] == "25" and data["spent_usd"] == "20.000000001"
    text = slack_text("budget.threshold", data)
    assert text == (
        ":warning: SynapGate: workspace 00000000-0000-0000-0000-000000000007 reached 80% of its month budget "
        "($20.000000001 of $25)"
    )
