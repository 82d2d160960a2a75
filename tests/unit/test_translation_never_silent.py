"""Translation is never silent: response_format translated for Claude and Gemini, every field an adapter
cannot honour refused with a 400 naming it, and every stream's finish_reason on a chunk of its own."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from gateway.providers.anthropic import JSON_OUTPUT_TOOL, AnthropicAdapter
from gateway.providers.base import ChatRequest, Credential, JSONObject, ProviderError, SSEEvent
from gateway.providers.gemini import GeminiAdapter, gemini_schema
from gateway.providers.openai_compat import DeepSeekAdapter, OpenAIAdapter

CRED = Credential(api_key="k", base_url="https://up.example/v1")
MSGS = [{"role": "user", "content": "Weather in Paris?"}]
# What the openai SDK's parse() sends for a pydantic model with a nested model and an Optional field.
PYDANTIC_SCHEMA: JSONObject = {
    "$defs": {
        "Wind": {
            "properties": {"speed": {"title": "Speed", "type": "number"}},
            "required": ["speed"],
            "title": "Wind",
            "type": "object",
            "additionalProperties": False,
        }
    },
    "properties": {
        "city": {"title": "City", "type": "string"},
        "temp_c": {"title": "Temp C", "type": "integer"},
        "wind": {"$ref": "#/$defs/Wind"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Note"},
        "sky": {"enum": ["clear", "cloudy"], "title": "Sky", "type": "string"},
    },
    "required": ["city", "temp_c", "wind", "note", "sky"],
    "title": "Weather",
    "type": "object",
    "additionalProperties": False,
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "Weather", "schema": PYDANTIC_SCHEMA}}


def request(body: JSONObject) -> ChatRequest:
    full = {"model": "m", "messages": MSGS, **body}
    max_out = full.get("max_completion_tokens") or full.get("max_tokens")
    return ChatRequest("m", MSGS, bool(full.get("stream")), False, max_out, full)


def sent(adapter: Any, body: JSONObject) -> JSONObject:
    decoded: JSONObject = msgspec.json.decode(adapter.build_request(request(body), "up", CRED).body)
    return decoded


def refused(adapter: Any, body: JSONObject) -> ProviderError:
    with pytest.raises(ProviderError) as err:
        adapter.build_request(request(body), "up", CRED)
    assert err.value.status == 400 and err.value.type == "invalid_request_error"
    return err.value


# --- Anthropic: a forced tool -----------------------------------------------------------------------


def test_claude_json_schema_is_a_forced_tool_whose_input_becomes_the_content() -> None:
    body = sent(AnthropicAdapter(), {"response_format": SCHEMA_FORMAT})
    (tool,) = body["tools"]
    assert tool["name"] == JSON_OUTPUT_TOOL and tool["input_schema"] == PYDANTIC_SCHEMA
    assert "Weather" in tool["description"]
    assert body["tool_choice"] == {"type": "tool", "name": JSON_OUTPUT_TOOL}
    assert "response_format" not in body

    answer = {"city": "Paris", "temp_c": 21, "wind": {"speed": 3.5}, "note": None, "sky": "clear"}
    raw = msgspec.json.encode(
        {
            "id": "msg_1",
            "model": "claude",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": JSON_OUTPUT_TOOL, "input": answer}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
    )
    result = AnthropicAdapter().parse_response(200, {}, raw)
    message = result.body["choices"][0]["message"]
    assert json.loads(message["content"]) == answer and "tool_calls" not in message
    assert result.finish_reason == "stop" and result.body["choices"][0]["finish_reason"] == "stop"


def json_delta(fragment: str) -> JSONObject:
    return {"type": "input_json_delta", "partial_json": fragment}


def test_claude_json_object_forces_an_object_and_streams_it_as_content() -> None:
    body = sent(AnthropicAdapter(), {"response_format": {"type": "json_object"}})
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    adapter = AnthropicAdapter()
    state = adapter.new_stream_state()
    events = [
        {"type": "message_start", "message": {"id": "m1", "model": "c", "usage": {"input_tokens": 3}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": JSON_OUTPUT_TOOL, "input": {}},
        },
        *(
            {"type": "content_block_delta", "index": 0, "delta": json_delta(f)}
            for f in ("", '{"a"', ": 1}")
        ),
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]  # fmt: skip
    chunks = [c for e in events for c in adapter.parse_stream_event(state, SSEEvent(json.dumps(e)))]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == '{"a": 1}'
    assert not any("tool_calls" in d for d in deltas)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {}  # the finish on a chunk of its own, then usage
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_claude_refuses_response_format_with_tools_and_unknown_kinds() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    err = refused(AnthropicAdapter(), {"response_format": SCHEMA_FORMAT, "tools": tools})
    assert err.param == "response_format"
    assert refused(AnthropicAdapter(), {"response_format": {"type": "xml"}}).param == "response_format.type"
    assert "tools" not in sent(AnthropicAdapter(), {"response_format": {"type": "text"}})


# --- Gemini: responseSchema in Google's subset ------------------------------------------------------


def test_gemini_json_schema_becomes_response_schema_in_googles_subset() -> None:
    config = sent(GeminiAdapter(), {"response_format": SCHEMA_FORMAT})["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseSchema"] == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "temp_c": {"type": "INTEGER"},
            "wind": {
                "type": "OBJECT",
                "properties": {"speed": {"type": "NUMBER"}},
                "propertyOrdering": ["speed"],
                "required": ["speed"],
            },
            "note": {"type": "STRING", "nullable": True},
            "sky": {"type": "STRING", "enum": ["clear", "cloudy"], "format": "enum"},
        },
        "propertyOrdering": ["city", "temp_c", "wind", "note", "sky"],
        "required": ["city", "temp_c", "wind", "note", "sky"],
    }
    assert sent(GeminiAdapter(), {"response_format": {"type": "json_object"}})["generationConfig"] == {
        "responseMimeType": "application/json"
    }


@pytest.mark.parametrize(
    ("schema", "param"),
    [
        ({"type": "object", "properties": {"x": {"not": {"type": "string"}}}}, ".properties.x.not"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, ".additionalProperties"),
        ({"$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
          "$ref": "#/$defs/N"}, ".properties.n"),
        ({"type": ["string", "integer"]}, ".type"),
    ],
)  # fmt: skip
def test_gemini_refuses_schemas_it_cannot_express_naming_where(schema: JSONObject, param: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert (
        refused(GeminiAdapter(), {"response_format": fmt}).param
        == "response_format.json_schema.schema" + param
    )


def test_gemini_schema_keeps_constraints_and_drops_annotations() -> None:
    schema = {
        "type": "array",
        "title": "T",
        "items": {"type": "string", "format": "uri", "maxLength": 9, "const": "a"},
        "minItems": 1,
    }
    assert gemini_schema(schema) == {
        "type": "ARRAY",
        "items": {"type": "STRING", "maxLength": 9, "enum": ["a"], "format": "enum"},
        "minItems": 1,
    }


# --- every field an adapter cannot honour -----------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "field", "value"),
    [
        (AnthropicAdapter(), "seed", 7),
        (AnthropicAdapter(), "frequency_penalty", 0.5),
        (AnthropicAdapter(), "logprobs", True),
        (AnthropicAdapter(), "logit_bias", {"1": 2}),
        (AnthropicAdapter(), "safetySettings", []),  # a Gemini field sent to Claude
        (AnthropicAdapter(), "service_tier", "auto"),
        (GeminiAdapter(), "logprobs", True),
        (GeminiAdapter(), "logit_bias", {"1": 2}),
        (GeminiAdapter(), "parallel_tool_calls", False),
        (GeminiAdapter(), "metadata", {"a": "b"}),
        (GeminiAdapter(), "top_k", 3),  # an Anthropic field sent to Gemini
    ],
)
def test_fields_an_adapter_cannot_honour_are_refused_by_name(adapter: Any, field: str, value: Any) -> None:
    err = refused(adapter, {field: value})
    assert err.param == field and err.code == "unsupported_parameter" and field in err.message


def test_reasoning_effort_becomes_a_thinking_budget() -> None:
    claude = sent(AnthropicAdapter(), {"reasoning_effort": "medium", "max_completion_tokens": 4000})
    assert claude["thinking"] == {"type": "enabled", "budget_tokens": 3999}  # below max_tokens
    assert sent(AnthropicAdapter(), {"reasoning_effort": "high"})["thinking"]["budget_tokens"] == 4095
    assert "thinking" not in sent(AnthropicAdapter(), {"reasoning_effort": "none"})
    own = {"type": "enabled", "budget_tokens": 2000}
    assert sent(AnthropicAdapter(), {"reasoning_effort": "high", "thinking": own})["thinking"] == own
    both = refused(AnthropicAdapter(), {"reasoning_effort": "low", "response_format": SCHEMA_FORMAT})
    assert both.param == "reasoning_effort"
    small = refused(AnthropicAdapter(), {"reasoning_effort": "low", "max_completion_tokens": 500})
    assert small.param == "reasoning_effort"
    gemini = sent(GeminiAdapter(), {"reasoning_effort": "low"})["generationConfig"]
    assert gemini["thinkingConfig"] == {"thinkingBudget": 1024}
    off = sent(GeminiAdapter(), {"reasoning_effort": "none"})["generationConfig"]
    assert off["thinkingConfig"] == {"thinkingBudget": 0}
    assert refused(GeminiAdapter(), {"reasoning_effort": "max"}).param == "reasoning_effort"


def test_gemini_accepts_end_user_ids_without_sending_them() -> None:
    body = sent(GeminiAdapter(), {"user": "u1", "safety_identifier": "s1"})
    assert "u1" not in msgspec.json.encode(body).decode() and "s1" not in msgspec.json.encode(body).decode()


def test_neutral_values_ask_for_nothing_and_pass() -> None:
    neutral = {"n": 1, "logprobs": False, "store": False, "parallel_tool_calls": True, "seed": None}
    assert sent(AnthropicAdapter(), neutral)["messages"]
    assert sent(GeminiAdapter(), neutral)["contents"]
    # n: true is not n: 1
    assert refused(AnthropicAdapter(), {"store": True}).param == "store"


def test_openai_wire_providers_pass_every_field() -> None:
    body = {"seed": 7, "logprobs": True, "response_format": SCHEMA_FORMAT, "service_tier": "flex"}
    assert {k: sent(OpenAIAdapter(), body)[k] for k in body} == body


# --- stream endings ---------------------------------------------------------------------------------


def test_a_merged_last_delta_and_finish_reason_are_split_for_openai_wire_hosts() -> None:
    adapter = DeepSeekAdapter()
    state = adapter.new_stream_state()
    merged = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "deepseek-chat",
        "choices": [{"index": 0, "delta": {"content": "end."}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    first, second = adapter.parse_stream_event(state, SSEEvent(json.dumps(merged)))
    assert first["choices"][0] == {
        "index": 0,
        "delta": {"content": "end."},
        "logprobs": None,
        "finish_reason": None,
    }
    assert second["choices"][0]["delta"] == {} and second["choices"][0]["finish_reason"] == "stop"
    assert state.finish_reason == "stop" and state.usage is not None and state.usage.completion_tokens == 2
    plain = {**merged, "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    assert adapter.parse_stream_event(state, SSEEvent(json.dumps(plain))) == [plain]


def test_gemini_stream_ends_with_delta_then_finish_then_usage() -> None:
    adapter = GeminiAdapter()
    state = adapter.new_stream_state()
    last = {
        "candidates": [{"content": {"parts": [{"text": "Hi."}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        "responseId": "r",
        "modelVersion": "g",
    }
    chunks = adapter.parse_stream_event(state, SSEEvent(json.dumps(last)))
    assert [c["choices"][0]["delta"] if c["choices"] else "usage" for c in chunks] == [
        {"role": "assistant", "content": "Hi."},
        {},
        "usage",
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, "stop"]


def sdk_events(chunks: list[JSONObject]) -> list[Any]:
    """The events the openai SDK's stream helper (`client.chat.completions.stream`) builds from chunks."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    return [
        event for chunk in chunks for event in state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    ]


def test_gemini_call_and_finish_in_one_chunk_still_give_the_sdk_its_done_events() -> None:
    """Gemini 1.5/2.0 send a whole functionCall with finishReason STOP in one chunk: without the split the
    SDK sees the finish before it knows the call, and never emits `tool_calls.function.arguments.done`."""
    adapter = GeminiAdapter()
    state = adapter.new_stream_state()
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    event = {
        "candidates": [{"content": {"parts": [call], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        "responseId": "r",
        "modelVersion": "gemini-1.5-flash",
    }
    chunks = list(adapter.parse_stream_event(state, SSEEvent(json.dumps(event))))
    done = [e for e in sdk_events(chunks) if e.type == "tool_calls.function.arguments.done"]
    assert (
        len(done) == 1
        and done[0].name == "get_weather"
        and json.loads(done[0].arguments) == {"city": "Paris"}
    )

    text = {**event, "candidates": [{"content": {"parts": [{"text": "Hi."}]}, "finishReason": "STOP"}]}
    state = adapter.new_stream_state()
    events = sdk_events(list(adapter.parse_stream_event(state, SSEEvent(json.dumps(text)))))
    assert [e.content for e in events if e.type == "content.done"] == ["Hi."]
