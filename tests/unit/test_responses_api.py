"""The OpenAI Responses translations: validation, chat requests, Response objects and event streams.

What the translators emit is parsed by the real openai SDK: `Response.model_validate`, the stream event
union, and the SDK's own stream state machine (`ResponseStreamState`) fed with our events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.providers import responses_api as ra
from gateway.providers.base import JSONObject, ProviderError, SSEEvent
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai_compat import OPENAI_COMPAT_ADAPTERS
from gateway.providers.sse import SSEDecoder
from pricing.cost import Usage

EVENT = TypeAdapter(ResponseStreamEvent)
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def body(**extra: Any) -> JSONObject:
    return {"model": "claude-sonnet", "input": "Hi", **extra}


# --- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "param"),
    [
        ({"model": ""}, "model"),
        ({"input": 3}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "picture"}]}]}, "input[0].content[0].type"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"instructions": 1}, "instructions"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"stream": "no"}, "stream"),
        ({"store": 1}, "store"),
        ({"previous_response_id": 5}, "previous_response_id"),
        ({"reasoning": "high"}, "reasoning"),
        ({"metadata": []}, "metadata"),
    ],
)
def test_invalid_requests_name_the_param_in_openais_envelope(bad: JSONObject, param: str) -> None:
    with pytest.raises(ProviderError) as caught:
        ra.parse_responses_request(body(**bad))
    err = caught.value
    assert (err.status, err.type, err.param) == (400, "invalid_request_error", param)
    assert err.envelope()["error"]["param"] == param


def test_previous_response_id_is_refused_on_the_translated_path_only() -> None:
    req = ra.parse_responses_request(body(previous_response_id="resp_1"))
    assert req.previous_response_id == "resp_1"  # the native path relays it
    with pytest.raises(ProviderError) as caught:
        ra.to_chat_request(req)
    assert (caught.value.status, caught.value.param) == (400, "previous_response_id")


# --- Responses request -> chat completions -------------------------------------------------------------


def test_responses_request_becomes_a_chat_request() -> None:
    req = ra.parse_responses_request(
        body(
            instructions="Be brief",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Weather here?"},
                        {"type": "input_image", "image_url": "https://x.example/a.png", "detail": "low"},
                    ],
                },
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking."}],
                },
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"a":1}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
                {"role": "user", "content": "Thanks"},
            ],
            tools=[TOOL],
            tool_choice={"type": "function", "name": "get_weather"},
            text={
                "format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}
            },
            max_output_tokens=300,
            temperature=0.5,
            stream=True,
            reasoning={"effort": "high"},
        )
    )
    chat = ra.to_chat_request(req)
    assert chat.messages == [
        {"role": "system", "content": "Be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "https://x.example/a.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"a":1}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
        {"role": "user", "content": "Thanks"},
    ]
    b = chat.body
    assert b["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": TOOL["parameters"]}}
    ]
    assert b["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert b["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert (b["max_tokens"], chat.max_output_tokens, b["temperature"]) == (300, 300, 0.5)
    assert b["stream_options"] == {"include_usage": True} and chat.stream
    assert "reasoning_effort" not in b
    assert ra.to_chat_request(req, supports_reasoning=True).body["reasoning_effort"] == "high"


def test_json_object_format_string_input_and_refused_builtin_tools() -> None:
    chat = ra.to_chat_request(ra.parse_responses_request(body(text={"format": {"type": "json_object"}})))
    assert chat.body["response_format"] == {"type": "json_object"}
    assert chat.messages == [{"role": "user", "content": "Hi"}]
    with pytest.raises(ProviderError) as caught:
        ra.to_chat_request(ra.parse_responses_request(body(tools=[{"type": "web_search"}])))
    assert caught.value.param == "tools[0].type"
    with pytest.raises(ProviderError) as caught:
        ra.to_chat_request(ra.parse_responses_request(body(input=[{"type": "item_reference", "id": "x"}])))
    assert caught.value.param == "input[0].type"


# --- chat.completion -> Response -----------------------------------------------------------------------


def test_completion_becomes_a_response_the_sdk_parses() -> None:
    req = ra.parse_responses_request(body(tools=[TOOL], instructions="Be brief", metadata={"k": "v"}))
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "claude-x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "call_7",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
            }
        ],
    }
    usage = Usage(prompt_tokens=50, completion_tokens=30, cached_tokens=20, reasoning_tokens=10)
    out = ra.chat_completion_to_response(completion, usage, req, created_at=1_700_000_000)
    resp = Response.model_validate(out)
    assert resp.id.startswith("resp_") and resp.status == "completed" and resp.model == "claude-sonnet"
    assert resp.output_text == "Let me check."
    call = resp.output[1]
    assert (call.type, call.call_id, call.name, call.arguments) == (  # type: ignore[union-attr]
        "function_call",
        "call_7",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (50, 30, 80)
    assert resp.usage.input_tokens_details.cached_tokens == 20
    assert resp.usage.output_tokens_details.reasoning_tokens == 10
    assert (resp.instructions, resp.metadata, resp.store) == ("Be brief", {"k": "v"}, False)


def test_a_length_stop_is_an_incomplete_response() -> None:
    req = ra.parse_responses_request(body(max_output_tokens=5))
    completion = {
        "choices": [
            {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "a b"}}
        ]
    }
    resp = Response.model_validate(ra.chat_completion_to_response(completion, None, req, created_at=1))
    assert resp.status == "incomplete" and resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens" and resp.usage is None


# --- chat chunks -> Responses event stream -------------------------------------------------------------


def decode_events(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.flush()


def run_translator(
    req: ra.ResponsesRequest, chunks: list[JSONObject], usage: Usage | None
) -> tuple[list[Any], Any]:
    """Feed chunks and finish; every event must be an SDK event, numbered, and the SDK's state machine
    must build from them the same Response that response.completed carries."""
    tr = ra.ResponsesStreamTranslator(req, created_at=1_700_000_000)
    raw = b"".join(tr.feed(c) for c in chunks) + tr.finish(usage)
    assert tr.finish(usage) == b""
    events = decode_events(raw)
    parsed = [EVENT.validate_json(e.data) for e in events]
    assert [e.event for e in events] == [p.type for p in parsed]
    assert [p.sequence_number for p in parsed] == list(range(len(parsed)))
    assert [p.type for p in parsed[:2]] == ["response.created", "response.in_progress"]
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for p in parsed:
        state.handle_event(p)
    final = parsed[-1]
    assert final.type in ("response.completed", "response.incomplete")
    return parsed, final.response


def test_recorded_openai_parallel_tool_stream_translates_to_responses_events(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "openai/chat-stream-tool-call-include-usage.sse").read_bytes()
    adapter = OPENAI_COMPAT_ADAPTERS["openai"]
    state = adapter.new_stream_state()
    chunks = [c for e in decode_events(raw) for c in adapter.parse_stream_event(state, e)]
    req = ra.parse_responses_request(body(tools=[TOOL], stream=True))
    parsed, response = run_translator(req, chunks, state.usage)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls, "the recorded stream has tool calls"
    for call in calls:
        json.loads(call.arguments)  # the argument fragments joined again
        done = [
            p for p in parsed if p.type == "response.function_call_arguments.done" and p.item_id == call.id
        ]
        assert done and done[0].arguments == call.arguments
    assert state.usage is not None and response.usage.input_tokens == state.usage.prompt_tokens
    assert response.usage.output_tokens == state.usage.completion_tokens
    # Each item is added before its deltas and done after them.
    kinds = [p.type for p in parsed]
    assert kinds.index("response.output_item.added") < kinds.index("response.function_call_arguments.delta")
    assert kinds.index("response.function_call_arguments.delta") < kinds.index("response.output_item.done")


def test_recorded_gemini_text_stream_translates_to_the_canonical_text_sequence(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "google/stream-basic-text.sse").read_bytes()
    adapter = GeminiAdapter(clock=lambda: 1.0)
    state = adapter.new_stream_state()
    chunks = [c for e in decode_events(raw) for c in adapter.parse_stream_event(state, e)]
    req = ra.parse_responses_request(body(stream=True))
    parsed, response = run_translator(req, chunks, state.usage)
    kinds = [p.type for p in parsed]
    deltas = kinds.count("response.output_text.delta")
    # The same order as OpenAI's recorded text stream (responses-stream-text.sse).
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert deltas >= 1
    assert response.output_text == state.content_text
    assert response.usage.output_tokens == state.usage.completion_tokens  # type: ignore[union-attr]


def test_text_then_tool_call_then_failure_events() -> None:
    def chunk(delta: JSONObject, finish: str | None = None) -> JSONObject:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    req = ra.parse_responses_request(body(tools=[TOOL]))
    chunks = [
        chunk({"content": "Hi"}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": "{}"}}
                ]
            }
        ),
        chunk({}, "tool_calls"),
    ]
    _parsed, response = run_translator(
        req, chunks, Usage(prompt_tokens=3, completion_tokens=4, source="estimated")
    )
    assert [item.type for item in response.output] == ["message", "function_call"]
    assert [item.status for item in response.output] == ["completed", "completed"]
    assert response.output_text == "Hi" and response.usage.total_tokens == 7

    tr = ra.ResponsesStreamTranslator(req, created_at=1)
    raw = tr.feed(chunk({"content": "partial"})) + tr.fail(
        ProviderError(502, "upstream broke", code="bad_upstream")
    )
    events = [EVENT.validate_json(e.data) for e in decode_events(raw)]
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]
    assert tr.finish(None) == b""


def test_length_finish_ends_with_response_incomplete() -> None:
    req = ra.parse_responses_request(body())
    chunks = [{"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "length"}]}]
    parsed, response = run_translator(req, chunks, None)
    assert parsed[-1].type == "response.incomplete" and response.status == "incomplete"


# --- native usage --------------------------------------------------------------------------------------


def test_usage_from_responses_keeps_details_inside_the_totals() -> None:
    raw = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 25},
        "total_tokens": 140,
    }
    usage = ra.usage_from_responses(raw)
    assert usage == Usage(
        prompt_tokens=100, completion_tokens=40, cached_tokens=60, cache_write_tokens=10, reasoning_tokens=25
    )
    assert ra.usage_from_responses(None) is None
    assert ra.responses_usage(usage) == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 10},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 25},
        "total_tokens": 140,
    }


def test_meter_reads_a_data_only_error_event() -> None:
    meter = ra.ResponsesStreamMeter()
    meter.feed(
        SSEEvent(data='{"type":"error","code":"server_error","message":"boom","param":null}', event="error")
    )
    assert meter.error is not None and (meter.error.status, meter.error.message) == (500, "boom")
