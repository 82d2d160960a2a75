"""Anthropic Messages API as an inbound format: `/v1/messages` and `/v1/messages/count_tokens`.

Pure translation, no I/O. Two paths use it:

- NATIVE (the model is served by Anthropic): the client's body goes upstream with only `model` replaced and
  the answer is relayed unchanged; this module reads usage, text and completion from that answer.
- TRANSLATED (OpenAI-wire and Gemini models): the Messages request becomes a `ChatRequest` for the normal
  chat adapters, and their `chat.completion` / `chat.completion.chunk` objects become a Messages response /
  Messages SSE events.

Errors for the client are Anthropic's envelope (`MessagesApiError`), not OpenAI's.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.providers.anthropic import _usage as _anthropic_usage
from gateway.providers.anthropic import _usage_fields as _anthropic_usage_fields
from gateway.providers.base import (
    ChatRequest,
    Credential,
    JSONObject,
    ProviderError,
    SSEEvent,
    UpstreamRequest,
)
from gateway.providers.wire import token_count as _int
from pricing.cost import Usage
from pricing.tokens import count_prompt_tokens

_decode = msgspec.json.decode
_encode = msgspec.json.encode

ANTHROPIC_VERSION = "2023-06-01"

# --- errors --------------------------------------------------------------------------------------------

# HTTP status -> Anthropic error type (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class MessagesApiError(Exception):
    """An error for a Messages API client: HTTP status, Anthropic error type, message."""

    def __init__(self, status: int, error_type: str, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after

    def envelope(self) -> JSONObject:
        """Anthropic's error body; the anthropic SDK reads `error.type` and `error.message`."""
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


def anthropic_error_type(status: int, openai_type: str | None = None, code: str | None = None) -> str:
    """The Anthropic error type for a gateway error given in OpenAI terms (status, type, code).

    402 (credit exhausted, `insufficient_quota`) is `billing_error`: the anthropic SDK shows it as a
    permission problem and, like 403, does not retry it. Other 5xx from the gateway (502 bad upstream, 503
    no record possible, 504 timeout) are `api_error`, except overloads, which keep Anthropic's 529 type.
    """
    if status == 402 or openai_type == "insufficient_quota" or code == "insufficient_credits":
        return "billing_error"
    if status == 529 or code == "overloaded":
        return "overloaded_error"
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    if status == 504 or code == "timeout":
        return "timeout_error"
    if status >= 500:
        return "api_error"
    if status == 422:
        return "invalid_request_error"
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def messages_error(status: int, openai_type: str | None, code: str | None, message: str) -> MessagesApiError:
    """A gateway error (OpenAI-style status/type/code/message) as the Messages API reports it."""
    return MessagesApiError(status, anthropic_error_type(status, openai_type, code), message)


def from_provider_error(err: ProviderError) -> MessagesApiError:
    """A ProviderError (an adapter's, or the gateway's own) for a Messages API client."""
    out = messages_error(err.status, err.type, err.code, err.message)
    out.retry_after = err.retry_after
    return out


def parse_native_error(status: int, body: bytes) -> MessagesApiError:
    """Anthropic's own error answer (relayed as-is by the route), read for logging and the record."""
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        etype = err.get("type")
        return MessagesApiError(
            status, etype if isinstance(etype, str) else anthropic_error_type(status), err["message"]
        )
    return MessagesApiError(status, anthropic_error_type(status), f"anthropic returned HTTP {status}")


def _invalid(message: str) -> MessagesApiError:
    return MessagesApiError(400, "invalid_request_error", message)


# --- the inbound request -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A validated `/v1/messages` (or count_tokens) body: the fields the gateway acts on, and the body."""

    model: str
    max_tokens: int | None  # required on /v1/messages, absent on count_tokens
    messages: list[JSONObject]
    system: str | list[JSONObject] | None
    tools: list[JSONObject] | None
    tool_choice: JSONObject | None
    stop_sequences: list[str] | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    stream: bool
    thinking: JSONObject | None
    metadata: JSONObject | None
    body: JSONObject = field(repr=False)  # the whole client body, relayed on the native path


_CONTENT_BLOCK_TYPES = {
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "search_result",
    "container_upload",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_blocks(blocks: list[Any], where: str) -> None:
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise _invalid(f"{where}.{j}: Input should be an object")
        kind = block.get("type")
        if not isinstance(kind, str):
            raise _invalid(f"{where}.{j}.type: Field required")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _invalid(f"{where}.{j}.text: Field required")
        if kind == "tool_use" and (
            not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str)
        ):
            raise _invalid(f"{where}.{j}: tool_use blocks need an id and a name")
        if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
            raise _invalid(f"{where}.{j}.tool_use_id: Field required")
        if kind == "image" and not isinstance(block.get("source"), dict):
            raise _invalid(f"{where}.{j}.source: Field required")


def parse_messages_request(body: bytes | JSONObject, *, count_tokens: bool = False) -> MessagesRequest:
    """Validate a Messages API body; MessagesApiError (400, naming the field) when it is not one.

    `count_tokens`: the `/v1/messages/count_tokens` body, which has no `max_tokens` (and no `stream`).
    Unknown top-level fields are kept in `body` (the native path relays them; Anthropic judges them).
    """
    if isinstance(body, bytes):
        try:
            obj = _decode(body)
        except msgspec.DecodeError:
            raise _invalid("the request body is not valid JSON") from None
    else:
        obj = body
    if not isinstance(obj, dict):
        raise _invalid("the request body must be a JSON object")
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Field required")
    max_tokens = obj.get("max_tokens")
    if max_tokens is None and not count_tokens:
        raise _invalid("max_tokens: Field required")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise _invalid("max_tokens: Input should be a positive integer")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        raise _invalid("messages: Field required")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _invalid(f"messages.{i}: Input should be an object")
        if msg.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = msg.get("content")
        if isinstance(content, list):
            _check_blocks(content, f"messages.{i}.content")
        elif not isinstance(content, str):
            raise _invalid(f"messages.{i}.content: Input should be a string or a list of content blocks")
    system = obj.get("system")
    if isinstance(system, list):
        _check_blocks(system, "system")
        if any(b.get("type") != "text" for b in system):
            raise _invalid("system: only text blocks are allowed in system")
    elif system is not None and not isinstance(system, str):
        raise _invalid("system: Input should be a string or a list of text blocks")
    tools = obj.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools: Input should be a list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _invalid(f"tools.{i}.name: Field required")
            # Client tools carry an input_schema; server tools (web_search_..., code_execution_...) a type.
            if "input_schema" not in tool and tool.get("type") in (None, "custom"):
                raise _invalid(f"tools.{i}.input_schema: Field required")
    tool_choice = obj.get("tool_choice")
    if tool_choice is not None:
        kind = tool_choice.get("type") if isinstance(tool_choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if kind == "tool" and not isinstance(tool_choice.get("name"), str):
            raise _invalid("tool_choice.name: Field required")
    stop = obj.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) for s in stop)):
        raise _invalid("stop_sequences: Input should be a list of strings")
    for key, low, high in (("temperature", 0, 1), ("top_p", 0, 1)):
        value = obj.get(key)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            raise _invalid(f"{key}: Input should be a number between {low} and {high}")
    top_k = obj.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _invalid("top_k: Input should be a non-negative integer")
    stream = obj.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream: Input should be a boolean")
    thinking = obj.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind not in ("enabled", "disabled", "adaptive"):
            raise _invalid("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
        if kind == "enabled" and not _is_int(thinking.get("budget_tokens")):
            raise _invalid("thinking.enabled.budget_tokens: Field required")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("metadata: Input should be an object")
    return MessagesRequest(
        model=model,
        max_tokens=max_tokens,
        messages=messages,
        system=system,
        tools=tools,
        tool_choice=tool_choice,
        stop_sequences=stop,
        temperature=obj.get("temperature"),
        top_p=obj.get("top_p"),
        top_k=top_k,
        stream=stream,
        thinking=thinking,
        metadata=metadata,
        body=obj,
    )


# --- NATIVE: Claude models, relayed --------------------------------------------------------------------


def upstream_headers(client_headers: Mapping[str, str], cred: Credential) -> dict[str, str]:
    """Headers for Anthropic: our credential, and the client's `anthropic-version` / `anthropic-beta`.

    Nothing else of the client's is forwarded (its own `x-api-key` is the gateway key, never sent on).
    """
    version = None
    beta = None
    for key, value in client_headers.items():
        lower = key.lower()
        if lower == "anthropic-version":
            version = value
        elif lower == "anthropic-beta":
            beta = value
    headers = {
        "x-api-key": cred.api_key,
        "anthropic-version": version or ANTHROPIC_VERSION,
        "content-type": "application/json",
    }
    if beta:
        headers["anthropic-beta"] = beta
    return headers


def build_native_request(
    req: MessagesRequest,
    upstream_model: str,
    cred: Credential,
    client_headers: Mapping[str, str],
    *,
    count_tokens: bool = False,
) -> UpstreamRequest:
    """POST {base_url}/messages (or /messages/count_tokens) with the client's body, our model name."""
    body = dict(req.body)
    body["model"] = upstream_model
    path = "/messages/count_tokens" if count_tokens else "/messages"
    return UpstreamRequest(
        method="POST",
        url=cred.base_url.rstrip("/") + path,
        headers=upstream_headers(client_headers, cred),
        body=_encode(body),
    )


@dataclass(slots=True)
class NativeMessage:
    """What the gateway needs from a relayed Messages answer: usage, generated text, stop reason."""

    usage: Usage | None
    content_text: str  # text, thinking and tool input JSON: what an estimate would count
    stop_reason: str | None
    model: str | None
    message_id: str | None


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return str(block["text"])
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return str(block["thinking"])
    if kind in ("tool_use", "server_tool_use") and isinstance(block.get("input"), dict) and block["input"]:
        return _encode(block["input"]).decode()
    # redacted_thinking is billed output, but its `data` is an encrypted blob, not tokens of text.
    return ""


def parse_native_response(body: bytes) -> NativeMessage:
    """Usage and text of a non-streaming Messages answer (a 2xx body)."""
    try:
        msg = _decode(body)
    except msgspec.DecodeError:
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != "message":
        raise ProviderError(
            502, "anthropic returned a response that is not a message", code="bad_upstream_response"
        )
    usage = _anthropic_usage(_anthropic_usage_fields({}, msg.get("usage")))
    blocks: list[Any] = msg["content"] if isinstance(msg.get("content"), list) else []
    stop = msg.get("stop_reason")
    return NativeMessage(
        usage=usage,
        content_text="".join(_block_text(b) for b in blocks),
        stop_reason=stop if isinstance(stop, str) else None,
        model=msg.get("model") if isinstance(msg.get("model"), str) else None,
        message_id=msg.get("id") if isinstance(msg.get("id"), str) else None,
    )


def count_tokens_result(body: bytes) -> int:
    """The `input_tokens` of Anthropic's count_tokens answer (`{"input_tokens": N}`, nothing else)."""
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    if not isinstance(obj, dict) or not _is_int(obj.get("input_tokens")):
        raise ProviderError(
            502, "anthropic returned a count without input_tokens", code="bad_upstream_response"
        )
    return int(obj["input_tokens"])


@dataclass(slots=True)
class MessagesStreamMeter:
    """Reads a relayed Anthropic Messages stream, event by event, without changing it.

    Usage: message_start carries the input side and a provisional output count; message_delta carries the
    final, cumulative figures and may repeat or RAISE input_tokens (a server-tool loop samples again:
    2293 at start, 4714 at the end in the recorded stream), so the latest value of each field wins.
    `done` is set by message_stop; an `error` event is kept in `error` (the stream ends there).
    """

    usage_fields: dict[str, Any] = field(default_factory=dict)
    text_parts: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    message_id: str | None = None
    model: str | None = None
    done: bool = False
    error: MessagesApiError | None = None

    @property
    def usage(self) -> Usage | None:
        return _anthropic_usage(self.usage_fields)

    @property
    def content_text(self) -> str:
        return "".join(self.text_parts)

    def feed(self, event: SSEEvent) -> None:
        """Take one event of the stream (the route relays its bytes unchanged)."""
        data = event.data
        if not data or data.isspace():
            return
        try:
            payload = _decode(data)
        except msgspec.DecodeError:
            return  # relayed anyway; nothing to meter in it
        if not isinstance(payload, dict):
            return
        kind = payload.get("type")
        if event.event == "error" or kind == "error":
            err = payload.get("error")
            if isinstance(err, dict):
                etype = err.get("type") if isinstance(err.get("type"), str) else "api_error"
                status = {"overloaded_error": 529, "rate_limit_error": 429}.get(str(etype), 500)
                self.error = MessagesApiError(status, str(etype), str(err.get("message") or etype))
            else:
                self.error = MessagesApiError(500, "api_error", "anthropic reported an error")
            return
        if kind == "message_start":
            msg = payload.get("message")
            if isinstance(msg, dict):
                self.message_id = msg.get("id") if isinstance(msg.get("id"), str) else None
                self.model = msg.get("model") if isinstance(msg.get("model"), str) else None
                _anthropic_usage_fields(self.usage_fields, msg.get("usage"))
        elif kind == "content_block_start":
            text = _block_text(payload.get("content_block"))
            if text:
                self.text_parts.append(text)
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "thinking", "partial_json"):
                    value = delta.get(key)
                    if isinstance(value, str) and value:
                        self.text_parts.append(value)
        elif kind == "message_delta":
            _anthropic_usage_fields(self.usage_fields, payload.get("usage"))
            delta = payload.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
        elif kind == "message_stop":
            self.done = True


# --- count_tokens --------------------------------------------------------------------------------------


def count_input_tokens(req: MessagesRequest) -> tuple[int, str]:
    """An estimate of the request's input tokens (tiktoken), and the estimator used.

    Claude's tokenizer is not public: this is the gateway's reservation estimate, also the answer of
    count_tokens for models not served by Anthropic. Tools count as their JSON (as OpenAI's do).
    """
    messages = _chat_messages(req)
    tools = [_anthropic_tool_as_text(t) for t in req.tools or ()]
    return count_prompt_tokens(req.model, messages, tools or None)


def _anthropic_tool_as_text(tool: JSONObject) -> JSONObject:
    return {k: tool[k] for k in ("name", "description", "input_schema", "type") if k in tool}


def count_tokens_body(input_tokens: int) -> JSONObject:
    """The count_tokens answer, the shape Anthropic sends."""
    return {"input_tokens": input_tokens}


# --- TRANSLATED: Messages request -> chat completions --------------------------------------------------

_REASONING_EFFORT_BUDGETS = ((4096, "low"), (16384, "medium"))


def _reasoning_effort(thinking: JSONObject) -> str | None:
    """`thinking` as OpenAI's `reasoning_effort`: budget < 4096 low, < 16384 medium, else high."""
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return "medium"
    budget = thinking.get("budget_tokens")
    for limit, effort in _REASONING_EFFORT_BUDGETS:
        if isinstance(budget, int) and budget < limit:
            return effort
    return "high"


def to_chat_request(req: MessagesRequest, *, supports_reasoning: bool = False) -> ChatRequest:
    """The Messages request as a chat-completions request for an OpenAI-wire or Gemini model.

    `thinking` is translated to `reasoning_effort` when the target model reasons (`supports_reasoning`);
    otherwise an enabled `thinking` is refused (400 naming the field) rather than silently dropped, since
    the client asked for something the model cannot do. `top_k`, `metadata` and cache_control have no
    chat-completions equivalent and are dropped; server tools (typed tools without input_schema) are
    refused.
    """
    messages = _chat_messages(req)
    body: JSONObject = {"model": req.model, "messages": messages, "max_tokens": req.max_tokens}
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop_sequences:
        body["stop"] = list(req.stop_sequences)
    if req.tools:
        body["tools"] = [_function_tool(t, i) for i, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        choice, parallel = _chat_tool_choice(req.tool_choice)
        body["tool_choice"] = choice
        if parallel is False and req.tools:
            body["parallel_tool_calls"] = False
    if req.thinking is not None and req.thinking.get("type") != "disabled":
        if not supports_reasoning:
            raise _invalid(f"thinking: model {req.model!r} does not support extended thinking")
        effort = _reasoning_effort(req.thinking)
        if effort is not None:
            body["reasoning_effort"] = effort
    metadata_user = (req.metadata or {}).get("user_id")
    if isinstance(metadata_user, str) and metadata_user:
        body["user"] = metadata_user
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return ChatRequest(
        model=req.model,
        messages=messages,
        stream=req.stream,
        include_usage=True,  # the Messages stream always reports usage (in message_delta)
        max_output_tokens=req.max_tokens,
        body=body,
    )


def _text_of(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    if isinstance(blocks, list):
        return "".join(
            str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _image_part(block: JSONObject, where: str) -> JSONObject:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: Field required")
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _invalid(f"{where}.source.type: only base64 and url image sources can be translated")
    return {"type": "image_url", "image_url": {"url": url}}


def _chat_messages(req: MessagesRequest) -> list[JSONObject]:
    """Messages turns as chat messages: tool_use -> assistant tool_calls, tool_result -> tool messages."""
    out: list[JSONObject] = []
    system = _text_of(req.system) if req.system is not None else ""
    if system:
        out.append({"role": "system", "content": system})
    for i, msg in enumerate(req.messages):
        role = msg["role"]
        content = msg["content"]
        where = f"messages.{i}.content"
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        parts: list[JSONObject] = []
        tool_calls: list[JSONObject] = []
        tool_messages: list[JSONObject] = []
        for j, block in enumerate(content):
            kind = block.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": block["text"]})
            elif kind == "image":
                if role != "user":
                    raise _invalid(f"{where}.{j}: images are only allowed in user turns")
                parts.append(_image_part(block, f"{where}.{j}"))
            elif kind == "tool_use" and role == "assistant":
                tool_calls.append(
                    {
                        "id": block["id"],
                        "type": "function",
                        "function": {
                            "name": block["name"],
                            "arguments": _encode(block.get("input") or {}).decode(),
                        },
                    }
                )
            elif kind == "tool_result" and role == "user":
                result = block.get("content")
                text = _text_of(result) if result is not None else ""
                if block.get("is_error") and not text:
                    text = "error"
                tool_messages.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
            elif kind in ("thinking", "redacted_thinking"):
                continue  # earlier reasoning of another model family: not input for this one
            else:
                raise _invalid(f"{where}.{j}.type: {kind!r} blocks cannot be sent to this model")
        # Tool results answer the previous assistant turn: they come first, then the user's new content.
        out.extend(tool_messages)
        if role == "assistant":
            text = "".join(p["text"] for p in parts)
            message: JSONObject = {"role": "assistant", "content": text or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            if text or tool_calls:
                out.append(message)
        elif parts:
            if all(p["type"] == "text" for p in parts):
                out.append({"role": "user", "content": "".join(p["text"] for p in parts)})
            else:
                out.append({"role": "user", "content": parts})
    return out


def _function_tool(tool: JSONObject, i: int) -> JSONObject:
    if "input_schema" not in tool:
        raise _invalid(f"tools.{i}: server tool {tool.get('type')!r} is only available on Anthropic models")
    function: JSONObject = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: JSONObject) -> tuple[Any, bool | None]:
    """Anthropic tool_choice -> (OpenAI tool_choice, parallel_tool_calls)."""
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind == "any":
        return "required", parallel
    if kind == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    if kind == "none":
        return "none", None
    return "auto", parallel


# --- TRANSLATED: chat.completion -> Messages response --------------------------------------------------

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason_for(finish_reason: str | None, stop_sequences: Sequence[str] | None, text: str) -> str:
    """OpenAI finish_reason -> Anthropic stop_reason.

    OpenAI says `stop` both for a natural end and for a stop sequence (and never which sequence). When the
    client gave stop sequences and the model stopped early we cannot tell them apart; `end_turn` is
    reported. `stop_sequence` is reported only when the text ends with one (some hosts keep it).
    """
    if finish_reason == "stop" and stop_sequences:
        for seq in stop_sequences:
            if seq and text.endswith(seq):
                return "stop_sequence"
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def new_message_id() -> str:
    """A Messages id for a translated answer (`msg_` + 24 random base62-ish characters)."""
    return "msg_" + secrets.token_hex(12)


def _parse_arguments(arguments: Any) -> JSONObject:
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str) and arguments.strip():
        try:
            value = _decode(arguments)
        except msgspec.DecodeError:
            return {"_raw_arguments": arguments}  # the model wrote invalid JSON: keep it visible
        return value if isinstance(value, dict) else {"_value": value}
    return {}


def anthropic_usage(usage: Usage | None) -> JSONObject:
    """SynapGate usage in Anthropic's terms: input_tokens excludes cache reads and writes."""
    if usage is None:
        return {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
    return {
        "input_tokens": usage.uncached_prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def chat_completion_to_message(
    completion: JSONObject,
    usage: Usage | None,
    *,
    model: str,
    stop_sequences: Sequence[str] | None = None,
    message_id: str | None = None,
) -> JSONObject:
    """A `chat.completion` (choice 0) as a Messages API `message`.

    `usage` is the adapter's typed usage (ChatResult.usage, or the gateway's estimate); `model` is the name
    the client asked for.
    """
    choices = completion.get("choices")
    choice: JSONObject = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    message: JSONObject = choice["message"] if isinstance(choice.get("message"), dict) else {}
    content: list[JSONObject] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": function.get("name"),
                "input": _parse_arguments(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason")
    stop_reason = stop_reason_for(finish if isinstance(finish, str) else None, stop_sequences, text or "")
    stop_sequence = None
    if stop_reason == "stop_sequence" and stop_sequences:
        stop_sequence = next(s for s in stop_sequences if s and (text or "").endswith(s))
    return {
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(usage),
    }


# --- TRANSLATED: chat.completion.chunk stream -> Messages SSE events -----------------------------------


def encode_event(event: JSONObject) -> bytes:
    """One Messages SSE event: `event: <type>` and its JSON on one `data:` line."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + _encode(event) + b"\n\n"


@dataclass(slots=True)
class _OpenBlock:
    index: int
    kind: str  # "text" | "tool_use"
    tool_index: int | None = None


class MessagesStreamTranslator:
    """Turns chat.completion.chunk objects (choice 0) into Anthropic Messages SSE bytes, one chunk at a time.

    `feed` emits message_start (first chunk), content_block_start/_delta/_stop for text and tool calls.
    The closing message_delta (stop_reason, usage) and message_stop come only from `finish`, which the
    route calls after the upstream stream ended and the call is recorded: message_stop is the stream's
    final event, and no final event leaves before the record commits. `input_tokens` of message_start is
    the gateway's estimate (Anthropic sends the real count there; OpenAI's arrives only at the end).
    Reasoning deltas (`reasoning_content`) are not relayed: a Messages thinking block needs a signature
    that only Anthropic can make, and a client would send it back.
    """

    def __init__(
        self,
        *,
        model: str,
        input_tokens_estimate: int = 0,
        stop_sequences: Sequence[str] | None = None,
        message_id: str | None = None,
    ) -> None:
        self.model = model
        self.message_id = message_id or new_message_id()
        self.input_tokens_estimate = input_tokens_estimate
        self.stop_sequences = list(stop_sequences or ())
        self.started = False
        self.finished = False
        self.finish_reason: str | None = None
        self.usage_seen: JSONObject | None = None
        self._next_index = 0
        self._open: _OpenBlock | None = None
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool-call index -> content block index
        self._text: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._text)

    def _start(self) -> bytes:
        self.started = True
        return encode_event(
            {
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": self.input_tokens_estimate,
                        "output_tokens": 0,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            }
        )

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        index = self._open.index
        self._open = None
        return encode_event({"type": "content_block_stop", "index": index})

    def _open_block(self, kind: str, block: JSONObject, tool_index: int | None = None) -> bytes:
        out = self._close_block()
        index = self._next_index
        self._next_index += 1
        self._open = _OpenBlock(index=index, kind=kind, tool_index=tool_index)
        if tool_index is not None:
            self._tool_blocks[tool_index] = index
        return out + encode_event({"type": "content_block_start", "index": index, "content_block": block})

    def feed(self, chunk: JSONObject) -> bytes:
        """The SSE bytes for one chat.completion.chunk (maybe none)."""
        if self.finished:
            return b""
        out = b"" if self.started else self._start()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage_seen = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return out
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # a Messages answer has one choice
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out += self._delta(delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self.finish_reason = finish
                out += self._close_block()
        return out

    def _delta(self, delta: JSONObject) -> bytes:
        out = b""
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open is None or self._open.kind != "text":
                out += self._open_block("text", {"type": "text", "text": ""})
            assert self._open is not None
            self._text.append(text)
            out += encode_event(
                {
                    "type": "content_block_delta",
                    "index": self._open.index,
                    "delta": {"type": "text_delta", "text": text},
                }
            )
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            tool_index = call.get("index", 0)
            function: JSONObject = call["function"] if isinstance(call.get("function"), dict) else {}
            if tool_index not in self._tool_blocks:
                block: JSONObject = {
                    "type": "tool_use",
                    "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                    "name": function.get("name") or "",
                    "input": {},
                }
                out += self._open_block("tool_use", block, tool_index)
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                self._text.append(arguments)
                # OpenAI streams one tool call after another; a late fragment of an earlier call still goes
                # to that call's block (the SDK accumulates by index).
                out += encode_event(
                    {
                        "type": "content_block_delta",
                        "index": self._tool_blocks[tool_index],
                        "delta": {"type": "input_json_delta", "partial_json": arguments},
                    }
                )
        return out

    def finish(self, usage: Usage | None = None) -> bytes:
        """The closing events: message_delta (stop_reason, usage) and message_stop. Idempotent.

        `usage` is the usage the call was metered with (provider's or estimated); without it, the usage
        chunk seen in the stream is used.
        """
        if self.finished:
            return b""
        out = b"" if self.started else self._start()
        out += self._close_block()
        self.finished = True
        if usage is not None:
            figures = anthropic_usage(usage)
        else:
            raw = self.usage_seen or {}
            details = raw.get("prompt_tokens_details")
            cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
            figures = {
                "input_tokens": max(_int(raw.get("prompt_tokens")) - cached, 0),
                "output_tokens": _int(raw.get("completion_tokens")),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cached,
            }
        stop_reason = stop_reason_for(self.finish_reason, self.stop_sequences, self.text)
        stop_sequence = None
        if stop_reason == "stop_sequence":
            stop_sequence = next(s for s in self.stop_sequences if s and self.text.endswith(s))
        out += encode_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": figures,
            }
        )
        return out + encode_event({"type": "message_stop"})


def error_event(err: MessagesApiError) -> bytes:
    """A mid-stream failure as Anthropic sends it: `event: error` with the error envelope."""
    return encode_event(err.envelope())


# --- finish_reason split (for adapters that put a delta and finish_reason in one chunk) ----------------


def split_finish_chunk(chunk: JSONObject) -> list[JSONObject]:
    """A chat.completion.chunk carrying both a delta and `finish_reason`, as two chunks in OpenAI's shape.

    OpenAI sends the finish_reason on a chunk with an empty delta; the openai SDK's stream helper
    (`client.chat.completions.stream`) relies on that. The first chunk keeps the deltas (finish_reason
    null), the second carries only the finish_reasons (and the usage, if the chunk had it). A chunk that
    needs no split is returned alone.
    """
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return [chunk]
    needs_split = any(
        isinstance(c, dict)
        and c.get("finish_reason")
        and isinstance(c.get("delta"), dict)
        and any(v not in (None, "", []) for k, v in c["delta"].items() if k != "role")
        for c in choices
    )
    if not needs_split:
        return [chunk]
    first = {k: v for k, v in chunk.items() if k != "usage"}
    first["choices"] = [{**c, "finish_reason": None} if isinstance(c, dict) else c for c in choices]
    if "usage" in chunk:
        first["usage"] = None
    second = dict(chunk)
    second["choices"] = [
        {"index": c.get("index", 0), "delta": {}, "logprobs": None, "finish_reason": c.get("finish_reason")}
        for c in choices
        if isinstance(c, dict) and c.get("finish_reason")
    ]
    return [first, second]
