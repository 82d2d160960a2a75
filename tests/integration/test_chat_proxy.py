"""The metered proxy end to end: the real openai SDK → SynapGate (real HTTP) → the mock upstream.

Every test runs on the embedded default (SQLite + SQL ledger) and on PostgreSQL + the Redis ledger.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import httpx
import openai
import pytest

from pricing.money import format_usd, round_to_nano
from storage.accounts.credentials import cipher_for, set_credential
from tests.environment import tiktoken_encodings_missing
from tests.integration.conftest import Gateway

# gpt-4o-mini list prices, USD per 1M tokens (the seeded catalog).
MINI_IN, MINI_OUT = Decimal("0.15"), Decimal("0.60")


def user_says(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def expected_nano(
    prompt: int, completion: int, rate_in: Decimal = MINI_IN, rate_out: Decimal = MINI_OUT
) -> int:
    """The hand computation: tokens × price per 1M, rounded once."""
    return round_to_nano((prompt * rate_in + completion * rate_out) / Decimal(1_000_000))


async def balance_nano(gw: Gateway, user_id: uuid.UUID) -> int:
    return int(
        await gw.scalar("SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=str_id(gw, user_id))
    )


def str_id(gw: Gateway, user_id: uuid.UUID) -> str:
    # SQLAlchemy's Uuid type stores 32 hex characters on SQLite and a native uuid on PostgreSQL.
    return user_id.hex if gw.settings.is_sqlite else str(user_id)


async def ledger_sum(gw: Gateway, user_id: uuid.UUID) -> int:
    return int(
        await gw.scalar(
            "SELECT COALESCE(SUM(amount_nano), 0) FROM billing_events WHERE user_id = :u",
            u=str_id(gw, user_id),
        )
    )


def client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


async def test_sdk_non_streaming_answer_is_recorded_and_priced(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("1")
    before = await balance_nano(gateway, user_id)
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user_says("hello [mock prompt_tokens=1000 completion_tokens=7]")
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "mock0 mock1 mock2 mock3 mock4 mock5 mock6"
    assert completion.usage is not None and completion.usage.prompt_tokens == 1000
    cost = expected_nano(1000, 7)  # 150 + 4.2 µUSD
    assert cost == 154_200
    assert raw.headers["x-synapgate-cost-usd"] == format_usd(cost) == "0.000154200"
    assert raw.headers["x-synapgate-balance-usd"] == format_usd(before - cost)
    request_id = raw.headers["x-request-id"]
    assert request_id.startswith("req_")
    row = (
        await gateway.rows(
            "SELECT input_tokens, output_tokens, cost_nano, usage_source, status, user_api_key_used, "
            "is_stream "
            "FROM usage_logs WHERE request_id = :r",
            r=request_id,
        )
    )[0]
    assert tuple(row) == (1000, 7, cost, "provider", "success", False, False)
    debit = await gateway.scalar("SELECT amount_nano FROM billing_events WHERE request_id = :r", r=request_id)
    assert debit == -cost
    assert await balance_nano(gateway, user_id) == before - cost
    assert await gateway.ledger.available(user_id) == before - cost  # reservation closed
    message = await gateway.scalar("SELECT COUNT(*) FROM messages WHERE request_id = :r", r=request_id)
    assert message == 1
    conv = await gateway.rows(
        "SELECT message_count, input_tokens, output_tokens, cost_nano FROM conversation_llms"
    )
    assert [tuple(r) for r in conv] == [(1, 1000, 7, cost)]


async def test_async_sdk_streaming_relays_chunks_and_hides_usage_unless_asked(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    sdk = openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    chunks = [c async for c in await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=user_says("stream [mock completion_tokens=5]"), stream=True
    )]  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock0 mock1 mock2 mock3 mock4"
    assert all(c.usage is None for c in chunks)  # not asked: the usage chunk is hidden
    assert chunks[-1].choices[0].finish_reason == "stop"

    asked = [c async for c in await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=user_says("again [mock completion_tokens=5]"), stream=True,
        stream_options={"include_usage": True},
    )]  # fmt: skip
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 5
    assert asked[-1].choices == []
    rows = await gateway.rows("SELECT output_tokens, is_stream, usage_source, ttft_ms FROM usage_logs")
    assert len(rows) == 2
    assert all(r[0] == 5 and r[1] and r[2] == "provider" and r[3] is not None for r in rows)
    await sdk.close()


async def test_tool_calls_pass_through_streaming_and_not(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    sdk = client(gateway, key)
    done = sdk.chat.completions.create(model="gpt-4o", messages=user_says("weather?"), tools=tools)  # type: ignore[arg-type]
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and call.function.arguments == '{"mock": true}'  # type: ignore[union-attr]
    args = ""
    for chunk in sdk.chat.completions.create(
        model="gpt-4o",
        messages=user_says("weather?"),
        tools=tools,
        stream=True,  # type: ignore[arg-type]
    ):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args += tc.function.arguments or "" if tc.function else ""
    assert args == '{"mock": true}'
    forwarded = gateway.mock.app.requests[-1].body
    assert forwarded["tools"] == tools and forwarded["stream_options"] == {"include_usage": True}


async def test_exactness_over_a_mixed_run(gateway: Gateway) -> None:
    """Σ debits = Σ usage_logs cost = the balance drop (ledger, account, hot copy), to the nano."""
    user_id, key = await gateway.seed_user("5")
    start = await balance_nano(gateway, user_id)
    sdk = client(gateway, key)
    expected = 0
    plan = [("gpt-4o-mini", 37, 11, False), ("gpt-4o", 1234, 5, False), ("gpt-4o-mini", 3, 29, True),
            ("deepseek-chat", 999, 1, True), ("gpt-4o", 7, 3, True), ("grok-2", 50, 50, False)]  # fmt: skip
    prices = {
        "gpt-4o-mini": (MINI_IN, MINI_OUT),
        "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
        "deepseek-chat": (Decimal("0.28"), Decimal("0.42")),
        "grok-2": (Decimal("2.00"), Decimal("10.00")),
    }
    for model, prompt, completion, stream in plan:
        content = f"go [mock prompt_tokens={prompt} completion_tokens={completion}]"
        if stream:
            list(sdk.chat.completions.create(model=model, messages=user_says(content), stream=True))
        else:
            sdk.chat.completions.create(model=model, messages=user_says(content))
        expected += expected_nano(prompt, completion, *prices[model])
    costs = await gateway.scalar("SELECT SUM(cost_nano) FROM usage_logs")
    debits = await gateway.scalar("SELECT SUM(amount_nano) FROM billing_events WHERE type = 'usage'")
    assert costs == expected
    assert debits == -expected
    assert await balance_nano(gateway, user_id) == start - expected
    assert await ledger_sum(gateway, user_id) == start - expected
    assert await gateway.ledger.available(user_id) == start - expected
    if gateway.redis_url:
        assert await gateway.ledger.hot_balance(user_id) == start - expected


async def test_concurrent_requests_cannot_overspend(gateway: Gateway) -> None:
    """50 parallel requests, credit for 10 worst cases: the rest get 402, nothing goes negative.

    The upstream holds each answer 2 s, so all 50 are admitted or refused before the first settles (a settled
    request frees the part of its reservation it did not use, enough for one more: with 0.4 s, a slow machine
    admitting the 50 one by one on SQLite let an 11th in — correctly, but not what this test counts)."""
    from pricing.cost import reservation_nano
    from pricing.tokens import count_prompt_tokens
    from storage.catalog.repository import load_catalog

    messages = user_says("race [mock latency_ms=2000]")
    async with gateway.engine.connect() as conn:
        model = (await load_catalog(conn)).get("gpt-4o-mini")
    assert model is not None
    prompt, _ = count_prompt_tokens(model.upstream_model, messages)
    worst = reservation_nano(model, prompt, 100)
    user_id, key = await gateway.seed_user(format_usd(worst * 10 + worst // 2))
    start = await balance_nano(gateway, user_id)
    async with httpx.AsyncClient(base_url=gateway.v1, timeout=30) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    "/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": "gpt-4o-mini", "messages": messages, "max_tokens": 100},
                )
                for _ in range(50)
            )
        )
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 402]
    assert len(ok) == 10 and len(refused) == 40
    for r in refused:
        assert r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["type"] == "insufficient_quota"
        assert r.json()["error"]["code"] == "insufficient_credits"
    assert len(gateway.mock.app.requests) == 10  # no upstream call for a refused request
    end = await balance_nano(gateway, user_id)
    assert end >= 0
    for r in ok:
        rid = r.headers["x-request-id"]
        assert await gateway.scalar("SELECT COUNT(*) FROM usage_logs WHERE request_id = :r", r=rid) == 1
        assert await gateway.scalar("SELECT COUNT(*) FROM billing_events WHERE request_id = :r", r=rid) == 1
    assert start - end == 10 * expected_nano(12, 8)
    assert await gateway.ledger.available(user_id) == end


async def test_stream_is_recorded_before_done(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    seen_done = False
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST",
            f"{gateway.v1}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "gpt-4o-mini",
                "messages": user_says("hi [mock completion_tokens=4]"),
                "stream": True,
            },
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                seen_done = True
                # The client has [DONE] in hand: the record must already be committed.
                count = await gateway.scalar(
                    "SELECT COUNT(*) FROM usage_logs WHERE request_id = :r", r=request_id
                )
                debit = await gateway.scalar(
                    "SELECT amount_nano FROM billing_events WHERE request_id = :r", r=request_id
                )
                assert count == 1 and debit == -expected_nano(12, 4)
    assert seen_done


async def test_client_disconnect_mid_stream_is_still_billed(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("1")
    start = await balance_nano(gateway, user_id)
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST",
            f"{gateway.v1}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "gpt-4o-mini",
                "messages": user_says("long [mock completion_tokens=200 chunk_delay_ms=20]"),
                "stream": True,
            },
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        received = 0
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                received += 1
            if received == 3:
                break  # leave after 3 chunks: the connection is closed
    row = None
    for _ in range(100):
        rows = await gateway.rows(
            "SELECT status, usage_source, output_tokens, cost_nano FROM usage_logs WHERE request_id = :r",
            r=request_id,
        )
        if rows:
            row = rows[0]
            break
        await asyncio.sleep(0.05)
    assert row is not None, "a disconnected stream left no usage row"
    status, source, output_tokens, cost = row
    assert status == "cancelled" and source == "estimated"
    assert 0 < output_tokens < 200 and cost > 0
    debit = await gateway.scalar("SELECT amount_nano FROM billing_events WHERE request_id = :r", r=request_id)
    assert debit == -cost
    assert await balance_nano(gateway, user_id) == start - cost
    assert await gateway.ledger.available(user_id) == start - cost


async def test_byok_is_metered_not_debited(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("1")
    start = await balance_nano(gateway, user_id)
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=user_says("mine [mock prompt_tokens=100 completion_tokens=10]"),
        extra_headers={"X-Provider-Api-Key": "sk-user-own-1234"},
    )
    assert gateway.mock.app.requests[-1].headers["authorization"] == "Bearer sk-user-own-1234"
    assert "sk-user-own-1234" not in raw.http_response.text
    assert all("sk-user-own" not in v for v in raw.headers.values())
    rid = raw.headers["x-request-id"]
    used, cost, charged = (
        await gateway.rows(
            "SELECT user_api_key_used, cost_nano, charged_nano FROM usage_logs WHERE request_id = :r", r=rid
        )
    )[0]
    assert used is True or used == 1
    assert cost == expected_nano(100, 10) and charged == 0
    assert await balance_nano(gateway, user_id) == start
    assert await gateway.scalar("SELECT COUNT(*) FROM billing_events WHERE request_id = :r", r=rid) == 0

    # A stored key (encrypted at rest) is used the same way.
    async with gateway.engine.begin() as conn:
        await set_credential(conn, cipher_for("test-secret-key"), user_id, "openai", "sk-stored-5678")
    stored = await gateway.scalar("SELECT encrypted_key FROM provider_credentials")
    assert b"sk-stored-5678" not in bytes(stored)
    client(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=user_says("stored"))
    assert gateway.mock.app.requests[-1].headers["authorization"] == "Bearer sk-stored-5678"
    assert await balance_nano(gateway, user_id) == start


@pytest.fixture
def gateway_settings_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    return getattr(request, "param", {})


@pytest.mark.parametrize(
    "gateway_settings_overrides", [{"byok_fee_usd_per_request": Decimal("0.001")}], indirect=True
)
async def test_byok_platform_fee_is_the_only_debit(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("1")
    start = await balance_nano(gateway, user_id)
    client(gateway, key).chat.completions.create(
        model="gpt-4o", messages=user_says("x"), extra_headers={"X-Provider-Api-Key": "sk-own"}
    )
    fee = await gateway.rows("SELECT type, amount_nano FROM billing_events WHERE type <> 'credit'")
    assert [tuple(r) for r in fee] == [("fee", -1_000_000)]
    assert await balance_nano(gateway, user_id) == start - 1_000_000


async def test_recording_failure_returns_503_and_charges_nothing(gateway: Gateway) -> None:
    """The database fails mid-request: 503, no debit, the reservation released, never an answer."""
    user_id, key = await gateway.seed_user("1")
    start = await balance_nano(gateway, user_id)

    async def break_database() -> None:
        await asyncio.sleep(0.15)  # the request is admitted and waiting on the upstream
        async with gateway.engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE usage_logs RENAME TO usage_logs_away")

    async with httpx.AsyncClient(timeout=30) as http:
        breaker = asyncio.create_task(break_database())
        response = await http.post(
            f"{gateway.v1}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": user_says("slow [mock latency_ms=600]")},
        )
        await breaker
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "record_failed"
    assert "choices" not in response.json()
    async with gateway.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE usage_logs_away RENAME TO usage_logs")
    assert await balance_nano(gateway, user_id) == start
    assert await ledger_sum(gateway, user_id) == start
    assert await gateway.ledger.available(user_id) == start  # reservation released
    assert await gateway.scalar("SELECT COUNT(*) FROM messages") == 0


@pytest.mark.parametrize("backend", ["postgres+redis"], indirect=True)
async def test_database_connections_killed_mid_request(gateway: Gateway) -> None:
    """A PostgreSQL outage (every connection of the gateway's database terminated) mid-request."""
    user_id, key = await gateway.seed_user("1")
    start = await balance_nano(gateway, user_id)
    database = gateway.settings.database_url.rsplit("/", 1)[-1]

    async def kill_connections() -> None:
        await asyncio.sleep(0.15)
        async with gateway.engine.connect() as conn:
            await conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            )

    async with httpx.AsyncClient(timeout=30) as http:
        killer = asyncio.create_task(kill_connections())
        response = await http.post(
            f"{gateway.v1}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": user_says("slow [mock latency_ms=600]")},
        )
        await killer
    assert response.status_code == 503
    assert await balance_nano(gateway, user_id) == start
    assert await gateway.ledger.available(user_id) == start


@pytest.mark.skipif(tiktoken_encodings_missing() is not None, reason=str(tiktoken_encodings_missing()))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_that_reports_no_usage_is_counted_with_tiktoken(
    gateway: Gateway, stream: bool
) -> None:
    from pricing.tokens import count_completion_tokens, count_prompt_tokens

    user_id, key = await gateway.seed_user("1")
    start = await balance_nano(gateway, user_id)
    messages = user_says("count me [mock usage=none completion_tokens=9]")
    sdk = client(gateway, key)
    if stream:
        list(sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))  # type: ignore[arg-type]
    else:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    prompt, estimator = count_prompt_tokens("gpt-4o-mini", messages)
    completion, _ = count_completion_tokens("gpt-4o-mini", " ".join(f"mock{i}" for i in range(9)))
    assert estimator == "tiktoken:o200k_base"  # the offline encodings, not the bytes/4 fallback
    row = (
        await gateway.rows(
            "SELECT usage_source, usage_estimator, input_tokens, output_tokens, cost_nano FROM usage_logs"
        )
    )[0]
    cost = expected_nano(prompt, completion)
    assert tuple(row) == ("estimated", "tiktoken:o200k_base", prompt, completion, cost)
    assert await balance_nano(gateway, user_id) == start - cost
