"""Limits reserved like credit, end to end on both backends: RPM with OpenAI's headers, a budget under 60
concurrent requests, a workspace budget across users, a period rollover, expiry, and two gateway instances
sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from pricing.cost import reservation_nano
from pricing.money import format_usd
from pricing.tokens import count_prompt_tokens
from storage.accounts import service
from storage.billing.ledger.base import HotMove
from storage.billing.ledger.entries import post_entry
from storage.billing.ledger.limits import LimitExceeded, LimitRequest, ScopeLimits, period_bounds
from storage.catalog.repository import load_catalog
from tests.integration.conftest import Gateway, GatewayThread
from tests.integration.helpers import ADMIN, api, error_of, wait_for_fresh_window, worst_case_nano

MESSAGES = [{"role": "user", "content": "limits"}]
MAX_TOKENS = 50


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


async def new_key(gw: Gateway, user_id: uuid.UUID, workspace_id: str | None = None, **limits: Any) -> str:
    body: dict[str, Any] = {"user_id": str(user_id), **limits}
    if workspace_id is not None:
        body["workspace_id"] = workspace_id
    created = await api(gw, "POST", "/keys", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


async def chat(url: str, key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": MAX_TOKENS},
        )


async def test_rpm_limit_answers_exactly_five_then_429_with_headers(gateway: Gateway) -> None:
    user_id, _ = await gateway.seed_user("5")
    key = await new_key(gateway, user_id, rpm_limit=5, tpm_limit=100_000)
    wait_for_fresh_window()
    urls = [gateway.url]
    second: GatewayThread | None = None
    if gateway.redis_url is not None:  # two instances sharing PostgreSQL and Redis: one limit between them
        second = GatewayThread(gateway.settings)
        second.start()
        urls.append(second.url)
    try:
        answers = [await chat(urls[i % len(urls)], key) for i in range(8)]
    finally:
        if second is not None:
            second.stop()
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 5, [r.status_code for r in answers]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["4", "3", "2", "1", "0"]
    for r in ok:
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 100_000
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        assert "x-ratelimit-reset-tokens" in r.headers
    for r in answers[5:]:
        error = error_of(r, 429)
        assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(gateway.mock.app.requests) == 5  # a refused request never reached the provider


async def test_tpm_limit_refuses_the_worst_case_then_settles_to_actual(gateway: Gateway) -> None:
    user_id, _ = await gateway.seed_user("5")
    wait_for_fresh_window()
    key = await new_key(gateway, user_id, tpm_limit=120)  # one worst case (prompt + 50) fits, two do not
    first = await chat(gateway.url, key)
    assert first.status_code == 200, first.text
    # The first request settled to its actual tokens (far below the 50 reserved), so a second one fits.
    second = await chat(gateway.url, key)
    assert second.status_code == 200, second.text
    listed = (await api(gateway, "GET", "/keys", params={"user_id": str(user_id)})).json()["data"]
    detail = (await api(gateway, "GET", f"/keys/{listed[-1]['id']}")).json()
    assert detail["limits"]["tpm_limit"] == 120 and detail["limits"]["requests"] == 2
    assert 0 < detail["limits"]["tokens"] <= 120


async def test_budget_holds_under_60_concurrent_requests(gateway: Gateway) -> None:
    worst = await worst_case_nano(gateway, MESSAGES, MAX_TOKENS)
    budget = worst * 10 + worst // 2
    user_id, _ = await gateway.seed_user("5")
    key = await new_key(gateway, user_id, budget_usd=format_usd(budget), budget_period="month")
    answers = await asyncio.gather(*(chat(gateway.url, key) for _ in range(60)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == 60
    # Each holds the worst case until it settles: at least the 10 that fit at once are served, more only as
    # earlier ones settle to their (smaller) actual cost — how many depends on timing; the spend never passes
    # the budget (below).
    assert len(ok) >= 10, [r.status_code for r in answers]
    for r in refused:
        error = error_of(r, 429)
        assert error["type"] == "insufficient_quota" and error["code"] == "budget_exceeded"
        assert r.headers["x-should-retry"] == "false"
        _start, reset = period_bounds("month", datetime.now(UTC))
        assert reset is not None
        assert 0 < int(r.headers["retry-after"]) <= (reset - datetime.now(UTC)).total_seconds() + 5
    charged = await gateway.scalar(
        "SELECT COALESCE(SUM(charged_nano), 0) FROM usage_logs WHERE user_id = :u",
        u=user_id.hex if gateway.settings.is_sqlite else str(user_id),
    )
    assert 0 < int(charged) <= budget
    listed = (await api(gateway, "GET", "/keys", params={"user_id": str(user_id)})).json()["data"]
    limits = (await api(gateway, "GET", f"/keys/{listed[-1]['id']}")).json()["limits"]
    assert limits["spent_nano"] == int(charged) and limits["budget_nano"] == budget
    assert limits["resets_at"] is not None


async def test_workspace_budget_holds_across_its_users_keys(gateway: Gateway) -> None:
    worst = await worst_case_nano(gateway, MESSAGES, MAX_TOKENS)
    first_user, _ = await gateway.seed_user("5")
    second_user, _ = await gateway.seed_user("5")
    async with gateway.engine.begin() as conn:
        team = await service.create_workspace(conn, "team", first_user, [second_user])
    updated = await api(
        gateway,
        "PATCH",
        f"/workspaces/{team.id}",
        json={"budget_usd": format_usd(worst * 3), "budget_period": "day"},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["limits"]["budget_period"] == "day"
    keys = [await new_key(gateway, u, str(team.id)) for u in (first_user, second_user)]
    # Each request holds the worst case and settles to its (smaller) actual cost: requests from both
    # users' keys are admitted until the workspace's spend plus one worst case would pass the budget.
    served = 0
    for i in range(40):
        answer = await chat(gateway.url, keys[i % 2])
        if answer.status_code != 200:
            assert error_of(answer, 429)["code"] == "budget_exceeded"
            break
        served += 1
    else:
        pytest.fail("the workspace budget never refused")
    spent = (await api(gateway, "GET", f"/workspaces/{team.id}/limits")).json()["limits"]["spent_nano"]
    assert served >= 3 and 0 < spent <= worst * 3 < spent + worst
    served_by = await gateway.scalar(
        "SELECT COUNT(DISTINCT user_id) FROM usage_logs WHERE workspace_id = :w",
        w=team.id.hex if gateway.settings.is_sqlite else str(team.id),
    )
    assert served_by == 2


async def test_user_limits_patch_and_expired_key(gateway: Gateway) -> None:
    user_id, _ = await gateway.seed_user("5")
    wait_for_fresh_window()
    patched = await api(gateway, "PATCH", f"/users/{user_id}", json={"rpm_limit": 1})
    assert patched.status_code == 200 and patched.json()["limits"]["rpm_limit"] == 1
    key = await new_key(gateway, user_id)
    assert (await chat(gateway.url, key)).status_code == 200
    assert error_of(await chat(gateway.url, key), 429)["type"] == "requests"
    bad = await api(gateway, "PATCH", f"/users/{user_id}", json={"budget_period": "year"})
    assert bad.status_code == 400
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    expired = await new_key(gateway, user_id, expires_at=past)
    assert error_of(await chat(gateway.url, expired), 401)["code"] == "invalid_api_key"


async def test_a_period_rollover_restores_the_budget(gateway: Gateway) -> None:
    """With the ledger's clock moved to the next day, yesterday's spend no longer counts."""
    user_id, _ = await gateway.seed_user("5")
    ledger = gateway.ledger
    scope = ScopeLimits(f"u:{user_id}", budget_nano=1_000, budget_period="day")
    limits = LimitRequest((scope,), tokens=10)
    today = datetime.now(UTC)
    ledger.clock = lambda: today
    first = await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 800, limits)
    async with gateway.engine.begin() as conn:  # what the recorder does: a usage row and its debit
        await conn.execute(
            text(
                "INSERT INTO usage_logs (request_id, user_id, provider, model, charged_nano, cost_nano,"
                " created_at) VALUES (:r, :u, 'openai', 'gpt-4o-mini', 800, 800, :t)"
            ),
            {"r": first.request_id, "u": user_id.hex if gateway.settings.is_sqlite else user_id, "t": today},
        )
        posted = await post_entry(
            conn, user_id=user_id, type="usage", amount_nano=-800, idempotency_key=f"usage:{first.request_id}"
        )
        await ledger.settle_in_transaction(conn, [first])
    await ledger.after_commit([HotMove(user_id, first, -800, posted.version)])
    await ledger.settle_limits(first, 800, 10)
    with pytest.raises(LimitExceeded) as refused:
        await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 300, limits)
    assert refused.value.kind == "budget" and refused.value.retry_after is not None
    ledger.clock = lambda: today + timedelta(days=1)
    again = await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 300, limits)
    await ledger.release(again)


async def test_overrun_at_1_3x_stays_within_the_documented_bound(gateway: Gateway) -> None:
    """60 concurrent requests on credit for 10 worst cases, each costing 1.3× its reservation (the provider
    reports more prompt tokens than the estimate): the debits stand, the balance goes below zero by at most
    the overruns of the requests in flight (≤ 10 here), and the negative balance then admits nothing."""
    from decimal import Decimal

    async with gateway.engine.connect() as conn:
        model = (await load_catalog(conn)).get("gpt-4o-mini")
    assert model is not None
    out = 20
    probe = [{"role": "user", "content": "overrun [mock prompt_tokens=999999 completion_tokens=20]"}]
    estimate, _ = count_prompt_tokens(model.upstream_model, probe)
    worst = reservation_nano(model, estimate, out)
    # reported prompt tokens so that the actual cost is ≥ 1.3 × the reservation
    target = Decimal(worst) * Decimal("1.35") * Decimal(1_000_000) / Decimal(1_000_000_000)
    tier = model.pricing.base
    reported = int((target - out * tier.output) / tier.input) + 1
    messages = [{"role": "user", "content": f"overrun [mock prompt_tokens={reported} completion_tokens=20]"}]
    worst = reservation_nano(model, count_prompt_tokens(model.upstream_model, messages)[0], out)
    user_id, key = await gateway.seed_user(format_usd(worst * 10 + worst // 2))

    async def one() -> httpx.Response:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            return await http.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "gpt-4o-mini", "messages": messages, "max_tokens": out},
            )

    answers = await asyncio.gather(*(one() for _ in range(60)))
    ok = [r for r in answers if r.status_code == 200]
    assert 1 <= len(ok) <= 10 and all(r.status_code in (200, 402) for r in answers)
    cost = int(await gateway.scalar(
        "SELECT MAX(charged_nano) FROM usage_logs WHERE user_id = :u",
        u=user_id.hex if gateway.settings.is_sqlite else str(user_id),
    ))  # fmt: skip
    assert cost * 10 >= worst * 13  # the overrun really was 1.3×
    balance = int(await gateway.scalar(
        "SELECT balance_nano FROM credit_accounts WHERE user_id = :u",
        u=user_id.hex if gateway.settings.is_sqlite else str(user_id),
    ))  # fmt: skip
    bound = -10 * (cost - worst)  # README: at most the overruns of the reservations in flight
    assert bound <= balance
    if balance < 0:  # a negative balance admits nothing, not even a request that would cost nothing more
        refused = await one()
        assert error_of(refused, 402)["code"] == "insufficient_credits"


async def test_a_negative_balance_admits_not_even_a_zero_amount(gateway: Gateway) -> None:
    from storage.billing.ledger.base import InsufficientCredit

    user_id, _ = await gateway.seed_user("0.000001")  # 1000 nano-USD
    ledger = gateway.ledger
    held = await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 1_000)
    async with gateway.engine.begin() as conn:  # the actual cost overran the reservation: the debit stands
        posted = await post_entry(
            conn,
            user_id=user_id,
            type="usage",
            amount_nano=-1_300,
            idempotency_key=f"usage:{held.request_id}",
        )
        await ledger.settle_in_transaction(conn, [held])
    await ledger.after_commit([HotMove(user_id, held, -1_300, posted.version)])
    assert await ledger.available(user_id) == -300
    with pytest.raises(InsufficientCredit):
        await ledger.reserve(user_id, f"r-{uuid.uuid4()}", 0)
