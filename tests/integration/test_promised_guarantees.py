"""Guarantees the README promised but no test held (issue 10): each test here fails when its guarantee breaks.

The reservation is `× n` and made for the dearest model of a fallback chain; an upstream timeout is a 504;
`/health` answers and `/ready` is a 503 when PostgreSQL or Redis is unreachable; the BYOK fee *rate* is
charged end to end; `ledger reconcile` detects a ledger that disagrees with its account. (A stream whose
record fails ends in an error event, not `[DONE]`: tests/unit/test_chat_service.py.)
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from tests.integration.conftest import Gateway
from tests.integration.helpers import cli, error_of

# gpt-4o-mini (the catalog's seed): $0.15 / $0.60 per 1M tokens in / out; gpt-4o: $2.50 / $10.
MINI_OUT_NANO = 600  # nano-USD per output token
GPT4O_OUT_NANO = 10_000


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_database() -> str:
    return "reset"


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


async def post(gateway: Gateway, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    headers["Authorization"] = f"Bearer {key}"
    return await gateway.request("POST", "/v1/chat/completions", json=body, headers=headers)


async def debits(gateway: Gateway) -> int:
    return int(await gateway.scalar("SELECT COUNT(*) FROM billing_events WHERE type <> 'credit'"))


# -- the reservation --------------------------------------------------------------------------------


async def test_the_reservation_covers_every_choice_of_n(gateway: Gateway) -> None:
    """10,000 output tokens of gpt-4o-mini may cost 6,000,000 nano; $0.01 covers one choice, not two."""
    _user, key = await gateway.seed_user("0.01")
    one = await post(gateway, key, chat(max_tokens=10_000, n=1))
    assert one.status_code == 200, one.text
    two = await post(gateway, key, chat(max_tokens=10_000, n=2))
    error = error_of(two, 402)
    assert error["code"] == "insufficient_credits"
    assert "$0.012" in error["message"], error  # 2 × 10,000 × 600 nano, plus the prompt
    assert len(gateway.mock.app.requests) == 1  # the refused request never went upstream


@pytest.mark.parametrize(
    "gateway_settings_overrides", [{"fallbacks": {"gpt-4o-mini": ["gpt-4o"]}}], ids=["fallback-to-gpt-4o"]
)
async def test_the_reservation_is_for_the_dearest_model_of_the_fallback_chain(gateway: Gateway) -> None:
    """1,000 output tokens: 600,000 nano on gpt-4o-mini, 10,000,000 on its fallback gpt-4o. $0.005 would
    cover the primary alone; the chain may end on gpt-4o, so the request is refused before any call."""
    _user, key = await gateway.seed_user("0.005")
    refused = await post(gateway, key, chat(max_tokens=1_000))
    error = error_of(refused, 402)
    assert "$0.01" in error["message"], error  # gpt-4o's worst case, not gpt-4o-mini's $0.0006
    assert len(gateway.mock.app.requests) == 0
    assert await debits(gateway) == 0
    _user, rich = await gateway.seed_user("0.02")
    assert (await post(gateway, rich, chat(max_tokens=1_000))).status_code == 200


# -- timeouts, health and readiness ---------------------------------------------------------------


@pytest.mark.parametrize(
    "gateway_settings_overrides",
    [{"upstream_read_timeout": 0.3, "upstream_total_timeout": 0.5, "upstream_max_retries": 0}],
    ids=["short-timeouts"],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_that_does_not_answer_in_time_is_a_504_and_charges_nothing(
    gateway: Gateway, stream: bool
) -> None:
    user, key = await gateway.seed_user("1")
    before = await gateway.ledger.available(user)
    response = await post(gateway, key, chat("[mock latency_ms=2000]", stream=stream))
    error = error_of(response, 504)
    assert error["code"] == "upstream_timeout"
    assert await debits(gateway) == 0
    assert await gateway.ledger.available(user) == before  # the reservation was released
    status = await gateway.scalar("SELECT http_status FROM usage_logs")
    assert status == 504  # the failed request is logged, uncharged


async def test_health_and_ready_answer_when_everything_is_up(gateway: Gateway) -> None:
    health = await gateway.request("GET", "/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await gateway.request("GET", "/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


@pytest.mark.parametrize("broken", ["redis", "database"])
async def test_ready_is_a_503_when_postgresql_or_redis_is_unreachable(gateway: Gateway, broken: str) -> None:
    """A second app on the same database with one wrong URL (a closed port): /ready says which, /health
    still answers (the process lives)."""
    settings = gateway.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(settings)
    async with AsyncTestClient(app, raise_server_exceptions=False, timeout=30) as client:
        if broken == "database":
            runtime = app.state.runtime
            await runtime.engine.dispose()
            from storage.db import create_engine

            runtime.engine = create_engine("postgresql://postgres@127.0.0.1:1/nowhere")
        ready = await client.get("/ready")
        assert ready.status_code == 503, ready.text
        checks = ready.json()["checks"]
        assert checks["redis"].startswith("unavailable")
        if broken == "database":
            assert checks["database"].startswith("unavailable")
        assert (await client.get("/health")).status_code == 200


# -- the BYOK fee rate ------------------------------------------------------------------------------


@pytest.mark.parametrize("gateway_settings_overrides", [{"byok_fee_rate": "0.025"}], ids=["rate-2.5%"])
async def test_the_byok_fee_rate_is_charged_on_the_metered_cost(gateway: Gateway) -> None:
    """1,000 in + 100 out on gpt-4o-mini cost 150,000 + 60,000 nano; on the user's own key only 2.5 % of
    that is charged: 5,250 nano, in the ledger, the balance and the answer's headers."""
    user, key = await gateway.seed_user("1")
    before = await gateway.ledger.available(user)
    response = await post(
        gateway,
        key,
        chat("[mock prompt_tokens=1000 completion_tokens=100]"),
        **{"X-Provider-Api-Key": "byok_user_token_9Kd2Lm4Qx7Zw"},
    )
    assert response.status_code == 200, response.text
    assert Decimal(response.headers["x-synapgate-cost-usd"]) == Decimal("0.00021")
    assert Decimal(response.headers["x-synapgate-charged-usd"]) == Decimal("0.00000525")
    rows = await gateway.rows("SELECT cost_nano, charged_nano, user_api_key_used FROM usage_logs")
    assert [tuple(r) for r in rows] == [(210_000, 5_250, True)]
    debited = await gateway.scalar("SELECT SUM(amount_nano) FROM billing_events WHERE type <> 'credit'")
    assert int(debited) == -5_250
    assert await gateway.ledger.available(user) == before - 5_250


# -- reconcile --------------------------------------------------------------------------------------


async def test_ledger_reconcile_detects_an_account_that_disagrees_with_its_ledger(gateway: Gateway) -> None:
    user, key = await gateway.seed_user("1")
    assert (await post(gateway, key, chat())).status_code == 200
    env = {"SYNAPGATE_REDIS_URL": gateway.redis_url or ""}
    clean = cli(gateway.settings.database_url, "ledger", "reconcile", env=env)
    assert clean.code == 0, clean
    async with gateway.engine.begin() as conn:  # an account moved without its ledger row
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE credit_accounts SET balance_nano = balance_nano + 7 WHERE user_id = :u"),
            {"u": str(user)},
        )
    drifted = cli(gateway.settings.database_url, "ledger", "reconcile", env=env)
    assert drifted.code != 0, drifted
    report = json.loads(drifted.out.splitlines()[0]) if drifted.out else {}
    text_out = drifted.out + drifted.err
    assert str(uuid.UUID(str(user))) in text_out, drifted
    mismatches = report.get("mismatches", [])
    assert any(m.get("ledger_nano") == m["account_nano"] - 7 for m in mismatches), drifted
