"""OpenAICompatAdapter against real recorded responses of OpenAI, DeepSeek, xAI, Groq and OpenRouter.

Token numbers are read by hand from the fixtures (see ../shared/fixtures/PROVENANCE.md).
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.providers.base import (
    ChatRequest,
    Credential,
    JSONObject,
    ProviderAdapter,
    ProviderError,
    SSEEvent,
    StreamState,
)
from gateway.providers.openai_compat import (
    OPENAI_COMPAT_ADAPTERS,
    DeepSeekAdapter,
    GroqAdapter,
    OpenAIAdapter,
    OpenRouterAdapter,
    XAIAdapter,
)
from gateway.providers.sse import SSEDecoder
from pricing.cost import Usage

KEY = "sk-test-0123456789abcdefSECRET"
CRED = Credential(api_key=KEY, base_url="https://upstream.example/v1/")

GROQ_ERROR_MESSAGE = (
    "Tool call validation failed: tool call validation failed: parameters for tool get_something_by_name "
    "did not match schema: errors: [missing properties: 'name', additionalProperties 'invalid_param' "
    "not allowed]"
)


def load(fixtures_dir: Path, name: str) -> bytes:
    return (fixtures_dir / name).read_bytes()


def chat_request(body: JSONObject) -> ChatRequest:
    return ChatRequest(
        model=body["model"],
        messages=body["messages"],
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        max_output_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        body=body,
    )


def sse_events(data: bytes, seed: int | None = None) -> list[SSEEvent]:
    """Decode a recorded stream; with a seed, fed in random 1..7-byte pieces."""
    decoder = SSEDecoder()
    if seed is None:
        pieces = [data]
    else:
        rng = random.Random(seed)
        pieces, i = [], 0
        while i < len(data):
            n = rng.randint(1, 7)
            pieces.append(data[i : i + n])
            i += n
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


def run_stream(adapter: ProviderAdapter, events: list[SSEEvent]) -> tuple[StreamState, list[JSONObject]]:
    state = adapter.new_stream_state()
    chunks: list[JSONObject] = []
    for event in events:
        chunks.extend(adapter.parse_stream_event(state, event))
    return state, chunks


# --- registry ---------------------------------------------------------------------------------------


def test_one_adapter_instance_per_provider_named_by_its_profile() -> None:
    assert set(OPENAI_COMPAT_ADAPTERS) == {"openai", "xai", "deepseek", "together", "groq", "openrouter"}
    for name, adapter in OPENAI_COMPAT_ADAPTERS.items():
        assert adapter.name == name
        assert type(adapter).name == name
    assert XAIAdapter.name == "xai"
    assert isinstance(OPENAI_COMPAT_ADAPTERS["xai"], XAIAdapter)


# --- build_request ----------------------------------------------------------------------------------


def test_build_request_replaces_model_and_passes_unknown_fields_through(fixtures_dir: Path) -> None:
    client_body = json.loads(load(fixtures_dir, "openai/chat-completion-prompt-cache-write.request.json"))
    original = json.loads(json.dumps(client_body))
    req = chat_request(client_body)
    up = OpenAIAdapter().build_request(req, "gpt-5.6-sol-2026-01-01", CRED)

    assert up.method == "POST"
    assert up.url == "https://upstream.example/v1/chat/completions"
    sent = json.loads(up.body)
    assert sent["model"] == "gpt-5.6-sol-2026-01-01"
    # Fields the gateway does not know (OpenAI's explicit prompt-cache controls) reach the provider as sent.
    assert sent["prompt_cache_key"] == "pydantic-ai-prompt-cache-e2e-chat"
    assert sent["prompt_cache_options"] == {"mode": "explicit", "ttl": "30m"}
    assert sent["messages"] == original["messages"]
    assert {k: v for k, v in sent.items() if k != "model"} == {
        k: v for k, v in original.items() if k != "model"
    }
    assert "stream_options" not in sent  # not a stream: nothing added
    assert client_body == original  # the client's body is not mutated


def test_build_request_forces_include_usage_on_streams_keeping_other_options() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": False, "include_obfuscation": False},
    }
    sent = json.loads(OpenAIAdapter().build_request(chat_request(body), "gpt-4o-mini", CRED).body)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True, "include_obfuscation": False}
    assert body["stream_options"] == {"include_usage": False, "include_obfuscation": False}

    del body["stream_options"]
    sent = json.loads(DeepSeekAdapter().build_request(chat_request(body), "deepseek-chat", CRED).body)
    assert sent["stream_options"] == {"include_usage": True}


def test_build_request_refuses_params_the_provider_rejects(fixtures_dir: Path) -> None:
    body = json.loads(load(fixtures_dir, "groq/error-429-rate-limit-exceeded.request.json"))
    body |= {"logprobs": True, "top_logprobs": 3, "logit_bias": {"50256": -100}, "temperature": 0.2}
    # Never silently dropped: a 400 naming the field, before anything goes upstream.
    with pytest.raises(ProviderError) as err:
        GroqAdapter().build_request(chat_request(body), "llama-3.3-70b-versatile", CRED)
    assert (err.value.status, err.value.param, err.value.code) == (400, "logprobs", "unsupported_parameter")
    # Their neutral (or null) values ask for nothing and pass.
    neutral = body | {"logprobs": False, "top_logprobs": None, "logit_bias": None}
    groq = json.loads(
        GroqAdapter().build_request(chat_request(neutral), "llama-3.3-70b-versatile", CRED).body
    )
    assert groq["temperature"] == 0.2 and groq["logprobs"] is False
    assert groq["tools"] == body["tools"]
    # OpenAI accepts them: the same body keeps them.
    openai = json.loads(OpenAIAdapter().build_request(chat_request(body), "gpt-4o", CRED).body)
    assert openai["logprobs"] is True and openai["top_logprobs"] == 3


def test_build_request_renames_max_completion_tokens_where_only_max_tokens_exists(fixtures_dir: Path) -> None:
    body = json.loads(load(fixtures_dir, "openai/chat-completion-reasoning-tokens-o3-mini.request.json"))
    deepseek = json.loads(DeepSeekAdapter().build_request(chat_request(body), "deepseek-chat", CRED).body)
    assert deepseek["max_tokens"] == 100 and "max_completion_tokens" not in deepseek
    openai = json.loads(OpenAIAdapter().build_request(chat_request(body), "o3-mini", CRED).body)
    assert openai["max_completion_tokens"] == 100 and "max_tokens" not in openai


def test_build_request_puts_the_key_only_in_the_authorization_header() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    for adapter in OPENAI_COMPAT_ADAPTERS.values():
        up = adapter.build_request(chat_request(body), "m", CRED)
        assert up.headers == {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        assert KEY not in up.url
        assert KEY.encode() not in up.body
        assert KEY not in repr(up)


# --- non-streaming responses ------------------------------------------------------------------------


def test_openai_prompt_cache_hit(fixtures_dir: Path) -> None:
    raw = load(fixtures_dir, "openai/chat-completion-prompt-cache-hit.json")
    result = OpenAIAdapter().parse_response(200, {}, raw)
    assert result.usage == Usage(prompt_tokens=4020, completion_tokens=4, cached_tokens=4012)
    assert result.usage.uncached_prompt_tokens == 8
    assert result.body == json.loads(raw)  # the client gets the provider's object unchanged
    assert result.content_text == "OK"
    assert result.finish_reason == "stop"


def test_openai_prompt_cache_write(fixtures_dir: Path) -> None:
    raw = load(fixtures_dir, "openai/chat-completion-prompt-cache-write.json")
    result = OpenAIAdapter().parse_response(200, {}, raw)
    assert result.usage == Usage(prompt_tokens=4020, completion_tokens=4, cache_write_tokens=4012)
    assert result.usage.uncached_prompt_tokens == 8


def test_openai_o3_mini_reasoning_is_inside_completion_tokens(fixtures_dir: Path) -> None:
    raw = load(fixtures_dir, "openai/chat-completion-reasoning-tokens-o3-mini.json")
    result = OpenAIAdapter().parse_response(200, {}, raw)
    assert result.usage == Usage(prompt_tokens=7, completion_tokens=87, reasoning_tokens=64)
    assert result.usage.total_tokens == 94  # the provider's total_tokens
    assert result.content_text == "Hello there! How can I help you today?"


def test_missing_usage_is_none(fixtures_dir: Path) -> None:
    body = json.loads(load(fixtures_dir, "openai/chat-completion-reasoning-tokens-o3-mini.json"))
    del body["usage"]
    result = OpenAIAdapter().parse_response(200, {}, json.dumps(body).encode())
    assert result.usage is None
    body["usage"] = None
    assert OpenAIAdapter().parse_response(200, {}, json.dumps(body).encode()).usage is None


def test_deepseek_cache_hit_reasoning_and_tool_call(fixtures_dir: Path) -> None:
    raw = load(fixtures_dir, "deepseek/chat-completion-reasoning-tool-call-cache-hit.json")
    result = DeepSeekAdapter().parse_response(200, {}, raw)
    assert result.usage == Usage(
        prompt_tokens=563, completion_tokens=116, cached_tokens=512, reasoning_tokens=60
    )
    assert result.content_text == 'Let me load the dice rolling capability!{"id": "DICE_ROLL"}'
    assert result.finish_reason == "tool_calls"
    assert result.body == json.loads(raw)


def test_deepseek_prompt_cache_hit_tokens_without_prompt_tokens_details(fixtures_dir: Path) -> None:
    body = json.loads(load(fixtures_dir, "deepseek/chat-completion-reasoning-tool-call-cache-hit.json"))
    del body["usage"]["prompt_tokens_details"]  # as in DeepSeek responses before it added the OpenAI field
    result = DeepSeekAdapter().parse_response(200, {}, json.dumps(body).encode())
    assert result.usage is not None
    assert result.usage.cached_tokens == 512
    assert result.usage.uncached_prompt_tokens == 51  # = prompt_cache_miss_tokens


def grok_3_mini_ticks(usage: Usage) -> int:
    """grok-3-mini's list prices in xAI's cost ticks (1e-10 USD): $0.30 in, $0.075 cached, $0.50 out per M."""
    per_token = Decimal("1e-6") / Decimal("1e-10")
    cost = (
        usage.uncached_prompt_tokens * Decimal("0.30")
        + usage.cached_tokens * Decimal("0.075")
        + usage.completion_tokens * Decimal("0.50")
    ) * per_token
    return int(cost)


def test_xai_reasoning_tokens_are_billed_on_top_of_completion_tokens(fixtures_dir: Path) -> None:
    raw = load(fixtures_dir, "xai/chat-completion-tool-call-reasoning.json")
    body = json.loads(raw)
    result = XAIAdapter().parse_response(200, {}, raw)
    # Recorded: completion_tokens=26, reasoning_tokens=189, total_tokens=506 = 291 + 26 + 189.
    assert result.usage == Usage(
        prompt_tokens=291, completion_tokens=215, cached_tokens=244, reasoning_tokens=189
    )
    assert result.usage.total_tokens == body["usage"]["total_tokens"]
    # xAI's own charge for this call matches only if the reasoning tokens are paid as output.
    assert grok_3_mini_ticks(result.usage) == body["usage"]["cost_in_usd_ticks"] == 1399000
    assert result.body == body  # xAI's numbers reach the client as xAI sent them
    assert result.content_text == '{"location":"San Francisco"}'
    assert result.finish_reason == "tool_calls"


def test_xai_reasoning_already_inside_completion_is_not_added_twice(fixtures_dir: Path) -> None:
    body = json.loads(load(fixtures_dir, "xai/chat-completion-tool-call-reasoning.json"))
    body["usage"]["completion_tokens"] = 215  # OpenAI-style counting: total = prompt + completion
    body["usage"]["total_tokens"] = 506
    usage = XAIAdapter().parse_response(200, {}, json.dumps(body).encode()).usage
    assert usage is not None and usage.completion_tokens == 215


def test_openai_profile_does_not_apply_the_xai_quirk(fixtures_dir: Path) -> None:
    raw = load(fixtures_dir, "xai/chat-completion-tool-call-reasoning.json")
    usage = OpenAIAdapter().parse_response(200, {}, raw).usage
    assert usage is not None and usage.completion_tokens == 26


# --- streams ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_openai_stream_tool_call_with_usage_chunk(fixtures_dir: Path, seed: int | None) -> None:
    data = load(fixtures_dir, "openai/chat-stream-tool-call-include-usage.sse")
    events = sse_events(data, seed)
    assert events == sse_events(data)
    state, chunks = run_stream(OpenAIAdapter(), events)
    assert len(chunks) == 8  # every JSON chunk, [DONE] excluded
    assert chunks[0]["obfuscation"] == "C63r"  # passed through unchanged, unknown fields included
    assert chunks[-1]["choices"] == []
    assert state.usage == Usage(prompt_tokens=53, completion_tokens=15)
    assert state.content_text == '{"country":"UK"}'
    assert state.finish_reason == "tool_calls"
    assert state.done is True
    assert state.response_id == "chatcmpl-Dx0XpqH8w09uBXwq1zFGYdETjtnEl"
    assert state.model == "gpt-4o-mini-2024-07-18"
    assert state.created == 1782955817


def test_chunks_are_the_provider_json_unchanged(fixtures_dir: Path) -> None:
    events = sse_events(load(fixtures_dir, "openai/chat-stream-tool-call-include-usage.sse"))
    _, chunks = run_stream(OpenAIAdapter(), events)
    assert chunks == [json.loads(e.data) for e in events[:-1]]


@pytest.mark.parametrize("seed", [None, 4, 5])
def test_openai_stream_parallel_tool_calls(fixtures_dir: Path, seed: int | None) -> None:
    data = load(fixtures_dir, "openai/chat-stream-parallel-tool-calls-2024.sse")
    events = sse_events(data, seed)
    assert events == sse_events(data)
    state, chunks = run_stream(OpenAIAdapter(), events)
    assert len(chunks) == 25
    assert state.usage == Usage(prompt_tokens=149, completion_tokens=60)
    # The arguments of both calls (tool_calls[].index 0, then 1), fragments joined.
    assert (
        state.content_text
        == '{"city": "Edinburgh", "country": "GB", "units": "c"}{"ticker": "AAPL", "exchange": "NASDAQ"}'
    )
    assert state.finish_reason == "tool_calls"
    assert state.done is True


@pytest.mark.parametrize("seed", [None, 6, 7])
def test_openai_stream_n3_interleaved_choices(fixtures_dir: Path, seed: int | None) -> None:
    data = load(fixtures_dir, "openai/chat-stream-n3-interleaved-choices-2024.sse")
    events = sse_events(data, seed)
    assert events == sse_events(data)
    state, chunks = run_stream(OpenAIAdapter(), events)
    assert len(chunks) == 49
    # One usage chunk for all three choices: completion_tokens is their sum.
    assert state.usage == Usage(prompt_tokens=79, completion_tokens=42)
    assert state.finish_reason == "stop"
    assert state.done is True
    # Text parts keep arrival order (choices interleaved): every fragment of every choice is counted.
    per_choice: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            per_choice[choice["index"]] = per_choice.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
    assert [json.loads(per_choice[i])["city"] for i in range(3)] == ["San Francisco"] * 3
    assert sorted(state.content_text) == sorted("".join(per_choice.values()))
    assert len(state.content_text) == sum(len(t) for t in per_choice.values())


@pytest.mark.parametrize("seed", [None, 8])
def test_deepseek_stream_usage_on_the_finish_chunk(fixtures_dir: Path, seed: int | None) -> None:
    data = load(fixtures_dir, "deepseek/chat-stream-reasoner-usage-on-finish-chunk.sse")
    events = sse_events(data, seed)
    adapter = DeepSeekAdapter()
    state = adapter.new_stream_state()
    usage_chunks = []
    for event in events:
        for chunk in adapter.parse_stream_event(state, event):
            if chunk.get("usage"):
                usage_chunks.append(chunk)
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["choices"][0]["finish_reason"] == "stop"  # not a separate empty-choices chunk
    assert state.usage == Usage(prompt_tokens=6, completion_tokens=212, reasoning_tokens=198)
    assert state.finish_reason == "stop"
    assert state.done is True
    # reasoning_content deltas are not content.
    assert state.content_text == "Hello there! 😊 How can I help you today?"


def test_xai_stream_from_recorded_chunks(fixtures_dir: Path) -> None:
    # The xAI fixture is one chunk JSON per line, not SSE: frame each as `data: <line>\n\n` to replay it.
    lines = load(fixtures_dir, "xai/chat-stream-tool-call-reasoning.chunks.jsonl").splitlines()
    assert len(lines) == 8 and all(line.startswith(b"{") for line in lines)
    data = b"".join(b"data: " + line + b"\n\n" for line in lines)
    state, chunks = run_stream(XAIAdapter(), sse_events(data, seed=9))
    assert len(chunks) == 8
    # Recorded: completion 26, reasoning 196 outside it (total_tokens 513 = 291 + 26 + 196).
    assert state.usage == Usage(
        prompt_tokens=291, completion_tokens=222, cached_tokens=290, reasoning_tokens=196
    )
    assert state.usage.total_tokens == chunks[-1]["usage"]["total_tokens"] == 513
    assert grok_3_mini_ticks(state.usage) == chunks[-1]["usage"]["cost_in_usd_ticks"] == 1330500
    assert state.content_text == '{"location":"San Francisco"}'
    assert state.finish_reason == "tool_calls"
    assert state.done is False  # this recording has no [DONE]


def test_groq_midstream_error_event(fixtures_dir: Path) -> None:
    events = sse_events(load(fixtures_dir, "groq/chat-stream-midstream-error-tool-use-failed.sse"), seed=10)
    adapter = GroqAdapter()
    state = adapter.new_stream_state()
    chunks = []
    for event in events[:-1]:
        chunks.extend(adapter.parse_stream_event(state, event))
    assert len(chunks) == 94
    assert chunks[0]["x_groq"]["id"] == "req_01khrvt2r6e9rb7e8qsg86ywkw"
    with pytest.raises(ProviderError) as info:
        adapter.parse_stream_event(state, events[-1])
    err = info.value
    assert (err.status, err.type, err.code) == (400, "invalid_request_error", "tool_use_failed")
    assert err.message == GROQ_ERROR_MESSAGE
    assert state.usage is None and state.finish_reason is None and state.done is False


def test_error_chunk_without_event_name_raises_too(fixtures_dir: Path) -> None:
    events = sse_events(load(fixtures_dir, "groq/chat-stream-midstream-error-tool-use-failed.sse"))
    data_only = SSEEvent(data=events[-1].data)
    with pytest.raises(ProviderError) as info:
        GroqAdapter().parse_stream_event(StreamState(), data_only)
    assert (info.value.status, info.value.code, info.value.message) == (
        400,
        "tool_use_failed",
        GROQ_ERROR_MESSAGE,
    )


def test_error_chunk_without_status_is_502() -> None:
    event = SSEEvent(data='{"error":{"message":"overloaded","type":"server_error"}}')
    with pytest.raises(ProviderError) as info:
        OpenAIAdapter().parse_stream_event(StreamState(), event)
    assert (info.value.status, info.value.type, info.value.message) == (502, "server_error", "overloaded")


@pytest.mark.parametrize("data", ["{not json", '{"id": "x", "choices": [', "[1, 2]"])
def test_unparsable_stream_data_is_bad_upstream_response(data: str) -> None:
    with pytest.raises(ProviderError) as info:
        OpenAIAdapter().parse_stream_event(StreamState(), SSEEvent(data=data))
    assert (info.value.status, info.value.type, info.value.code) == (
        502,
        "upstream_error",
        "bad_upstream_response",
    )


# --- error answers ----------------------------------------------------------------------------------


def raises(adapter: Any, status: int, headers: dict[str, str], body: bytes) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        adapter.parse_response(status, headers, body)
    return info.value


def test_openai_400_unsupported_value(fixtures_dir: Path) -> None:
    err = raises(
        OpenAIAdapter(),
        400,
        {},
        load(fixtures_dir, "openai/error-400-invalid-request-unsupported-value.json"),
    )
    assert err.status == 400
    assert (
        err.message == "Unsupported value: 'messages[0].role' does not support 'developer' with this model."
    )
    assert (err.type, err.code, err.param) == (
        "invalid_request_error",
        "unsupported_value",
        "messages[0].role",
    )
    assert err.retry_after is None
    assert err.envelope()["error"]["param"] == "messages[0].role"


def test_openai_429_insufficient_quota(fixtures_dir: Path) -> None:
    err = raises(OpenAIAdapter(), 429, {}, load(fixtures_dir, "openai/error-429-insufficient-quota.json"))
    assert err.status == 429
    assert err.message.startswith(
        "You exceeded your current quota, please check your plan and billing details."
    )
    assert (err.type, err.code, err.param) == ("insufficient_quota", "insufficient_quota", None)


def test_groq_429_with_recorded_retry_after(fixtures_dir: Path) -> None:
    body = load(fixtures_dir, "groq/error-429-rate-limit-exceeded.json")
    err = raises(GroqAdapter(), 429, {"retry-after": "7"}, body)
    assert err.status == 429
    assert err.message.startswith(
        "Rate limit reached for model `meta-llama/llama-4-maverick-17b-128e-instruct`"
    )
    assert err.message.endswith("https://console.groq.com/settings/billing")
    assert (err.type, err.code) == ("tokens", "rate_limit_exceeded")
    assert err.retry_after == 7.0


def test_openrouter_429_integer_code(fixtures_dir: Path) -> None:
    body = load(fixtures_dir, "openrouter/error-429-upstream-rate-limited.json")
    err = raises(OpenRouterAdapter(), 429, {"Retry-After": "3"}, body)  # header names are case-insensitive
    assert (err.status, err.message) == (429, "Provider returned error")
    assert (err.type, err.code) == ("upstream_error", "429")  # OpenRouter's code is an integer
    assert err.retry_after == 3.0


def test_openrouter_error_envelope_with_http_200_raises(fixtures_dir: Path) -> None:
    body = load(fixtures_dir, "openrouter/error-429-upstream-rate-limited.json")
    err = raises(OpenRouterAdapter(), 200, {}, body)
    assert (err.status, err.message) == (429, "Provider returned error")


def test_retry_after_ms_is_preferred_and_dates_are_ignored(fixtures_dir: Path) -> None:
    body = load(fixtures_dir, "groq/error-429-rate-limit-exceeded.json")
    assert (
        raises(GroqAdapter(), 429, {"retry-after": "7", "retry-after-ms": "6780"}, body).retry_after == 6.78
    )
    assert (
        raises(GroqAdapter(), 429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, body).retry_after is None
    )


def test_non_json_2xx_is_bad_upstream_response() -> None:
    err = raises(OpenAIAdapter(), 200, {}, b"<html>oops</html>")
    assert (err.status, err.type, err.code) == (502, "upstream_error", "bad_upstream_response")
    err = raises(OpenAIAdapter(), 200, {}, msgspec.json.encode({"id": "x"}))  # JSON, but no choices
    assert (err.status, err.code) == (502, "bad_upstream_response")


def test_non_json_error_keeps_the_status_and_retry_after() -> None:
    err = raises(OpenAIAdapter(), 503, {"retry-after": "2"}, b"<html>503 Service Unavailable</html>")
    assert (err.status, err.type, err.retry_after) == (503, "upstream_error", 2.0)
    assert "<html>" not in err.message


def test_finish_reason_is_choice_zeros_when_choices_finish_differently(fixtures_dir: Path) -> None:
    events = sse_events(load(fixtures_dir, "openai/chat-stream-n3-interleaved-choices-2024.sse"))
    finish_chunks = [e for e in events if '"finish_reason":"stop"' in e.data]
    assert len(finish_chunks) == 3  # one per choice, choice 0 first
    last = finish_chunks[-1]
    assert '"index":2' in last.data
    events[events.index(last)] = SSEEvent(
        data=last.data.replace('"finish_reason":"stop"', '"finish_reason":"length"')
    )
    state, _ = run_stream(OpenAIAdapter(), events)
    assert state.finish_reason == "stop"
