"""Contract of the Messages, Responses and embeddings translations over ../shared/fixtures-apis.

Every recorded file there is a case (a coverage test fails when one is left out): answers are read by the
native meters/parsers and their usage is asserted against the figures in PROVENANCE.md; error bodies
become the right error; recorded request bodies pass our validators (or are refused exactly where the
provider refused them) and ground the request builders.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message
from openai.types import CreateEmbeddingResponse

from gateway.providers import embeddings as emb
from gateway.providers import messages_api as ma
from gateway.providers import responses_api as ra
from gateway.providers.base import Credential, ProviderError, SSEEvent
from gateway.providers.sse import SSEDecoder
from pricing.cost import Usage
from tests.conftest import SHARED

FIXTURES_APIS = SHARED / "fixtures-apis"
CRED = Credential(api_key="sk-upstream-SECRET", base_url="https://upstream.example/v1/")


@pytest.fixture(scope="module")
def apis_dir() -> Path:
    if not FIXTURES_APIS.is_dir():
        pytest.skip(f"recorded API fixtures not found at {FIXTURES_APIS} (no ../shared beside this clone)")
    return FIXTURES_APIS


def usage_tuple(usage: Usage | None) -> tuple[int, int, int, int, int]:
    assert usage is not None
    return (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens,
            usage.reasoning_tokens)  # fmt: skip


def sse_events(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.flush()


def jsonl_as_sse(raw: bytes) -> bytes:
    """Vercel's de-framed Responses stream, re-framed as PROVENANCE says: `event: <type>` + `data:`."""
    out = b""
    for line in raw.splitlines():
        if line.strip():
            out += b"event: " + json.loads(line)["type"].encode() + b"\ndata: " + line + b"\n\n"
    return out


# --- Anthropic -------------------------------------------------------------------------------------------


def check_provenance(d: Path, rel: str) -> None:
    text = (d / rel).read_text()
    for path in d.rglob("*"):
        other = path.relative_to(d).as_posix()
        if path.is_file() and other != rel:
            assert f"`{other}`" in text, f"{other} is not described in PROVENANCE.md"


def check_anthropic_request(d: Path, rel: str) -> None:
    body = json.loads((d / rel).read_bytes())
    count = "count-tokens" in rel
    req = ma.parse_messages_request(body, count_tokens=count)
    assert req.model == body["model"]
    assert req.stream is bool(body.get("stream"))
    headers = {"X-Api-Key": "sk-sg-client-key", "anthropic-beta": "interleaved-thinking-2025-05-14"}
    up = ma.build_native_request(req, "claude-upstream", CRED, headers, count_tokens=count)
    sent = json.loads(up.body)
    assert sent == {**body, "model": "claude-upstream"}, "the native path relays the body, model replaced"
    assert up.url == "https://upstream.example/v1/messages" + ("/count_tokens" if count else "")
    assert up.headers["x-api-key"] == CRED.api_key
    assert up.headers["anthropic-version"] == "2023-06-01"
    assert up.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert "sk-sg-client-key" not in json.dumps(up.headers)
    if not count:
        with pytest.raises(ma.MessagesApiError, match="max_tokens"):
            ma.parse_messages_request({k: v for k, v in body.items() if k != "max_tokens"})
    estimate, estimator = ma.count_input_tokens(req)
    assert estimate > 0 and estimator


def check_count_tokens(d: Path, rel: str) -> None:
    expected = {"anthropic/count-tokens-basic.json": 19, "anthropic/count-tokens-thinking-tools.json": 671}[
        rel
    ]
    raw = (d / rel).read_bytes()
    assert ma.count_tokens_result(raw) == expected
    assert ma.count_tokens_body(expected) == json.loads(raw)
    req = ma.parse_messages_request(json.loads((d / rel.replace(".json", ".request.json")).read_bytes()),
                                    count_tokens=True)  # fmt: skip
    estimate, _ = ma.count_input_tokens(req)
    if rel.endswith("thinking-tools.json"):
        # Tool definitions are counted: the estimate is far above the user text's handful of tokens.
        bare = ma.parse_messages_request({"model": req.model, "messages": req.messages}, count_tokens=True)
        assert estimate > ma.count_input_tokens(bare)[0] + 20
        # Translated, `thinking` is refused unless the target reasons.
        with pytest.raises(ma.MessagesApiError) as caught:
            ma.to_chat_request(req)
        assert caught.value.status == 400 and "thinking" in caught.value.message
        chat = ma.to_chat_request(req, supports_reasoning=True)
        assert chat.body["reasoning_effort"] == "medium" and chat.body["tool_choice"] == "required"
    else:
        assert 10 <= estimate <= 30  # tiktoken's count of the same text is close to Claude's 19


def check_count_tokens_error(d: Path, rel: str) -> None:
    raw = (d / rel).read_bytes()
    err = ma.parse_native_error(404, raw)
    assert (err.status, err.error_type, err.message) == (
        404,
        "not_found_error",
        "model: claude-does-not-exist",
    )
    assert err.envelope() == {"type": "error", "error": {"type": "not_found_error", "message": err.message}}
    with pytest.raises(ProviderError):
        ma.count_tokens_result(raw)


ANTHROPIC_ANSWERS = {
    # rel: (usage tuple, stop_reason, text prefix) — figures from PROVENANCE.md
    "anthropic/messages-redacted-thinking.json": (
        (92, 196, 0, 0, 0),
        "end_turn",
        "I notice that your message",
    ),
    "anthropic/messages-thinking-tool-use.json": ((398, 155, 0, 0, 0), "tool_use", "The user is asking"),
    "anthropic/messages-stream-redacted-thinking.sse": (
        (92, 189, 0, 0, 0),
        "end_turn",
        "I notice that you've sent",
    ),
    "anthropic/messages-stream-thinking-server-tool-use.sse": (
        (4714, 304, 0, 0, 0),
        "end_turn",
        "Let me calculate",
    ),
}


def check_anthropic_answer(d: Path, rel: str) -> None:
    usage, stop, prefix = ANTHROPIC_ANSWERS[rel]
    raw = (d / rel).read_bytes()
    if rel.endswith(".json"):
        Message.model_validate_json(raw)  # the recording is what the SDK reads: our relay sends it as-is
        native = ma.parse_native_response(raw)
        assert usage_tuple(native.usage) == usage
        assert native.stop_reason == stop
        assert native.content_text.startswith(prefix)
        assert native.message_id and native.message_id.startswith("msg_")
        return
    meter = ma.MessagesStreamMeter()
    events = sse_events(raw)
    for event in events:
        meter.feed(event)
        if event.event == "message_start":
            provisional = meter.usage
            assert provisional is not None
    assert meter.done and meter.error is None
    assert usage_tuple(meter.usage) == usage
    assert meter.stop_reason == stop
    assert meter.content_text.startswith(prefix)
    if "server-tool" in rel:
        assert provisional.prompt_tokens == 2293  # message_start's figure, replaced by message_delta's
        assert "1️⃣" in meter.content_text  # the keycap split across two deltas is whole again
    else:
        assert provisional.completion_tokens == 88  # message_start already reports 88, not 1


# --- OpenAI Responses ---------------------------------------------------------------------------------------

RESPONSES_ANSWERS = {
    "openai/responses-text-basic.json": ((14, 8, 0, 0, 0), "The capital of France is Paris."),
    "openai/responses-function-call.json": ((40, 18, 0, 0, 0), '{"country":"PotatoLand"}'),
    "openai/responses-implicit-cache-hit.json": ((2087, 124, 2048, 0, 0), ""),
    "openai/responses-prompt-cache-hit.json": ((4020, 5, 4012, 0, 0), "OK"),
    "openai/responses-reasoning-function-call.json": ((40, 148, 0, 0, 128), ""),
    "openai/responses-reasoning-summary-text.json": ((34, 226, 0, 0, 59), ""),
    "openai/responses-stream-text.sse": ((20, 10, 0, 0, 0), "2+2 = 4"),
    "openai/responses-stream-function-call-2025-03.sse": ((255, 16, 0, 0, 0), '{"'),
    "openai/responses-stream-function-call-reasoning.sse": ((53, 469, 0, 0, 448), ""),
    "openai/responses-stream-reasoning-text-function-call.sse": ((63, 69, 0, 0, 26), ""),
}


def check_responses_answer(d: Path, rel: str) -> None:
    usage, prefix = RESPONSES_ANSWERS[rel]
    raw = (d / rel).read_bytes()
    if rel.endswith(".json"):
        native = ra.parse_native_response(200, {}, raw)
        assert usage_tuple(native.usage) == usage
        assert native.status == "completed"
        assert native.content_text.startswith(prefix)
        total = json.loads(raw)["usage"]["total_tokens"]
        assert native.usage is not None and native.usage.total_tokens == total
        return
    meter = ra.ResponsesStreamMeter()
    events = sse_events(raw)
    for event in events:
        assert event.event == json.loads(event.data)["type"]  # framing: the event name is the type
        meter.feed(event)
        if not meter.done:
            assert meter.usage is None  # usage is null until response.completed
    assert meter.done and meter.error is None and meter.status == "completed"
    assert usage_tuple(meter.usage) == usage
    assert meter.content_text.startswith(prefix)
    if "2025-03" not in rel:
        # Recordings from 2025-09 on number their events from 0 (the translator must do the same).
        numbers = [json.loads(e.data)["sequence_number"] for e in events]
        assert numbers == list(range(len(events)))


def check_responses_stream_error(d: Path, rel: str) -> None:
    data = jsonl_as_sse((d / rel).read_bytes())
    meter = ra.ResponsesStreamMeter()
    for event in sse_events(data):
        meter.feed(event)
    assert meter.error is not None
    assert (meter.error.status, meter.error.code) == (429, "insufficient_quota")
    assert meter.error.message.startswith("You exceeded your current quota")
    assert meter.done and meter.status == "failed" and meter.usage is None


RESPONSES_ERRORS = {
    "openai/responses-error-400-code-null.json": (400, None, "input"),
    "openai/responses-error-400-invalid-value-stream-request.json": (
        400,
        "decimal_below_min_value",
        "temperature",
    ),
    "openai/responses-error-400-model-not-found.json": (400, "model_not_found", "model"),
    "openai/embeddings-error-404-model-not-found.json": (404, "model_not_found", None),
}


def check_openai_error(d: Path, rel: str) -> None:
    status, code, param = RESPONSES_ERRORS[rel]
    raw = (d / rel).read_bytes()
    if "embeddings" in rel:
        req = emb.parse_embeddings_request(
            json.loads((d / rel.replace(".json", ".request.json")).read_bytes())
        )
        with pytest.raises(ProviderError) as caught:
            emb.parse_openai_response(status, {}, raw, req)
    else:
        with pytest.raises(ProviderError) as caught:
            ra.parse_native_response(status, {}, raw)
    err = caught.value
    assert (err.status, err.code, err.param, err.type) == (status, code, param, "invalid_request_error")
    assert err.message == json.loads(raw)["error"]["message"]


def check_responses_request(d: Path, rel: str) -> None:
    body = json.loads((d / rel).read_bytes())
    if body.get("temperature") == -1:
        # OpenAI refused this one (decimal_below_min_value on temperature): so do we, before any call.
        with pytest.raises(ProviderError) as caught:
            ra.parse_responses_request(body)
        assert caught.value.param == "temperature" and caught.value.status == 400
        return
    req = ra.parse_responses_request(body)
    up = ra.build_native_request(req, "gpt-upstream", CRED)
    assert json.loads(up.body) == {**body, "model": "gpt-upstream"}
    assert up.headers["Authorization"] == f"Bearer {CRED.api_key}"
    if rel.endswith("responses-input-tokens.request.json"):
        up = ra.build_native_request(req, "gpt-upstream", CRED, input_tokens=True)
        assert up.url.endswith("/responses/input_tokens")
    # The translated path carries every recorded conversation (messages, function calls, their outputs).
    chat = ra.to_chat_request(req)
    messages = chat.messages
    roles = [m["role"] for m in messages]
    items = body["input"]
    assert roles.count("user") == sum(1 for i in items if i.get("role") == "user")
    assert roles.count("tool") == sum(1 for i in items if i.get("type") == "function_call_output")
    calls = [c for m in messages for c in m.get("tool_calls", [])]
    assert [c["id"] for c in calls] == [i["call_id"] for i in items if i.get("type") == "function_call"]
    if body.get("instructions"):
        assert messages[0] == {"role": "system", "content": body["instructions"]}
    assert len(chat.body.get("tools", [])) == len(body.get("tools", []))
    estimate, _ = ra.count_input_tokens(req)
    assert estimate > 0


def check_input_tokens(d: Path, rel: str) -> None:
    raw = (d / rel).read_bytes()
    assert ra.parse_input_tokens(raw) == 51
    assert ra.input_tokens_body(51) == json.loads(raw)
    req = ra.parse_responses_request(json.loads((d / rel.replace(".json", ".request.json")).read_bytes()))
    estimate, _ = ra.count_input_tokens(req)
    assert 25 <= estimate <= 100  # OpenAI counted 51 with the tool definition


# --- embeddings ---------------------------------------------------------------------------------------------

EMBEDDING_ANSWERS = {
    # rel: (prompt tokens, source, dimensions, vectors)
    "openai/embeddings-base64-dim128.json": (4, "provider", 128, 1),
    "openai/embeddings-base64-two-inputs.json": (2, "provider", 1536, 2),
    "google/embed-content-batch-768.json": (None, "estimated", 768, 1),
    "google/embed-content-batch-usage-metadata.json": (11, "provider", 3072, 1),
    "google/embed-content-vertex-usage-metadata.json": (11, "provider", 3072, 1),
}


def _request_for(d: Path, rel: str) -> dict[str, Any]:
    return json.loads((d / rel.replace(".json", ".request.json")).read_bytes())


def check_embedding_answer(d: Path, rel: str) -> None:
    tokens, source, dims, count = EMBEDDING_ANSWERS[rel]
    raw = (d / rel).read_bytes()
    if rel.startswith("openai/"):
        req = emb.parse_embeddings_request(_request_for(d, rel))
        result = emb.parse_openai_response(200, {}, raw, req)
        assert result.body == json.loads(raw)  # relayed unchanged
        for item in result.body["data"]:
            vector = emb.decode_vector(item["embedding"])
            assert len(vector) == dims
            assert emb.encode_vector(vector, "base64") == item["embedding"]  # little-endian float32, exact
    else:
        recorded = _request_for(d, rel)
        texts = [r["content"]["parts"][0]["text"] for r in recorded.get("requests", [recorded])]
        req = emb.parse_embeddings_request(
            {"model": "gemini-embedding", "input": texts, "encoding_format": "base64"}
        )
        result = emb.parse_gemini_response(200, {}, raw, req, model="gemini-embedding")
        values = json.loads(raw)
        values = (values.get("embeddings") or [values.get("embedding")])[0]["values"]
        decoded = emb.decode_vector(result.body["data"][0]["embedding"])
        assert decoded == list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))
        assert len(base64.b64decode(result.body["data"][0]["embedding"])) == 4 * dims
        as_floats = emb.parse_embeddings_request({**req.body, "encoding_format": "float"})
        floats = emb.parse_gemini_response(200, {}, raw, as_floats, model="gemini-embedding")
        assert floats.body["data"][0]["embedding"] == values
        # The SDK type holds number arrays (the SDK decodes base64 itself before validating).
        CreateEmbeddingResponse.model_validate(floats.body)
    assert len(result.body["data"]) == count
    assert [item["index"] for item in result.body["data"]] == list(range(count))
    assert result.usage.source == source
    if tokens is None:
        # No usageMetadata in this recording: counted with tiktoken ("Hello, world!" is 4 tokens).
        assert result.usage.estimator == "tiktoken:cl100k_base" and result.usage.prompt_tokens == 4
    else:
        assert result.usage.prompt_tokens == tokens
    assert result.body["usage"]["prompt_tokens"] == result.usage.prompt_tokens


def check_embedding_request(d: Path, rel: str) -> None:
    recorded = json.loads((d / rel).read_bytes())
    if rel.startswith("openai/"):
        req = emb.parse_embeddings_request(recorded)
        up = emb.build_openai_request(req, "text-embedding-upstream", CRED)
        assert json.loads(up.body) == {**recorded, "model": "text-embedding-upstream"}
        return
    # Gemini: the OpenAI-format request that says the same builds the recorded body (taskType aside,
    # which the OpenAI format has no field for).
    parts = recorded.get("requests", [recorded])
    texts = [p["content"]["parts"][0]["text"] for p in parts]
    body: dict[str, Any] = {"model": "x", "input": texts}
    if "outputDimensionality" in parts[0]:
        body["dimensions"] = parts[0]["outputDimensionality"]
    model = parts[0].get("model", "models/gemini-embedding-2").removeprefix("models/")
    up = emb.build_gemini_request(emb.parse_embeddings_request(body), model, CRED)
    assert up.url == f"https://upstream.example/v1/models/{model}:batchEmbedContents"
    assert up.headers["x-goog-api-key"] == CRED.api_key
    built = json.loads(up.body)["requests"]
    for mine, theirs in zip(built, parts, strict=True):
        assert mine["content"] == theirs["content"]
        assert mine["model"] == f"models/{model}"
        assert mine.get("outputDimensionality") == theirs.get("outputDimensionality")


def check_gemini_error(d: Path, rel: str) -> None:
    raw = (d / rel).read_bytes()
    req = emb.parse_embeddings_request({"model": "nonexistent-model", "input": "Hello, world!"})
    with pytest.raises(ProviderError) as caught:
        emb.parse_gemini_response(404, {}, raw, req, model="nonexistent-model")
    assert caught.value.status == 404
    assert caught.value.message.startswith("models/nonexistent-model is not found")


# --- the cases --------------------------------------------------------------------------------


def handler_for(rel: str) -> Callable[[Path, str], None]:
    """Which check a file gets, by name. A file no rule claims fails the coverage test below."""
    if rel == "PROVENANCE.md":
        return check_provenance
    folder, name = rel.split("/", 1)
    if name.endswith(".request.json"):
        if folder == "anthropic":
            return check_anthropic_request
        if name.startswith("responses-"):
            return check_responses_request
        return check_embedding_request
    if rel in ANTHROPIC_ANSWERS:
        return check_anthropic_answer
    if name.startswith("count-tokens-error"):
        return check_count_tokens_error
    if name.startswith("count-tokens-"):
        return check_count_tokens
    if rel in RESPONSES_ANSWERS:
        return check_responses_answer
    if rel in RESPONSES_ERRORS:
        return check_openai_error
    if name == "responses-input-tokens.json":
        return check_input_tokens
    if name.startswith("responses-stream-error"):
        return check_responses_stream_error
    if rel in EMBEDDING_ANSWERS:
        return check_embedding_answer
    if folder == "google" and "error" in name:
        return check_gemini_error
    raise LookupError(f"no contract check for {rel}")


def _cases() -> list[Any]:
    if not FIXTURES_APIS.is_dir():
        return []
    return [
        pytest.param(p.relative_to(FIXTURES_APIS).as_posix(), id=p.relative_to(FIXTURES_APIS).as_posix())
        for p in sorted(FIXTURES_APIS.rglob("*"))
        if p.is_file()
    ]


CASES = _cases()


@pytest.mark.parametrize("rel", CASES)
def test_recorded_api_fixture(apis_dir: Path, rel: str) -> None:
    handler_for(rel)(apis_dir, rel)


def test_every_api_fixture_file_is_exercised(apis_dir: Path) -> None:
    """Every file is a case with a check, and every answer table entry names a file that exists."""
    on_disk = {p.relative_to(apis_dir).as_posix() for p in apis_dir.rglob("*") if p.is_file()}
    assert {case.values[0] for case in CASES} == on_disk
    for rel in on_disk:
        handler_for(rel)  # raises for a file no check claims
    tables = {**ANTHROPIC_ANSWERS, **RESPONSES_ANSWERS, **RESPONSES_ERRORS, **EMBEDDING_ANSWERS}
    assert set(tables) <= on_disk, f"facts for missing files: {set(tables) - on_disk}"
    answers = {r for r in on_disk if not r.endswith(".request.json") and r != "PROVENANCE.md"}
    special = ("count-tokens", "input-tokens", "stream-error", "google/embed-content-error")
    claimed = set(tables) | {r for r in answers if any(s in r for s in special)}
    assert answers == claimed, f"answers without facts: {answers - claimed}"
