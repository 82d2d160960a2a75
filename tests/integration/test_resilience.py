"""Retries, fallbacks and the circuit breaker through the real gateway and the mock upstream."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from pricing.money import round_to_nano
from tests.integration.conftest import Gateway
from tests.integration.helpers import PRODUCTION_BACKEND_ONLY

CLOSED_PORT = "http://127.0.0.1:9/v1"  # nothing listens there: connection refused


def user_says(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def gateway_settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(getattr(request, "param", {}))


async def usage_row(gw: Gateway, request_id: str) -> tuple[Any, ...]:
    rows = await gw.rows(
        "SELECT provider, model, attempts, status, cost_nano FROM usage_logs WHERE request_id = :r",
        r=request_id,
    )
    assert len(rows) == 1
    return tuple(rows[0])


@pytest.mark.parametrize(("model", "status"), [("claude-3-haiku", 529), ("gpt-4o-mini", 503)])
@PRODUCTION_BACKEND_ONLY
async def test_overloaded_then_success_is_one_answer_one_debit_two_attempts(
    gateway: Gateway, model: str, status: int
) -> None:
    _user, key = await gateway.seed_user("1")
    raw = openai.OpenAI(
        base_url=gateway.v1, api_key=key, max_retries=0
    ).chat.completions.with_raw_response.create(
        model=model, messages=user_says(f"hi [mock status={status} times=1 key={model}]")
    )
    assert raw.parse().choices[0].message.content
    rid = raw.headers["x-request-id"]
    assert raw.headers["x-synapgate-attempts"] == "2"
    _provider, served, attempts, row_status, cost = await usage_row(gateway, rid)
    assert (served, attempts, row_status) == (model, 2, "success") and cost > 0
    debits = await gateway.rows("SELECT amount_nano FROM billing_events WHERE request_id = :r", r=rid)
    assert [r[0] for r in debits] == [-cost]
    assert len(gateway.mock.app.requests) == 2  # the failed attempt and the good one


FALLBACK = {"openai_base_url": CLOSED_PORT, "fallbacks": {"gpt-4o": ["claude-3-sonnet"]}}


@pytest.mark.parametrize("gateway_settings_overrides", [FALLBACK], indirect=True)
@pytest.mark.parametrize("stream", [False, True])
@PRODUCTION_BACKEND_ONLY
async def test_primary_down_the_fallback_answers_at_its_own_prices(gateway: Gateway, stream: bool) -> None:
    user_id, key = await gateway.seed_user("1")
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{gateway.v1}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o", "messages": user_says("hello"), "stream": stream},
        )
    assert response.status_code == 200
    assert response.headers["x-synapgate-model"] == "claude-3-sonnet"
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]")
    provider, served, attempts, status, cost = await usage_row(gateway, response.headers["x-request-id"])
    retries = gateway.settings.upstream_max_retries
    assert (provider, served, attempts, status) == ("anthropic", "claude-3-sonnet", retries + 2, "success")
    # The mock's Anthropic usage: 12 input, 8 output tokens, at claude-3-sonnet's 3.00 / 15.00 per 1M.
    assert cost == round_to_nano((12 * Decimal("3.00") + 8 * Decimal("15.00")) / 1_000_000) == 156_000
    assert gateway.mock.app.requests[-1].path == "/v1/messages"
    assert await gateway.ledger.available(user_id) == 1_000_000_000 - cost


BREAKER = {
    **FALLBACK,
    "circuit_failure_threshold": 2,
    "circuit_cooldown_seconds": 1.0,
    "upstream_max_retries": 3,
}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("gateway_settings_overrides", [BREAKER], indirect=True)
async def test_a_failing_provider_is_skipped_until_its_cooldown_ends(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    sdk = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)

    def ask(model: str = "gpt-4o") -> tuple[str, int]:
        raw = sdk.chat.completions.with_raw_response.create(model=model, messages=user_says("x"))
        return raw.headers["x-synapgate-model"], int(raw.headers["x-synapgate-attempts"])

    # Two failures open openai's circuit (before the retries run out), then the fallback answers.
    assert ask() == ("claude-3-sonnet", 3)
    # While open, openai is not even tried.
    assert ask() == ("claude-3-sonnet", 1)
    with pytest.raises(openai.APIStatusError) as skipped:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=user_says("no fallback"))
    assert skipped.value.status_code == 503
    assert skipped.value.response.json()["error"]["code"] == "circuit_open"
    # After the cool-down one trial goes to openai; it fails, the circuit opens again.
    await asyncio.sleep(1.1)
    assert ask() == ("claude-3-sonnet", 2)
    assert ask() == ("claude-3-sonnet", 1)
    # The provider recovers: after the next cool-down the trial succeeds and the circuit closes.
    gateway.settings.__dict__["openai_base_url"] = f"{gateway.mock.url}/v1"
    await asyncio.sleep(1.1)
    assert ask() == ("gpt-4o", 1)
    assert ask("gpt-4o-mini") == ("gpt-4o-mini", 1)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_client_errors_are_not_retried_nor_sent_to_fallbacks(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    gateway.settings.__dict__["fallbacks"] = {"gpt-4o": ["claude-3-sonnet"]}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{gateway.v1}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o", "messages": user_says("bad [mock status=400]")},
        )
    assert response.status_code == 400
    assert len(gateway.mock.app.requests) == 1
    assert (await usage_row(gateway, response.headers["x-request-id"]))[2] == 1
