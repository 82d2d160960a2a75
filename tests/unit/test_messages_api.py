"""The Anthropic Messages translations: validation, errors, chat requests, answers and streams.

What the translators emit is checked with the real anthropic SDK types (`Message.model_validate`, the
stream event union) and its own stream accumulator, fed with chunks the real chat adapters produce from
recorded provider streams.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.providers import messages_api as ma
from gateway.providers.base import Credential, JSONObject, SSEEvent
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai_compat import OPENAI_COMPAT_ADAPTERS
from gateway.providers.sse import SSEDecoder
from pricing.cost import Usage

EVENT = TypeAdapter(RawMessageStreamEvent)
CRED = Credential(api_key="sk-ant-upstream", base_url="https://api.anthropic.com/v1")


def body(**extra: Any) -> JSONObject:
    return {"model": "gpt-4o", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}], **extra}


# --- validation and errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"model": None}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
        ({"system": [{"type": "image", "source": {}}]}, "system"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"stream": "yes"}, "stream"),
        ({"thinking": {"type": "enabled"}}, "thinking.enabled.budget_tokens"),
        ({"metadata": "u1"}, "metadata"),
    ],
)
def test_invalid_requests_name_the_field_in_anthropics_envelope(bad: JSONObject, field: str) -> None:
    with pytest.raises(ma.MessagesApiError) as caught:
        ma.parse_messages_request(body(**bad))
    err = caught.value
    assert err.status == 400 and err.message.startswith(field + ":")
    assert err.envelope() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": err.message},
    }


def test_a_valid_request_is_typed_and_count_tokens_needs_no_max_tokens() -> None:
    req = ma.parse_messages_request(
        json.dumps(body(system="Be brief", stop_sequences=["END"], top_k=5, stream=True)).encode()
    )
    assert (req.model, req.max_tokens, req.system, req.stop_sequences, req.top_k, req.stream) == (
        "gpt-4o",
        256,
        "Be brief",
        ["END"],
        5,
        True,
    )
    counted = ma.parse_messages_request({"model": "m", "messages": []}, count_tokens=True)
    assert counted.max_tokens is None
    with pytest.raises(ma.MessagesApiError, match="not valid JSON"):
        ma.parse_messages_request(b"{")


@pytest.mark.parametrize(
    ("status", "openai_type", "code", "expected"),
    [
        (400, "invalid_request_error", None, "invalid_request_error"),
        (401, "authentication_error", "invalid_api_key", "authentication_error"),
        (402, "insufficient_quota", "insufficient_credits", "billing_error"),
        (403, "permission_error", "model_not_allowed", "permission_error"),
        (404, "invalid_request_error", "model_not_found", "not_found_error"),
        (413, "invalid_request_error", "request_too_large", "request_too_large"),
        (429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
        (500, "server_error", None, "api_error"),
        (502, "upstream_error", "bad_upstream_response", "api_error"),
        (503, "service_unavailable", None, "api_error"),
        (504, "server_error", "timeout", "timeout_error"),
        (529, "server_error", "overloaded", "overloaded_error"),
    ],
)
def test_gateway_errors_map_to_anthropic_types(
    status: int, openai_type: str, code: str | None, expected: str
) -> None:
    err = ma.messages_error(status, openai_type, code, "nope")
    assert (err.status, err.error_type, err.envelope()["error"]["message"]) == (status, expected, "nope")


def test_upstream_headers_pass_version_and_beta_and_use_our_key() -> None:
    headers = ma.upstream_headers({"X-API-Key": "sk-sg-gateway", "Anthropic-Version": "2023-01-01"}, CRED)
    assert headers == {
        "x-api-key": "sk-ant-upstream",
        "anthropic-version": "2023-01-01",
        "content-type": "application/json",
    }
    assert ma.upstream_headers({}, CRED)["anthropic-version"] == "2023-06-01"
    assert ma.upstream_headers({"anthropic-beta": "a,b"}, CRED)["anthropic-beta"] == "a,b"


# --- Messages request -> chat completions --------------------------------------------------------------


def test_messages_request_becomes_a_chat_request() -> None:
    req = ma.parse_messages_request(
        body(
            system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief"}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "42"}],
                        },
                        {"type": "text", "text": "And?"},
                    ],
                },
            ],
            tools=[{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            stop_sequences=["END"],
            temperature=0.2,
            metadata={"user_id": "u-7"},
            stream=True,
        )
    )
    chat = ma.to_chat_request(req)
    assert chat.max_output_tokens == 256 and chat.stream and chat.include_usage
    assert chat.messages == [
        {"role": "system", "content": "Be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"a"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},
        {"role": "user", "content": "And?"},
    ]
    b = chat.body
    assert b["tools"] == [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object"}, "description": "Look up"},
        }
    ]
    assert (b["tool_choice"], b["parallel_tool_calls"], b["stop"], b["max_tokens"]) == (
        "required",
        False,
        ["END"],
        256,
    )
    assert (b["temperature"], b["user"], b["stream_options"]) == (0.2, "u-7", {"include_usage": True})


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
def test_tool_choice_translation(choice: JSONObject, expected: Any) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    chat = ma.to_chat_request(ma.parse_messages_request(body(tools=tools, tool_choice=choice)))
    assert chat.body["tool_choice"] == expected


def test_thinking_is_refused_unless_the_model_reasons_and_server_tools_are_refused() -> None:
    req = ma.parse_messages_request(body(thinking={"type": "enabled", "budget_tokens": 2000}))
    with pytest.raises(ma.MessagesApiError) as caught:
        ma.to_chat_request(req)
    assert caught.value.status == 400 and caught.value.message.startswith("thinking:")
    assert ma.to_chat_request(req, supports_reasoning=True).body["reasoning_effort"] == "low"
    disabled = ma.parse_messages_request(body(thinking={"type": "disabled"}))
    assert "reasoning_effort" not in ma.to_chat_request(disabled).body
    server = ma.parse_messages_request(body(tools=[{"type": "web_search_20250305", "name": "web_search"}]))
    with pytest.raises(ma.MessagesApiError, match=r"tools\.0"):
        ma.to_chat_request(server)


# --- chat.completion -> Messages response --------------------------------------------------------------


def completion(message: JSONObject, finish: str) -> JSONObject:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def test_completion_with_tool_calls_becomes_a_valid_message() -> None:
    msg = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "a"}'}}
        ],
    }
    usage = Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=60)
    out = ma.chat_completion_to_message(completion(msg, "tool_calls"), usage, model="my-model")
    parsed = Message.model_validate(out)
    assert parsed.id.startswith("msg_") and parsed.model == "my-model"
    assert parsed.stop_reason == "tool_use"
    assert [b.type for b in parsed.content] == ["text", "tool_use"]
    assert parsed.content[1].input == {"q": "a"}  # type: ignore[union-attr]
    assert (parsed.usage.input_tokens, parsed.usage.cache_read_input_tokens, parsed.usage.output_tokens) == (
        40,
        60,
        20,
    )


@pytest.mark.parametrize(
    ("finish", "text", "stops", "expected"),
    [
        ("stop", "Hi", None, "end_turn"),
        ("length", "Hi", None, "max_tokens"),
        ("content_filter", "", None, "refusal"),
        ("stop", "Hi END", ["END"], "stop_sequence"),
        ("stop", "Hi", ["END"], "end_turn"),
    ],
)
def test_stop_reasons(finish: str, text: str, stops: list[str] | None, expected: str) -> None:
    out = ma.chat_completion_to_message(
        completion({"role": "assistant", "content": text}, finish), None, model="m", stop_sequences=stops
    )
    assert Message.model_validate(out).stop_reason == expected
    assert out["stop_sequence"] == ("END" if expected == "stop_sequence" else None)


# --- chat chunks -> Messages SSE -----------------------------------------------------------------------


def decode_events(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.flush()


def run_translator(chunks: list[JSONObject], usage: Usage | None, **kw: Any) -> tuple[list[JSONObject], Any]:
    """Feed chunks, finish, and replay the SSE through the anthropic SDK's types and accumulator."""
    tr = ma.MessagesStreamTranslator(model="my-model", input_tokens_estimate=7, **kw)
    raw = b"".join(tr.feed(c) for c in chunks) + tr.finish(usage)
    assert tr.finish(usage) == b"" and tr.feed(chunks[0]) == b""  # finished is final
    events = decode_events(raw)
    payloads = [json.loads(e.data) for e in events]
    assert [e.event for e in events] == [p["type"] for p in payloads]
    snapshot = None
    bufs: dict[int, bytes] = {}
    for p in payloads:
        snapshot = accumulate_event(event=EVENT.validate_python(p), current_snapshot=snapshot, json_bufs=bufs)
    assert payloads[0]["type"] == "message_start" and payloads[-1]["type"] == "message_stop"
    assert payloads[-2]["type"] == "message_delta"
    # Block events are well nested: every start is stopped before the next starts.
    open_blocks: list[int] = []
    for p in payloads:
        if p["type"] == "content_block_start":
            assert not open_blocks
            open_blocks.append(p["index"])
        elif p["type"] == "content_block_delta":
            assert open_blocks == [p["index"]]
        elif p["type"] == "content_block_stop":
            assert open_blocks.pop() == p["index"]
    assert not open_blocks
    return payloads, snapshot


def chunks_of(adapter: Any, raw: bytes) -> list[JSONObject]:
    state = adapter.new_stream_state()
    return [c for e in decode_events(raw) for c in adapter.parse_stream_event(state, e)]


def test_recorded_openai_tool_stream_translates_to_a_messages_stream(fixtures_dir: Path) -> None:
    raw = (fixtures_dir / "openai/chat-stream-tool-call-include-usage.sse").read_bytes()
    adapter = OPENAI_COMPAT_ADAPTERS["openai"]
    state = adapter.new_stream_state()
    chunks = [c for e in decode_events(raw) for c in adapter.parse_stream_event(state, e)]
    payloads, message = run_translator(chunks, state.usage)
    calls = [b for b in message.content if b.type == "tool_use"]
    openai_calls = {}
    for c in chunks:
        for choice in c.get("choices") or ():
            for call in (choice.get("delta") or {}).get("tool_calls") or ():
                entry = openai_calls.setdefault(call["index"], {"name": None, "args": ""})
                entry["name"] = entry["name"] or call.get("function", {}).get("name")
                entry["args"] += call.get("function", {}).get("arguments") or ""
    assert [(c.name, c.input) for c in calls] == [
        (v["name"], json.loads(v["args"])) for v in openai_calls.values()
    ]
    assert message.stop_reason == "tool_use"
    assert state.usage is not None
    assert message.usage.output_tokens == state.usage.completion_tokens
    assert message.usage.input_tokens == state.usage.uncached_prompt_tokens
    assert payloads[0]["message"]["usage"]["input_tokens"] == 7  # the estimate, until the real figure


def test_recorded_gemini_stream_translates_and_usage_chunk_is_used_without_override(
    fixtures_dir: Path,
) -> None:
    raw = (fixtures_dir / "google/stream-basic-text.sse").read_bytes()
    adapter = GeminiAdapter(clock=lambda: 1.0)
    state = adapter.new_stream_state()
    chunks = [c for e in decode_events(raw) for c in adapter.parse_stream_event(state, e)]
    _, message = run_translator(chunks, None)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == state.content_text  # type: ignore[union-attr]
    assert state.usage is not None and message.usage.output_tokens == state.usage.completion_tokens
    assert message.stop_reason == "end_turn"


def test_text_then_tool_call_with_finish_in_the_same_chunk_and_an_estimated_usage() -> None:
    def chunk(delta: JSONObject, finish: str | None = None) -> JSONObject:
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " there"}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}, "tool_calls"),
    ]
    estimated = Usage(prompt_tokens=12, completion_tokens=9, source="estimated")
    payloads, message = run_translator(chunks, estimated)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Hello there"  # type: ignore[union-attr]
    assert message.content[1].input == {"a": 1}  # type: ignore[union-attr]
    assert message.content[1].id == "call_9"  # type: ignore[union-attr]
    assert payloads[-2]["usage"] == {
        "input_tokens": 12,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_an_empty_stream_still_closes_and_errors_use_anthropics_event() -> None:
    tr = ma.MessagesStreamTranslator(model="m")
    events = [json.loads(e.data) for e in decode_events(tr.finish(None))]
    assert [e["type"] for e in events] == ["message_start", "message_delta", "message_stop"]
    raw = ma.error_event(ma.messages_error(529, "server_error", "overloaded", "busy"))
    (event,) = decode_events(raw)
    assert event.event == "error"
    assert json.loads(event.data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }


# --- finish_reason split -------------------------------------------------------------------------------


def test_split_finish_chunk_separates_the_delta_from_the_finish_reason() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "end."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    first, second = ma.split_finish_chunk(chunk)
    assert first["choices"] == [{"index": 0, "delta": {"content": "end."}, "finish_reason": None}]
    assert first["usage"] is None
    assert second["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert second["usage"] == chunk["usage"] and second["id"] == "c"
    plain = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    assert ma.split_finish_chunk(plain) == [plain]
    role_only = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": "stop"}]}
    assert ma.split_finish_chunk(role_only) == [role_only]
    from openai.types.chat import ChatCompletionChunk

    for c in (first, second):
        ChatCompletionChunk.model_validate(c)
