"""The billing and catalog admin API: credits, balances, events, invoices, prices — exact to the nano-USD.

Usage comes from real calls through the gateway (openai SDK → SynapGate → mock upstream) with token counts
set by mock directives, so every expected number below is computed by hand from the list prices.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import openai
import pytest

from pricing.money import format_usd, round_to_nano
from storage.billing.ledger.base import HotMove
from storage.billing.ledger.entries import post_entry
from storage.billing.reconcile import reconcile
from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, api, create_key, create_user, db_id, error_of

MINI = (Decimal("0.15"), Decimal("0.075"), Decimal("0.60"))  # gpt-4o-mini: input, cached input, output
FOUR_O = (Decimal("2.50"), Decimal("1.25"), Decimal("10.00"))  # gpt-4o
BYOK_FEE_NANO = 1_000_000  # SYNAPGATE_BYOK_FEE_USD_PER_REQUEST = 0.001


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_database() -> str:
    return "reset"  # one PostgreSQL database for the module, emptied between tests


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN, "byok_fee_usd_per_request": "0.001"}


def cost_nano(prices: tuple[Decimal, Decimal, Decimal], prompt: int, completion: int, cached: int = 0) -> int:
    """The hand computation: uncached input, cached input and output tokens × price per 1M, rounded once."""
    rate_in, rate_cached, rate_out = prices
    usd = ((prompt - cached) * rate_in + cached * rate_cached + completion * rate_out) / Decimal(1_000_000)
    return round_to_nano(usd)


async def call(
    gw: Gateway, key: str, model: str, prompt: int, completion: int, cached: int = 0, **extra: Any
) -> Any:
    directive = f"[mock prompt_tokens={prompt} completion_tokens={completion} cached_tokens={cached}]"
    raw = await gw.openai(key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": f"go {directive}"}], **extra
    )
    assert raw.status_code == 200
    return raw


async def add_credits(gw: Gateway, user_id: str, amount: str, key: str, **extra: Any) -> Any:
    return await api(
        gw,
        "POST",
        "/billing/add-credits",
        json={"user_id": user_id, "amount_usd": amount, "idempotency_key": key, **extra},
    )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def account_balance(gw: Gateway, user_id: str) -> int:
    return int(
        await gw.scalar("SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=db_id(gw, user_id))
    )


# -- credits -------------------------------------------------------------------------------------


async def test_add_credits_is_exact_and_a_replay_moves_nothing(gateway: Gateway) -> None:
    user = await create_user(gateway)
    uid = uuid.UUID(user["id"])
    assert await gateway.ledger.available(uid) == 0  # the hot copy (Redis) is loaded before the top-up

    first = await add_credits(gateway, user["id"], "12.345678901", "topup-1", description="November")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["amount_usd"] == "12.345678901" and body["amount_nano"] == 12_345_678_901
    assert body["balance_usd"] == "12.345678901" and body["balance_nano"] == 12_345_678_901
    assert body["replayed"] is False and body["type"] == "credit" and body["idempotency_key"] == "topup-1"
    assert body["description"] == "November"

    replay = await add_credits(gateway, user["id"], "12.345678901", "topup-1")
    assert replay.status_code == 200
    again = replay.json()
    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in body.items() if k != "replayed"
    }  # the first result, description and time included
    assert await gateway.scalar("SELECT COUNT(*) FROM billing_events") == 1

    reused = await add_credits(gateway, user["id"], "99", "topup-1")
    error = error_of(reused, 409)
    assert error["code"] == "idempotency_key_reused" and error["param"] == "idempotency_key"

    second = await add_credits(gateway, user["id"], "0.000000099", "topup-2")
    assert second.status_code == 201 and second.json()["balance_nano"] == 12_345_679_000
    assert await account_balance(gateway, user["id"]) == 12_345_679_000
    assert await gateway.ledger.available(uid) == 12_345_679_000
    if gateway.redis_url:  # the gateway's Redis copy moved with the database, to the nano
        assert await gateway.ledger.hot_balance(uid) == 12_345_679_000
    report = await reconcile(gateway.engine, gateway.ledger)
    assert report.mismatches == []


async def test_add_credits_input_is_validated_and_changes_nothing(gateway: Gateway) -> None:
    user = await create_user(gateway)
    for amount in ("abc", "0", "-1", "0.0000000001", "NaN", "1e400", "1000000001"):
        error = error_of(await add_credits(gateway, user["id"], amount, f"k-{amount}"), 400)
        assert error["param"] == "amount_usd", (amount, error)
    error = error_of(await add_credits(gateway, user["id"], 10, "k-number"), 400)  # type: ignore[arg-type]
    assert "amount_usd" in error["message"]
    missing = await api(
        gateway, "POST", "/billing/add-credits", json={"user_id": user["id"], "amount_usd": "1"}
    )
    assert "idempotency_key" in error_of(missing, 400)["message"]
    assert (
        error_of(await add_credits(gateway, user["id"], "1", " padded "), 400)["param"] == "idempotency_key"
    )
    ghost = error_of(await add_credits(gateway, str(uuid.uuid4()), "1", "ghost"), 404)
    assert ghost["code"] == "user_not_found" and ghost["param"] == "user_id"
    assert await gateway.scalar("SELECT COUNT(*) FROM billing_events") == 0


async def test_balance_is_the_ledger_after_usage(gateway: Gateway) -> None:
    user = await create_user(gateway)
    key = (await create_key(gateway, user["id"]))["key"]
    await add_credits(gateway, user["id"], "1", "start")
    await call(gateway, key, "gpt-4o-mini", 1000, 7)
    await call(gateway, key, "gpt-4o", 333, 21, cached=100)
    spent = cost_nano(MINI, 1000, 7) + cost_nano(FOUR_O, 333, 21, cached=100)
    assert spent == 154_200 + 917_500  # 150 + 4.2 µUSD; 582.5 + 125 + 210 µUSD
    response = await api(gateway, "GET", f"/billing/balance/{user['id']}", key=key)  # the user's own key
    assert response.status_code == 200
    balance = response.json()
    assert balance["balance_nano"] == 1_000_000_000 - spent == await account_balance(gateway, user["id"])
    assert balance["balance_usd"] == format_usd(1_000_000_000 - spent) == "0.998928300"
    assert balance["available_nano"] == balance["balance_nano"] and balance["held_nano"] == 0
    assert balance["held_usd"] == "0.000000000"
    assert error_of(await api(gateway, "GET", f"/billing/balance/{uuid.uuid4()}"), 404)


# -- events --------------------------------------------------------------------------------------


async def test_events_filter_by_type_and_time_zone_aware_dates_with_stable_pages(gateway: Gateway) -> None:
    user = await create_user(gateway)
    key = (await create_key(gateway, user["id"]))["key"]
    for i in range(3):
        await add_credits(gateway, user["id"], f"0.{i + 1}", f"e-{i}")
        await call(gateway, key, "gpt-4o-mini", 100 + i, 10)
    path = f"/billing/events/{user['id']}"
    full = (await api(gateway, "GET", path)).json()
    assert full["total"] == 6
    events = full["data"]
    assert [e["type"] for e in events] == ["credit", "usage"] * 3
    assert [(e["created_at"], e["id"]) for e in events] == sorted((e["created_at"], e["id"]) for e in events)
    usage = [e for e in events if e["type"] == "usage"]
    assert [e["amount_nano"] for e in usage] == [-cost_nano(MINI, 100 + i, 10) for i in range(3)]
    assert all(e["amount_usd"] == format_usd(e["amount_nano"]) for e in events)
    assert all(e["request_id"] and e["request_id"].startswith("req_") for e in usage)

    credits = (await api(gateway, "GET", path, params={"type": "credit"})).json()
    assert [e["amount_nano"] for e in credits["data"]] == [100_000_000, 200_000_000, 300_000_000]
    both = (await api(gateway, "GET", path, params=[("type", "credit"), ("type", "usage")])).json()
    assert both["total"] == 6
    assert (await api(gateway, "GET", path, params={"type": "credit,usage"})).json()["total"] == 6
    assert error_of(await api(gateway, "GET", path, params={"type": "bonus"}), 400)["param"] == "type"

    pages = []
    for offset in (0, 4):
        page = (await api(gateway, "GET", path, params={"limit": 4, "offset": offset})).json()
        pages += [e["id"] for e in page["data"]]
        assert page["has_more"] is (offset == 0)
    assert pages == [e["id"] for e in events]
    newest = (await api(gateway, "GET", path, params={"order": "desc"})).json()
    assert [e["id"] for e in newest["data"]] == [e["id"] for e in reversed(events)]

    # The same instant written in different zones selects the same events; start inclusive, end exclusive.
    fourth = parse_time(events[3]["created_at"])
    in_berlin = fourth.astimezone(timezone(timedelta(hours=2))).isoformat()
    in_new_york = fourth.astimezone(timezone(timedelta(hours=-5))).isoformat()
    after = (await api(gateway, "GET", path, params={"start": in_berlin})).json()
    assert [e["id"] for e in after["data"]] == [e["id"] for e in events[3:]]
    before = (await api(gateway, "GET", path, params={"end": in_new_york})).json()
    assert [e["id"] for e in before["data"]] == [e["id"] for e in events[:3]]
    utc = fourth.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert (await api(gateway, "GET", path, params={"start": utc})).json()["total"] == 3

    naive = error_of(await api(gateway, "GET", path, params={"start": "2026-11-01T00:00:00"}), 400)
    assert naive["param"] == "start" and "time zone" in naive["message"]
    reversed_range = await api(gateway, "GET", path, params={"start": in_berlin, "end": in_new_york})
    assert error_of(reversed_range, 400)["param"] == "end"
    assert "start" in error_of(await api(gateway, "GET", path, params={"start": "yesterday"}), 400)["message"]


# -- invoices ------------------------------------------------------------------------------------


async def test_invoice_lines_and_totals_equal_the_ledger(gateway: Gateway) -> None:
    period_start = datetime.now(UTC) - timedelta(minutes=1)
    user = await create_user(gateway)
    uid = uuid.UUID(user["id"])
    key = (await create_key(gateway, user["id"]))["key"]
    assert (
        await add_credits(gateway, user["id"], "5", "inv-credit", description="prepaid")
    ).status_code == 201
    await call(gateway, key, "gpt-4o-mini", 100, 10)
    await call(gateway, key, "gpt-4o-mini", 120, 30, cached=40)
    await call(gateway, key, "gpt-4o", 1000, 5)
    byok = await call(gateway, key, "gpt-4o-mini", 50, 5, extra_headers={"X-Provider-Api-Key": "sk-own-key"})
    assert byok.headers["x-synapgate-charged-usd"] == "0.001000000"
    async with gateway.engine.begin() as conn:  # no API posts these yet; the ledger takes them as they come
        refund = await post_entry(conn, user_id=uid, type="refund", amount_nano=123, idempotency_key="r-1",
                                  description="goodwill")  # fmt: skip
        adjust = await post_entry(
            conn, user_id=uid, type="adjustment", amount_nano=-77, idempotency_key="a-1"
        )
    await gateway.ledger.after_commit(
        [HotMove(uid, None, 123, refund.version), HotMove(uid, None, -77, adjust.version)]
    )
    period_end = datetime.now(UTC)

    mini = [cost_nano(MINI, 100, 10), cost_nano(MINI, 120, 30, cached=40)]
    four_o = cost_nano(FOUR_O, 1000, 5)
    byok_cost = cost_nano(MINI, 50, 5)
    assert (mini, four_o, byok_cost) == ([21_000, 33_000], 2_550_000, 10_500)
    expected_total = 5_000_000_000 - sum(mini) - four_o - BYOK_FEE_NANO + 123 - 77

    response = await api(
        gateway,
        "POST",
        "/billing/invoices",
        json={
            "user_id": user["id"],
            "period_start": period_start.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
            "period_end": period_end.isoformat().replace("+00:00", "Z"),
        },
    )
    assert response.status_code == 201, response.text
    invoice = response.json()
    assert (
        parse_time(invoice["period_start"]) == period_start
        and parse_time(invoice["period_end"]) == period_end
    )
    assert invoice["status"] == "issued"
    lines = invoice["lines"]
    usage_lines = [(ln["kind"], ln["model"], ln["requests"], ln["byok_requests"], ln["input_tokens"],
                    ln["cached_input_tokens"], ln["output_tokens"], ln["cost_nano"], ln["amount_nano"])
                   for ln in lines if ln["model"] is not None]  # fmt: skip
    assert usage_lines == [
        ("usage", "gpt-4o", 1, 0, 1000, 0, 5, four_o, -four_o),
        ("usage", "gpt-4o-mini", 2, 0, 220, 40, 40, sum(mini), -sum(mini)),
        ("fee", "gpt-4o-mini", 1, 1, 50, 0, 5, byok_cost, -BYOK_FEE_NANO),  # metered cost, the fee debited
    ]
    event_lines = [(ln["kind"], ln["amount_nano"], ln["description"]) for ln in lines if ln["model"] is None]
    assert event_lines == [("credit", 5_000_000_000, "prepaid"), ("refund", 123, "goodwill"),
                           ("adjustment", -77, None)]  # fmt: skip
    assert all(ln["amount_usd"] == format_usd(ln["amount_nano"]) for ln in lines)
    assert sum(ln["amount_nano"] for ln in lines) == invoice["total_nano"] == expected_total
    assert invoice["total_usd"] == format_usd(expected_total) == "4.996396046"
    assert invoice["totals"] == {
        "usage_usd": format_usd(-sum(mini) - four_o), "usage_nano": -sum(mini) - four_o,
        "fees_usd": "-0.001000000", "fees_nano": -BYOK_FEE_NANO,
        "credits_usd": "5.000000000", "credits_nano": 5_000_000_000,
        "refunds_usd": "0.000000123", "refunds_nano": 123,
        "adjustments_usd": "-0.000000077", "adjustments_nano": -77,
        "subscriptions_usd": "0.000000000", "subscriptions_nano": 0,
    }  # fmt: skip
    # The ledger agrees: the events of the period, the account, and the statement's balances.
    ledger = await gateway.scalar(
        "SELECT SUM(amount_nano) FROM billing_events WHERE user_id = :u AND invoice_id IS NOT NULL",
        u=db_id(gateway, uid),
    )
    assert ledger == expected_total == await account_balance(gateway, user["id"])
    assert invoice["opening_balance_nano"] == 0 and invoice["closing_balance_nano"] == expected_total
    assert await gateway.scalar("SELECT COUNT(*) FROM billing_events WHERE invoice_id IS NULL") == 0
    stored = await gateway.rows("SELECT total_nano, status FROM invoices")
    assert [tuple(r) for r in stored] == [(expected_total, "issued")]

    shown = await api(gateway, "GET", f"/billing/invoice/{invoice['id']}", key=key)  # the user's own key
    assert shown.status_code == 200 and shown.json() == invoice

    # The period is billed once: any overlap is refused and changes nothing.
    for start, end in ((period_start, period_end), (period_end - timedelta(seconds=1), datetime.now(UTC))):
        clash = await api(gateway, "POST", "/billing/invoices",
                          json={"user_id": user["id"], "period_start": start.isoformat(),
                                "period_end": end.isoformat()})  # fmt: skip
        error = error_of(clash, 409)
        assert error["code"] == "invoice_period_overlap" and invoice["id"] in error["message"]
    assert await gateway.scalar("SELECT COUNT(*) FROM invoices") == 1

    # The next period starts where this one ended and holds only what came after.
    later = await call(gateway, key, "gpt-4o", 10, 10)
    next_end = datetime.now(UTC)
    second = await api(gateway, "POST", "/billing/invoices",
                       json={"user_id": user["id"], "period_start": period_end.isoformat(),
                             "period_end": next_end.isoformat()})  # fmt: skip
    assert second.status_code == 201, second.text
    nxt = second.json()
    [line] = nxt["lines"]
    assert (line["kind"], line["model"], line["requests"]) == ("usage", "gpt-4o", 1)
    assert line["amount_nano"] == -cost_nano(FOUR_O, 10, 10) == nxt["total_nano"]
    assert later.headers["x-synapgate-cost-usd"] == format_usd(cost_nano(FOUR_O, 10, 10))
    assert nxt["opening_balance_nano"] == expected_total
    assert nxt["closing_balance_nano"] == expected_total + nxt["total_nano"]
    on_second = await api(gateway, "GET", f"/billing/events/{user['id']}", params={"invoice_id": nxt["id"]})
    assert [e["request_id"] for e in on_second.json()["data"]] == [later.headers["x-request-id"]]

    listed = (await api(gateway, "GET", "/billing/invoices", params={"user_id": user["id"]})).json()
    assert [i["id"] for i in listed["data"]] == [invoice["id"], nxt["id"]] and listed["total"] == 2


async def test_invoice_requests_are_validated(gateway: Gateway) -> None:
    user = await create_user(gateway)
    now = datetime.now(UTC)

    async def attempt(start: Any, end: Any, user_id: str = user["id"]) -> Any:
        body = {"user_id": user_id, "period_start": start, "period_end": end}
        return await api(gateway, "POST", "/billing/invoices", json=body)

    day_ago = (now - timedelta(days=1)).isoformat()
    cases = [
        (await attempt("2026-11-01T00:00:00", now.isoformat()), 400, "period_start"),
        (await attempt(day_ago, "2026-11-24T00:00:00"), 400, "period_end"),
        (await attempt(now.isoformat(), day_ago), 400, "period_end"),
        (await attempt(day_ago, (now + timedelta(hours=1)).isoformat()), 400, "period_end"),
        (await attempt(day_ago, now.isoformat(), str(uuid.uuid4())), 404, "user_id"),
    ]
    for response, status, param in cases:
        assert error_of(response, status)["param"] == param, response.text
    assert "period_start" in error_of(await attempt("soon", now.isoformat()), 400)["message"]
    assert await gateway.scalar("SELECT COUNT(*) FROM invoices") == 0
    assert error_of(await api(gateway, "GET", f"/billing/invoice/{uuid.uuid4()}"), 404)["code"] == (
        "invoice_not_found"
    )

    empty = await attempt(day_ago, now.isoformat())
    assert empty.status_code == 201 and empty.json()["lines"] == [] and empty.json()["total_nano"] == 0


# -- catalog -------------------------------------------------------------------------------------


async def test_catalog_lists_models_with_exact_prices(gateway: Gateway) -> None:
    _uid, key = await gateway.seed_user("0")
    listed = await api(gateway, "GET", "/llms", key=key)  # any valid key may read the catalog
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 15 and [m["id"] for m in page["data"]] == sorted(m["id"] for m in page["data"])
    mini = next(m for m in page["data"] if m["name"] == "gpt-4o-mini")
    assert mini["prices"] == {
        "unit": "USD per 1000000 tokens", "input": "0.15", "output": "0.6", "cached_input": "0.075",
        "cache_write": None, "long_context_threshold": None, "long_input": None, "long_cached_input": None,
        "long_cache_write": None, "long_output": None,
    }  # fmt: skip
    gemini = (await api(gateway, "GET", "/llms/gemini-1.5-pro")).json()
    assert gemini["prices"]["long_context_threshold"] == 128_000 and gemini["prices"]["long_input"] == "2.5"
    assert [v["version"] for v in gemini["price_history"]] == [1]
    anthropic = (await api(gateway, "GET", "/llms", params={"provider": "anthropic"})).json()
    assert {m["name"] for m in anthropic["data"]} == {"claude-3-opus", "claude-3-sonnet", "claude-3-haiku"}
    assert error_of(await api(gateway, "GET", "/llms/gpt-9"), 404)["code"] == "model_not_found"


async def test_new_price_version_never_rewrites_charged_history(gateway: Gateway) -> None:
    _uid, key = await gateway.seed_user("1")
    first = await call(gateway, key, "gpt-4o-mini", 1000, 100)
    old_cost = cost_nano(MINI, 1000, 100)
    response = await api(
        gateway,
        "PUT",
        "/llms/gpt-4o-mini",
        json={"input_price": "0.30", "output_price": "1.20", "cached_input_price": "0.15"},
    )
    assert response.status_code == 200, response.text
    model = response.json()
    assert model["price_version"] == 2
    assert (model["prices"]["input"], model["prices"]["output"], model["prices"]["cached_input"]) == (
        "0.3", "1.2", "0.15"
    )  # fmt: skip
    history = [(v["version"], v["prices"]["input"], v["prices"]["output"]) for v in model["price_history"]]
    assert history == [(1, "0.15", "0.6"), (2, "0.3", "1.2")]

    second = await call(gateway, key, "gpt-4o-mini", 1000, 100)  # this worker prices at version 2 at once
    new_cost = cost_nano((Decimal("0.30"), Decimal("0.15"), Decimal("1.20")), 1000, 100)
    assert second.headers["x-synapgate-cost-usd"] == format_usd(new_cost) == "0.000420000"
    rows = await gateway.rows("SELECT request_id, price_version, cost_nano FROM usage_logs ORDER BY id")
    assert [tuple(r) for r in rows] == [
        (first.headers["x-request-id"], 1, old_cost),
        (second.headers["x-request-id"], 2, new_cost),
    ]
    v1 = await gateway.rows(
        "SELECT v.input_price, v.output_price FROM llm_price_versions v JOIN llms l ON l.id = v.llm_id "
        "WHERE l.name = 'gpt-4o-mini' AND v.version = 1"
    )
    assert [Decimal(str(x)) for x in v1[0]] == [Decimal("0.15"), Decimal("0.60")]

    # the CLI's rule, shared: an omitted optional price keeps its value; an explicit null clears it
    kept = await api(gateway, "PUT", "/llms/gpt-4o-mini", json={"input_price": "0.3", "output_price": "1.2"})
    assert (kept.json()["price_version"], kept.json()["prices"]["cached_input"]) == (3, "0.15")
    body = {"input_price": "0.3", "output_price": "1.2", "cached_input_price": None}
    cleared = await api(gateway, "PUT", "/llms/gpt-4o-mini", json=body)
    assert (cleared.json()["price_version"], cleared.json()["prices"]["cached_input"]) == (4, None)


async def test_price_changes_are_validated_and_admin_only(gateway: Gateway) -> None:
    _uid, key = await gateway.seed_user("0")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input_price": 0.3, "output_price": "1"}, "input_price"),
        ({"input_price": "-1", "output_price": "1"}, "input_price"),
        ({"input_price": "1", "output_price": "0.0000000001"}, "output_price"),
        ({"input_price": "1", "output_price": "ten"}, "output_price"),
        ({"input_price": "1"}, "output_price"),
        ({"input_price": "1", "output_price": "2", "long_input_price": "3"}, "long_context_threshold"),
        ({"input_price": "1", "output_price": "2", "long_context_threshold": 1000, "long_input_price": "3"},
         "long_output_price"),
    ]  # fmt: skip
    for body, field in cases:
        error = error_of(await api(gateway, "PUT", "/llms/gpt-4o", json=body), 400)
        assert field in error["message"], (body, error)
    good = {"input_price": "1", "output_price": "2"}
    assert (
        error_of(await api(gateway, "PUT", "/llms/gpt-4o", key=key, json=good), 403)["code"] == "admin_only"
    )
    assert error_of(await api(gateway, "PUT", "/llms/gpt-9", json=good), 404)["code"] == "model_not_found"
    assert await gateway.scalar("SELECT COUNT(*) FROM llm_price_versions") == 15
    assert await gateway.scalar("SELECT price_version FROM llms WHERE name = 'gpt-4o'") == 1


async def test_deactivated_model_is_not_served_until_activated(gateway: Gateway) -> None:
    _uid, key = await gateway.seed_user("1")
    off = await api(gateway, "POST", "/llms/gpt-4o/deactivate")
    assert off.status_code == 200 and off.json()["is_active"] is False
    sdk = gateway.openai(key)
    assert "gpt-4o" not in {m.id for m in (await sdk.models.list()).data}
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    inactive = (await api(gateway, "GET", "/llms", params={"active": "false"})).json()
    assert [m["name"] for m in inactive["data"]] == ["gpt-4o"]
    assert error_of(await api(gateway, "POST", "/llms/gpt-4o/activate", key=key), 403)
    on = await api(gateway, "POST", "/llms/gpt-4o/activate")
    assert on.status_code == 200 and on.json()["is_active"] is True
    assert (
        await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    ).choices
    assert error_of(await api(gateway, "POST", "/llms/gpt-9/activate"), 404)["code"] == "model_not_found"


async def test_concurrent_replays_and_overlapping_invoices_move_money_once(gateway: Gateway) -> None:
    user = await create_user(gateway)
    start = datetime.now(UTC) - timedelta(minutes=1)
    same = [add_credits(gateway, user["id"], "1.5", "same-key") for _ in range(8)]
    answers = await asyncio.gather(*same)
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert {r.json()["event_id"] for r in answers} == {answers[0].json()["event_id"]}
    assert await account_balance(gateway, user["id"]) == 1_500_000_000
    assert await gateway.ledger.available(uuid.UUID(user["id"])) == 1_500_000_000

    period = {
        "user_id": user["id"],
        "period_start": start.isoformat(),
        "period_end": datetime.now(UTC).isoformat(),
    }
    invoices = await asyncio.gather(
        *(api(gateway, "POST", "/billing/invoices", json=period) for _ in range(4))
    )
    assert sorted(r.status_code for r in invoices) == [201, 409, 409, 409]
    assert await gateway.scalar("SELECT COUNT(*) FROM invoices") == 1
    assert await gateway.scalar("SELECT COUNT(DISTINCT invoice_id) FROM billing_events") == 1
    [created] = [r.json() for r in invoices if r.status_code == 201]
    assert created["total_nano"] == 1_500_000_000
