"""Claude and Gemini models end to end: the real openai SDK → SynapGate (real HTTP) → the mock upstream
speaking Anthropic's Messages API and Gemini's generateContent.

The mock puts directive token counts straight into each provider's own usage fields. What the gateway
must bill is computed here by hand from the seeded catalog prices (USD per 1M tokens):

- Anthropic `input_tokens` EXCLUDES cache reads and writes: canonical prompt = input + read + write, and
  each part is charged at its own rate (input, cache read, cache write).
- Gemini `promptTokenCount` INCLUDES `cachedContentTokenCount`; output = candidates + thoughts; above
  128k prompt tokens every rate of the long-context tier applies.

The billing tests run on SQLite (SQL ledger) and on PostgreSQL + the Redis ledger; the tool-call and
untranslatable-request tests, about translation rather than the ledger, on SQLite only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from devtools.mock_upstream import TOOL_ARGUMENTS, reply_text
from pricing.money import format_usd, round_to_nano
from tests.integration.conftest import Gateway
from tests.integration.helpers import PRODUCTION_BACKEND_ONLY

M = Decimal(1_000_000)


@dataclass(frozen=True)
class Rates:
    """USD per 1M tokens; a model without a cache-write price bills writes at its input price."""

    input: Decimal
    cached: Decimal
    write: Decimal
    output: Decimal


def rates(inp: str, cached: str, write: str | None, out: str) -> Rates:
    return Rates(Decimal(inp), Decimal(cached), Decimal(write or inp), Decimal(out))


# The seeded catalog (migrations/versions/2026_11_24_0002_seed_catalog.py), copied by hand.
CATALOG: dict[str, tuple[str, str, Rates, tuple[int, Rates] | None]] = {
    "claude-3-sonnet": (
        "anthropic", "claude-3-sonnet-20240229", rates("3.00", "0.30", "3.75", "15.00"), None,
    ),
    "claude-3-haiku": (
        "anthropic", "claude-3-haiku-20240307", rates("0.25", "0.03", "0.30", "1.25"), None,
    ),
    "gemini-1.5-pro": (
        "gemini", "gemini-1.5-pro", rates("1.25", "0.3125", None, "5.00"),
        (128_000, rates("2.50", "0.625", None, "10.00")),
    ),
    "gemini-1.5-flash": (
        "gemini", "gemini-1.5-flash", rates("0.075", "0.01875", None, "0.30"),
        (128_000, rates("0.15", "0.0375", None, "0.60")),
    ),
}  # fmt: skip
CLAUDE = ["claude-3-sonnet", "claude-3-haiku"]
GEMINI = ["gemini-1.5-pro", "gemini-1.5-flash"]

# Directives: token counts as the mock puts them into each provider's own fields.
CLAUDE_DIRECTIVE = "[mock prompt_tokens=1000 completion_tokens=50 cached_tokens=600 cache_write_tokens=200]"
GEMINI_DIRECTIVE = "[mock prompt_tokens=1000 completion_tokens=50 cached_tokens=600 reasoning_tokens=30]"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@dataclass(frozen=True)
class Billed:
    """Canonical usage (SynapGate's meaning) and its cost in nano-USD, computed by hand."""

    prompt: int  # all input tokens, cache reads and writes included
    cached: int
    write: int
    output: int  # reasoning included
    reasoning: int
    cost_nano: int

    @property
    def total(self) -> int:
        return self.prompt + self.output


def hand_cost(model: str, *, uncached: int, cached: int, write: int, output: int) -> int:
    _provider, _upstream, base, long = CATALOG[model]
    prompt = uncached + cached + write
    tier = long[1] if long is not None and prompt > long[0] else base
    usd = (uncached * tier.input + cached * tier.cached + write * tier.write + output * tier.output) / M
    return round_to_nano(usd)


def anthropic_billed(model: str, input_tokens: int, output: int, read: int = 0, creation: int = 0) -> Billed:
    """Anthropic's input_tokens excludes cache reads and writes: they add to the canonical prompt."""
    cost = hand_cost(model, uncached=input_tokens, cached=read, write=creation, output=output)
    return Billed(input_tokens + read + creation, read, creation, output, 0, cost)


def gemini_billed(model: str, prompt: int, candidates: int, cached: int = 0, thoughts: int = 0) -> Billed:
    """Gemini's promptTokenCount includes the cached tokens; thoughts are output beside candidates."""
    cost = hand_cost(model, uncached=prompt - cached, cached=cached, write=0, output=candidates + thoughts)
    return Billed(prompt, cached, 0, candidates + thoughts, thoughts, cost)


def directive_billed(model: str) -> Billed:
    if model in CLAUDE:
        return anthropic_billed(model, 1000, 50, read=600, creation=200)
    return gemini_billed(model, 1000, 50, cached=600, thoughts=30)


def directive_of(model: str) -> str:
    return CLAUDE_DIRECTIVE if model in CLAUDE else GEMINI_DIRECTIVE


def test_hand_computations_at_catalog_prices() -> None:
    """The worked numbers, spelled out (µUSD = per-1M price × tokens / 1M × 1M)."""
    # claude-3-sonnet: 1000 × 3.00 + 600 × 0.30 + 200 × 3.75 + 50 × 15.00 = 4680 µUSD
    assert directive_billed("claude-3-sonnet") == Billed(1800, 600, 200, 50, 0, 4_680_000)
    # claude-3-haiku: 1000 × 0.25 + 600 × 0.03 + 200 × 0.30 + 50 × 1.25 = 390.5 µUSD
    assert directive_billed("claude-3-haiku").cost_nano == 390_500
    # gemini-1.5-pro: (1000 − 600) × 1.25 + 600 × 0.3125 + (50 + 30) × 5.00 = 1087.5 µUSD
    assert directive_billed("gemini-1.5-pro") == Billed(1000, 600, 0, 80, 30, 1_087_500)
    # gemini-1.5-flash: 400 × 0.075 + 600 × 0.01875 + 80 × 0.30 = 65.25 µUSD
    assert directive_billed("gemini-1.5-flash").cost_nano == 65_250
    # Long context: 150000 × 2.50 + 50000 × 0.625 + 120 × 10.00 = 407450 µUSD; 128000 stays at base.
    assert gemini_billed("gemini-1.5-pro", 200_000, 100, 50_000, 20).cost_nano == 407_450_000
    assert gemini_billed("gemini-1.5-pro", 128_000, 100).cost_nano == 160_500_000
    assert gemini_billed("gemini-1.5-pro", 128_001, 100).cost_nano == 321_002_500


# --- helpers ---------------------------------------------------------------------------------------


def user_says(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def uid(gw: Gateway, user_id: uuid.UUID) -> str:
    return user_id.hex if gw.settings.is_sqlite else str(user_id)


async def balance_nano(gw: Gateway, user_id: uuid.UUID) -> int:
    return int(
        await gw.scalar("SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=uid(gw, user_id))
    )


async def usage_row(gw: Gateway, request_id: str) -> dict[str, Any]:
    rows = await gw.rows(
        "SELECT provider, model, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, "
        "reasoning_tokens, cost_nano, charged_nano, usage_source, status, is_stream, user_api_key_used "
        "FROM usage_logs WHERE request_id = :r",
        r=request_id,
    )
    assert len(rows) == 1, f"one usage row per request, found {len(rows)}"
    return dict(rows[0]._mapping)


async def debits(gw: Gateway, request_id: str) -> list[tuple[str, int]]:
    rows = await gw.rows("SELECT type, amount_nano FROM billing_events WHERE request_id = :r", r=request_id)
    return [(r[0], int(r[1])) for r in rows]


async def assert_recorded(
    gw: Gateway, request_id: str, model: str, billed: Billed, *, stream: bool, byok: bool = False
) -> None:
    """The usage row holds the canonical usage and the hand-computed cost; the ledger debits it."""
    row = await usage_row(gw, request_id)
    assert row["provider"] == CATALOG[model][0] and row["model"] == model
    assert (row["input_tokens"], row["cached_input_tokens"], row["cache_write_tokens"]) == (
        billed.prompt, billed.cached, billed.write,
    )  # fmt: skip
    assert (row["output_tokens"], row["reasoning_tokens"]) == (billed.output, billed.reasoning)
    assert row["cost_nano"] == billed.cost_nano
    assert (row["usage_source"], row["status"]) == ("provider", "success")
    assert bool(row["is_stream"]) is stream and bool(row["user_api_key_used"]) is byok
    if byok:
        assert row["charged_nano"] == 0
        assert await debits(gw, request_id) == []
    else:
        assert row["charged_nano"] == billed.cost_nano
        assert await debits(gw, request_id) == [("usage", -billed.cost_nano)]


def assert_sdk_usage(usage: Any, billed: Billed) -> None:
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        billed.prompt, billed.output, billed.total,
    )  # fmt: skip
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == billed.cached
    if billed.reasoning:
        assert usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == billed.reasoning


def assert_upstream_call(gw: Gateway, model: str, *, stream: bool, key: str | None = None) -> Any:
    """The last request the mock got: the provider's endpoint, upstream model, and key header."""
    provider, upstream, _, _ = CATALOG[model]
    seen = gw.mock.app.requests[-1]
    if provider == "anthropic":
        assert seen.path == "/v1/messages"
        assert seen.body["model"] == upstream and seen.body["stream"] is stream
        assert seen.headers["x-api-key"] == (key or "sk-platform-anthropic")
        assert seen.headers["anthropic-version"]
        secret = seen.headers["x-api-key"]
    else:
        method = "streamGenerateContent" if stream else "generateContent"
        assert seen.path == f"/v1beta/models/{upstream}:{method}"
        assert seen.query == ("alt=sse" if stream else "")
        assert seen.headers["x-goog-api-key"] == (key or "platform-gemini")
        secret = seen.headers["x-goog-api-key"]
    assert "authorization" not in seen.headers, "an OpenAI-style key header must not reach this provider"
    assert secret not in seen.query and secret not in json.dumps(seen.body)
    return seen


# --- answers, usage and cost -------------------------------------------------------------------------


@pytest.mark.parametrize("model", CLAUDE + GEMINI)
@PRODUCTION_BACKEND_ONLY
async def test_non_stream_answer_usage_and_cost(gateway: Gateway, model: str) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance_nano(gateway, user_id)
    billed = directive_billed(model)
    raw = sdk(gateway, key).chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Explain caching {directive_of(model)}"},
        ],
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.id
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == reply_text(50)
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert_sdk_usage(completion.usage, billed)
    assert raw.headers["x-synapgate-cost-usd"] == format_usd(billed.cost_nano)
    assert raw.headers["x-synapgate-balance-usd"] == format_usd(before - billed.cost_nano)
    await assert_recorded(gateway, raw.headers["x-request-id"], model, billed, stream=False)
    assert await balance_nano(gateway, user_id) == before - billed.cost_nano
    seen = assert_upstream_call(gateway, model, stream=False)
    if model in CLAUDE:
        assert seen.body["system"] == "Be brief."
    else:
        assert seen.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


@pytest.mark.parametrize("model", CLAUDE + GEMINI)
@PRODUCTION_BACKEND_ONLY
async def test_stream_answer_usage_and_cost(gateway: Gateway, model: str) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance_nano(gateway, user_id)
    billed = directive_billed(model)
    client = openai.AsyncOpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=model,
        messages=user_says(f"Stream it {directive_of(model)}"),
        stream=True,
        stream_options={"include_usage": True},
    )
    request_id = raw.headers["x-request-id"]
    chunks = [c async for c in raw.parse()]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply_text(50)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and all(c.usage is None for c in chunks[:-1])
    assert_sdk_usage(chunks[-1].usage, billed)
    await assert_recorded(gateway, request_id, model, billed, stream=True)
    assert_upstream_call(gateway, model, stream=True)

    # Without include_usage the usage chunk is hidden; the call is billed the same.
    hidden = await client.chat.completions.with_raw_response.create(
        model=model, messages=user_says(f"Again {directive_of(model)}"), stream=True
    )
    again = [c async for c in hidden.parse()]
    assert all(c.usage is None for c in again) and all(c.choices for c in again)
    assert "".join(c.choices[0].delta.content or "" for c in again) == reply_text(50)
    await assert_recorded(gateway, hidden.headers["x-request-id"], model, billed, stream=True)
    assert await balance_nano(gateway, user_id) == before - 2 * billed.cost_nano
    await client.close()


@PRODUCTION_BACKEND_ONLY
async def test_long_context_tiers(gateway: Gateway) -> None:
    """Gemini 1.5 prices every token at the long tier once the prompt is above 128k, base up to it."""
    user_id, key = await gateway.seed_user("10")
    before = await balance_nano(gateway, user_id)
    client = sdk(gateway, key)
    cases = [
        ("gemini-1.5-pro",
         "prompt_tokens=200000 completion_tokens=100 cached_tokens=50000 reasoning_tokens=20",
         gemini_billed("gemini-1.5-pro", 200_000, 100, cached=50_000, thoughts=20)),
        ("gemini-1.5-pro", "prompt_tokens=128000 completion_tokens=100",
         gemini_billed("gemini-1.5-pro", 128_000, 100)),
        ("gemini-1.5-pro", "prompt_tokens=128001 completion_tokens=100",
         gemini_billed("gemini-1.5-pro", 128_001, 100)),
        ("gemini-1.5-flash", "prompt_tokens=200000 completion_tokens=100 cached_tokens=50000",
         gemini_billed("gemini-1.5-flash", 200_000, 100, cached=50_000)),
        ("gemini-1.5-flash", "prompt_tokens=128000 completion_tokens=100",
         gemini_billed("gemini-1.5-flash", 128_000, 100)),
    ]  # fmt: skip
    # By hand: pro 150000×2.50 + 50000×0.625 + 120×10.00 = 407450 µUSD; pro 128000×1.25 + 100×5.00 =
    # 160500; pro 128001×2.50 + 100×10.00 = 321002.5; flash 150000×0.15 + 50000×0.0375 + 100×0.60 =
    # 24435; flash 128000×0.075 + 100×0.30 = 9630.
    assert [c[2].cost_nano for c in cases] == [407_450_000, 160_500_000, 321_002_500, 24_435_000, 9_630_000]
    spent = 0
    for i, (model, counts, billed) in enumerate(cases):
        stream = i % 2 == 1  # both paths price the same way
        messages = user_says(f"Long document [mock {counts}]")
        if stream:
            response = client.chat.completions.with_raw_response.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            chunks = list(response.parse())
            assert_sdk_usage(chunks[-1].usage, billed)
        else:
            response = client.chat.completions.with_raw_response.create(model=model, messages=messages)
            assert_sdk_usage(response.parse().usage, billed)
        await assert_recorded(gateway, response.headers["x-request-id"], model, billed, stream=stream)
        spent += billed.cost_nano
    assert await balance_nano(gateway, user_id) == before - spent


# --- tool calls ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # translation, not ledger: one backend
@pytest.mark.parametrize("model", CLAUDE + GEMINI)
async def test_tool_calls_streaming_and_not_and_the_result_round_trip(gateway: Gateway, model: str) -> None:
    _user, key = await gateway.seed_user("10")
    client = sdk(gateway, key)
    question = {"role": "user", "content": "Weather in Paris?"}

    done = client.chat.completions.with_raw_response.create(model=model, messages=[question], tools=TOOLS)
    completion = done.parse()
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.id and call.type == "function"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == json.loads(TOOL_ARGUMENTS)  # type: ignore[union-attr]
    seen = assert_upstream_call(gateway, model, stream=False)
    if model in CLAUDE:
        assert seen.body["tools"][0]["name"] == "get_weather"
        assert seen.body["tools"][0]["input_schema"] == TOOLS[0]["function"]["parameters"]
    else:
        declaration = seen.body["tools"][0]["functionDeclarations"][0]
        assert declaration["name"] == "get_weather"

    # Streamed: the call reassembled by index, as the SDK's clients do.
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=model, messages=[question], tools=TOOLS, stream=True, stream_options={"include_usage": True}
    ):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = tc.id or entry["id"]
                if tc.function is not None:
                    entry["name"] = tc.function.name or entry["name"]
                    entry["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"mock": True}

    # The result goes back; the provider sees its own tool-result shape and answers with text.
    follow_up: list[Any] = [
        question,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
    ]
    answer = client.chat.completions.with_raw_response.create(model=model, messages=follow_up, tools=TOOLS)
    final = answer.parse()
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content == reply_text(8)
    seen = assert_upstream_call(gateway, model, stream=False)
    if model in CLAUDE:
        turns = seen.body["messages"]
        assert [t["role"] for t in turns] == ["user", "assistant", "user"]
        assert turns[1]["content"] == [
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"mock": True}}
        ]
        assert turns[2]["content"] == [
            {"type": "tool_result", "tool_use_id": call.id, "content": '{"temp_c": 21}'}
        ]
    else:
        contents = seen.body["contents"]
        assert [c["role"] for c in contents] == ["user", "model", "user"]
        assert contents[1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"mock": True}}
        assert contents[2]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}
        ]

    # Each of the three calls is billed at the mock's default counts (12 in, 8 out).
    default = anthropic_billed(model, 12, 8) if model in CLAUDE else gemini_billed(model, 12, 8)
    for request_id in (done.headers["x-request-id"], answer.headers["x-request-id"]):
        await assert_recorded(gateway, request_id, model, default, stream=False)
    rows = await gateway.rows("SELECT cost_nano FROM usage_logs WHERE is_stream = :s", s=True)
    assert [r[0] for r in rows] == [default.cost_nano]


# --- BYOK ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "own_key"),
    [("claude-3-haiku", "sk-ant-user-own-4321"), ("gemini-1.5-flash", "AIza-user-own-8765")],
)
@PRODUCTION_BACKEND_ONLY
async def test_byok_key_reaches_the_provider_in_its_own_header(
    gateway: Gateway, model: str, own_key: str
) -> None:
    user_id, key = await gateway.seed_user("1")
    before = await balance_nano(gateway, user_id)
    billed = directive_billed(model)
    client = sdk(gateway, key)
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=user_says(f"Mine {directive_of(model)}"),
        extra_headers={"X-Provider-Api-Key": own_key},
    )
    assert raw.parse().choices[0].message.content == reply_text(50)
    assert_upstream_call(gateway, model, stream=False, key=own_key)
    assert own_key not in raw.http_response.text and all(own_key not in v for v in raw.headers.values())
    await assert_recorded(gateway, raw.headers["x-request-id"], model, billed, stream=False, byok=True)

    streamed = client.chat.completions.with_raw_response.create(
        model=model,
        messages=user_says(f"Mine again {directive_of(model)}"),
        stream=True,
        extra_headers={"X-Provider-Api-Key": own_key},
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices) == reply_text(50)
    assert_upstream_call(gateway, model, stream=True, key=own_key)
    await assert_recorded(gateway, streamed.headers["x-request-id"], model, billed, stream=True, byok=True)
    assert await balance_nano(gateway, user_id) == before  # metered, not debited


# --- requests an adapter cannot translate -------------------------------------------------------------

UNTRANSLATABLE = [
    # Anthropic returns one choice per request: the adapter refuses n > 1 (ProviderError 400, param "n").
    pytest.param("claude-3-haiku", {"n": 2, "messages": user_says("Two answers")}, "n", id="claude-n2"),
    # Gemini matches results to calls by name: a tool result answering no earlier call cannot be sent.
    pytest.param(
        "gemini-1.5-flash",
        {"messages": [*user_says("Weather?"), {"role": "tool", "tool_call_id": "nope", "content": "21"}]},
        "messages[1].tool_call_id",
        id="gemini-orphan-tool-result",
    ),
]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(("model", "body", "param"), UNTRANSLATABLE)
async def test_untranslatable_request_is_a_400_naming_the_field(
    gateway: Gateway, model: str, body: dict[str, Any], param: str, stream: bool
) -> None:
    """An adapter's ProviderError(400) from build_request reaches the client as that 400, not a 500."""
    user_id, key = await gateway.seed_user("1")
    before = await balance_nano(gateway, user_id)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{gateway.v1}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "stream": stream, **body},
        )
    assert len(gateway.mock.app.requests) == 0  # nothing went upstream
    assert await balance_nano(gateway, user_id) == before
    assert await gateway.ledger.available(user_id) == before  # the reservation was released
    assert await gateway.scalar("SELECT COALESCE(SUM(cost_nano + charged_nano), 0) FROM usage_logs") == 0
    assert await gateway.scalar("SELECT COUNT(*) FROM billing_events WHERE type <> 'credit'") == 0
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
