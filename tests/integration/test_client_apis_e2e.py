"""The other client APIs end to end: the real `anthropic` and `openai` SDKs → SynapGate (real HTTP) → the
mock upstream. Each call leaves exactly one usage row (with its endpoint) whose cost is the hand
computation below, and a debit of that amount; the answer's own usage agrees.

Hand computations (USD per 1M tokens, seeded prices):
- claude-3-haiku, Anthropic usage input 1000 (cache reads and writes excluded), cache read 600, cache
  write 200, output 50: 1000 × 0.25 + 600 × 0.03 + 200 × 0.30 + 50 × 1.25 = 390.5 µUSD.
- gpt-4o-mini, prompt 1000, output 50: 1000 × 0.15 + 50 × 0.60 = 180 µUSD.
- text-embedding-3-small, 1000 input tokens × 0.02 = 20 µUSD; gemini-embedding-001, 1000 × 0.15 = 150 µUSD.
"""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import openai
import pytest

from devtools.mock_upstream import reply_text
from tests.integration.conftest import Gateway

CLAUDE_DIRECTIVE = "[mock prompt_tokens=1000 completion_tokens=50 cached_tokens=600 cache_write_tokens=200]"
GPT_DIRECTIVE = "[mock prompt_tokens=1000 completion_tokens=50]"
HAIKU_NANO = 390_500
GPT_MINI_NANO = 180_000
TOOL = {
    "name": "get_weather",
    "description": "Weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def backend() -> str:
    """These tests are about the wire formats: the embedded default is enough (the ledger has its own)."""
    return "sqlite"


def claude(gw: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def oai(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def uid(gw: Gateway, user_id: uuid.UUID) -> str:
    return user_id.hex if gw.settings.is_sqlite else str(user_id)


async def balance(gw: Gateway, user_id: uuid.UUID) -> int:
    sql = "SELECT balance_nano FROM credit_accounts WHERE user_id = :u"
    return int(await gw.scalar(sql, u=uid(gw, user_id)))


async def assert_billed(
    gw: Gateway, user_id: uuid.UUID, before: int, request_id: str, endpoint: str, model: str, cost: int
) -> dict[str, Any]:
    """One usage row for the request, at the hand-computed cost, and one debit of it."""
    rows = await gw.rows(
        "SELECT endpoint, model, status, cost_nano, charged_nano, input_tokens, output_tokens, "
        "cached_input_tokens, cache_write_tokens, usage_source FROM usage_logs WHERE user_id = :u",
        u=uid(gw, user_id),
    )
    assert len(rows) == 1, rows
    row = dict(rows[0]._mapping)
    assert (row["endpoint"], row["model"], row["status"]) == (endpoint, model, "success")
    assert row["cost_nano"] == row["charged_nano"] == cost
    debits = await gw.rows("SELECT type, amount_nano FROM billing_events WHERE request_id = :r", r=request_id)
    assert [(d[0], int(d[1])) for d in debits] == [("usage", -cost)]
    assert await balance(gw, user_id) == before - cost
    return row


# --- Anthropic Messages ----------------------------------------------------------------------------


async def test_messages_create_native_claude(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    raw = claude(gateway, key).messages.with_raw_response.create(
        model="claude-3-haiku",
        max_tokens=100,
        messages=[{"role": "user", "content": f"Hello {CLAUDE_DIRECTIVE}"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    message = raw.parse()
    assert message.type == "message" and message.content[0].type == "text"
    assert message.content[0].text == reply_text(50)
    assert message.usage.cache_read_input_tokens == 600 and message.usage.cache_creation_input_tokens == 200
    row = await assert_billed(
        gateway, user_id, before, raw.headers["x-request-id"], "messages", "claude-3-haiku", HAIKU_NANO
    )
    assert (row["input_tokens"], row["cached_input_tokens"], row["cache_write_tokens"]) == (1800, 600, 200)
    seen = gateway.mock.app.requests[-1]
    assert seen.path == "/v1/messages" and seen.body["model"] == "claude-3-haiku-20240307"
    assert seen.headers["x-api-key"] == "sk-platform-anthropic"  # never the client's gateway key
    assert seen.headers["anthropic-beta"] == "prompt-caching-2024-07-31"


async def test_messages_stream_native_claude(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    with claude(gateway, key).messages.stream(
        model="claude-3-haiku",
        max_tokens=100,
        messages=[{"role": "user", "content": f"Hi {CLAUDE_DIRECTIVE}"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text == reply_text(50)
    assert final.usage.output_tokens == 50 and final.stop_reason == "end_turn"
    await assert_billed(gateway, user_id, before, request_id, "messages", "claude-3-haiku", HAIKU_NANO)


async def test_messages_translated_to_openai_with_tools_json_and_stream(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    client = claude(gateway, key)
    raw = client.messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=100,
        tools=[TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": f"Weather in Paris? {GPT_DIRECTIVE}"}],
    )
    message = raw.parse()
    assert message.stop_reason == "tool_use"
    tool_use = next(b for b in message.content if b.type == "tool_use")
    assert tool_use.name == "get_weather" and isinstance(tool_use.input, dict)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (1000, 50)
    await assert_billed(
        gateway, user_id, before, raw.headers["x-request-id"], "messages", "gpt-4o-mini", 180_000
    )
    seen = gateway.mock.app.requests[-1]
    assert seen.path == "/v1/chat/completions" and seen.body["tools"][0]["function"]["name"] == "get_weather"

    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    with claude(gateway, key).messages.stream(
        model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": f"Hi {GPT_DIRECTIVE}"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text == reply_text(50) and final.usage.output_tokens == 50
    await assert_billed(gateway, user_id, before, request_id, "messages", "gpt-4o-mini", GPT_MINI_NANO)


async def test_messages_count_tokens_and_errors_in_anthropics_envelope(gateway: Gateway) -> None:
    _user_id, key = await gateway.seed_user("10")
    client = claude(gateway, key)
    counted = client.messages.count_tokens(
        model="claude-3-haiku", messages=[{"role": "user", "content": "Hello [mock prompt_tokens=1234]"}]
    )
    assert counted.input_tokens == 1234
    assert gateway.mock.app.requests[-1].path == "/v1/messages/count_tokens"
    local = client.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert local.input_tokens > 0
    assert await gateway.scalar("SELECT count(*) FROM usage_logs") == 0  # counting is free
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        claude(gateway, "sk-sg-wrong").messages.create(
            model="claude-3-haiku", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert bad_key.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as wrong_kind:
        client.messages.create(
            model="text-embedding-3-small", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert wrong_kind.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    _poor_id, poor_key = await gateway.seed_user("0")
    with pytest.raises(anthropic.APIStatusError) as poor:
        claude(gateway, poor_key).messages.create(
            model="claude-3-haiku", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert poor.value.status_code == 402
    assert poor.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert poor.value.response.headers["x-should-retry"] == "false"


# --- OpenAI Responses, embeddings, models -----------------------------------------------------------


async def test_responses_create_native_and_stream(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    raw = oai(gateway, key).responses.with_raw_response.create(
        model="gpt-4o-mini", input=f"Hello {GPT_DIRECTIVE}", instructions="Be brief."
    )
    response = raw.parse()
    assert response.output_text == reply_text(50)
    assert response.usage is not None and response.usage.input_tokens == 1000
    await assert_billed(
        gateway, user_id, before, raw.headers["x-request-id"], "responses", "gpt-4o-mini", 180_000
    )
    assert gateway.mock.app.requests[-1].path == "/v1/responses"

    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    with oai(gateway, key).responses.stream(model="gpt-4o-mini", input=f"Hi {GPT_DIRECTIVE}") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
        request_id = stream._response.headers["x-request-id"]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == reply_text(50) and final.usage is not None and final.usage.output_tokens == 50
    await assert_billed(gateway, user_id, before, request_id, "responses", "gpt-4o-mini", GPT_MINI_NANO)


async def test_responses_translated_for_claude_and_previous_response_id_refused(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    client = oai(gateway, key)
    raw = client.responses.with_raw_response.create(model="claude-3-haiku", input=f"Hello {CLAUDE_DIRECTIVE}")
    response = raw.parse()
    assert response.output_text == reply_text(50) and response.status == "completed"
    await assert_billed(
        gateway, user_id, before, raw.headers["x-request-id"], "responses", "claude-3-haiku", HAIKU_NANO
    )
    assert gateway.mock.app.requests[-1].path == "/v1/messages"

    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    stream = oai(gateway, key).responses.create(
        model="claude-3-haiku", input=f"Stream {CLAUDE_DIRECTIVE}", stream=True
    )
    events = list(stream)
    assert events[-1].type == "response.completed"
    completed: Any = events[-1]
    assert completed.response.usage.output_tokens == 50
    row = await gateway.rows("SELECT request_id FROM usage_logs WHERE user_id = :u", u=uid(gateway, user_id))
    await assert_billed(gateway, user_id, before, row[0][0], "responses", "claude-3-haiku", HAIKU_NANO)

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="claude-3-haiku", input="again", previous_response_id="resp_123")
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_embeddings_openai_and_gemini(gateway: Gateway) -> None:
    for model, cost, path in (
        ("text-embedding-3-small", 20_000, "/v1/embeddings"),
        ("gemini-embedding-001", 150_000, "/v1beta/models/gemini-embedding-001:batchEmbedContents"),
    ):
        user_id, key = await gateway.seed_user("10")
        before = await balance(gateway, user_id)
        raw = oai(gateway, key).embeddings.with_raw_response.create(
            model=model, input=["first", "second [mock prompt_tokens=1000]"], dimensions=4
        )
        result = raw.parse()
        assert [d.index for d in result.data] == [0, 1] and all(len(d.embedding) == 4 for d in result.data)
        assert result.usage.prompt_tokens == 1000
        await assert_billed(gateway, user_id, before, raw.headers["x-request-id"], "embeddings", model, cost)
        assert gateway.mock.app.requests[-1].path == path
    with pytest.raises(openai.BadRequestError):
        oai(gateway, key).embeddings.create(model="gpt-4o-mini", input="x")
    with pytest.raises(openai.BadRequestError):
        oai(gateway, key).chat.completions.create(
            model="text-embedding-3-small", messages=[{"role": "user", "content": "x"}]
        )


async def test_models_retrieve(gateway: Gateway) -> None:
    _user_id, key = await gateway.seed_user("1")
    model = oai(gateway, key).models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "openai")
    with pytest.raises(openai.NotFoundError) as missing:
        oai(gateway, key).models.retrieve("no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]


# --- failures: no charge, the error in the route's envelope, one error row -------------------------


async def test_messages_upstream_failure_is_anthropic_envelope_and_charges_nothing(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude(gateway, key).messages.create(
            model="claude-3-haiku",
            max_tokens=10,
            messages=[{"role": "user", "content": "x [mock status=400]"}],
        )
    assert failed.value.status_code == 400
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    rows = await gateway.rows(
        "SELECT endpoint, status, cost_nano, charged_nano FROM usage_logs WHERE user_id = :u",
        u=uid(gateway, user_id),
    )
    assert [tuple(r) for r in rows] == [("messages", "error", 0, 0)]
    assert await balance(gateway, user_id) == before


async def test_stream_cut_mid_way_is_billed_for_what_was_generated(gateway: Gateway) -> None:
    """A Responses stream the provider cuts: the client gets an error event and no response.completed;
    the call is recorded (status error) and billed for the words sent, counted."""
    user_id, key = await gateway.seed_user("10")
    before = await balance(gateway, user_id)
    response = await gateway.request(
        "POST",
        "/v1/responses",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "input": "go [mock completion_tokens=20 cut_after=5]", "stream": True},
    )
    assert response.status_code == 200
    assert "response.completed" not in response.text and "event: error" in response.text
    rows = await gateway.rows(
        "SELECT endpoint, status, usage_source, output_tokens, charged_nano FROM usage_logs "
        "WHERE user_id = :u",
        u=uid(gateway, user_id),
    )
    assert len(rows) == 1
    endpoint, status, source, output, charged = rows[0]
    assert (endpoint, status, source) == ("responses", "error", "estimated")
    assert output >= 5 and charged > 0
    assert await balance(gateway, user_id) == before - charged
