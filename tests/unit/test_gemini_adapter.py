"""GeminiAdapter against the recorded Gemini API answers in ../shared/fixtures/google."""

from __future__ import annotations

import json
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
from gateway.providers.gemini import SKIP_THOUGHT_SIGNATURE, GeminiAdapter

CRED = Credential(api_key="AIza-test", base_url="https://generativelanguage.googleapis.com/v1beta")
NOW = 1_750_000_000


def adapter() -> GeminiAdapter:
    return GeminiAdapter(clock=lambda: NOW + 0.2)


def chat_request(body: JSONObject) -> ChatRequest:
    return ChatRequest(
        model=body["model"],
        messages=body["messages"],
        stream=bool(body.get("stream")),
        include_usage=False,
        max_output_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        body=body,
    )


def built(body: JSONObject, model: str = "gemini-2.5-flash") -> JSONObject:
    up = adapter().build_request(chat_request(body), model, CRED)
    decoded: JSONObject = msgspec.json.decode(up.body)
    return decoded


def sse_events(raw: bytes) -> list[SSEEvent]:
    """Split recorded SSE bytes into events: blank-line separated (\\n\\n or \\r\\n\\r\\n), data joined."""
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


def stream_fixture(fixtures_dir: Path, name: str) -> tuple[StreamState, list[JSONObject]]:
    events = sse_events((fixtures_dir / "google" / name).read_bytes())
    return run_stream(events)


def content_of(chunks: list[JSONObject]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def fixture_json(fixtures_dir: Path, name: str) -> Any:
    return json.loads((fixtures_dir / "google" / name).read_text())


def test_the_adapter_satisfies_the_protocol() -> None:
    a: ProviderAdapter = GeminiAdapter()
    assert a.name == "gemini"


# --- request translation ---------------------------------------------------------------------------


def test_request_urls_and_headers() -> None:
    body: JSONObject = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}
    up = adapter().build_request(chat_request(body), "gemini-2.5-flash", CRED)
    assert up.method == "POST"
    assert (
        up.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert up.headers == {"x-goog-api-key": "AIza-test", "content-type": "application/json"}
    stream = adapter().build_request(chat_request({**body, "stream": True}), "models/gemini-2.5-pro", CRED)
    assert stream.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )


def test_generation_config_and_system_instruction() -> None:
    body = built(
        {
            "model": "g",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "hi"},
            ],
            "max_completion_tokens": 256,
            "temperature": 0.3,
            "top_p": 0.8,
            "stop": "END",
            "n": 2,
            "logprobs": False,  # a neutral value asks for nothing: accepted, not sent
        }
    )
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use French."}]},
        "generationConfig": {
            "maxOutputTokens": 256,
            "temperature": 0.3,
            "topP": 0.8,
            "candidateCount": 2,
            "stopSequences": ["END"],
        },
    }


def test_stop_list_and_json_response_formats() -> None:
    msgs = [{"role": "user", "content": "x"}]
    assert built({"model": "g", "messages": msgs, "stop": ["a", "b"]})["generationConfig"] == {
        "stopSequences": ["a", "b"]
    }
    json_object = built({"model": "g", "messages": msgs, "response_format": {"type": "json_object"}})
    assert json_object["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False}
    json_schema = built(
        {
            "model": "g",
            "messages": msgs,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "loc", "schema": schema, "strict": True},
            },
        }
    )
    # responseSchema (every Gemini model takes it) in Google's OpenAPI subset: additionalProperties: false
    # is left out, types are Gemini's enum names, and the declared key order is kept.
    assert json_schema["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"city": {"type": "STRING"}},
            "propertyOrdering": ["city"],
        },
    }


def test_images_become_inline_data_or_file_data() -> None:
    body = built(
        {
            "model": "g",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.webp?x=1"}},
                    ],
                }
            ],
        }
    )
    assert body["contents"][0]["parts"] == [
        {"text": "what is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/cat.webp?x=1"}},
    ]


CAPITAL_TOOL = {
    "type": "function",
    "function": {
        "name": "get_capital",
        "description": "Get the capital of a country.",
        "parameters": {
            "type": "object",
            "properties": {"country": {"type": "string", "description": "The country name."}},
            "required": ["country"],
            "additionalProperties": False,
        },
    },
}


def test_tools_become_function_declarations() -> None:
    body = built(
        {
            "model": "g",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [CAPITAL_TOOL, {"type": "function", "function": {"name": "now"}}],
        }
    )
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_capital",
                    "description": "Get the capital of a country.",
                    "parametersJsonSchema": CAPITAL_TOOL["function"]["parameters"],  # type: ignore[index]
                },
                {"name": "now"},
            ]
        }
    ]
    assert "toolConfig" not in body


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_capital"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_capital"]},
        ),
    ],
)
def test_tool_choice_variants(tool_choice: Any, expected: JSONObject) -> None:
    body = built(
        {
            "model": "g",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [CAPITAL_TOOL],
            "tool_choice": tool_choice,
        }
    )
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_tool_calls_and_results_become_function_call_and_response_parts() -> None:
    body = built(
        {
            "model": "g",
            "messages": [
                {"role": "user", "content": "Capitals of France and Italy?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_r1_0",
                            "type": "function",
                            "function": {"name": "get_capital", "arguments": '{"country": "France"}'},
                        },
                        {
                            "id": "call_r1_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"country": "Italy"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_r1_0", "content": '{"capital": "Paris"}'},
                {"role": "tool", "tool_call_id": "call_r1_1", "content": "Rome"},
                {"role": "user", "content": "Thanks!"},
            ],
        }
    )
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Capitals of France and Italy?"}]},
        {
            "role": "model",
            "parts": [
                # Gemini 3 requires a signature on the first functionCall of a replayed model turn.
                {
                    "functionCall": {"name": "get_capital", "args": {"country": "France"}},
                    "thoughtSignature": SKIP_THOUGHT_SIGNATURE,
                },
                {"functionCall": {"name": "lookup", "args": {"country": "Italy"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_capital", "response": {"capital": "Paris"}}},
                {"functionResponse": {"name": "lookup", "response": {"result": "Rome"}}},
                {"text": "Thanks!"},
            ],
        },
    ]


def test_tool_result_for_an_unknown_call_is_a_client_error() -> None:
    with pytest.raises(ProviderError) as err:
        built({"model": "g", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]})
    assert (err.value.status, err.value.param) == (400, "messages[0].tool_call_id")


# The recorded requests are what Gemini accepted: the same conversation sent by an OpenAI client
# through the adapter must produce the same contents, system instruction and config.


def test_request_matches_recorded_stream_request(fixtures_dir: Path) -> None:
    expected = fixture_json(fixtures_dir, "stream-basic-text.request.json")
    body = built(
        {
            "model": "g",
            "messages": [
                {"role": "system", "content": "You are a helpful chatbot."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "temperature": 0.0,
            "stream": True,
        }
    )
    assert body["contents"] == expected["contents"]
    assert body["systemInstruction"]["parts"] == expected["systemInstruction"]["parts"]
    assert body["generationConfig"] == expected["generationConfig"]


def test_request_matches_recorded_function_call_request(fixtures_dir: Path) -> None:
    expected = fixture_json(fixtures_dir, "generate-content-function-call-thought-signature.request.json")
    body = built(
        {
            "model": "g",
            "messages": [
                {"role": "system", "content": "You are a helpful chatbot."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            "temperature": 0.0,
            "tools": [CAPITAL_TOOL],
        }
    )
    assert body["contents"] == expected["contents"]
    assert body["systemInstruction"]["parts"] == expected["systemInstruction"]["parts"]
    assert body["generationConfig"]["temperature"] == expected["generationConfig"]["temperature"]
    [declared] = body["tools"][0]["functionDeclarations"]
    [recorded] = expected["tools"][0]["functionDeclarations"]
    assert (declared["name"], declared["description"]) == (recorded["name"], recorded["description"])
    # The recording (google-genai SDK) spells it snake_case; the REST API takes either spelling.
    assert declared["parametersJsonSchema"] == recorded["parameters_json_schema"]


@pytest.mark.parametrize(
    "name",
    [
        "stream-cumulative-usage-thoughts.request.json",
        "stream-function-call-thought-signature.request.json",
        "error-503-unavailable-overloaded.request.json",
        "generate-content-implicit-cache-video.request.json",
    ],
)
def test_request_text_turns_match_recorded_requests(fixtures_dir: Path, name: str) -> None:
    expected = fixture_json(fixtures_dir, name)
    recorded_user = expected["contents"][0]
    text = recorded_user["parts"][0]["text"]
    messages: list[JSONObject] = [{"role": "user", "content": text}]
    if "systemInstruction" in expected:
        messages.insert(0, {"role": "system", "content": expected["systemInstruction"]["parts"][0]["text"]})
    body = built({"model": "g", "messages": messages})
    # The video recording's second part is a YouTube fileData, which OpenAI's format cannot express.
    assert body["contents"] == [{"role": "user", "parts": recorded_user["parts"][:1]}]
    if "systemInstruction" in expected:
        assert body["systemInstruction"]["parts"] == expected["systemInstruction"]["parts"]


# --- non-streaming response ------------------------------------------------------------------------


def test_response_function_call_is_a_tool_call_despite_stop(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "google" / "generate-content-function-call-thought-signature.json").read_bytes()
    result = adapter().parse_response(200, {}, raw)
    assert result.body["id"] == "g5YoaezOBeyrqtsPwYqL2Q8"
    assert result.body["model"] == "gemini-2.5-pro"
    assert result.body["object"] == "chat.completion"
    assert result.body["created"] == NOW
    [choice] = result.body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_g5YoaezOBeyrqtsPwYqL2Q8_0",
            "type": "function",
            "function": {"name": "get_capital", "arguments": '{"country":"France"}'},
        }
    ]
    assert "CpYEAXLI2nx" not in json.dumps(result.body)  # the thought signature is not output
    assert result.usage is not None
    # candidates 15 + thoughts 124 are billed as output
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.reasoning_tokens) == (
        57,
        139,
        124,
    )
    assert result.usage.total_tokens == 196  # Gemini's totalTokenCount
    assert result.body["usage"] == {
        "prompt_tokens": 57,
        "completion_tokens": 139,
        "total_tokens": 196,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 124},
    }
    assert result.finish_reason == "tool_calls"
    assert result.content_text == '{"country":"France"}'


def test_response_implicit_cache_and_thoughts(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "google" / "generate-content-implicit-cache-video.json").read_bytes()
    result = adapter().parse_response(200, {}, raw)
    [choice] = result.body["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith(
        "This video demonstrates an AI assistant within a code editor"
    )
    assert "tool_calls" not in choice["message"]
    u = result.usage
    assert u is not None
    # promptTokenCount 17713 already includes the 17379 cached tokens.
    assert (u.prompt_tokens, u.cached_tokens, u.uncached_prompt_tokens) == (17713, 17379, 334)
    assert (u.completion_tokens, u.reasoning_tokens) == (68 + 821, 821)
    assert u.total_tokens == 18602  # Gemini's totalTokenCount
    assert result.body["usage"]["prompt_tokens_details"] == {"cached_tokens": 17379}


def test_response_thought_parts_are_not_content() -> None:
    raw = msgspec.json.encode(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "Let me think.", "thought": True}, {"text": "42"}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "thoughtsTokenCount": 9},
            "responseId": "r",
            "modelVersion": "gemini-2.5-flash",
        }
    )
    result = adapter().parse_response(200, {}, raw)
    message = result.body["choices"][0]["message"]
    assert message["content"] == "42"
    assert message["reasoning_content"] == "Let me think."
    assert result.content_text == "42"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("STOP", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    raw = msgspec.json.encode(
        {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}], "responseId": "r"}
    )
    assert adapter().parse_response(200, {}, raw).finish_reason == finish


def test_blocked_prompt_is_a_content_filter_choice() -> None:
    raw = msgspec.json.encode(
        {
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
        }
    )
    result = adapter().parse_response(200, {}, raw)
    assert result.finish_reason == "content_filter"
    assert result.usage is not None and result.usage.prompt_tokens == 7


def test_tool_use_prompt_tokens_count_as_input() -> None:
    raw = msgspec.json.encode(
        {
            "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 10,
                "toolUsePromptTokenCount": 90,
                "candidatesTokenCount": 3,
                "totalTokenCount": 103,
            },
        }
    )
    usage = adapter().parse_response(200, {}, raw).usage
    assert usage is not None and usage.prompt_tokens == 100 and usage.total_tokens == 103


# --- errors ----------------------------------------------------------------------------------------


def test_error_400_invalid_argument(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "google" / "error-400-invalid-argument.json").read_bytes()
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(400, {}, raw)
    e = err.value
    assert (e.status, e.type, e.code) == (400, "invalid_request_error", None)
    assert e.message == "Penalty is not enabled for models/gemini-2.5-flash"


def test_error_503_unavailable(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "google" / "error-503-unavailable-overloaded.json").read_bytes()
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(503, {}, raw)
    e = err.value
    assert (e.status, e.type, e.code) == (503, "server_error", "unavailable")
    assert e.message == "The model is overloaded. Please try again later."


def test_error_429_retry_delay_becomes_retry_after() -> None:
    # No licensed recording of a Gemini 429 exists (see PROVENANCE.md); this is the documented shape.
    raw = msgspec.json.encode(
        {
            "error": {
                "code": 429,
                "message": "You exceeded your current quota.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
                ],
            }
        }
    )
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(429, {}, raw)
    e = err.value
    assert (e.status, e.type, e.code, e.retry_after) == (429, "rate_limit_error", "rate_limit_exceeded", 7.0)


def test_invalid_api_key_is_reported_as_such() -> None:
    raw = msgspec.json.encode(
        {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
                ],
            }
        }
    )
    with pytest.raises(ProviderError) as err:
        adapter().parse_response(400, {}, raw)
    assert (err.value.status, err.value.type, err.value.code) == (
        400,
        "authentication_error",
        "invalid_api_key",
    )


# --- streaming -------------------------------------------------------------------------------------


def test_stream_basic_text(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "google" / "stream-basic-text.sse").read_bytes()
    assert b"\r\n\r\n" in raw and b"[DONE]" not in raw
    state, chunks = run_stream(sse_events(raw))
    assert content_of(chunks) == "The capital of France is Paris.\n"
    first = chunks[0]
    assert first["id"] == "w1peaMz6INOvnvgPgYfPiQY"
    assert first["model"] == "gemini-2.0-flash-exp"
    assert first["created"] == NOW
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "The"}
    assert sum(1 for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]) == 1
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    # The last text and the finishReason arrive together; the finish goes on a chunk of its own (OpenAI's).
    assert finishes == [None, None, None, "stop"]
    assert chunks[-2]["choices"][0]["delta"] == {} and chunks[-1]["choices"] == []
    assert state.done and state.finish_reason == "stop"
    assert state.usage is not None
    # The last chunk counts: promptTokenCount went 15 -> 13; candidatesTokenCount only appears at the end.
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (13, 8)
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert usage_chunks[0]["usage"]["total_tokens"] == 21
    assert state.content_text == "The capital of France is Paris.\n"


def test_stream_not_done_before_a_finish_reason(fixtures_dir: Path) -> None:
    events = sse_events((fixtures_dir / "google" / "stream-basic-text.sse").read_bytes())
    a = adapter()
    state = a.new_stream_state()
    a.parse_stream_event(state, events[0])
    assert not state.done
    assert state.usage is not None and (state.usage.prompt_tokens, state.usage.completion_tokens) == (15, 0)


def test_stream_cumulative_usage_is_replaced_not_added(fixtures_dir: Path) -> None:
    events = sse_events((fixtures_dir / "google" / "stream-cumulative-usage-thoughts.sse").read_bytes())
    a = adapter()
    state = a.new_stream_state()
    chunks: list[JSONObject] = []
    completions = []
    for event in events:
        chunks.extend(a.parse_stream_event(state, event))
        assert state.usage is not None
        completions.append(state.usage.completion_tokens)
    assert completions == [31 + 35, 79 + 35, 80 + 35]
    assert content_of(chunks) == "\n".join(str(i) for i in range(1, 31))
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.reasoning_tokens, state.usage.total_tokens) == (
        18,
        35,
        133,
    )
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 35}
    assert state.done and state.finish_reason == "stop"


def test_stream_function_call_arrives_whole_and_finishes_as_tool_calls(fixtures_dir: Path) -> None:
    state, chunks = stream_fixture(fixtures_dir, "stream-function-call-thought-signature.sse")
    first = chunks[0]["choices"][0]["delta"]
    assert first == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_QUVVadTSNJ6_qtsPvN7J8Q0_0",
                "type": "function",
                "function": {"name": "get_country", "arguments": "{}"},
                "index": 0,
            }
        ],
    }
    # The trailing {"text": ""} part sends no content; its chunk carries the finish reason.
    assert content_of(chunks) == ""
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert state.finish_reason == "tool_calls" and state.done
    assert state.usage is not None
    assert (state.usage.prompt_tokens, state.usage.completion_tokens, state.usage.reasoning_tokens) == (
        29,
        212,
        202,
    )
    assert not any("EpwICpkIAXLI2nx" in json.dumps(c) for c in chunks)
    assert next(c for c in chunks if not c["choices"])["usage"]["total_tokens"] == 241


def test_stream_usage_chunk_is_emitted_once() -> None:
    finished = json.dumps(
        {
            "candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
        }
    )
    state, chunks = run_stream([SSEEvent(finished), SSEEvent(finished)])
    assert sum(1 for c in chunks if not c["choices"]) == 1
    assert state.done


def test_stream_thought_parts_go_to_reasoning_not_content() -> None:
    events = [
        SSEEvent(
            '{"candidates":[{"content":{"parts":[{"text":"Pondering","thought":true}]}}],"responseId":"r"}'
        ),
        SSEEvent(
            '{"candidates":[{"content":{"parts":[{"text":"Done."}]},"finishReason":"STOP"}],"responseId":"r"}'
        ),
    ]
    state, chunks = run_stream(events)
    assert content_of(chunks) == "Done."
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "reasoning_content": "Pondering"}
    assert state.content_text == "Done."


def test_stream_error_chunk_raises() -> None:
    a = adapter()
    event = SSEEvent('{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}')
    with pytest.raises(ProviderError) as err:
        a.parse_stream_event(a.new_stream_state(), event)
    assert (err.value.status, err.value.code) == (503, "unavailable")


# --- what the openai SDK sees ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "stream-basic-text.sse",
        "stream-cumulative-usage-thoughts.sse",
        "stream-function-call-thought-signature.sse",
    ],
)
def test_openai_sdk_accepts_every_stream_chunk(fixtures_dir: Path, name: str) -> None:
    types = pytest.importorskip("openai.types.chat")
    _, chunks = stream_fixture(fixtures_dir, name)
    parsed = [types.ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[-1].usage is not None and parsed[-1].choices == []


@pytest.mark.parametrize(
    "name",
    ["generate-content-function-call-thought-signature.json", "generate-content-implicit-cache-video.json"],
)
def test_openai_sdk_accepts_the_completion(fixtures_dir: Path, name: str) -> None:
    types = pytest.importorskip("openai.types.chat")
    raw = (fixtures_dir / "google" / name).read_bytes()
    completion = types.ChatCompletion.model_validate(adapter().parse_response(200, {}, raw).body)
    assert completion.usage is not None
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens in (124, 821)
