"""The adapter contract: one suite, the same assertions, for every provider adapter of the registry.

Two sources feed it:

- the mock upstream (`devtools.mock_upstream`), called in-process as an ASGI app with the very request the
  adapter built: plain text, system prompt, multi-turn, tool-call round trip, streams, usage with cache and
  reasoning details, no usage, HTTP errors, mid-stream errors and cut streams, for every adapter
  (OpenAI-compatible profiles, Anthropic, Gemini);
- every recorded provider fixture in ../shared/fixtures, mapped to its adapter by folder: responses,
  streams, error bodies, mid-stream errors, and the recorded request bodies (which ground the request
  validators the contract applies to the adapters' own requests). No fixture file may be left out.

Each wire format has a small reader that turns a provider request back into a canonical conversation
(system texts; turns of text, tool calls and tool results) and a validator for the rules the provider
enforces; the OpenAI reader applied to the client's messages is the reference every adapter must match.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from devtools.mock_upstream import (
    MockConfig,
    MockUpstreamApp,
    create_mock_app,
    error_body,
    parse_directives,
    reply_text,
    reply_words,
)
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import (
    ChatRequest,
    ChatResult,
    Credential,
    JSONObject,
    ProviderAdapter,
    ProviderError,
    StreamState,
    UpstreamRequest,
)
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai_compat import OpenAICompatAdapter
from gateway.providers.registry import build_adapters
from gateway.providers.sse import SSEDecoder
from pricing.cost import Usage
from tests.conftest import FIXTURES

KEY = "sk-contract-0123456789SECRET"
BASE_URL = "https://upstream.example/v1/"
CRED = Credential(api_key=KEY, base_url=BASE_URL)
UPSTREAM_MODEL = "contract-model-1"
NOW = 1_760_000_000.0  # a fixed clock: chunks of one stream must compare equal however it is split

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "function_call"}

# The production registry, with fixed clocks for the adapters that stamp `created` themselves.
ADAPTERS: dict[str, ProviderAdapter] = {}
for _name, _adapter in build_adapters().items():
    if isinstance(_adapter, AnthropicAdapter):
        ADAPTERS[_name] = AnthropicAdapter(clock=lambda: NOW)
    elif isinstance(_adapter, GeminiAdapter):
        ADAPTERS[_name] = GeminiAdapter(clock=lambda: NOW)
    else:
        ADAPTERS[_name] = _adapter
ADAPTER_NAMES = sorted(ADAPTERS)

# Fixture folder -> adapter name.
FOLDER_ADAPTER = {
    "openai": "openai",
    "xai": "xai",
    "deepseek": "deepseek",
    "groq": "groq",
    "openrouter": "openrouter",
    "anthropic": "anthropic",
    "google": "gemini",
}


# ---------------------------------------------------------------------------------------------------
# Canonical conversations: what a provider request says, independent of its wire format.

Item = tuple[Any, ...]  # ("text", str) | ("media", str) | ("call", name, args) | ("result", name, content)


@dataclass
class Conversation:
    system: list[str] = field(default_factory=list)
    turns: list[tuple[str, list[Item]]] = field(default_factory=list)  # role: "user" | "assistant"

    def push(self, role: str, items: list[Item]) -> None:
        """Consecutive turns of one role are one turn (tool results are the user side's turn)."""
        if not items:
            return
        if self.turns and self.turns[-1][0] == role:
            self.turns[-1][1].extend(items)
        else:
            self.turns.append((role, list(items)))

    def to_openai_messages(self) -> list[JSONObject] | None:
        """The same conversation as OpenAI messages, when it is plain text (else None)."""
        messages: list[JSONObject] = [{"role": "system", "content": s} for s in self.system]
        for role, items in self.turns:
            if any(item[0] != "text" for item in items):
                return None
            messages.append({"role": role, "content": "".join(item[1] for item in items)})
        return messages


def _json_or_text(value: Any) -> Any:
    if isinstance(value, list):  # content parts / blocks
        value = "".join(p.get("text", "") for p in value if isinstance(p, dict))
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class Auth:
    header: str  # lower case
    value: Callable[[str], str]


class OpenAIWire:
    name = "openai"
    auth = Auth("authorization", lambda key: f"Bearer {key}")
    # The mock's in-stream error has no HTTP status inside, so the adapter's default applies.
    midstream = (500, 502)

    @staticmethod
    def read(body: JSONObject) -> Conversation:
        conv = Conversation()
        names: dict[str, str] = {}
        for msg in body.get("messages") or ():
            role, content = msg.get("role"), msg.get("content")
            if role in ("system", "developer"):
                conv.system.extend(t for t in _openai_texts(content) if t)
            elif role in ("user", "assistant"):
                items: list[Item] = [("text", t) for t in _openai_texts(content) if t]
                items += [("media", p["image_url"]["url"]) for p in _parts(content, "image_url")]
                for call in msg.get("tool_calls") or ():
                    fn = call["function"]
                    names[call["id"]] = fn["name"]
                    items.append(("call", fn["name"], json.loads(fn["arguments"] or "{}")))
                conv.push(role, items)
            elif role == "tool":
                call_id = msg.get("tool_call_id")
                conv.push("user", [("result", names.get(call_id, call_id), _json_or_text(content))])
        return conv

    @staticmethod
    def tools(body: JSONObject) -> list[tuple[str, Any]]:
        return [(t["function"]["name"], t["function"].get("parameters")) for t in body.get("tools") or ()]

    @staticmethod
    def problems(body: JSONObject, url: str = "", stream: bool | None = None) -> list[str]:
        """What OpenAI's chat-completions endpoint rejects a request for."""
        out: list[str] = []
        if url and not urlsplit(url).path.endswith("/chat/completions"):
            out.append(f"url {url} is not /chat/completions")
        if not isinstance(body.get("model"), str) or not body["model"]:
            out.append("model missing")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return [*out, "messages missing or empty"]
        pending: set[str] = set()  # tool calls not answered yet
        seen: set[str] = set()
        for i, msg in enumerate(messages):
            role = msg.get("role") if isinstance(msg, dict) else None
            if role not in ("system", "developer", "user", "assistant", "tool"):
                out.append(f"messages[{i}]: bad role {role!r}")
                continue
            if role != "tool" and pending:
                out.append(f"messages[{i}]: tool calls {sorted(pending)} were not answered")
                pending.clear()
            if role == "assistant":
                for call in msg.get("tool_calls") or ():
                    fn = call.get("function") or {}
                    if not isinstance(call.get("id"), str) or call.get("type") != "function":
                        out.append(f"messages[{i}]: tool call without id/type")
                    if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                        out.append(f"messages[{i}]: tool call function needs name and arguments strings")
                    elif not isinstance(json.loads(fn["arguments"] or "{}"), dict):
                        out.append(f"messages[{i}]: tool call arguments are not a JSON object")
                    pending.add(call.get("id"))
                    seen.add(call.get("id"))
            if role == "tool":
                if msg.get("tool_call_id") not in seen:
                    out.append(f"messages[{i}]: tool_call_id answers no earlier tool call")
                pending.discard(msg.get("tool_call_id"))
        for i, tool in enumerate(body.get("tools") or ()):
            if tool.get("type") != "function" or not isinstance(
                (tool.get("function") or {}).get("name"), str
            ):
                out.append(f"tools[{i}] is not a named function tool")
        if stream is not None and bool(body.get("stream")) != stream:
            out.append(f"stream is {body.get('stream')!r}, expected {stream}")
        return out

    @staticmethod
    def midstream_error_event(status: int, named: bool) -> bytes:
        prefix = b"event: error\n" if named else b""  # Groq names it; others send data only
        return prefix + b"data: " + error_body("openai", status) + b"\n\n"


def _openai_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p.get("text", "") for p in _parts(content, "text")]


def _parts(content: Any, kind: str) -> list[JSONObject]:
    if not isinstance(content, list):
        return []
    return [p for p in content if isinstance(p, dict) and p.get("type") == kind]


class AnthropicWire:
    name = "anthropic"
    auth = Auth("x-api-key", lambda key: key)
    midstream = (529, 529)  # overloaded_error: the mid-stream error Anthropic actually sends
    TOP_LEVEL = frozenset(
        {"model", "max_tokens", "messages", "system", "stream", "tools", "tool_choice", "temperature",
         "top_p", "top_k", "stop_sequences", "metadata", "thinking", "cache_control", "context_management",
         "output_config", "service_tier", "container", "mcp_servers"}
    )  # fmt: skip

    @staticmethod
    def read(body: JSONObject) -> Conversation:
        conv = Conversation()
        system = body.get("system")
        if isinstance(system, str):
            conv.system.append(system)
        elif isinstance(system, list):
            conv.system.extend(b["text"] for b in system)
        names: dict[str, str] = {}
        for msg in body.get("messages") or ():
            content = msg["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            items: list[Item] = []
            for block in blocks:
                kind = block.get("type")
                if kind == "text":
                    items.append(("text", block["text"]))
                elif kind in ("image", "document"):
                    source = block["source"]
                    items.append(("media", source.get("url") or source.get("media_type")))
                elif kind == "tool_use":
                    names[block["id"]] = block["name"]
                    items.append(("call", block["name"], block["input"]))
                elif kind == "tool_result":
                    name = names.get(block["tool_use_id"], block["tool_use_id"])
                    items.append(("result", name, _json_or_text(block.get("content", ""))))
            conv.push(msg["role"], items)
        return conv

    @staticmethod
    def tools(body: JSONObject) -> list[tuple[str, Any]]:
        return [(t["name"], t.get("input_schema")) for t in body.get("tools") or ()]

    @classmethod
    def problems(cls, body: JSONObject, url: str = "", stream: bool | None = None) -> list[str]:
        """What the Messages API rejects: its required fields, alternation and tool-block rules."""
        out = [f"unknown top-level field {k!r}" for k in body if k not in cls.TOP_LEVEL]
        if url and not urlsplit(url).path.endswith("/messages"):
            out.append(f"url {url} is not /messages")
        if not isinstance(body.get("model"), str) or not body["model"]:
            out.append("model missing")
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            out.append("max_tokens missing (the Messages API requires it)")
        system = body.get("system")
        if not (system is None or isinstance(system, str)) and not (
            isinstance(system, list)
            and all(b.get("type") == "text" and isinstance(b.get("text"), str) and b["text"] for b in system)
        ):
            out.append("system must be a string or non-empty text blocks")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return [*out, "messages missing or empty"]
        previous_calls: set[str] = set()
        for i, msg in enumerate(messages):
            role = msg.get("role")
            # Roles alternate (older API versions and Bedrock reject same-role runs; the adapter merges
            # them). The first turn is the user's here: the API accepts an assistant-first history now,
            # but no conversation of this suite starts so.
            if role != ("user" if i % 2 == 0 else "assistant"):
                out.append(f"messages[{i}]: roles must alternate starting with user, got {role!r}")
            content = msg.get("content")
            if isinstance(content, str):
                blocks: list[JSONObject] = [{"type": "text", "text": content}]
            elif isinstance(content, list) and content:
                blocks = content
            else:
                out.append(f"messages[{i}]: content must be a string or a non-empty list")
                continue
            calls = set()
            answered: list[str] = []
            seen_other = False
            for j, block in enumerate(blocks):
                kind = block.get("type")
                where = f"messages[{i}].content[{j}]"
                if kind == "text":
                    if not isinstance(block.get("text"), str) or not block["text"]:
                        out.append(f"{where}: text blocks must be non-empty")
                    seen_other = True
                elif kind in ("image", "document"):
                    if not isinstance(block.get("source"), dict):
                        out.append(f"{where}: {kind} without source")
                    seen_other = True
                elif kind == "tool_use":
                    if role != "assistant":
                        out.append(f"{where}: tool_use outside an assistant turn")
                    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                        out.append(f"{where}: tool_use needs id and name")
                    if not isinstance(block.get("input"), dict):
                        out.append(f"{where}: tool_use input must be an object")
                    calls.add(block.get("id"))
                elif kind == "tool_result":
                    if role != "user":
                        out.append(f"{where}: tool_result outside a user turn")
                    if seen_other:
                        out.append(f"{where}: tool_result blocks must come first in the user turn")
                    if block.get("tool_use_id") not in previous_calls:
                        out.append(f"{where}: tool_result answers no tool_use of the previous turn")
                    answered.append(block.get("tool_use_id"))
                elif kind not in ("thinking", "redacted_thinking"):
                    out.append(f"{where}: unexpected block type {kind!r}")
            if role == "user" and previous_calls and set(answered) != previous_calls:
                out.append(f"messages[{i}]: tool_use ids {sorted(previous_calls)} need tool_result blocks")
            previous_calls = calls if role == "assistant" else set()
        for i, tool in enumerate(body.get("tools") or ()):
            if "type" in tool and not tool.get("type", "").startswith("custom"):
                continue  # a server tool (web_search_..., code_execution_...)
            if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
                out.append(f"tools[{i}] needs name and input_schema")
        choice = body.get("tool_choice")
        if choice is not None and choice.get("type") not in ("auto", "any", "tool", "none"):
            out.append(f"tool_choice type {choice.get('type')!r}")
        if stream is not None and bool(body.get("stream")) != stream:
            out.append(f"stream is {body.get('stream')!r}, expected {stream}")
        return out

    @staticmethod
    def midstream_error_event(status: int, named: bool) -> bytes:
        prefix = b"event: error\n" if named else b""
        return prefix + b"data: " + error_body("anthropic", status) + b"\n\n"


class GeminiWire:
    name = "gemini"
    auth = Auth("x-goog-api-key", lambda key: key)
    midstream = (503, 503)  # UNAVAILABLE, with its HTTP code inside the error object
    TOP_LEVEL = frozenset(
        {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
         "cachedContent", "labels"}
    )  # fmt: skip
    DATA_FIELDS = frozenset(
        {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
         "codeExecutionResult"}
    )  # fmt: skip
    PART_EXTRAS = frozenset({"thought", "thoughtSignature", "videoMetadata"})
    FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")

    @staticmethod
    def read(body: JSONObject) -> Conversation:
        conv = Conversation()
        for part in (body.get("systemInstruction") or {}).get("parts") or ():
            conv.system.append(part["text"])
        for content in body.get("contents") or ():
            items: list[Item] = []
            for part in content["parts"]:
                if "text" in part and not part.get("thought"):
                    if part["text"]:
                        items.append(("text", part["text"]))
                elif "functionCall" in part:
                    call = part["functionCall"]
                    items.append(("call", call["name"], call.get("args") or {}))
                elif "functionResponse" in part:
                    resp = part["functionResponse"]
                    response = resp["response"]
                    if set(response) == {"result"}:
                        response = response["result"]
                    items.append(("result", resp["name"], response))
                elif "inlineData" in part or "fileData" in part:
                    media = part.get("fileData") or part["inlineData"]
                    items.append(("media", media.get("fileUri") or media["mimeType"]))
            conv.push("assistant" if content.get("role") == "model" else "user", items)
        return conv

    @staticmethod
    def tools(body: JSONObject) -> list[tuple[str, Any]]:
        out = []
        for tool in body.get("tools") or ():
            for decl in tool.get("functionDeclarations") or ():
                schema = decl.get("parametersJsonSchema", decl.get("parameters_json_schema"))
                out.append((decl["name"], schema if schema is not None else decl.get("parameters")))
        return out

    @classmethod
    def problems(cls, body: JSONObject, url: str = "", stream: bool | None = None) -> list[str]:
        """What generateContent rejects: part shapes, roles, function call/response pairing."""
        out = [f"unknown top-level field {k!r}" for k in body if k not in cls.TOP_LEVEL]
        if url:
            parts = urlsplit(url)
            method = parts.path.rpartition(":")[2]
            if "/models/" not in parts.path or method not in ("generateContent", "streamGenerateContent"):
                out.append(f"url {url} is not models/{{model}}:generateContent")
            if stream is not None and (method == "streamGenerateContent") != stream:
                out.append(f"url {url}: stream={stream} needs the other method")
            if method == "streamGenerateContent" and parse_qs(parts.query).get("alt") != ["sse"]:
                out.append("streamGenerateContent without alt=sse answers a JSON array, not SSE")
        instruction = body.get("systemInstruction")
        if instruction is not None and not all(
            isinstance(p.get("text"), str) for p in instruction.get("parts") or [{}]
        ):
            out.append("systemInstruction must hold text parts")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return [*out, "contents missing or empty"]
        previous_calls: Counter[str] = Counter()
        for i, content in enumerate(contents):
            role = content.get("role", "user")
            if role != ("user" if i % 2 == 0 else "model"):
                out.append(f"contents[{i}]: roles must alternate user/model starting with user, got {role!r}")
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                out.append(f"contents[{i}]: parts must be a non-empty list")
                continue
            calls: Counter[str] = Counter()
            answers: Counter[str] = Counter()
            for j, part in enumerate(parts):
                where = f"contents[{i}].parts[{j}]"
                data = [k for k in part if k in cls.DATA_FIELDS]
                extra = [k for k in part if k not in cls.DATA_FIELDS and k not in cls.PART_EXTRAS]
                if len(data) != 1 or extra:
                    out.append(f"{where}: a part holds exactly one data field, got {sorted(part)}")
                    continue
                if "functionCall" in part:
                    call = part["functionCall"]
                    if role != "model":
                        out.append(f"{where}: functionCall outside a model turn")
                    if not cls.FUNCTION_NAME.match(call.get("name") or "") or not isinstance(
                        call.get("args", {}), dict
                    ):
                        out.append(f"{where}: functionCall needs a valid name and object args")
                    calls[call.get("name")] += 1
                elif "functionResponse" in part:
                    resp = part["functionResponse"]
                    if role != "user":
                        out.append(f"{where}: functionResponse outside a user turn")
                    if not isinstance(resp.get("response"), dict):
                        out.append(f"{where}: functionResponse.response must be an object")
                    answers[resp.get("name")] += 1
            if role == "user" and (previous_calls or answers) and answers != previous_calls:
                out.append(
                    f"contents[{i}]: function responses {dict(answers)} != calls {dict(previous_calls)}"
                )
            previous_calls = calls if role == "model" else Counter()
        for i, tool in enumerate(body.get("tools") or ()):
            for decl in tool.get("functionDeclarations") or ():
                if not cls.FUNCTION_NAME.match(decl.get("name") or ""):
                    out.append(f"tools[{i}]: bad function name {decl.get('name')!r}")
        return out

    @staticmethod
    def midstream_error_event(status: int, named: bool) -> bytes:
        prefix = b"event: error\n" if named else b""  # Gemini names no events; the adapter must not care
        return prefix + b"data: " + error_body("gemini", status) + b"\r\n\r\n"


Wire = type[OpenAIWire] | type[AnthropicWire] | type[GeminiWire]


def wire_of(adapter: ProviderAdapter) -> Wire:
    if isinstance(adapter, OpenAICompatAdapter):
        return OpenAIWire
    if isinstance(adapter, AnthropicAdapter):
        return AnthropicWire
    if isinstance(adapter, GeminiAdapter):
        return GeminiWire
    raise AssertionError(f"{adapter.name}: no wire format known to the contract suite; add one")


def expected_usage(wire: Wire, p: int, c: int, cached: int, write: int, reasoning: int) -> Usage:
    """The canonical usage for mock token counts, which the mock puts into each provider's own fields."""
    if wire is AnthropicWire:  # input_tokens excludes cache reads and writes; no reasoning field
        return Usage(prompt_tokens=p + cached + write, completion_tokens=c, cached_tokens=cached,
                     cache_write_tokens=write)  # fmt: skip
    if wire is GeminiWire:  # promptTokenCount includes cached; thoughts are output beside candidates
        return Usage(prompt_tokens=p, completion_tokens=c + reasoning, cached_tokens=cached,
                     reasoning_tokens=reasoning)  # fmt: skip
    return Usage(prompt_tokens=p, completion_tokens=c, cached_tokens=cached, cache_write_tokens=write,
                 reasoning_tokens=reasoning)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Driving adapters and the mock.


def chat_request(body: JSONObject) -> ChatRequest:
    return ChatRequest(
        model=body["model"],
        messages=body["messages"],
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        max_output_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        body=body,
    )


def build(adapter: ProviderAdapter, body: JSONObject) -> tuple[UpstreamRequest, JSONObject]:
    """build_request, checking it leaves the client's body alone; returns the request and its JSON."""
    before = copy.deepcopy(body)
    up = adapter.build_request(chat_request(body), UPSTREAM_MODEL, CRED)
    assert body == before, "build_request mutated the client's body"
    sent: JSONObject = json.loads(up.body)
    return up, sent


def check_request(adapter: ProviderAdapter, up: UpstreamRequest, sent: JSONObject, *, stream: bool) -> None:
    """A valid provider request, with the key in the provider's auth header and nowhere else."""
    wire = wire_of(adapter)
    assert up.method == "POST"
    assert up.url.startswith(BASE_URL.rstrip("/") + "/")
    assert wire.problems(sent, up.url, stream) == []
    headers = {k.lower(): v for k, v in up.headers.items()}
    assert headers[wire.auth.header] == wire.auth.value(KEY)
    assert [k for k, v in headers.items() if KEY in v] == [wire.auth.header]
    assert KEY not in up.url and KEY.encode() not in up.body
    assert UPSTREAM_MODEL in up.url or sent.get("model") == UPSTREAM_MODEL
    if stream and wire is OpenAIWire:  # the usage chunk is what a stream is billed by: always ask for it
        assert sent["stream_options"]["include_usage"] is True


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool  # the response ended properly (False: the mock dropped the connection)


async def _call_asgi(app: MockUpstreamApp, up: UpstreamRequest) -> Answer:
    """One HTTP exchange with an ASGI app, in-process (httpx's ASGITransport cannot end a cut stream)."""
    url = urlsplit(up.url)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": up.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in up.headers.items()],
        "server": (url.hostname, url.port or 443),
        "client": ("127.0.0.1", 50000),
    }
    delivered = False
    answer = Answer(0, {}, b"", False)
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": up.body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                answer.complete = True

    await app(scope, receive, send)
    answer.body = b"".join(parts)
    return answer


def exchange(app: MockUpstreamApp, up: UpstreamRequest) -> Answer:
    return asyncio.run(_call_asgi(app, up))


def sse_events_of(data: bytes, seed: int | None = None) -> list[Any]:
    """Decode a stream with the gateway's SSEDecoder; with a seed, fed in random 1..9-byte pieces."""
    decoder = SSEDecoder()
    pieces = [data]
    if seed is not None:
        rng = random.Random(seed)
        pieces, i = [], 0
        while i < len(data):
            n = rng.randint(1, 9)
            pieces.append(data[i : i + n])
            i += n
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


@dataclass
class StreamRun:
    state: StreamState
    chunks: list[JSONObject]
    error: ProviderError | None = None


def run_stream(adapter: ProviderAdapter, data: bytes, seed: int | None = None) -> StreamRun:
    state = adapter.new_stream_state()
    run = StreamRun(state, [])
    for event in sse_events_of(data, seed):
        try:
            run.chunks.extend(adapter.parse_stream_event(state, event))
        except ProviderError as exc:
            run.error = exc
            break
    return run


@dataclass
class Reassembled:
    """A stream put back together as the openai SDK does (by choice, tool calls by index)."""

    content: dict[int, str] = field(default_factory=dict)
    tool_calls: dict[int, dict[int, JSONObject]] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    usage: JSONObject | None = None
    generated: str = ""  # content, refusal and tool arguments in arrival order (what is billed as output)
    ids: set[str] = field(default_factory=set)


def reassemble(chunks: Sequence[JSONObject]) -> Reassembled:
    out = Reassembled()
    generated: list[str] = []
    for chunk in chunks:
        out.ids.add(chunk["id"])
        if chunk.get("usage"):
            out.usage = chunk["usage"]
        for choice in chunk["choices"]:
            index, delta = choice["index"], choice.get("delta") or {}
            for key in ("content", "refusal"):
                if delta.get(key):
                    generated.append(delta[key])
            if delta.get("content"):
                out.content[index] = out.content.get(index, "") + delta["content"]
            for tc in delta.get("tool_calls") or ():
                calls = out.tool_calls.setdefault(index, {})
                call = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                if tc.get("id"):
                    call["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    call["name"] = fn["name"]
                if fn.get("arguments"):
                    call["arguments"] += fn["arguments"]
                    generated.append(fn["arguments"])
            if choice.get("finish_reason"):
                out.finish[index] = choice["finish_reason"]
    out.generated = "".join(generated)
    return out


def generated_text(body: JSONObject) -> str:
    """Content, refusal and tool-call arguments of every choice: what the adapter reports as generated."""
    parts: list[str] = []
    for choice in body["choices"]:
        message = choice["message"]
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p.get("text"), str))
        if isinstance(message.get("refusal"), str):
            parts.append(message["refusal"])
        parts.extend(tc["function"]["arguments"] for tc in message.get("tool_calls") or ())
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------
# The shared assertions.


def assert_usage_invariants(usage: Usage) -> None:
    assert usage.source == "provider"
    for value in (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                  usage.cache_write_tokens, usage.reasoning_tokens):  # fmt: skip
        assert isinstance(value, int) and value >= 0
    assert usage.cached_tokens + usage.cache_write_tokens <= usage.prompt_tokens
    assert usage.reasoning_tokens <= usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def assert_client_usage_matches(client_usage: JSONObject, usage: Usage) -> None:
    """The usage object the client reads agrees with what is billed.

    Completion tokens may differ by the provider's own accounting (xAI leaves reasoning out of
    completion_tokens; the client gets xAI's numbers unchanged), but the totals and the input side agree.
    """
    assert client_usage["prompt_tokens"] == usage.prompt_tokens
    assert client_usage["total_tokens"] == usage.total_tokens
    details = client_usage.get("prompt_tokens_details") or {}
    assert (details.get("cached_tokens") or 0) == usage.cached_tokens


def assert_completion_contract(result: ChatResult) -> ChatCompletion:
    """A finished completion: an OpenAI chat.completion the SDK accepts, consistent with the result."""
    completion = ChatCompletion.model_validate(result.body)
    assert result.body["object"] == "chat.completion"
    assert completion.choices, "a completion needs at least one choice"
    assert result.finish_reason == completion.choices[0].finish_reason
    assert result.finish_reason in FINISH_REASONS
    assert result.content_text == generated_text(result.body)
    for choice in completion.choices:
        assert choice.message.role == "assistant"
        for call in choice.message.tool_calls or ():
            assert call.id and call.type == "function"
            assert isinstance(json.loads(call.function.arguments), dict)  # type: ignore[union-attr]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
    if result.usage is not None:
        assert_usage_invariants(result.usage)
        assert_client_usage_matches(result.body["usage"], result.usage)
    return completion


def assert_stream_contract(run: StreamRun, *, complete: bool = True) -> Reassembled:
    """Every chunk is an OpenAI chat.completion.chunk; the state agrees with what the client saw."""
    for chunk in run.chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["object"] == "chat.completion.chunk"
    r = reassemble(run.chunks)
    state = run.state
    assert len(r.ids) <= 1, f"one stream, one id: {r.ids}"
    assert state.content_text == r.generated
    for calls in r.tool_calls.values():
        for call in calls.values():
            assert call["id"] and call["name"], "a streamed tool call needs its id and name"
            assert isinstance(json.loads(call["arguments"] or "{}"), dict)
    if not complete:
        assert not state.done, "a stream that did not finish must not be done"
        return r
    assert run.error is None
    assert state.done, "a finished stream must say so (the gateway bills it as cut otherwise)"
    assert state.finish_reason in FINISH_REASONS
    assert r.finish.get(0) == state.finish_reason
    for index, calls in r.tool_calls.items():
        if calls:
            assert r.finish.get(index) == "tool_calls"
    if state.usage is not None:
        assert_usage_invariants(state.usage)
        assert r.usage is not None, "the usage the gateway bills must reach a client that asked for it"
        assert_client_usage_matches(r.usage, state.usage)
        last = run.chunks[-1]
        assert last["choices"] == [] or r.usage is last.get("usage"), "usage comes on the last chunk"
    return r


def assert_error_contract(err: ProviderError, status: int, message: str) -> None:
    assert err.status == status
    assert err.message == message
    envelope = err.envelope()["error"]
    assert set(envelope) == {"message", "type", "param", "code"}
    assert envelope["message"] == message and isinstance(envelope["type"], str) and envelope["type"]
    assert envelope["code"] is None or isinstance(envelope["code"], str)


# ---------------------------------------------------------------------------------------------------
# The contract against the mock upstream, for every adapter.

TOOLS: list[JSONObject] = [
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
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]

adapter_names = pytest.mark.parametrize("name", ADAPTER_NAMES)
both_modes = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


@pytest.fixture
def mock_app() -> MockUpstreamApp:
    return create_mock_app(MockConfig())


def ask(name: str, messages: list[JSONObject], *, stream: bool = False, **extra: Any) -> JSONObject:
    body: JSONObject = {"model": "client-model", "messages": messages, **extra}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def round_trip(
    app: MockUpstreamApp, name: str, body: JSONObject, *, seed: int = 1
) -> tuple[JSONObject, ChatResult | StreamRun]:
    """adapter → checked provider request → mock → adapter; returns the wire body and the parsed answer."""
    adapter = ADAPTERS[name]
    stream = bool(body.get("stream"))
    up, sent = build(adapter, body)
    check_request(adapter, up, sent, stream=stream)
    answer = exchange(app, up)
    assert answer.status == 200, answer.body
    assert app.requests[-1].headers[wire_of(adapter).auth.header] == wire_of(adapter).auth.value(KEY)
    if stream:
        whole = run_stream(adapter, answer.body)
        pieces = run_stream(adapter, answer.body, seed=seed)
        assert pieces.chunks == whole.chunks, "chunks must not depend on how the bytes were split"
        return sent, pieces
    return sent, adapter.parse_response(answer.status, answer.headers, answer.body)


@adapter_names
def test_plain_text(mock_app: MockUpstreamApp, name: str) -> None:
    messages = [{"role": "user", "content": "Say something [mock completion_tokens=5]"}]
    sent, result = round_trip(mock_app, name, ask(name, messages))
    assert isinstance(result, ChatResult)
    assert wire_of(ADAPTERS[name]).read(sent) == OpenAIWire.read({"messages": messages})
    completion = assert_completion_contract(result)
    assert completion.choices[0].message.content == reply_text(5) == result.content_text
    assert completion.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens == 5


@adapter_names
def test_system_prompt(mock_app: MockUpstreamApp, name: str) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello [mock completion_tokens=2]"},
    ]
    sent, result = round_trip(mock_app, name, ask(name, messages))
    conv = wire_of(ADAPTERS[name]).read(sent)
    assert conv.system == ["You are terse."]
    assert conv.turns == [("user", [("text", "Hello [mock completion_tokens=2]")])]
    assert isinstance(result, ChatResult)
    assert assert_completion_contract(result).choices[0].message.content == reply_text(2)


@adapter_names
@both_modes
def test_multi_turn(mock_app: MockUpstreamApp, name: str, stream: bool) -> None:
    messages = [
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": [{"type": "text", "text": "Three? [mock completion_tokens=3]"}]},
    ]
    sent, result = round_trip(mock_app, name, ask(name, messages, stream=stream))
    conv = wire_of(ADAPTERS[name]).read(sent)
    assert conv == OpenAIWire.read({"messages": messages})
    assert [role for role, _ in conv.turns] == ["user", "assistant", "user"]
    if isinstance(result, ChatResult):
        assert assert_completion_contract(result).choices[0].message.content == reply_text(3)
    else:
        assert assert_stream_contract(result).content[0] == reply_text(3)


@adapter_names
@both_modes
def test_tool_call_round_trip(mock_app: MockUpstreamApp, name: str, stream: bool) -> None:
    adapter = ADAPTERS[name]
    wire = wire_of(adapter)
    question = {"role": "user", "content": "Weather in Paris? [mock completion_tokens=4]"}
    sent, result = round_trip(mock_app, name, ask(name, [question], stream=stream, tools=TOOLS))
    assert wire.tools(sent) == [(t["function"]["name"], t["function"]["parameters"]) for t in TOOLS]

    # The answer is a call of the first tool, with the mock's arguments.
    if isinstance(result, ChatResult):
        completion = assert_completion_contract(result)
        assert completion.choices[0].finish_reason == "tool_calls"
        assistant = result.body["choices"][0]["message"]  # sent back as the client received it
        calls = [
            (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in assistant["tool_calls"]
        ]
    else:
        r = assert_stream_contract(result)
        assert r.finish[0] == "tool_calls" and result.state.finish_reason == "tool_calls"
        calls = [(c["id"], c["name"], c["arguments"]) for c in r.tool_calls[0].values()]
        assistant = {
            "role": "assistant",
            "content": r.content.get(0) or None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls
            ],
        }
    assert len(calls) == 1
    call_id, call_name, arguments = calls[0]
    assert call_id and call_name == "get_weather" and json.loads(arguments) == {"mock": True}

    # The follow-up with the tool result is a valid provider request the mock answers with text.
    follow_up = [
        question,
        assistant,
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c": 21}'},
        {"role": "user", "content": "Thanks. [mock completion_tokens=3]"},
    ]
    # (The mock calls a tool again whenever the user has the last word: the second ask forbids it.)
    for messages, choice in ((follow_up[:3], {}), (follow_up, {"tool_choice": "none"})):
        sent, answer = round_trip(mock_app, name, ask(name, messages, stream=stream, tools=TOOLS, **choice))
        conv = wire.read(sent)
        assert conv == OpenAIWire.read({"messages": messages})
        assert conv.turns[1] == ("assistant", [("call", "get_weather", {"mock": True})])
        assert conv.turns[2][1][0] == ("result", "get_weather", {"temp_c": 21})
        if isinstance(answer, ChatResult):
            done = assert_completion_contract(answer)
            assert done.choices[0].finish_reason == "stop" and not done.choices[0].message.tool_calls
        else:
            r = assert_stream_contract(answer)
            assert r.finish[0] == "stop" and not r.tool_calls
    assert done_text(answer) == reply_text(3)


def done_text(answer: ChatResult | StreamRun) -> str:
    if isinstance(answer, ChatResult):
        return str(answer.body["choices"][0]["message"]["content"])
    return reassemble(answer.chunks).content[0]


def _call(call_id: str, name: str, args: str) -> JSONObject:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


TOOL_HISTORIES: dict[str, list[JSONObject]] = {
    "parallel-calls-with-text": [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": "Let me look both up.",
            "tool_calls": [_call("c1", "get_weather", '{"city": "Paris"}'), _call("c2", "get_time", "{}")],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp_c": 21}'},
        {"role": "tool", "tool_call_id": "c2", "content": "14:05"},
        {"role": "user", "content": "And tomorrow? [mock completion_tokens=2]"},
    ],
    "two-rounds-and-part-contents": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": "", "tool_calls": [_call("r1", "get_weather", "")]},
        {"role": "tool", "tool_call_id": "r1", "content": [{"type": "text", "text": "[1, 2]"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [_call("r2", "get_weather", '{"city": "Rome"}')],
        },
        {"role": "tool", "tool_call_id": "r2", "content": "sunny"},
        {"role": "assistant", "content": "Sunny in Rome."},
        {"role": "user", "content": "Thanks [mock completion_tokens=2]"},
    ],
}


@adapter_names
@pytest.mark.parametrize("history", sorted(TOOL_HISTORIES))
def test_tool_histories_build_valid_requests(mock_app: MockUpstreamApp, name: str, history: str) -> None:
    """Parallel calls, several rounds, empty arguments, results as parts or plain text: all translate."""
    messages = TOOL_HISTORIES[history]
    sent, result = round_trip(mock_app, name, ask(name, messages, tools=TOOLS, tool_choice="none"))
    conv = wire_of(ADAPTERS[name]).read(sent)
    assert conv == OpenAIWire.read({"messages": messages})
    assert isinstance(result, ChatResult)
    assert assert_completion_contract(result).choices[0].message.content == reply_text(2)


@adapter_names
def test_stream(mock_app: MockUpstreamApp, name: str) -> None:
    messages = [{"role": "user", "content": "Stream [mock prompt_tokens=30 completion_tokens=12]"}]
    _, run = round_trip(mock_app, name, ask(name, messages, stream=True), seed=zlib.crc32(name.encode()))
    assert isinstance(run, StreamRun)
    r = assert_stream_contract(run)
    assert r.content == {0: reply_text(12)} and run.state.content_text == reply_text(12)
    assert r.finish == {0: "stop"} and run.state.finish_reason == "stop"
    assert run.state.done
    assert run.chunks[-1]["choices"] == [] and run.chunks[-1]["usage"] == r.usage
    assert run.state.usage == expected_usage(wire_of(ADAPTERS[name]), 30, 12, 0, 0, 0)


@adapter_names
@both_modes
def test_usage_with_cache_and_reasoning_details(mock_app: MockUpstreamApp, name: str, stream: bool) -> None:
    directive = (
        "[mock prompt_tokens=1000 completion_tokens=40 cached_tokens=600 cache_write_tokens=200"
        " reasoning_tokens=15]"
    )
    b = parse_directives(directive, MockConfig())
    want = expected_usage(
        wire_of(ADAPTERS[name]), b.prompt_tokens, b.completion_tokens, b.cached_tokens,
        b.cache_write_tokens, b.reasoning_tokens,
    )  # fmt: skip
    assert_usage_invariants(want)
    _, result = round_trip(mock_app, name, ask(name, [{"role": "user", "content": directive}], stream=stream))
    if isinstance(result, ChatResult):
        assert_completion_contract(result)
        usage, client = result.usage, result.body["usage"]
    else:
        assert_stream_contract(result)
        usage, client = result.state.usage, reassemble(result.chunks).usage
    assert usage == want
    assert client is not None
    assert client["completion_tokens"] == want.completion_tokens  # mock counts reasoning as OpenAI does
    if want.reasoning_tokens:
        assert client["completion_tokens_details"]["reasoning_tokens"] == want.reasoning_tokens


@adapter_names
@both_modes
def test_no_usage_reported_is_none_not_zero(mock_app: MockUpstreamApp, name: str, stream: bool) -> None:
    """Without provider usage the gateway must estimate: an adapter must not invent zeros."""
    messages = [{"role": "user", "content": "Quiet [mock usage=none completion_tokens=3]"}]
    _, result = round_trip(mock_app, name, ask(name, messages, stream=stream))
    if isinstance(result, ChatResult):
        assert assert_completion_contract(result).usage is None
        assert result.usage is None and result.content_text == reply_text(3)
    else:
        r = assert_stream_contract(result)
        assert result.state.usage is None and r.usage is None
        assert result.state.content_text == reply_text(3)


@adapter_names
@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503, 529])
def test_http_error(mock_app: MockUpstreamApp, name: str, status: int) -> None:
    adapter = ADAPTERS[name]
    wire = wire_of(adapter)
    up, _ = build(adapter, ask(name, [{"role": "user", "content": f"Fail [mock status={status}]"}]))
    answer = exchange(mock_app, up)
    assert answer.status == status
    message = json.loads(answer.body)["error"]["message"]
    with pytest.raises(ProviderError) as caught:
        adapter.parse_response(answer.status, answer.headers, answer.body)
    assert_error_contract(caught.value, status, message)
    if "retry-after" in answer.headers:  # the mock sends retry-after: 0 on 429/503/529
        assert caught.value.retry_after == 0
    # A body that is not JSON (a proxy's HTML page) keeps the status and is not relayed.
    with pytest.raises(ProviderError) as html:
        adapter.parse_response(status, {}, b"<html>Bad Gateway</html>")
    assert html.value.status == status and "<html>" not in html.value.message
    # The stream path sees the same error before any byte: the gateway calls parse_response for it too.
    up, _ = build(adapter, ask(name, [{"role": "user", "content": f"[mock status={status}]"}], stream=True))
    streamed = exchange(mock_app, up)
    with pytest.raises(ProviderError) as caught_stream:
        adapter.parse_response(streamed.status, streamed.headers, streamed.body)
    assert caught_stream.value.status == status
    assert wire.problems(json.loads(up.body), up.url, True) == []


@adapter_names
@pytest.mark.parametrize("named", [True, False], ids=["event-error", "data-only"])
def test_mid_stream_error(mock_app: MockUpstreamApp, name: str, named: bool) -> None:
    adapter = ADAPTERS[name]
    wire = wire_of(adapter)
    up, _ = build(adapter, ask(name, [{"role": "user", "content": "[mock cut_after=2]"}], stream=True))
    answer = exchange(mock_app, up)
    assert answer.status == 200 and not answer.complete
    status, expected_status = wire.midstream
    error = wire.midstream_error_event(status, named)
    run = run_stream(adapter, answer.body + error, seed=3)
    assert isinstance(run.error, ProviderError), "an error event mid-stream must raise ProviderError"
    payload = json.loads(error_body(wire.name, status))
    assert_error_contract(run.error, expected_status, payload["error"]["message"])
    r = assert_stream_contract(run, complete=False)
    assert r.content == {0: "".join(reply_words(8)[:2])}, "chunks before the error were delivered"
    assert run.state.finish_reason is None


@adapter_names
def test_cut_stream_is_not_done(mock_app: MockUpstreamApp, name: str) -> None:
    adapter = ADAPTERS[name]
    up, _ = build(
        adapter,
        ask(name, [{"role": "user", "content": "[mock cut_after=3 completion_tokens=9]"}], stream=True),
    )
    answer = exchange(mock_app, up)
    assert not answer.complete
    run = run_stream(adapter, answer.body)
    assert run.error is None
    r = assert_stream_contract(run, complete=False)
    assert r.content == {0: "".join(reply_words(9)[:3])} == {0: run.state.content_text}
    assert run.state.finish_reason is None and not any(c.get("usage") for c in run.chunks)


def test_every_registry_adapter_is_under_contract() -> None:
    registry = build_adapters()
    assert sorted(registry) == ADAPTER_NAMES
    assert {"openai", "xai", "deepseek", "together", "anthropic", "gemini"} <= set(ADAPTER_NAMES)
    for name, adapter in registry.items():
        assert adapter.name == name
        assert type(ADAPTERS[name]) is type(adapter)
        wire_of(adapter)
    assert set(FOLDER_ADAPTER.values()) <= set(ADAPTER_NAMES)


# ---------------------------------------------------------------------------------------------------
# The contract against every recorded fixture.


@dataclass(frozen=True)
class Expect:
    """Hand-read from the recorded body (PROVENANCE.md): canonical usage, finish, tools, answer start."""

    usage: tuple[int, int, int, int, int]  # prompt, completion, cached, cache_write, reasoning
    finish: str
    tools: tuple[str, ...] = ()
    text: str = ""  # how choice 0's content starts


@dataclass(frozen=True)
class ExpectError:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # response headers recorded beside the body
    retry_after: float | None = None


FACTS: dict[str, Expect | ExpectError] = {
    # --- non-streaming answers: prompt counts cache reads and writes; completion counts reasoning.
    "anthropic/messages-cache-read-and-creation.json": Expect(
        (3 + 1111 + 418, 33, 1111, 418, 0), "stop", text="Python is a beginner-friendly"
    ),
    "deepseek/chat-completion-reasoning-tool-call-cache-hit.json": Expect(
        (563, 116, 512, 0, 60), "tool_calls", ("load_capability",), "Let me load the dice"
    ),
    "google/generate-content-function-call-thought-signature.json": Expect(
        (57, 15 + 124, 0, 0, 124), "tool_calls", ("get_capital",)
    ),
    "google/generate-content-implicit-cache-video.json": Expect(
        (17713, 68 + 821, 17379, 0, 821), "stop", text="This video demonstrates"
    ),
    "openai/chat-completion-prompt-cache-hit.json": Expect((4020, 4, 4012, 0, 0), "stop", text="OK"),
    "openai/chat-completion-prompt-cache-write.json": Expect((4020, 4, 0, 4012, 0), "stop", text="OK"),
    "openai/chat-completion-reasoning-tokens-o3-mini.json": Expect(
        (7, 87, 0, 0, 64), "stop", text="Hello there! How can I help you today?"
    ),
    "xai/chat-completion-tool-call-reasoning.json": Expect(
        (291, 26 + 189, 244, 0, 189), "tool_calls", ("weather",)
    ),
    # --- streams
    "anthropic/messages-stream-basic-text.sse": Expect((20, 5, 0, 0, 0), "stop", text="2"),
    "anthropic/messages-stream-compaction-cache-read.sse": Expect(  # the sum of both iterations
        (100 + 55096 + 181, 83 + 8, 55096, 0, 0), "stop", text="Hello! 👋"
    ),
    "anthropic/messages-stream-thinking.sse": Expect(
        (43, 282, 0, 0, 0), "stop", text="Here are the basic steps for safely crossing"
    ),
    "anthropic/messages-stream-tool-use.sse": Expect(
        (377, 65, 0, 0, 0), "tool_calls", ("get_weather",), "I'll check the current weather in Paris"
    ),
    "deepseek/chat-stream-reasoner-usage-on-finish-chunk.sse": Expect(
        (6, 212, 0, 0, 198), "stop", text="Hello there! 😊"
    ),
    "google/stream-basic-text.sse": Expect((13, 8, 0, 0, 0), "stop", text="The capital of France is Paris."),
    "google/stream-cumulative-usage-thoughts.sse": Expect((18, 80 + 35, 0, 0, 35), "stop", text="1\n2\n3\n"),
    "google/stream-function-call-thought-signature.sse": Expect(
        (29, 10 + 202, 0, 0, 202), "tool_calls", ("get_country",)
    ),
    "openai/chat-stream-n3-interleaved-choices-2024.sse": Expect(
        (79, 42, 0, 0, 0), "stop", text='{"city":"San Francisco"'
    ),
    "openai/chat-stream-parallel-tool-calls-2024.sse": Expect(
        (149, 60, 0, 0, 0), "tool_calls", ("GetWeatherArgs", "get_stock_price")
    ),
    "openai/chat-stream-tool-call-include-usage.sse": Expect(
        (53, 15, 0, 0, 0), "tool_calls", ("get_capital",)
    ),
    "xai/chat-stream-tool-call-reasoning.chunks.jsonl": Expect(
        (291, 26 + 196, 290, 0, 196), "tool_calls", ("weather",)
    ),
    # --- errors: HTTP error bodies, and Groq's error event after HTTP 200 (its status_code is 400)
    "anthropic/error-400-invalid-request.json": ExpectError(400),
    "anthropic/error-429-rate-limit.json": ExpectError(429, {"retry-after": "4"}, 4.0),
    "google/error-400-invalid-argument.json": ExpectError(400),
    "google/error-503-unavailable-overloaded.json": ExpectError(503),
    "groq/error-429-rate-limit-exceeded.json": ExpectError(429, {"retry-after": "7"}, 7.0),
    "openai/error-400-invalid-request-unsupported-value.json": ExpectError(400),
    "openai/error-429-insufficient-quota.json": ExpectError(429),
    "openrouter/error-429-upstream-rate-limited.json": ExpectError(429),
    "groq/chat-stream-midstream-error-tool-use-failed.sse": ExpectError(400),
}


def classify(rel: str, raw: bytes) -> str:
    """What a fixture file is, by name and content: provenance, request, response, error, stream,
    stream-error. Name and content must agree."""
    name = rel.rsplit("/", 1)[-1]
    if rel == "PROVENANCE.md":
        return "provenance"
    if name.endswith(".request.json"):
        return "request"
    if name.endswith((".sse", ".chunks.jsonl")):
        data = stream_bytes(rel, raw)
        errors = [
            e for e in sse_events_of(data) if e.event == "error" or _is_error_object(_maybe_json(e.data))
        ]
        return "stream-error" if errors else "stream"
    if name.endswith(".json"):
        by_content = _is_error_object(json.loads(raw))
        by_name = name.startswith("error-")
        assert by_content == by_name, f"{rel}: file name and content disagree on being an error"
        return "error" if by_content else "response"
    raise AssertionError(f"{rel}: unknown kind of fixture file")


def _maybe_json(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _is_error_object(obj: Any) -> bool:
    if not isinstance(obj, dict):
        return False
    answer = any(k in obj for k in ("choices", "candidates")) or obj.get("type") in ("message",)
    return ("error" in obj or obj.get("type") == "error") and not answer


def stream_bytes(rel: str, raw: bytes) -> bytes:
    """The bytes to replay. `.chunks.jsonl` is Vercel's de-framed stream (one chunk JSON per line):
    re-framed as its own replay does (vercel/ai prepareChunksFixtureResponse): `data: <line>` events
    and the closing `data: [DONE]` that the de-framing dropped."""
    if not rel.endswith(".chunks.jsonl"):
        return raw
    events = [b"data: " + line + b"\n\n" for line in raw.splitlines() if line.strip()]
    return b"".join(events) + b"data: [DONE]\n\n"


def _fixture_cases() -> list[Any]:
    if not FIXTURES.is_dir():
        return []
    cases = []
    for path in sorted(p for p in FIXTURES.rglob("*") if p.is_file()):
        rel = path.relative_to(FIXTURES).as_posix()
        cases.append(pytest.param(rel, classify(rel, path.read_bytes()), id=rel))
    return cases


FIXTURE_CASES = _fixture_cases()


def adapter_for(rel: str) -> ProviderAdapter:
    return ADAPTERS[FOLDER_ADAPTER[rel.split("/", 1)[0]]]


@pytest.mark.parametrize(("rel", "kind"), FIXTURE_CASES)
def test_recorded_fixture(fixtures_dir: Path, rel: str, kind: str) -> None:
    raw = (fixtures_dir / rel).read_bytes()
    assert classify(rel, raw) == kind
    {
        "provenance": check_provenance,
        "request": check_recorded_request,
        "response": check_recorded_response,
        "error": check_recorded_error,
        "stream": check_recorded_stream,
        "stream-error": check_recorded_stream_error,
    }[kind](fixtures_dir, rel, raw)


def check_provenance(fixtures_dir: Path, rel: str, raw: bytes) -> None:
    """Every fixture file is accounted for in PROVENANCE.md (source, commit, license)."""
    text = raw.decode()
    for path in fixtures_dir.rglob("*"):
        other = path.relative_to(fixtures_dir).as_posix()
        if path.is_file() and other != rel:
            assert f"`{other}`" in text, f"{other} is not described in PROVENANCE.md"


def check_recorded_request(fixtures_dir: Path, rel: str, raw: bytes) -> None:
    """Recorded request bodies ground the validators; OpenAI-wire ones also go through the adapter."""
    adapter = adapter_for(rel)
    wire = wire_of(adapter)
    recorded = json.loads(raw)
    if wire is OpenAIWire and "messages" not in recorded:
        # Recorded on /v1/responses (PROVENANCE says so): not a chat-completions body, and the
        # validator must say so (it is not vacuous).
        assert "input" in recorded
        assert "messages missing or empty" in wire.problems(recorded)
        return
    assert wire.problems(recorded) == [], "the validator rejects a request the provider accepted"
    if wire is OpenAIWire:
        up, sent = build(adapter, recorded)
        check_request(adapter, up, sent, stream=bool(recorded.get("stream")))
        assert wire.read(sent) == wire.read(recorded)
        assert wire.tools(sent) == wire.tools(recorded)
        return
    # A provider-native body: the adapter, given the same conversation in OpenAI form, says the same.
    conv = wire.read(recorded)
    messages = conv.to_openai_messages()
    if messages is None:  # media parts (a video URL) have no OpenAI form to start from
        assert any(item[0] == "media" for _, items in conv.turns for item in items)
        return
    up, sent = build(adapter, {"model": "m", "messages": messages, "stream": bool(recorded.get("stream"))})
    check_request(adapter, up, sent, stream=bool(recorded.get("stream")))
    assert wire.read(sent) == conv


def check_recorded_response(fixtures_dir: Path, rel: str, raw: bytes) -> None:
    facts = FACTS[rel]
    assert isinstance(facts, Expect)
    result = adapter_for(rel).parse_response(200, {"content-type": "application/json"}, raw)
    completion = assert_completion_contract(result)
    assert result.usage is not None
    assert usage_tuple(result.usage) == facts.usage
    assert result.finish_reason == facts.finish
    calls = completion.choices[0].message.tool_calls or []
    assert tuple(c.function.name for c in calls) == facts.tools  # type: ignore[union-attr]
    assert (completion.choices[0].message.content or "").startswith(facts.text)


def check_recorded_error(fixtures_dir: Path, rel: str, raw: bytes) -> None:
    facts = FACTS[rel]
    assert isinstance(facts, ExpectError)
    status = int(re.search(r"error-(\d{3})-", rel).group(1))  # type: ignore[union-attr]
    assert facts.status == status
    with pytest.raises(ProviderError) as caught:
        adapter_for(rel).parse_response(status, facts.headers, raw)
    assert_error_contract(caught.value, status, json.loads(raw)["error"]["message"])
    assert caught.value.retry_after == facts.retry_after


def check_recorded_stream(fixtures_dir: Path, rel: str, raw: bytes) -> None:
    facts = FACTS[rel]
    assert isinstance(facts, Expect)
    adapter = adapter_for(rel)
    data = stream_bytes(rel, raw)
    run = run_stream(adapter, data)
    for seed in (1, 2):
        assert run_stream(adapter, data, seed).chunks == run.chunks
    r = assert_stream_contract(run)
    assert run.state.usage is not None
    assert usage_tuple(run.state.usage) == facts.usage
    assert run.state.finish_reason == facts.finish
    names = tuple(c["name"] for calls in r.tool_calls.values() for c in calls.values())
    assert names == facts.tools
    assert r.content.get(0, "").startswith(facts.text)


def check_recorded_stream_error(fixtures_dir: Path, rel: str, raw: bytes) -> None:
    facts = FACTS[rel]
    assert isinstance(facts, ExpectError)
    data = stream_bytes(rel, raw)
    run = run_stream(adapter_for(rel), data, seed=5)
    assert run.error is not None, "the error event must raise ProviderError"
    error_event = next(
        e for e in sse_events_of(data) if e.event == "error" or _is_error_object(_maybe_json(e.data))
    )
    assert_error_contract(run.error, facts.status, json.loads(error_event.data)["error"]["message"])
    assert run.chunks, "chunks before the error were relayed"
    assert_stream_contract(run, complete=False)


def usage_tuple(usage: Usage) -> tuple[int, int, int, int, int]:
    return (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens,
            usage.reasoning_tokens)  # fmt: skip


def test_every_fixture_file_is_exercised(fixtures_dir: Path) -> None:
    """All files under fixtures/ are cases above, of a known kind, and every answer has its facts."""
    on_disk = {p.relative_to(fixtures_dir).as_posix() for p in fixtures_dir.rglob("*") if p.is_file()}
    cases = {case.values[0]: case.values[1] for case in FIXTURE_CASES}
    assert set(cases) == on_disk, "fixture files not collected as contract cases"
    for rel in on_disk - {"PROVENANCE.md"}:
        assert rel.split("/", 1)[0] in FOLDER_ADAPTER, f"{rel}: no adapter for its folder"
    answers = {rel for rel, kind in cases.items() if kind not in ("provenance", "request")}
    assert set(FACTS) == answers, "FACTS must cover exactly the recorded answers"
    kinds = Counter(cases.values())
    assert kinds["response"] and kinds["stream"] and kinds["error"] and kinds["stream-error"]
    assert kinds["request"] and kinds["provenance"] == 1
