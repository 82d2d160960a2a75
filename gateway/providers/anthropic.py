"""Anthropic Messages API adapter: OpenAI chat completions in, `POST /v1/messages` upstream, OpenAI out.

The client speaks OpenAI and must not be able to tell: requests are rewritten into Anthropic's shape
(top-level `system`, content blocks, strict user/assistant alternation, `tool_use`/`tool_result` blocks),
and answers and stream events are rewritten into `chat.completion` / `chat.completion.chunk` objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

from gateway.providers.base import (
    ChatRequest,
    ChatResult,
    Credential,
    JSONObject,
    ProviderError,
    SSEEvent,
    StreamState,
    UpstreamRequest,
)
from gateway.providers.wire import bad_response as _bad_response
from gateway.providers.wire import decode_object as _decode_object
from gateway.providers.wire import reasoning_budget, refuse_unhonoured
from gateway.providers.wire import retry_after_seconds as _retry_after
from gateway.providers.wire import token_count as _int
from pricing.cost import Usage

_decode = msgspec.json.decode
_encode = msgspec.json.encode

ANTHROPIC_VERSION = "2023-06-01"
# The Messages API requires `max_tokens`. The proxy should fill ChatRequest.max_output_tokens from the
# catalog (the same number it reserved credit for); this is the last resort, and 4096 is accepted by
# every Claude model (the smallest maximum, claude-3-haiku's).
DEFAULT_MAX_TOKENS = 4096

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server-tool loop paused; the turn is over for this response
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (status when none is known, i.e. a stream `error` event; OpenAI type; code).
_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", "invalid_api_key"),
    "billing_error": (402, "upstream_error", "upstream_billing_error"),
    "permission_error": (403, "permission_error", None),
    "not_found_error": (404, "not_found_error", None),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, "server_error", "api_error"),
    "timeout_error": (504, "server_error", "timeout"),
    "overloaded_error": (529, "server_error", "overloaded"),
}

# Anthropic-native body fields a client may set on purpose (openai SDK `extra_body`). Nothing else from
# the client body is forwarded: the Messages API rejects fields it does not know.
_PASSTHROUGH = ("top_k", "thinking", "cache_control", "context_management", "output_config")

# The OpenAI request fields this adapter passes or translates; any other is refused (wire.refuse_unhonoured).
HANDLED_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "stop",
        "n",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "response_format",
        "reasoning_effort",
        *_PASSTHROUGH,
    }
)

# `response_format` becomes a tool the model is forced to call: its input_schema is the requested schema,
# and its input comes back as the message content (JSON text), as an OpenAI client expects. The name is
# the gateway's own, so an answer's tool_use of it is known to be the structured output.
JSON_OUTPUT_TOOL = "synapgate_json_output"

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


@dataclass(slots=True)
class AnthropicStreamState(StreamState):
    """An Anthropic stream's state: which tool call each content block is, usage so far, thinking text."""

    # content block index -> OpenAI tool-call index (which counts tool calls only, not text blocks)
    tool_index: dict[int, int] = field(default_factory=dict)
    # the latest non-null value of each Anthropic usage field (message_start, then message_delta)
    usage_fields: dict[str, Any] = field(default_factory=dict)
    reasoning_parts: list[str] = field(default_factory=list)
    # content block indexes of the structured-output tool: their input is streamed as content
    json_blocks: set[int] = field(default_factory=set)


class AnthropicAdapter:
    """The ProviderAdapter for Anthropic's Messages API.

    `default_max_tokens` is sent when the request carries no output limit (Anthropic requires one).
    `clock` gives `created` (Anthropic answers carry no timestamp); tests pass a fixed one.
    Thinking is never part of `content`: it is exposed as the non-standard `reasoning_content`
    (message field, and delta field in streams), as DeepSeek does and many OpenAI clients read.
    """

    name: ClassVar[str] = "anthropic"

    def __init__(
        self,
        *,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_max_tokens = default_max_tokens
        self.clock = clock

    # --- request -----------------------------------------------------------------------------------

    def build_request(self, req: ChatRequest, upstream_model: str, cred: Credential) -> UpstreamRequest:
        """POST {base_url}/messages with the OpenAI request rewritten into a Messages API body."""
        src = req.body
        system, messages = _translate_messages(req.messages)
        body: JSONObject = {
            "model": upstream_model,
            "max_tokens": req.max_output_tokens or self.default_max_tokens,
            "messages": messages,
        }
        if system:
            # A single plain system prompt goes as a string (as Anthropic's own SDKs send it); several,
            # or ones carrying cache_control, as text blocks.
            body["system"] = system[0]["text"] if len(system) == 1 and len(system[0]) == 2 else system
        for key in ("temperature", "top_p"):
            if src.get(key) is not None:
                body[key] = src[key]
        stop = src.get("stop")
        if isinstance(stop, str):
            body["stop_sequences"] = [stop]
        elif isinstance(stop, list) and stop:
            body["stop_sequences"] = list(stop)
        n = src.get("n")
        if isinstance(n, int) and n > 1:
            raise _invalid("anthropic models return one choice per request; n must be 1", param="n")
        refuse_unhonoured(src, HANDLED_FIELDS, "anthropic")
        tools = src.get("tools")
        json_tool = _json_output_tool(src.get("response_format"), bool(tools))
        if json_tool is not None:
            body["tools"] = [json_tool]
            body["tool_choice"] = {"type": "tool", "name": JSON_OUTPUT_TOOL}
        elif tools:
            body["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
            choice = _tool_choice(src.get("tool_choice"), src.get("parallel_tool_calls"))
            if choice is not None:
                body["tool_choice"] = choice
        user = src.get("user") or src.get("safety_identifier")
        if isinstance(user, str) and user:
            body["metadata"] = {"user_id": user}
        effort = src.get("reasoning_effort")
        if effort is not None and src.get("thinking") is None:
            thinking = _thinking(effort, body["max_tokens"])
            if thinking is not None:
                body["thinking"] = thinking
        for key in _PASSTHROUGH:
            if src.get(key) is not None:
                body[key] = src[key]
        thinking_on = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
        if json_tool is not None and thinking_on:
            # Anthropic refuses thinking with a forced tool, which is how response_format is asked.
            raise _invalid(
                "anthropic models cannot think and answer in response_format together",
                param="reasoning_effort" if src.get("thinking") is None else "thinking",
            )
        # Anthropic always reports usage on streams (message_start and message_delta); nothing to ask.
        body["stream"] = bool(req.stream)
        return UpstreamRequest(
            method="POST",
            url=cred.base_url.rstrip("/") + "/messages",
            headers={
                "x-api-key": cred.api_key,
                "anthropic-version": ANTHROPIC_VERSION,
                "content-type": "application/json",
            },
            body=_encode(body),
        )

    # --- non-streaming response --------------------------------------------------------------------

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> ChatResult:
        """A `chat.completion` from an Anthropic `message`; ProviderError for an error answer."""
        if not 200 <= status < 300:
            raise _http_error(status, headers, body)
        msg = _decode_object(body, "anthropic returned a response that is not a JSON object")
        if msg.get("type") == "error":
            raise _error_from_payload(msg.get("error"), status=None, retry_after=_retry_after(headers))
        blocks = msg.get("content")
        if not isinstance(blocks, list):
            raise _bad_response("anthropic returned a message without content")
        texts: list[str] = []
        thinking: list[str] = []
        tool_calls: list[JSONObject] = []
        json_output = False
        for block in blocks:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                thinking.append(block["thinking"])
            elif kind == "tool_use" and block.get("name") == JSON_OUTPUT_TOOL:
                texts.append(_encode(block.get("input") or {}).decode())
                json_output = True
            elif kind == "tool_use":
                tool_calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {
                            "name": block.get("name"),
                            "arguments": _encode(block.get("input") or {}).decode(),
                        },
                    }
                )
            # redacted_thinking, compaction, server_tool_use and server-tool results have no OpenAI
            # equivalent and are not the answer's text: they are left out.
        text = "".join(texts)
        message: JSONObject = {
            "role": "assistant",
            "content": text if texts or not tool_calls else None,
            "refusal": None,
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        if thinking:
            message["reasoning_content"] = "".join(thinking)
        finish_reason = _finish_reason(msg.get("stop_reason"))
        if finish_reason == "tool_calls" and json_output and not tool_calls:
            finish_reason = "stop"  # the forced structured-output tool: the answer is the content
        usage = _usage(_usage_fields({}, msg.get("usage")))
        out: JSONObject = {
            "id": msg.get("id"),
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": msg.get("model"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        }
        if usage is not None:
            out["usage"] = _openai_usage(usage)
        arguments = "".join(c["function"]["arguments"] for c in tool_calls)
        return ChatResult(body=out, usage=usage, content_text=text + arguments, finish_reason=finish_reason)

    # --- streaming ---------------------------------------------------------------------------------

    def new_stream_state(self) -> AnthropicStreamState:
        return AnthropicStreamState()

    def parse_stream_event(self, state: AnthropicStreamState, event: SSEEvent) -> Sequence[JSONObject]:
        """OpenAI chunks for one Anthropic stream event; `message_stop` ends the stream with a usage chunk."""
        data = event.data
        if not data or data.isspace():
            return ()
        payload = _decode_object(data.encode(), "anthropic sent a stream event that is not a JSON object")
        kind = payload.get("type")
        if event.event == "error" or kind == "error":
            # e.g. `overloaded_error` after HTTP 200: the stream ends here without message_stop.
            raise _error_from_payload(payload.get("error"), status=None, retry_after=None)
        if kind == "message_start":
            return self._message_start(state, payload.get("message"))
        if kind == "content_block_start":
            return _block_start(state, payload)
        if kind == "content_block_delta":
            return _block_delta(state, payload)
        if kind == "message_delta":
            _update_usage(state, payload.get("usage"))
            delta = payload.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if reason is None:
                return ()
            state.finish_reason = _finish_reason(reason)
            if state.finish_reason == "tool_calls" and state.json_blocks and not state.tool_index:
                state.finish_reason = "stop"  # the structured-output tool only: its input was the content
            return (_chunk(state, {}, state.finish_reason),)
        if kind == "message_stop":
            state.done = True
            if state.usage is None:
                return ()
            return (
                {
                    "id": state.response_id,
                    "object": "chat.completion.chunk",
                    "created": state.created,
                    "model": state.model,
                    "choices": [],
                    "usage": _openai_usage(state.usage),
                },
            )
        # ping, content_block_stop, and event types added later carry nothing for the client.
        return ()

    def _message_start(self, state: AnthropicStreamState, message: Any) -> Sequence[JSONObject]:
        if not isinstance(message, dict):
            raise _bad_response("anthropic sent message_start without a message")
        if isinstance(message.get("id"), str):
            state.response_id = message["id"]
        if isinstance(message.get("model"), str):
            state.model = message["model"]
        state.created = int(self.clock())
        # The input side is final here; output_tokens (1 or so) is provisional until message_delta. A
        # stream cut before message_delta therefore has exact input usage but too few output tokens.
        _update_usage(state, message.get("usage"))
        return (_chunk(state, {"role": "assistant", "content": ""}),)


# --- stream helpers --------------------------------------------------------------------------------


def _chunk(state: StreamState, delta: JSONObject, finish_reason: str | None = None) -> JSONObject:
    return {
        "id": state.response_id,
        "object": "chat.completion.chunk",
        "created": state.created,
        "model": state.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _block_start(state: AnthropicStreamState, payload: JSONObject) -> Sequence[JSONObject]:
    block = payload.get("content_block")
    if not isinstance(block, dict):
        return ()
    kind = block.get("type")
    if kind == "text" and block.get("text"):
        state.text_parts.append(block["text"])
        return (_chunk(state, {"content": block["text"]}),)
    if kind == "tool_use" and block.get("name") == JSON_OUTPUT_TOOL:
        state.json_blocks.add(payload.get("index", -1))
        return ()
    if kind == "tool_use":
        index = len(state.tool_index)
        state.tool_index[payload.get("index", -1)] = index
        # `input` is always {} here; the arguments follow as input_json_delta fragments.
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return (_chunk(state, {"tool_calls": [call]}),)
    return ()


def _block_delta(state: AnthropicStreamState, payload: JSONObject) -> Sequence[JSONObject]:
    delta = payload.get("delta")
    if not isinstance(delta, dict):
        return ()
    kind = delta.get("type")
    if kind == "text_delta":
        text = delta.get("text")
        if not text or not isinstance(text, str):
            return ()
        state.text_parts.append(text)
        return (_chunk(state, {"content": text}),)
    if kind == "input_json_delta":
        fragment = delta.get("partial_json")
        block_index = payload.get("index", -1)
        if block_index in state.json_blocks and fragment and isinstance(fragment, str):
            state.text_parts.append(fragment)
            return (_chunk(state, {"content": fragment}),)
        index = state.tool_index.get(block_index)
        # The first fragment is often "": nothing to send.
        if not fragment or not isinstance(fragment, str) or index is None:
            return ()
        state.text_parts.append(fragment)
        return (_chunk(state, {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),)
    if kind == "thinking_delta":
        thinking = delta.get("thinking")
        if not thinking or not isinstance(thinking, str):
            return ()
        state.reasoning_parts.append(thinking)
        return (_chunk(state, {"reasoning_content": thinking}),)
    # signature_delta, citations_delta, compaction_delta: not part of the OpenAI answer.
    return ()


def _update_usage(state: AnthropicStreamState, raw: Any) -> None:
    fields = _usage_fields(state.usage_fields, raw)
    usage = _usage(fields)
    if usage is not None:
        state.usage = usage


# --- usage -----------------------------------------------------------------------------------------


def _usage_fields(fields: dict[str, Any], raw: Any) -> dict[str, Any]:
    """Merge an Anthropic usage object into `fields`: the latest non-null value of each field wins.

    message_delta usage is cumulative (replace, never add); newer API versions repeat the input and
    cache fields there, and those may differ from message_start's (see `_usage` on compaction).
    """
    if isinstance(raw, dict):
        for key in _USAGE_FIELDS:
            value = raw.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                fields[key] = value
        iterations = raw.get("iterations")
        if isinstance(iterations, list) and iterations:
            fields["iterations"] = iterations
    return fields


def _usage(fields: Mapping[str, Any]) -> Usage | None:
    """Anthropic usage in SynapGate's meaning: prompt_tokens = input + cache reads + cache writes.

    Anthropic's `input_tokens` counts only the uncached input. With server-side compaction the request
    samples twice and the top-level numbers cover only the final (message) iteration; the compaction
    iteration (55,096 cache-read tokens in the recorded stream) is billed too and appears only in
    `usage.iterations`. When iterations are reported, the usage is their sum.
    """
    if "input_tokens" not in fields and "output_tokens" not in fields:
        return None
    iterations = fields.get("iterations")
    parts = [p for p in iterations if isinstance(p, dict)] if iterations else [fields]
    uncached = sum(_int(p.get("input_tokens")) for p in parts)
    read = sum(_int(p.get("cache_read_input_tokens")) for p in parts)
    write = sum(_int(p.get("cache_creation_input_tokens")) for p in parts)
    output = sum(_int(p.get("output_tokens")) for p in parts)
    return Usage(
        prompt_tokens=uncached + read + write,
        completion_tokens=output,
        cached_tokens=read,
        cache_write_tokens=write,
        source="provider",
    )


def _openai_usage(usage: Usage) -> JSONObject:
    """The usage object an OpenAI client reads (cache writes in OpenAI's newer `cache_write_tokens`)."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
    }


def _finish_reason(reason: Any) -> str:
    return _FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


# --- request translation ---------------------------------------------------------------------------


def _translate_messages(messages: Sequence[Any]) -> tuple[list[JSONObject], list[JSONObject]]:
    """OpenAI messages -> (system text blocks, alternating Anthropic turns of content blocks).

    Anthropic has no system role in `messages`, wants tool results as `tool_result` blocks of a user
    turn, and rejects two consecutive turns of the same role: consecutive same-role turns (several tool
    results, a tool result followed by a user message) are merged into one.
    """
    system: list[JSONObject] = []
    turns: list[JSONObject] = []

    def push(role: str, blocks: list[JSONObject]) -> None:
        if not blocks:
            return  # Anthropic rejects empty content
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _invalid("each message must be an object", param=f"messages[{i}]")
        role = msg.get("role")
        content = msg.get("content")
        where = f"messages[{i}].content"
        if role in ("system", "developer"):
            system.extend(_content_blocks(content, where, text_only=True))
        elif role == "user":
            push("user", _content_blocks(content, where))
        elif role == "assistant":
            blocks = _content_blocks(content, where, text_only=True)
            for j, call in enumerate(msg.get("tool_calls") or ()):
                blocks.append(_tool_use(call, f"messages[{i}].tool_calls[{j}]"))
            push("assistant", blocks)
        elif role == "tool":
            result: JSONObject = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id")}
            if isinstance(content, str):
                if content:
                    result["content"] = content
            elif content:
                result["content"] = _content_blocks(content, where)
            push("user", [result])
        else:
            raise _invalid(f"unsupported message role {role!r}", param=f"messages[{i}].role")
    return system, turns


def _content_blocks(content: Any, where: str, *, text_only: bool = False) -> list[JSONObject]:
    """OpenAI message content (a string or content parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        # Anthropic rejects empty text blocks ("text content blocks must be non-empty").
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid("message content must be a string or a list of content parts", param=where)
    blocks: list[JSONObject] = []
    for j, part in enumerate(content):
        param = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise _invalid("content parts must be objects", param=param)
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str) or not text:
                continue
            block: JSONObject = {"type": "text", "text": text}
        elif kind == "image_url" and not text_only:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            block = {"type": "image", "source": _media_source(url, param)}
        elif kind == "file" and not text_only:
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data, str):
                raise _invalid("anthropic needs files inline as a data: URL in file_data", param=param)
            source = _media_source(data, param)
            media = source.get("media_type", "")
            if media != "application/pdf" and not media.startswith("image/"):
                raise _invalid(f"anthropic does not accept {media or 'this'} files", param=param)
            block = {"type": "document" if media == "application/pdf" else "image", "source": source}
        else:
            raise _invalid(f"content part type {kind!r} is not supported here by anthropic", param=param)
        if "cache_control" in part:
            # Prompt caching breakpoints set by the client on a part keep working.
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _media_source(url: Any, param: str) -> JSONObject:
    """A `data:` URL becomes a base64 source; an http(s) URL a `url` source Anthropic fetches itself."""
    if not isinstance(url, str) or not url:
        raise _invalid("image_url.url must be a non-empty string", param=param)
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or ";base64" not in header:
            raise _invalid("data: URLs must be base64-encoded", param=param)
        media_type = header[len("data:") :].split(";", 1)[0]
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise _invalid("image URLs must be http(s) or data: URLs", param=param)


def _tool_use(call: Any, param: str) -> JSONObject:
    """An assistant's OpenAI tool call as a `tool_use` block (arguments: JSON text -> object)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise _invalid("tool calls must have a function", param=param)
    arguments = function.get("arguments")
    args: Any = {}
    if isinstance(arguments, str) and arguments.strip():
        try:
            args = _decode(arguments)
        except msgspec.DecodeError:
            raise _invalid(
                "tool call arguments are not valid JSON", param=f"{param}.function.arguments"
            ) from None
    elif isinstance(arguments, dict):
        args = arguments
    if not isinstance(args, dict):
        raise _invalid("tool call arguments must be a JSON object", param=f"{param}.function.arguments")
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": args}


def _tool(tool: Any, i: int) -> JSONObject:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type", "function") != "function"
        or not isinstance(function, dict)
    ):
        raise _invalid("only function tools are supported by anthropic", param=f"tools[{i}]")
    out: JSONObject = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    # Anthropic requires an input schema; OpenAI allows a function without parameters.
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


# Anthropic's smallest thinking budget.
MIN_THINKING_BUDGET = 1024


def _thinking(effort: Any, max_tokens: int) -> JSONObject | None:
    """OpenAI reasoning_effort as extended thinking: a budget below max_tokens (Anthropic's rule), or None
    for "none". A max_tokens too small for the smallest budget cannot be honoured: refused."""
    budget = reasoning_budget(effort)
    if budget == 0:
        return None
    budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        raise _invalid(
            f"reasoning_effort needs max_tokens above {MIN_THINKING_BUDGET} for anthropic models "
            "(the thinking budget is part of the output)",
            param="reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _json_output_tool(response_format: Any, has_tools: bool) -> JSONObject | None:
    """The forced tool that asks Claude for JSON (response_format json_object / json_schema), or None.

    Claude has no JSON mode: a tool whose input_schema is the schema, with tool_choice forcing it, makes
    the model answer with an object of that schema (its input), which the answer carries as the content.
    """
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        schema: JSONObject = {"type": "object"}
        description = "Answer with a JSON object."
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        schema_value = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema_value, dict) or schema_value.get("type", "object") != "object":
            raise _invalid(
                "anthropic needs response_format.json_schema.schema to be an object schema",
                param="response_format.json_schema.schema",
            )
        schema = schema_value
        assert isinstance(spec, dict)
        description = "Answer with a JSON object of this schema"
        if isinstance(spec.get("name"), str):
            description += f" ({spec['name']})"
        if isinstance(spec.get("description"), str):
            description += f": {spec['description']}"
        description += "."
    else:
        raise _invalid(
            "response_format.type must be text, json_object or json_schema", param="response_format.type"
        )
    if has_tools:
        # The answer's tool is forced, so the model could never call the client's tools.
        raise _invalid(
            "anthropic models cannot combine response_format with tools (the structured answer is a "
            "forced tool call)",
            param="response_format",
        )
    return {"name": JSON_OUTPUT_TOOL, "description": description, "input_schema": schema}


def _tool_choice(choice: Any, parallel: Any) -> JSONObject | None:
    """OpenAI tool_choice -> Anthropic: auto, none, required -> any, a named function -> tool."""
    out: JSONObject | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise _invalid("unsupported tool_choice", param="tool_choice")
    if parallel is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


# --- errors ----------------------------------------------------------------------------------------


def _http_error(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    retry_after = _retry_after(headers)
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), dict):
        # An HTML page from a proxy, an empty body: keep the status (429/5xx stay retryable), not the body.
        return ProviderError(
            status, f"anthropic returned HTTP {status} without an error message", retry_after=retry_after
        )
    return _error_from_payload(obj["error"], status=status, retry_after=retry_after)


def _error_from_payload(err: Any, *, status: int | None, retry_after: float | None) -> ProviderError:
    """`{"type": ..., "message": ...}` -> ProviderError; the HTTP status, when there is one, wins."""
    if not isinstance(err, dict):
        return ProviderError(status or 502, "anthropic reported an error without a message")
    etype = err.get("type")
    etype = etype if isinstance(etype, str) else ""
    # An error type we do not know yet keeps its name as the code.
    default_status, openai_type, code = _ERRORS.get(etype, (502, "upstream_error", etype or None))
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"anthropic reported {etype or 'an error'}"
    return ProviderError(
        status or default_status, message, type=openai_type, code=code, retry_after=retry_after
    )


def _invalid(message: str, *, param: str | None = None) -> ProviderError:
    """The client's request cannot be expressed for Anthropic: a 400 before anything goes upstream."""
    return ProviderError(400, message, type="invalid_request_error", param=param)
