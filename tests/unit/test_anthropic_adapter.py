"""AnthropicAdapter against the recorded Messages API answers in ../shared/fixtures/anthropic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicAdapter
from gateway.providers.base import (
    ChatRequest,
    Credential,
    JSONObject,
    ProviderAdapter,
    ProviderError,
    SSEEvent,
    StreamState,
)

CRED = Credential(api_key="sk-ant-test", base_url="https://api.anthropic.com/v1/")
NOW = 1_750_000_000


def adapter(**kwargs: Any) -> AnthropicAdapter:
    return AnthropicAdapter(clock=lambda: NOW + 0.7, **kwargs)


def chat_request(body: JSONObject) -> ChatRequest:
    max_out = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(
        model=body["model"],
        messages=body["messages"],
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        max_output_tokens=max_out,
        body=body,
    )


def built(body: JSONObject, model: str = "claude-sonnet-4-5", **kwargs: Any) -> JSONObject:
    up = adapter(**kwargs).build_request(chat_request(body), model, CRED)
    decoded: JSONObject = msgspec.json.decode(up.body)
    return decoded


def sse_events(raw: bytes) -> list[SSEEvent]:
    """Split recorded SSE bytes into events: blank-line separated, `data:` lines joined, `event:` kept."""
    text = raw.decode("utf-8").replace("\r\n", "\n")
    events = []
    for block in text.split("\n\n"):
        name = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].removeprefix(" "))
        if data:
            events.append(SSEEvent(data="\n".join(data), event=name))
    return events


def run_stream(events: list[SSEEvent]) -> tuple[StreamState, list[JSONObject]]:
    a = adapter()
    state = a.new_stream_state()
    chunks: list[JSONObject] = []
    for event in events:
        chunks.extend(a.parse_stream_event(state, event))
    return state, chunks


def content_of(chunks: list[JSONObject]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def tool_calls_of(chunks: list[JSONObject]) -> dict[int, JSONObject]:
    """Tool calls reassembled the way the openai SDK does: by index, arguments concatenated."""
    calls: dict[int, JSONObject] = {}
    for c in chunks:
        for choice in c["choices"]:
            for tc in choice["delta"].get("tool_calls") or ():
                call = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                if tc.get("id"):
                    call["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    call["name"] = fn["name"]
                call["arguments"] += fn.get("arguments") or ""
    return calls


def fixture_json(fixtures_dir: Path, name: str) -> Any:
    return json.loads((fixtures_dir / "anthropic" / name).read_text())


def test_the_adapter_satisfies_the_protocol() -> None:
    a: ProviderAdapter = AnthropicAdapter()
    assert a.name == "anthropic"


# --- request translation ---------------------------------------------------------------------------


def test_request_url_headers_and_basic_fields() -> None:
    req = chat_request(
        {
            "model": "claude-sonnet",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-42",
            "stream": True,
            "stream_options": {"include_usage": True},
            "logprobs": False,  # neutral values ask for nothing: accepted, not sent
            "n": 1,
        }
    )
    up = adapter().build_request(req, "claude-sonnet-4-5-20250929", CRED)
    assert up.method == "POST"
    assert up.url == "https://api.anthropic.com/v1/messages"
    assert up.headers == {
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    assert msgspec.json.decode(up.body) == {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-42"},
        "stream": True,
    }


def test_stop_list_becomes_stop_sequences() -> None:
    body = built({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b"]})
    assert body["stop_sequences"] == ["a", "b"]


def test_max_tokens_defaults_when_the_client_sets_none() -> None:
    msgs = [{"role": "user", "content": "x"}]
    assert built({"model": "m", "messages": msgs})["max_tokens"] == DEFAULT_MAX_TOKENS == 4096
    assert built({"model": "m", "messages": msgs}, default_max_tokens=64000)["max_tokens"] == 64000
    assert (
        built({"model": "m", "messages": msgs, "max_tokens": 77}, default_max_tokens=64000)["max_tokens"]
        == 77
    )


def test_system_and_developer_messages_become_top_level_system() -> None:
    body = built(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Answer in French."},
    ]
    assert [m["role"] for m in body["messages"]] == ["user"]
    single = built(
        {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]}
    )
    assert single["system"] == "S"


def test_images_data_urls_become_base64_and_http_urls_url_sources() -> None:
    body = built(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "compare"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                        },
                    ],
                }
            ],
        }
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tools_become_input_schema_tools() -> None:
    no_params = {"type": "function", "function": {"name": "now"}}
    body = built(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL, no_params]}
    )
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_variants(tool_choice: Any, parallel: bool | None, expected: JSONObject) -> None:
    req: JSONObject = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        req["tool_choice"] = tool_choice
    if parallel is not None:
        req["parallel_tool_calls"] = parallel
    assert built(req)["tool_choice"] == expected


def test_tool_calls_and_results_alternate_with_results_merged_into_one_user_turn() -> None:
    body = built(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "toolu_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "Thanks. Which is warmer?"},
                {"role": "user", "content": "Be short."},
            ],
        }
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "21C"}],
                },
                {"type": "text", "text": "Thanks. Which is warmer?"},
                {"type": "text", "text": "Be short."},
            ],
        },
    ]


def test_assistant_tool_call_without_text_sends_no_empty_text_block() -> None:
    body = built(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
            ],
        }
    )
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]


def test_invalid_tool_call_arguments_are_a_client_error() -> None:
    with pytest.raises(ProviderError) as err:
        built(
            {
                "model": "m",
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ],
            }
        )
    assert err.value.status == 400
    assert err.value.type == "invalid_request_error"
    assert err.value.param == "messages[0].tool_calls[0].function.arguments"


def test_n_greater_than_one_is_refused() -> None:
    with pytest.raises(ProviderError) as err:
        built({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2})
    assert (err.value.status, err.value.param) == (400, "n")


# The recorded requests are what Anthropic accepted: the same conversation, sent by an OpenAI client
# through the adapter, must produce the same body.


def test_request_matches_recorded_basic_stream_request(fixtures_dir: Path) -> None:
    expected = fixture_json(fixtures_dir, "messages-stream-basic-text.request.json")
    body = built(
        {
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "What is 1+1? Answer with just the number."}],
            "max_tokens": 32000,
            "stream": True,
        },
        model="claude-sonnet-4-5",
    )
    assert body == expected


def test_request_matches_recorded_cache_request(fixtures_dir: Path) -> None:
    expected = fixture_json(fixtures_dir, "messages-cache-read-and-creation.request.json")
    turns = expected["messages"]
    body = built(
        {
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": turns[0]["content"][0]["text"]},
                {"role": "assistant", "content": turns[1]["content"][0]["text"]},
                {"role": "user", "content": turns[2]["content"][0]["text"]},
            ],
            "max_tokens": 4096,
            "cache_control": {"type": "ephemeral", "ttl": "5m"},  # Anthropic-native, via extra_body
        },
        model="claude-sonnet-4-5",
    )
    assert body == expected


def test_request_matches_recorded_tool_choice_none_request(fixtures_dir: Path) -> None:
    expected = fixture_json(fixtures_dir, "error-429-rate-limit.request.json")
    schema = expected["tools"][0]["input_schema"]
    body = built(
        {
            "model": "claude-haiku-4-5",
            "messages": [{"role": "user", "content": "What is 2+2?"}],
            "max_tokens": 4096,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Get the weather for a city.",
                        "parameters": schema,
                    },
                }
            ],
            "tool_choice": "none",
        },
        model="claude-haiku-4-5",
    )
    assert body == expected


@pytest.mark.parametrize(
    ("name", "model", "native"),
    [
        ("error-400-invalid-request.request.json", "claude-opus-4-6", {"output_config": {"effort": "xhigh"}}),
        (
            "messages-stream-thinking.request.json",
            "claude-sonnet-4-0",
            {"thinking": {"type": "enabled", "budget_tokens": 1024}},
        ),
    ],
)
def test_request_matches_recorded_requests_with_native_fields(
    fixtures_dir: Path, name: str, model: str, native: JSONObject
) -> None:
    expected = fixture_json(fixtures_dir, name)
    text = expected["messages"][0]["content"][0]["text"]
    body = built(
        {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 4096,
            "stream": expected["stream"],
            **native,
        },
        model=model,
    )
    assert body == expected


# --- non-streaming response ------------------------------------------------------------------------


def test_response_with_cache_read_and_creation(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "anthropic" / "messages-cache-read-and-creation.json").read_bytes()
    result = adapter().parse_response(200, {}, raw)
    text = (
        "Python is a beginner-friendly, versatile programming language widely used for web development, "
        "data science, machine learning, automation, and scientific computing."
    )
    assert result.body == {
        "id": "msg_01KPaKTJSqAKoZri7Ujrny58",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            # input 3 + cache read 1111 + cache creation 418
            "prompt_tokens": 1532,
            "completion_tokens": 33,
            "total_tokens": 1565,
            "prompt_tokens_details": {"cached_tokens": 1111, "cache_write_tokens": 418},
        },
    }
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.cached_tokens, result.usage.cache_write_tokens) == (
        1532,
        1111,
        418,
    )
    assert (result.usage.completion_tokens, result.usage.uncached_prompt_tokens) == (33, 3)
    assert result.usage.source == "provider"
    assert result.content_text == text
    assert result.finish_reason == "stop"


def test_response_with_tool_use_and_thinking() -> None:
    raw = msgspec.json.encode(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 20},
        }
    )
    result = adapter().parse_response(200, {}, raw)
    message = result.body["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["reasoning_content"] == "The user wants weather."
    assert message["tool_calls"] == [
        {
            "id": "toolu_9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert result.finish_reason == "tool_calls"
    assert result.content_text == 'Let me check.{"city":"Paris"}'
    assert "weather." not in result.content_text


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    raw = msgspec.json.encode(
        {
            "id": "m",
            "model": "c",
            "content": [{"type": "text", "text": "x"}],
            "stop_reason": stop_reason,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )
    assert adapter().parse_response(200, {}, raw).finish_reason == finish


# --- errors ----------------------------------------------------------------------------------------


def test_error_400_invalid_request(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "anthropic" / "error-400-invalid-request.json").read_bytes()
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(400, {"content-type": "application/json"}, raw)
    e = err.value
    assert (e.status, e.type, e.code, e.retry_after) == (400, "invalid_request_error", None, None)
    assert (
        e.message
        == "This model does not support effort level 'xhigh'. Supported levels: high, low, max, medium."
    )


def test_error_429_rate_limit_with_retry_after(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "anthropic" / "error-429-rate-limit.json").read_bytes()
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(429, {"Retry-After": "4"}, raw)
    e = err.value
    assert (e.status, e.type, e.code, e.retry_after) == (429, "rate_limit_error", "rate_limit_exceeded", 4.0)
    assert e.message.startswith("This request would exceed the rate limit for your organization")


def test_error_529_overloaded_keeps_the_provider_status() -> None:
    # No licensed recording of an overload exists (see PROVENANCE.md); this is Anthropic's documented shape.
    raw = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(529, {}, raw)
    assert (err.value.status, err.value.code, err.value.message) == (529, "overloaded", "Overloaded")


def test_error_without_json_body_keeps_status_and_hides_body() -> None:
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(502, {}, b"<html>Bad Gateway</html>")
    assert err.value.status == 502
    assert "html" not in err.value.message.lower()


def test_malformed_success_body_is_a_bad_upstream_response() -> None:
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(200, {}, b"not json")
    assert (err.value.status, err.value.code) == (502, "bad_upstream_response")


# --- streaming -------------------------------------------------------------------------------------


def test_stream_basic_text(fixtures_dir: Path) -> None:
    events = sse_events((fixtures_dir / "anthropic" / "messages-stream-basic-text.sse").read_bytes())
    assert [e.event for e in events][:3] == ["message_start", "content_block_start", "ping"]
    state, chunks = run_stream(events)
    first = chunks[0]
    assert first["id"] == "msg_018E1hg8GoVTGEKQY3ovMcSJ"
    assert first["model"] == "claude-sonnet-4-5-20250929"
    assert first["object"] == "chat.completion.chunk"
    assert first["created"] == NOW
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(chunks) == "2"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes.count("stop") == 1 and finishes[-1] == "stop"
    assert state.done and state.finish_reason == "stop"
    assert state.content_text == "2"
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.completion_tokens, state.usage.cached_tokens) == (20, 5, 0)
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 20,
        "completion_tokens": 5,
        "total_tokens": 25,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    }
    # The ping (and content_block_stop) produce nothing: 1 role + 1 text + 1 finish + 1 usage chunk.
    assert len(chunks) == 4


def test_stream_usage_before_message_delta_is_the_input_side(fixtures_dir: Path) -> None:
    events = sse_events((fixtures_dir / "anthropic" / "messages-stream-basic-text.sse").read_bytes())
    a = adapter()
    state = a.new_stream_state()
    a.parse_stream_event(state, events[0])
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (20, 1)
    assert not state.done


def test_stream_tool_use(fixtures_dir: Path) -> None:
    events = sse_events((fixtures_dir / "anthropic" / "messages-stream-tool-use.sse").read_bytes())
    state, chunks = run_stream(events)
    assert content_of(chunks) == "I'll check the current weather in Paris for you."
    calls = tool_calls_of(chunks)
    assert calls == {
        0: {
            "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
            "name": "get_weather",
            "arguments": '{"location": "Paris"}',
        }
    }
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}
    # The tool call's first chunk carries id, type and name with empty arguments, as OpenAI's does.
    start = next(c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert start["choices"][0]["delta"]["tool_calls"] == [
        {
            "index": 0,
            "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    assert state.finish_reason == "tool_calls"
    assert state.done
    assert state.usage is not None
    # message_delta carries only output_tokens=65; the input side stays from message_start.
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (377, 65)
    assert chunks[-1]["usage"]["total_tokens"] == 442
    assert state.content_text == "I'll check the current weather in Paris for you." + '{"location": "Paris"}'


def test_stream_thinking_never_reaches_content(fixtures_dir: Path) -> None:
    events = sse_events((fixtures_dir / "anthropic" / "messages-stream-thinking.sse").read_bytes())
    state, chunks = run_stream(events)
    content = content_of(chunks)
    assert content.startswith(
        "Here are the basic steps for safely crossing the street:\n\n**At intersections"
    )
    assert content.endswith("Always prioritize safety over speed when crossing streets.")
    assert "straightforward question" not in content
    assert "straightforward question" not in state.content_text
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert reasoning == (
        "This is a straightforward question about pedestrian safety. I should provide clear, helpful "
        "advice about how to safely cross a street. This is basic safety information that could help "
        "prevent accidents."
    )
    # The signature is not text of any kind.
    assert not any("EvMCCkYICxgCKkCHP2c" in json.dumps(c) for c in chunks)
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (43, 282)
    assert state.finish_reason == "stop" and state.done


def test_stream_compaction_bills_every_iteration(fixtures_dir: Path) -> None:
    events = sse_events(
        (fixtures_dir / "anthropic" / "messages-stream-compaction-cache-read.sse").read_bytes()
    )
    state, chunks = run_stream(events)
    assert content_of(chunks) == "Hello! 👋"
    assert "quick brown fox" not in state.content_text  # the compaction summary is not the answer
    assert state.usage is not None
    u = state.usage
    # Top level of message_delta: input 181, cache read 0, output 8 (the final iteration only).
    # iterations: compaction (input 100, cache read 55096, output 83) + message (input 181, output 8).
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens) == (100 + 181 + 55096, 55096, 0)
    assert (u.completion_tokens, u.uncached_prompt_tokens) == (83 + 8, 281)
    assert chunks[-1]["usage"]["prompt_tokens"] == 55377
    assert state.done and state.finish_reason == "stop"


def test_stream_latest_non_null_usage_field_wins() -> None:
    events = [
        SSEEvent(
            '{"type":"message_start","message":{"id":"msg_x","model":"c","usage":{"input_tokens":10,'
            '"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":1}}}',
            "message_start",
        ),
        SSEEvent(
            '{"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
            '"usage":{"input_tokens":null,"cache_read_input_tokens":7,"output_tokens":50}}',
            "message_delta",
        ),
        SSEEvent('{"type":"message_stop"}', "message_stop"),
    ]
    state, chunks = run_stream(events)
    assert chunks[-1]["usage"]["prompt_tokens"] == 19
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.cached_tokens, state.usage.cache_write_tokens) == (
        19,
        7,
        2,
    )
    assert state.usage.completion_tokens == 50
    assert state.finish_reason == "length"


def test_stream_tool_call_indexes_count_tool_calls_only() -> None:
    def ev(kind: str, payload: JSONObject) -> SSEEvent:
        return SSEEvent(json.dumps({"type": kind, **payload}), kind)

    events = [
        ev(
            "message_start",
            {"message": {"id": "msg_p", "model": "c", "usage": {"input_tokens": 5, "output_tokens": 1}}},
        ),
        ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Both."}}),
        ev(
            "content_block_start",
            {"index": 1, "content_block": {"type": "tool_use", "id": "t_a", "name": "a", "input": {}}},
        ),
        ev(
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"x":'}},
        ),
        ev(
            "content_block_start",
            {"index": 2, "content_block": {"type": "tool_use", "id": "t_b", "name": "b", "input": {}}},
        ),
        ev(
            "content_block_delta",
            {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"y": 2}'}},
        ),
        ev("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": " 1}"}}),
        ev("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
        ev("message_stop", {}),
    ]
    state, chunks = run_stream(events)
    assert tool_calls_of(chunks) == {
        0: {"id": "t_a", "name": "a", "arguments": '{"x": 1}'},
        1: {"id": "t_b", "name": "b", "arguments": '{"y": 2}'},
    }
    assert state.finish_reason == "tool_calls"


def test_stream_error_event_raises() -> None:
    a = adapter()
    state = a.new_stream_state()
    event = SSEEvent('{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', "error")
    with pytest.raises(ProviderError) as err:
        a.parse_stream_event(state, event)
    assert (err.value.status, err.value.code, err.value.type) == (529, "overloaded", "server_error")
    assert not state.done


# --- what the openai SDK sees ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "messages-stream-basic-text.sse",
        "messages-stream-compaction-cache-read.sse",
        "messages-stream-thinking.sse",
        "messages-stream-tool-use.sse",
    ],
)
def test_openai_sdk_accepts_every_stream_chunk(fixtures_dir: Path, name: str) -> None:
    types = pytest.importorskip("openai.types.chat")
    _, chunks = run_stream(sse_events((fixtures_dir / "anthropic" / name).read_bytes()))
    parsed = [types.ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[-1].usage is not None and parsed[-1].choices == []


def test_openai_sdk_accepts_the_completion(fixtures_dir: Path) -> None:
    types = pytest.importorskip("openai.types.chat")
    raw = (fixtures_dir / "anthropic" / "messages-cache-read-and-creation.json").read_bytes()
    completion = types.ChatCompletion.model_validate(adapter().parse_response(200, {}, raw).body)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1111
