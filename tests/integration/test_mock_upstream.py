"""The mock upstream over real HTTP (uvicorn, httptools, uvloop): its three wire formats and directives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest

from devtools.mock_upstream import MockConfig, MockServerThread, create_mock_app, parse_directives

REPO = Path(__file__).resolve().parents[2]
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
SECOND_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def mock_server() -> Iterator[MockServerThread]:
    """One mock on a free 127.0.0.1 port for the module, stopped (thread joined) at the end."""
    server = MockServerThread(MockConfig())
    server.start()
    yield server
    server.stop()
    assert not server.running


@pytest.fixture
def mock(mock_server: MockServerThread) -> MockServerThread:
    """The shared mock, with no requests recorded and no times/key counters."""
    mock_server.app.reset()
    return mock_server


@pytest.fixture
def http(mock: MockServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock.url, timeout=10) as client:
        yield client


@pytest.fixture
def sdk(mock: MockServerThread) -> openai.OpenAI:
    """The real openai SDK pointed at the mock, without retries (tests that want them make their own)."""
    return openai.OpenAI(base_url=f"{mock.url}/v1", api_key="x", max_retries=0)


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-mock", "messages": [{"role": "user", "content": content}], **extra}


def anthropic_body(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-mock",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def gemini_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def sse_events(text: str, separator: str = "\n\n") -> list[tuple[str | None, str]]:
    """(event name, data) for each server-sent event in a complete body."""
    events = []
    for block in text.split(separator):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


def read_until_cut(response: httpx.Response) -> list[str]:
    """The `data:` lines of a stream that must end early; asserts how httpx sees the cut."""
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        for line in response.iter_lines():
            if line.startswith("data: "):
                lines.append(line[len("data: ") :])
    return lines


# ---------------------------------------------------------------------------------------------------
# Plumbing: health, routing, errors for bad requests, the server's life cycle.


def test_health(http: httpx.Client) -> None:
    response = http.get("/health")
    assert response.status_code == 200
    assert response.text == "ok"


def test_unknown_path_is_404_in_openai_envelope(http: httpx.Client) -> None:
    response = http.post("/v1/nothing", json={})
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert "/v1/nothing" in error["message"]


@pytest.mark.parametrize(
    ("path", "envelope_key"),
    [
        ("/v1/chat/completions", "error"),
        ("/v1/messages", "type"),
        ("/v1beta/models/gemini-mock:generateContent", "error"),
    ],
)
def test_bad_json_is_400(http: httpx.Client, path: str, envelope_key: str) -> None:
    response = http.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert envelope_key in response.json()


def test_anthropic_requires_max_tokens_like_the_real_api(http: httpx.Client) -> None:
    body = anthropic_body("hi")
    del body["max_tokens"]
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


def test_get_on_an_api_route_is_405(http: httpx.Client) -> None:
    response = http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_directive_is_a_400_not_silence(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown mock directive 'cached'"):
        sdk.chat.completions.create(**chat("hi [mock cached=20]"))


def test_parse_directives_any_order_and_merge() -> None:
    config = MockConfig(prompt_tokens=1, completion_tokens=2, latency_ms=3)
    behaviour = parse_directives(
        "a [mock usage=none key=k status=529 times=2] b [mock latency_ms=7.5 prompt_tokens=100]", config
    )
    assert (behaviour.status, behaviour.times, behaviour.key, behaviour.usage) == (529, 2, "k", False)
    assert (behaviour.prompt_tokens, behaviour.completion_tokens, behaviour.latency_ms) == (100, 2, 7.5)
    assert parse_directives("no directive here", config).prompt_tokens == 1


def test_server_thread_stops_and_frees_its_port() -> None:
    server = MockServerThread()
    server.start()
    assert httpx.get(f"{server.url}/health").text == "ok"
    server.stop()
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)


def test_config_sets_the_defaults() -> None:
    with MockServerThread(MockConfig(prompt_tokens=30, completion_tokens=3)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        completion = client.chat.completions.create(**chat("hi"))
    assert completion.choices[0].message.content == "mock0 mock1 mock2"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 3)


def test_cli_entry_point_serves() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "devtools.mock_upstream",
        "--port",
        str(port),
        "--completion-tokens",
        "2",
    ]
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the CLI exited early"
            assert time.monotonic() < deadline, "the CLI did not come up"
            time.sleep(0.05)
        response = httpx.post(f"http://127.0.0.1:{port}/chat/completions", json=chat("hi"))
        assert response.json()["choices"][0]["message"]["content"] == "mock0 mock1"
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.stderr is not None
    first_line = process.stderr.read().decode().splitlines()[0]
    assert first_line == f"mock upstream on http://127.0.0.1:{port}"  # one line, saying where it listens


# ---------------------------------------------------------------------------------------------------
# OpenAI chat completions.


def test_openai_non_stream(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(**chat("hello"))
    assert completion.id.startswith("chatcmpl-mock-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-mock"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    assert choice.message.content.split() == [f"mock{i}" for i in range(8)]
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 8, 20)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_openai_path_without_v1_prefix(http: httpx.Client) -> None:
    response = http.post("/chat/completions", json=chat("hi"))
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


def test_openai_stream_without_usage(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(**chat("hi"), stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 8
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_openai_stream_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(**chat("hi"), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    *content, finish, usage_chunk = chunks
    assert "".join(c.choices[0].delta.content or "" for c in content).split() == [
        f"mock{i}" for i in range(8)
    ]
    assert finish.choices[0].finish_reason == "stop"
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (12, 8)
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_stream_wire_format(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=chat("hi", stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert response.text.endswith("data: [DONE]\n\n")
    assert events[-1] == (None, "[DONE]")
    # role chunk + one chunk per word + finish chunk + [DONE]
    assert len(events) == 1 + 8 + 1 + 1
    assert [json.loads(d)["choices"][0]["delta"].get("content") for _, d in events[1:9]] == [
        "mock0",
        *(f" mock{i}" for i in range(1, 8)),
    ]


def test_openai_tool_call_non_stream(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(**chat("weather?"), tools=[WEATHER_TOOL, SECOND_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"mock": True}


def test_openai_tool_choice_names_the_tool(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        **chat("time?"),
        tools=[WEATHER_TOOL, SECOND_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_time"


def test_openai_no_tool_call_when_choice_none_or_after_a_tool_result(sdk: openai.OpenAI) -> None:
    declined = sdk.chat.completions.create(**chat("hi"), tools=[WEATHER_TOOL], tool_choice="none")
    assert declined.choices[0].finish_reason == "stop"
    assert declined.choices[0].message.tool_calls is None
    after_result = sdk.chat.completions.create(
        model="gpt-mock",
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    )
    assert after_result.choices[0].finish_reason == "stop"
    assert after_result.choices[0].message.content == "mock0 mock1 mock2 mock3 mock4 mock5 mock6 mock7"


def test_openai_tool_call_stream(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        **chat("weather?"), tools=[WEATHER_TOOL], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert all(d[0].index == 0 for d in deltas)
    assert deltas[0][0].function is not None and deltas[0][0].function.name == "get_weather"
    assert deltas[0][0].id is not None
    fragments = [d[0].function.arguments for d in deltas if d[0].function and d[0].function.arguments]
    assert len(fragments) >= 2
    assert json.loads("".join(fragments)) == {"mock": True}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


# ---------------------------------------------------------------------------------------------------
# Anthropic Messages.


def test_anthropic_non_stream(http: httpx.Client) -> None:
    directive = "[mock prompt_tokens=40 completion_tokens=5 cached_tokens=20 cache_write_tokens=10]"
    response = http.post("/v1/messages", json=anthropic_body(f"hi {directive}"))
    assert response.status_code == 200
    message = response.json()
    assert message["type"] == "message"
    assert message["role"] == "assistant"
    assert message["model"] == "claude-mock"
    assert message["stop_reason"] == "end_turn"
    assert message["content"] == [{"type": "text", "text": "mock0 mock1 mock2 mock3 mock4"}]
    usage = message["usage"]
    assert usage["input_tokens"] == 40
    assert usage["output_tokens"] == 5
    assert usage["cache_read_input_tokens"] == 20
    assert usage["cache_creation_input_tokens"] == 10


def test_anthropic_default_cache_usage_is_zero(http: httpx.Client) -> None:
    usage = http.post("/v1/messages", json=anthropic_body("hi")).json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (12, 8)
    assert usage["cache_read_input_tokens"] == usage["cache_creation_input_tokens"] == 0


def test_anthropic_stream(http: httpx.Client) -> None:
    body = anthropic_body("hi [mock completion_tokens=3 cached_tokens=7]", stream=True)
    response = http.post("/v1/messages", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert all(p["type"] == name for name, p in zip(names, payloads, strict=True))
    start_usage = payloads[0]["message"]["usage"]
    assert (start_usage["input_tokens"], start_usage["cache_read_input_tokens"]) == (12, 7)
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text.split() == ["mock0", "mock1", "mock2"]
    assert payloads[7]["delta"]["stop_reason"] == "end_turn"
    assert payloads[7]["usage"]["output_tokens"] == 3


def test_anthropic_tool_use(http: httpx.Client) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    message = http.post("/v1/messages", json=anthropic_body("weather?", tools=tools)).json()
    assert message["stop_reason"] == "tool_use"
    block = message["content"][0]
    assert (block["type"], block["name"], block["input"]) == ("tool_use", "get_weather", {"mock": True})
    assert block["id"].startswith("toolu_")

    events = sse_events(
        http.post("/v1/messages", json=anthropic_body("weather?", tools=tools, stream=True)).text
    )
    payloads = [json.loads(data) for _, data in events]
    assert payloads[1]["content_block"]["type"] == "tool_use"
    assert payloads[1]["content_block"]["name"] == "get_weather"
    fragments = [p["delta"]["partial_json"] for p in payloads if p["type"] == "content_block_delta"]
    assert len(fragments) >= 2
    assert json.loads("".join(fragments)) == {"mock": True}
    message_delta = next(p for p in payloads if p["type"] == "message_delta")
    assert message_delta["delta"]["stop_reason"] == "tool_use"


def test_anthropic_no_tool_use_after_a_tool_result(http: httpx.Client) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    body = anthropic_body("x", tools=tools)
    body["messages"] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ]
    assert http.post("/v1/messages", json=body).json()["stop_reason"] == "end_turn"


# ---------------------------------------------------------------------------------------------------
# Gemini.


def test_gemini_non_stream(http: httpx.Client) -> None:
    directive = "[mock prompt_tokens=50 completion_tokens=4 cached_tokens=30 reasoning_tokens=6]"
    response = http.post("/v1beta/models/gemini-mock:generateContent", json=gemini_body(f"hi {directive}"))
    assert response.status_code == 200
    result = response.json()
    candidate = result["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["role"] == "model"
    assert candidate["content"]["parts"] == [{"text": "mock0 mock1 mock2 mock3"}]
    assert result["modelVersion"] == "gemini-mock"
    usage = result["usageMetadata"]
    assert usage["promptTokenCount"] == 50
    assert usage["candidatesTokenCount"] == 4
    assert usage["cachedContentTokenCount"] == 30
    assert usage["thoughtsTokenCount"] == 6
    assert usage["totalTokenCount"] == 50 + 4 + 6


def test_gemini_omits_zero_cache_and_thoughts_and_works_without_prefix(http: httpx.Client) -> None:
    response = http.post("/models/gemini-mock:generateContent", json=gemini_body("hi"))
    usage = response.json()["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (12, 8, 20)
    assert "cachedContentTokenCount" not in usage
    assert "thoughtsTokenCount" not in usage


@pytest.mark.parametrize("prefix", ["/v1beta", ""])
def test_gemini_stream_sse(http: httpx.Client, prefix: str) -> None:
    response = http.post(
        f"{prefix}/models/gemini-mock:streamGenerateContent",
        params={"alt": "sse"},
        json=gemini_body("hi [mock completion_tokens=3 reasoning_tokens=2]"),
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("\r\n\r\n")
    assert "[DONE]" not in response.text
    chunks = [json.loads(data) for _, data in sse_events(response.text, "\r\n\r\n")]
    text = "".join(part.get("text", "") for c in chunks for part in c["candidates"][0]["content"]["parts"])
    assert text.split() == ["mock0", "mock1", "mock2"]
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, None, "STOP"]
    # Cumulative usage on every chunk, as Gemini sends it.
    assert [c["usageMetadata"]["candidatesTokenCount"] for c in chunks] == [1, 2, 3, 3]
    assert all(c["usageMetadata"]["promptTokenCount"] == 12 for c in chunks)
    assert chunks[-1]["usageMetadata"]["thoughtsTokenCount"] == 2
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 12 + 3 + 2


def test_gemini_stream_without_alt_sse_is_a_json_array(http: httpx.Client) -> None:
    response = http.post(
        "/v1beta/models/g:streamGenerateContent", json=gemini_body("hi [mock completion_tokens=2]")
    )
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) == 3
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_function_call(http: httpx.Client) -> None:
    tools = [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT"}}]}]
    result = http.post("/v1beta/models/g:generateContent", json=gemini_body("weather?", tools=tools)).json()
    assert result["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"mock": True}}}
    ]
    assert result["candidates"][0]["finishReason"] == "STOP"

    stream = http.post(
        "/v1beta/models/g:streamGenerateContent?alt=sse", json=gemini_body("weather?", tools=tools)
    ).text
    chunks = [json.loads(data) for _, data in sse_events(stream, "\r\n\r\n")]
    calls = [
        p["functionCall"]
        for c in chunks
        for p in c["candidates"][0]["content"]["parts"]
        if "functionCall" in p
    ]
    assert calls == [{"name": "get_weather", "args": {"mock": True}}]

    mode_none = gemini_body("weather?", tools=tools, toolConfig={"functionCallingConfig": {"mode": "NONE"}})
    result = http.post("/v1beta/models/g:generateContent", json=mode_none).json()
    assert "text" in result["candidates"][0]["content"]["parts"][0]


# ---------------------------------------------------------------------------------------------------
# Directives: status, times+key, cut_after, usage=none, token overrides, latency.


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", None),
        (401, "invalid_request_error", None),
    ],
)
def test_status_openai_envelope(http: httpx.Client, status: int, error_type: str, code: str | None) -> None:
    response = http.post("/v1/chat/completions", json=chat(f"hi [mock status={status}]"))
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    if code is not None:
        assert error["code"] == code
    assert response.headers.get("retry-after") == ("0" if status == 429 else None)


def test_status_through_the_sdk(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(**chat("hi [mock status=429]"))
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "0"


@pytest.mark.parametrize(("status", "error_type"), [(529, "overloaded_error"), (429, "rate_limit_error")])
def test_status_anthropic_envelope(http: httpx.Client, status: int, error_type: str) -> None:
    response = http.post("/v1/messages", json=anthropic_body(f"hi [mock status={status}]"))
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert response.headers["retry-after"] == "0"


def test_status_gemini_envelopes(http: httpx.Client) -> None:
    path = "/v1beta/models/g:generateContent"
    limited = http.post(path, json=gemini_body("hi [mock status=429]"))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "0"
    error = limited.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"} in error["details"]

    unavailable = http.post(path, json=gemini_body("hi [mock status=503]"))
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "0"
    assert unavailable.json()["error"]["status"] == "UNAVAILABLE"
    assert unavailable.json()["error"]["code"] == 503


def test_times_and_key_fail_then_succeed(http: httpx.Client) -> None:
    body = anthropic_body("hi [mock status=529 times=2 key=flaky-a]")
    assert [http.post("/v1/messages", json=body).status_code for _ in range(4)] == [529, 529, 200, 200]
    # Another key has its own counter.
    other = anthropic_body("hi [mock status=529 times=1 key=flaky-b]")
    assert [http.post("/v1/messages", json=other).status_code for _ in range(2)] == [529, 200]


def test_times_and_key_let_the_sdk_retry_to_success(mock: MockServerThread) -> None:
    client = openai.OpenAI(base_url=f"{mock.url}/v1", api_key="x", max_retries=2)
    completion = client.chat.completions.create(**chat("hi [mock status=503 times=1 key=sdk-retry]"))
    assert completion.choices[0].message.content is not None
    assert len(mock.app.requests) == 2  # one 503 (retry-after: 0), then the success


def test_delete_resets_the_times_counters(http: httpx.Client) -> None:
    body = chat("hi [mock status=500 times=1 key=reset-me]")
    assert http.post("/v1/chat/completions", json=body).status_code == 500
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    http.delete("/_mock/requests")
    assert http.post("/v1/chat/completions", json=body).status_code == 500


def test_cut_after_openai_raw(http: httpx.Client) -> None:
    body = chat("hi [mock cut_after=3]", stream=True, stream_options={"include_usage": True})
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        data = read_until_cut(response)
    assert "[DONE]" not in data
    chunks = [json.loads(d) for d in data]
    assert len(chunks) == 1 + 3  # the role chunk, then exactly three content chunks
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "mock0 mock1 mock2"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_cut_after_through_the_sdk(sdk: openai.OpenAI) -> None:
    received = []
    stream = sdk.chat.completions.create(**chat("hi [mock cut_after=2]"), stream=True)
    with pytest.raises(openai.APIConnectionError) as caught:
        for chunk in stream:
            received.append(chunk)
    # The SDK's own HTTP client (httpx2 in openai 3.x) reports the truncated chunked body.
    cause = caught.value.__cause__
    assert type(cause).__name__ == "RemoteProtocolError"
    assert "incomplete chunked read" in str(cause)
    assert "".join(c.choices[0].delta.content or "" for c in received) == "mock0 mock1"


def test_cut_after_anthropic_and_gemini(http: httpx.Client) -> None:
    with http.stream(
        "POST", "/v1/messages", json=anthropic_body("hi [mock cut_after=1]", stream=True)
    ) as response:
        events = [json.loads(d) for d in read_until_cut(response)]
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
    ]

    path = "/v1beta/models/g:streamGenerateContent?alt=sse"
    with http.stream("POST", path, json=gemini_body("hi [mock cut_after=2]")) as response:
        chunks = [json.loads(d) for d in read_until_cut(response)]
    assert len(chunks) == 2
    assert all("finishReason" not in c["candidates"][0] for c in chunks)


def test_server_keeps_serving_after_a_cut(http: httpx.Client) -> None:
    with http.stream(
        "POST", "/v1/chat/completions", json=chat("[mock cut_after=0]", stream=True)
    ) as response:
        assert len(read_until_cut(response)) == 1
    assert http.post("/v1/chat/completions", json=chat("hi")).status_code == 200


def test_usage_none(http: httpx.Client, sdk: openai.OpenAI) -> None:
    completion = http.post("/v1/chat/completions", json=chat("hi [mock usage=none]")).json()
    assert "usage" not in completion
    stream = sdk.chat.completions.create(
        **chat("hi [mock usage=none]"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.usage is None and c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"

    assert "usage" not in http.post("/v1/messages", json=anthropic_body("hi [mock usage=none]")).json()
    stream_text = http.post("/v1/messages", json=anthropic_body("hi [mock usage=none]", stream=True)).text
    assert '"usage"' not in stream_text and "message_stop" in stream_text

    generated = http.post("/v1beta/models/g:generateContent", json=gemini_body("hi [mock usage=none]")).json()
    assert "usageMetadata" not in generated
    streamed = http.post(
        "/v1beta/models/g:streamGenerateContent?alt=sse", json=gemini_body("[mock usage=none]")
    )
    assert "usageMetadata" not in streamed.text and "STOP" in streamed.text


def test_openai_token_overrides(sdk: openai.OpenAI) -> None:
    directive = (
        "[mock prompt_tokens=100 completion_tokens=50 cached_tokens=20"
        " cache_write_tokens=10 reasoning_tokens=5]"
    )
    completion = sdk.chat.completions.create(**chat(f"summarise {directive} please"))
    assert completion.choices[0].message.content is not None
    assert len(completion.choices[0].message.content.split()) == 50
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 50, 150)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 20
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5
    assert usage.model_dump()["prompt_tokens_details"]["cache_write_tokens"] == 10

    stream = sdk.chat.completions.create(
        **chat(f"again {directive}"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert len("".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split()) == 50
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 100


def test_directive_in_content_parts_of_the_last_user_message(http: httpx.Client) -> None:
    body = {
        "model": "gpt-mock",
        "messages": [
            {"role": "user", "content": "[mock completion_tokens=1]"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "now [mock completion_tokens=2]"}]},
        ],
    }
    assert http.post("/v1/chat/completions", json=body).json()["usage"]["completion_tokens"] == 2


def test_latency_and_chunk_delay(http: httpx.Client) -> None:
    # Lower bounds only (a sleep never ends early); nothing here depends on the machine's speed.
    started = time.perf_counter()
    response = http.post("/v1/chat/completions", json=chat("hi [mock latency_ms=200]"))
    assert response.status_code == 200
    assert time.perf_counter() - started >= 0.15

    arrivals = []
    body = chat("hi [mock completion_tokens=3 chunk_delay_ms=80]", stream=True)
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter())
    assert len(arrivals) == 6  # role, 3 words, finish, [DONE]
    assert arrivals[-1] - arrivals[0] >= 5 * 0.08 * 0.75


# ---------------------------------------------------------------------------------------------------
# Request recording.


def test_records_requests_with_auth_headers(mock: MockServerThread, http: httpx.Client) -> None:
    openai.OpenAI(base_url=f"{mock.url}/v1", api_key="sk-openai-test", max_retries=0).chat.completions.create(
        **chat("first")
    )
    http.post("/v1/messages", json=anthropic_body("second"), headers={"x-api-key": "sk-ant-test"})
    http.post(
        "/v1beta/models/gemini-mock:streamGenerateContent",
        params={"alt": "sse"},
        json=gemini_body("third"),
        headers={"X-Goog-Api-Key": "goog-test"},
    )
    recorded = list(mock.app.requests)
    assert [r.path for r in recorded] == [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1beta/models/gemini-mock:streamGenerateContent",
    ]
    assert recorded[0].method == "POST"
    assert recorded[0].headers["authorization"] == "Bearer sk-openai-test"
    assert recorded[0].body["messages"][0]["content"] == "first"
    assert recorded[1].headers["x-api-key"] == "sk-ant-test"
    assert recorded[2].headers["x-goog-api-key"] == "goog-test"
    assert recorded[2].query == "alt=sse"

    over_http = http.get("/_mock/requests").json()
    assert [r["path"] for r in over_http] == [r.path for r in recorded]
    assert over_http[2]["headers"]["x-goog-api-key"] == "goog-test"
    assert over_http[1]["body"]["model"] == "claude-mock"

    assert http.delete("/_mock/requests").json() == {"cleared": 3}
    assert http.get("/_mock/requests").json() == []


def test_records_bad_json_with_a_null_body(mock: MockServerThread, http: httpx.Client) -> None:
    http.post("/v1/chat/completions", content=b"nope")
    assert mock.app.requests[-1].body is None


def test_keeps_the_last_thousand_requests() -> None:
    app = create_mock_app(MockConfig())
    assert app.requests.maxlen == 1000


def test_help_documents_every_directive() -> None:
    """`python -m devtools.mock_upstream --help` lists each directive the mock understands."""
    from devtools.mock_upstream import DIRECTIVES
    from devtools.mock_upstream.directives import _FLOAT_DIRECTIVES, _INT_DIRECTIVES

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "devtools.mock_upstream", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    understood = _INT_DIRECTIVES | _FLOAT_DIRECTIVES | {"key", "usage", "echo_key", "reply"}
    assert {name.partition("=")[0] for name in DIRECTIVES} == understood
    for name in DIRECTIVES:
        assert name in result.stdout
    for option in ("--port", "--latency-ms", "--completion-tokens", "--chunk-delay-ms", "retry-after"):
        assert option in result.stdout


def test_reply_directive_sets_the_answer_text(http: httpx.Client, sdk: openai.OpenAI) -> None:
    wanted = '{"tags": [{"tag": "legal", "confidence": 0.9}]}'
    directive = f"[mock reply={quote(wanted, safe='')}]"
    completion = sdk.chat.completions.create(**chat(f"tag this {directive}"))
    assert completion.choices[0].message.content == wanted
    stream = sdk.chat.completions.create(**chat(f"tag this {directive}"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == wanted
    message = http.post("/v1/messages", json=anthropic_body(f"hi {directive}")).json()
    assert message["content"][0]["text"] == wanted
