"""OpenAI Responses API as an inbound format: `/v1/responses` (and `/v1/responses/input_tokens`).

Pure translation, no I/O. Two paths use it:

- NATIVE (OpenAI models): the client's body goes upstream with only `model` replaced and the answer is
  relayed unchanged; this module reads usage, text, completion and mid-stream errors from it.
- TRANSLATED (other providers): the Responses request becomes a `ChatRequest` for the chat adapters, and
  their `chat.completion` / `chat.completion.chunk` objects become a Response object / the Responses
  streaming event sequence. The translated path stores nothing, so `previous_response_id` is refused.

Errors are OpenAI's envelope (`ProviderError`), naming the field in `param`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.providers.base import (
    ChatRequest,
    Credential,
    JSONObject,
    ProviderError,
    SSEEvent,
    UpstreamRequest,
)
from gateway.providers.openai_compat import OPENAI_COMPAT_ADAPTERS
from gateway.providers.wire import token_count as _int
from pricing.cost import Usage
from pricing.tokens import count_prompt_tokens

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _invalid(message: str, param: str | None) -> ProviderError:
    return ProviderError(400, message, type="invalid_request_error", param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the inbound request -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated `/v1/responses` body: the fields the gateway acts on, and the body as sent."""

    model: str
    input: str | list[JSONObject]
    instructions: str | None
    tools: list[JSONObject]
    tool_choice: str | JSONObject | None
    text_format: JSONObject | None  # text.format
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    stream: bool
    store: bool | None
    previous_response_id: str | None
    reasoning: JSONObject | None
    metadata: JSONObject | None
    body: JSONObject = field(repr=False)


_MESSAGE_ROLES = ("user", "assistant", "system", "developer")
_PART_TYPES = ("input_text", "input_image", "input_file", "input_audio", "output_text", "refusal")


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise _invalid(f"Invalid type for '{where}': expected an object.", where)
    kind = item.get("type", "message")
    if kind == "message":
        if item.get("role") not in _MESSAGE_ROLES:
            raise _invalid(
                f"Invalid value for '{where}.role': expected one of {', '.join(_MESSAGE_ROLES)}.",
                f"{where}.role",
            )
        content = item.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                ptype = part.get("type") if isinstance(part, dict) else None
                if ptype not in _PART_TYPES:
                    raise _invalid(
                        f"Invalid value for '{where}.content[{j}].type'.", f"{where}.content[{j}].type"
                    )
        elif not isinstance(content, str):
            raise _invalid(
                f"Invalid type for '{where}.content': expected a string or an array.", f"{where}.content"
            )
    elif kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            if not isinstance(item.get(key), str):
                raise _invalid(f"Missing required parameter: '{where}.{key}'.", f"{where}.{key}")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _invalid(f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id")
        if not isinstance(item.get("output"), (str, list)):
            raise _invalid(f"Missing required parameter: '{where}.output'.", f"{where}.output")
    elif not isinstance(kind, str):
        raise _invalid(f"Invalid type for '{where}.type': expected a string.", f"{where}.type")


def parse_responses_request(body: bytes | JSONObject) -> ResponsesRequest:
    """Validate a Responses API body; ProviderError (400, `param` names the field) when it is not one.

    Item types other than messages and function calls (reasoning, item_reference, built-in tool calls)
    are accepted: the native path relays them; the translated path says which it cannot carry.
    """
    if isinstance(body, bytes):
        try:
            obj = _decode(body)
        except msgspec.DecodeError:
            raise _invalid("We could not parse the JSON body of your request.", None) from None
    else:
        obj = body
    if not isinstance(obj, dict):
        raise _invalid("The request body must be a JSON object.", None)
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("Missing required parameter: 'model'.", "model")
    raw_input = obj.get("input")
    if isinstance(raw_input, list):
        for i, item in enumerate(raw_input):
            _check_item(item, f"input[{i}]")
    elif not isinstance(raw_input, str):
        raise _invalid("Invalid type for 'input': expected a string or an array of input items.", "input")
    instructions = obj.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid("Invalid type for 'instructions': expected a string.", "instructions")
    tools = obj.get("tools") or []
    if not isinstance(tools, list):
        raise _invalid("Invalid type for 'tools': expected an array.", "tools")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _invalid(f"Missing required parameter: 'tools[{i}].type'.", f"tools[{i}].type")
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise _invalid(f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name")
    tool_choice = obj.get("tool_choice")
    if tool_choice is not None and not (
        tool_choice in ("none", "auto", "required")
        or (isinstance(tool_choice, dict) and "type" in tool_choice)
    ):
        raise _invalid("Invalid value for 'tool_choice'.", "tool_choice")
    text = obj.get("text")
    text_format = None
    if text is not None:
        if not isinstance(text, dict):
            raise _invalid("Invalid type for 'text': expected an object.", "text")
        text_format = text.get("format")
        if text_format is not None:
            kind = text_format.get("type") if isinstance(text_format, dict) else None
            if kind not in ("text", "json_schema", "json_object"):
                raise _invalid("Invalid value for 'text.format.type'.", "text.format.type")
            if kind == "json_schema":
                if not isinstance(text_format.get("name"), str):
                    raise _invalid("Missing required parameter: 'text.format.name'.", "text.format.name")
                if not isinstance(text_format.get("schema"), dict):
                    raise _invalid("Missing required parameter: 'text.format.schema'.", "text.format.schema")
    max_output = obj.get("max_output_tokens")
    if max_output is not None and (not _is_int(max_output) or max_output < 1):
        raise _invalid("Invalid 'max_output_tokens': expected a positive integer.", "max_output_tokens")
    for key, high in (("temperature", 2), ("top_p", 1)):
        value = obj.get(key)
        if value is not None and (not _is_number(value) or not 0 <= value <= high):
            raise _invalid(f"Invalid '{key}': expected a number between 0 and {high}.", key)
    for key in ("stream", "store"):
        value = obj.get(key)
        if value is not None and not isinstance(value, bool):
            raise _invalid(f"Invalid type for '{key}': expected a boolean.", key)
    previous = obj.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _invalid("Invalid type for 'previous_response_id': expected a string.", "previous_response_id")
    for key in ("reasoning", "metadata"):
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            raise _invalid(f"Invalid type for '{key}': expected an object.", key)
    return ResponsesRequest(
        model=model,
        input=raw_input,
        instructions=instructions,
        tools=tools,
        tool_choice=tool_choice,
        text_format=text_format,
        max_output_tokens=max_output,
        temperature=obj.get("temperature"),
        top_p=obj.get("top_p"),
        stream=bool(obj.get("stream")),
        store=obj.get("store"),
        previous_response_id=previous,
        reasoning=obj.get("reasoning"),
        metadata=obj.get("metadata"),
        body=obj,
    )


# --- NATIVE: OpenAI models, relayed --------------------------------------------------------------------


def build_native_request(
    req: ResponsesRequest, upstream_model: str, cred: Credential, *, input_tokens: bool = False
) -> UpstreamRequest:
    """POST {base_url}/responses (or /responses/input_tokens) with the client's body, our model name.

    Streams need nothing added: `response.completed` always carries the usage.
    """
    body = dict(req.body)
    body["model"] = upstream_model
    return UpstreamRequest(
        method="POST",
        url=cred.base_url.rstrip("/") + ("/responses/input_tokens" if input_tokens else "/responses"),
        headers={"Authorization": f"Bearer {cred.api_key}", "Content-Type": "application/json"},
        body=_encode(body),
    )


def usage_from_responses(raw: Any) -> Usage | None:
    """A Responses `usage` object in SynapGate's meaning, or None when absent (null before completion).

    `input_tokens_details.cached_tokens` (and, newer, `cache_write_tokens`) are parts of input_tokens;
    `output_tokens_details.reasoning_tokens` is part of output_tokens. `tool_usage` is not in `usage`.
    """
    if not isinstance(raw, dict) or ("input_tokens" not in raw and "output_tokens" not in raw):
        return None
    inp = raw.get("input_tokens_details")
    out = raw.get("output_tokens_details")
    return Usage(
        prompt_tokens=_int(raw.get("input_tokens")),
        completion_tokens=_int(raw.get("output_tokens")),
        cached_tokens=_int(inp.get("cached_tokens")) if isinstance(inp, dict) else 0,
        cache_write_tokens=_int(inp.get("cache_write_tokens")) if isinstance(inp, dict) else 0,
        reasoning_tokens=_int(out.get("reasoning_tokens")) if isinstance(out, dict) else 0,
        source="provider",
    )


def _output_text(output: Any) -> str:
    """Generated text of Response output items: message text, refusals, function-call arguments."""
    parts: list[str] = []
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict):
                    value = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                    if isinstance(value, str):
                        parts.append(value)
        elif kind == "function_call" and isinstance(item.get("arguments"), str):
            parts.append(item["arguments"])
        elif kind == "reasoning":
            for summary in item.get("summary") or ():
                if isinstance(summary, dict) and isinstance(summary.get("text"), str):
                    parts.append(summary["text"])
    return "".join(parts)


@dataclass(slots=True)
class NativeResponse:
    """What the gateway needs from a relayed Response: its usage, text and status."""

    body: JSONObject
    usage: Usage | None
    content_text: str
    status: str | None  # completed | incomplete | failed | ...


_OPENAI = OPENAI_COMPAT_ADAPTERS["openai"]


def native_error(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """OpenAI's error answer as a ProviderError (its message, type, code and param kept).

    /v1/responses answers an unknown model with HTTP 400 `model_not_found` (not 404), and validation
    errors as plain JSON even when a stream was asked for.
    """
    return _OPENAI._http_error(status, headers, body)  # type: ignore[attr-defined,no-any-return]


def parse_native_response(status: int, headers: Mapping[str, str], body: bytes) -> NativeResponse:
    """Usage and text of a non-streaming Responses answer; ProviderError for an error answer."""
    if not 200 <= status < 300:
        raise native_error(status, headers, body)
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    if not isinstance(obj, dict) or obj.get("object") != "response":
        raise ProviderError(
            502, "openai returned a response that is not a Response", code="bad_upstream_response"
        )
    state = obj.get("status")
    return NativeResponse(
        body=obj,
        usage=usage_from_responses(obj.get("usage")),
        content_text=_output_text(obj.get("output")),
        status=state if isinstance(state, str) else None,
    )


def parse_input_tokens(body: bytes) -> int:
    """`input_tokens` of `/v1/responses/input_tokens` (`{"input_tokens": N, "object": ...}`)."""
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    if not isinstance(obj, dict) or not _is_int(obj.get("input_tokens")):
        raise ProviderError(502, "openai returned a count without input_tokens", code="bad_upstream_response")
    return int(obj["input_tokens"])


# In-stream error types -> the HTTP status OpenAI gives the same condition before a stream starts.
_STREAM_ERROR_STATUS = {
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "invalid_request_error": 400,
    "server_error": 500,
}


def _stream_error(err: Any) -> ProviderError:
    status = 502
    if isinstance(err, dict):
        for key in ("code", "type"):
            value = err.get(key)
            if isinstance(value, str) and value in _STREAM_ERROR_STATUS:
                status = _STREAM_ERROR_STATUS[value]
                break
        if not err.get("type"):
            err = {**err, "type": "upstream_error"}
    return _OPENAI._error_from_object(err, default_status=status)  # type: ignore[attr-defined,no-any-return]


@dataclass(slots=True)
class ResponsesStreamMeter:
    """Reads a relayed Responses stream, event by event, without changing it.

    Usage is `null` until `response.completed` (or `response.incomplete`), which also ends the stream
    (`done`). A `type: error` event, and `response.failed`, set `error` (the stream ends there); the
    failed response's usage, when present, is kept (what was generated is still billed).
    """

    usage: Usage | None = None
    text_parts: list[str] = field(default_factory=list)
    status: str | None = None
    response_id: str | None = None
    model: str | None = None
    done: bool = False
    error: ProviderError | None = None

    @property
    def content_text(self) -> str:
        return "".join(self.text_parts)

    def feed(self, event: SSEEvent) -> None:
        """Take one event (the route relays its bytes unchanged)."""
        data = event.data
        if not data or data.isspace() or data.strip() == "[DONE]":
            return
        try:
            payload = _decode(data)
        except msgspec.DecodeError:
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or event.event
        if kind == "error":
            # Either {"type":"error","error":{...}} (2025-11 recordings) or the fields at top level.
            err = payload.get("error") if isinstance(payload.get("error"), dict) else payload
            if self.error is None:
                self.error = _stream_error(err)
            return
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta",
                    "response.refusal.delta", "response.reasoning_summary_text.delta"):  # fmt: skip
            delta = payload.get("delta")
            if isinstance(delta, str):
                self.text_parts.append(delta)
            return
        response = payload.get("response")
        if not isinstance(response, dict):
            return
        if isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if isinstance(response.get("model"), str):
            self.model = response["model"]
        if isinstance(response.get("status"), str):
            self.status = response["status"]
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            usage = usage_from_responses(response.get("usage"))
            if usage is not None:
                self.usage = usage
            self.done = True
            if kind == "response.failed" and self.error is None:
                self.error = _stream_error(response.get("error") or {"message": "the response failed"})


# --- input token estimate ------------------------------------------------------------------------------


def count_input_tokens(req: ResponsesRequest) -> tuple[int, str]:
    """An estimate of the request's input tokens (tiktoken), for the reservation and for models whose
    provider has no counting endpoint. Items the translation cannot carry are counted as their JSON."""
    messages = _chat_messages(req, strict=False)
    tools = [_function_tool(t, i, strict=False) for i, t in enumerate(req.tools)]
    return count_prompt_tokens(req.model, messages, tools or None)


def input_tokens_body(input_tokens: int) -> JSONObject:
    """The `/v1/responses/input_tokens` answer, the shape OpenAI sends."""
    return {"object": "response.input_tokens", "input_tokens": input_tokens}


# --- TRANSLATED: Responses request -> chat completions -------------------------------------------------


def to_chat_request(req: ResponsesRequest, *, supports_reasoning: bool = False) -> ChatRequest:
    """The Responses request as a chat-completions request for a non-OpenAI model.

    `previous_response_id` is a 400: the translated path keeps no conversation state. `reasoning.effort`
    becomes `reasoning_effort` when the model reasons, and is otherwise ignored (a hint, like OpenAI's
    own non-reasoning models would not take it either). Built-in tools (web_search, file_search, ...) and
    `reasoning` input items from OpenAI models cannot be carried: tools are refused, reasoning items
    (encrypted, OpenAI-only) are dropped.
    """
    if req.previous_response_id:
        raise _invalid(
            "previous_response_id is not supported for this model: responses served by a non-OpenAI model "
            "are not stored; send the whole conversation in 'input'.",
            "previous_response_id",
        )
    messages = _chat_messages(req, strict=True)
    body: JSONObject = {"model": req.model, "messages": messages}
    if req.max_output_tokens is not None:
        body["max_tokens"] = req.max_output_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.tools:
        body["tools"] = [_function_tool(t, i, strict=True) for i, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        body["tool_choice"] = _chat_tool_choice(req.tool_choice)
    parallel = req.body.get("parallel_tool_calls")
    if isinstance(parallel, bool) and req.tools:
        body["parallel_tool_calls"] = parallel
    if req.text_format is not None:
        response_format = _response_format(req.text_format)
        if response_format is not None:
            body["response_format"] = response_format
    effort = (req.reasoning or {}).get("effort")
    if supports_reasoning and isinstance(effort, str) and effort not in ("none",):
        body["reasoning_effort"] = effort
    user = req.body.get("safety_identifier") or req.body.get("user")
    if isinstance(user, str) and user:
        body["user"] = user
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return ChatRequest(
        model=req.model,
        messages=messages,
        stream=req.stream,
        include_usage=True,  # response.completed always carries usage
        max_output_tokens=req.max_output_tokens,
        body=body,
    )


def _part(part: JSONObject, where: str, strict: bool) -> JSONObject:
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            if strict:
                raise _invalid(
                    "input_image needs an image_url (file_id needs OpenAI's file store)", f"{where}.image_url"
                )
            return {"type": "image_url", "image_url": {"url": ""}}
        image: JSONObject = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file: JSONObject = {"file_data": part["file_data"]}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    if strict:
        raise _invalid(f"content part type {kind!r} cannot be sent to this model", f"{where}.type")
    return {"type": "text", "text": _encode(part).decode()}


def _content(content: Any, where: str, strict: bool) -> str | list[JSONObject]:
    if isinstance(content, str):
        return content
    parts = [_part(p, f"{where}[{j}]", strict) for j, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _chat_messages(req: ResponsesRequest, *, strict: bool) -> list[JSONObject]:
    """instructions -> system; input items -> chat messages, function calls and their outputs."""
    out: list[JSONObject] = []
    if req.instructions:
        out.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        out.append({"role": "user", "content": req.input})
        return out
    open_assistant: JSONObject | None = None  # the assistant message function calls attach to
    for i, item in enumerate(req.input):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item["role"]
            content = _content(item["content"], f"{where}.content", strict)
            if role == "assistant":
                text = (
                    content if isinstance(content, str) else "".join(str(p.get("text", "")) for p in content)
                )
                open_assistant = {"role": "assistant", "content": text}
                out.append(open_assistant)
            else:
                out.append({"role": role, "content": content})
                open_assistant = None
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if open_assistant is None:
                open_assistant = {"role": "assistant", "content": None}
                out.append(open_assistant)
            open_assistant.setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            output = item["output"]
            if isinstance(output, list):
                output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
            open_assistant = None
        elif kind == "reasoning":
            continue  # an OpenAI model's encrypted reasoning: meaningless to another model
        elif strict:
            raise _invalid(f"input item type {kind!r} is not supported for this model", f"{where}.type")
        else:
            out.append({"role": "user", "content": _encode(item).decode()})
    return out


def _function_tool(tool: JSONObject, i: int, *, strict: bool) -> JSONObject:
    if tool.get("type") != "function":
        if strict:
            raise _invalid(
                f"tool type {tool.get('type')!r} is only available on OpenAI models", f"tools[{i}].type"
            )
        return tool
    function: JSONObject = {"name": tool["name"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | JSONObject) -> Any:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("type") == "allowed_tools" and choice.get("mode") in ("auto", "required"):
        return choice["mode"]
    raise _invalid("this tool_choice is only available on OpenAI models", "tool_choice")


def _response_format(fmt: JSONObject) -> JSONObject | None:
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: JSONObject = {"name": fmt["name"], "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if key in fmt:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    return None


# --- TRANSLATED: chat.completion -> Response object ----------------------------------------------------


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `resp_…`, `msg_…`, `fc_…` and 48 hex characters."""
    return f"{prefix}_{secrets.token_hex(24)}"


def responses_usage(usage: Usage | None) -> JSONObject | None:
    """SynapGate usage as the Responses `usage` object (details are parts of the totals)."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        # The openai SDK's ResponseUsage requires cache_write_tokens (OpenAI sends it since 2026).
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _response_shell(req: ResponsesRequest, response_id: str, created_at: int, model: str) -> JSONObject:
    """The fields of a Response object that echo the request."""
    text_format = req.text_format or {"type": "text"}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": req.body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "reasoning": {"effort": (req.reasoning or {}).get("effort"), "summary": None},
        "store": False,  # the translated path stores nothing
        "temperature": req.temperature if req.temperature is not None else 1.0,
        "text": {"format": text_format},
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "tools": [_echo_tool(t) for t in req.tools],
        "top_p": req.top_p if req.top_p is not None else 1.0,
        "truncation": "disabled",
        "usage": None,
        "metadata": req.metadata or {},
    }


def _echo_tool(tool: JSONObject) -> JSONObject:
    if tool.get("type") != "function":
        return tool
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True),
    }


def _message_item(item_id: str, text: str, status: str) -> JSONObject:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def _function_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> JSONObject:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _finish(response: JSONObject, finish_reason: str | None, usage: Usage | None) -> None:
    """Set status, incomplete_details and usage of a Response from the completion's finish_reason."""
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
    response["usage"] = responses_usage(usage)


def chat_completion_to_response(
    completion: JSONObject,
    usage: Usage | None,
    req: ResponsesRequest,
    *,
    created_at: int,
    response_id: str | None = None,
) -> JSONObject:
    """A `chat.completion` (choice 0) as a Response object: a message item, then function_call items.

    `usage` is the adapter's typed usage (or the gateway's estimate); `model` is the client's name.
    """
    response = _response_shell(req, response_id or new_id("resp"), created_at, req.model)
    choices = completion.get("choices")
    choice: JSONObject = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    message: JSONObject = choice["message"] if isinstance(choice.get("message"), dict) else {}
    output: list[JSONObject] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(_message_item(new_id("msg"), text, "completed"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            arguments = function.get("arguments")
            output.append(
                _function_item(
                    new_id("fc"),
                    str(call.get("id") or new_id("call")),
                    str(function.get("name") or ""),
                    arguments if isinstance(arguments, str) else _encode(arguments or {}).decode(),
                    "completed",
                )
            )
    response["output"] = output
    finish = choice.get("finish_reason")
    _finish(response, finish if isinstance(finish, str) else None, usage)
    return response


# --- TRANSLATED: chat.completion.chunk stream -> Responses streaming events ----------------------------


@dataclass(slots=True)
class _Item:
    output_index: int
    item_id: str
    kind: str  # "message" | "function_call"
    parts: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ResponsesStreamTranslator:
    """Turns chat.completion.chunk objects (choice 0) into Responses SSE events, one chunk at a time.

    Each event has an `event:` line equal to its `type` and a `sequence_number` counting from 0.
    `feed` emits response.created and response.in_progress first, then output items as they come (text:
    output_item.added, content_part.added, output_text.delta…; tool calls: output_item.added,
    function_call_arguments.delta…), closing each with its .done events when the next item starts or
    the choice finishes. The final `response.completed` (or `response.incomplete` after a length stop)
    comes only from `finish`, which the route calls once the call is recorded.
    """

    def __init__(self, req: ResponsesRequest, *, created_at: int, response_id: str | None = None) -> None:
        self.req = req
        self.response = _response_shell(req, response_id or new_id("resp"), created_at, req.model)
        self.sequence = 0
        self.started = False
        self.finished = False
        self.finish_reason: str | None = None
        self._items: list[_Item] = []
        self._open: _Item | None = None
        self._tools: dict[int, _Item] = {}  # OpenAI tool-call index -> item

    @property
    def text(self) -> str:
        return "".join(item.text for item in self._items)

    def _event(self, event: JSONObject) -> bytes:
        event["sequence_number"] = self.sequence
        self.sequence += 1
        return b"event: " + str(event["type"]).encode() + b"\ndata: " + _encode(event) + b"\n\n"

    def _start(self) -> bytes:
        self.started = True
        return self._event({"type": "response.created", "response": dict(self.response)}) + self._event(
            {"type": "response.in_progress", "response": dict(self.response)}
        )

    def _item_json(self, item: _Item, status: str) -> JSONObject:
        if item.kind == "message":
            return _message_item(item.item_id, item.text, status)
        return _function_item(item.item_id, item.call_id, item.name, item.text, status)

    def _close(self, item: _Item | None) -> bytes:
        if item is None or item.done:
            return b""
        item.done = True
        if self._open is item:
            self._open = None
        out = b""
        if item.kind == "message":
            part = {"type": "output_text", "text": item.text, "annotations": [], "logprobs": []}
            common = {"item_id": item.item_id, "output_index": item.output_index, "content_index": 0}
            out += self._event(
                {"type": "response.output_text.done", **common, "text": item.text, "logprobs": []}
            )
            out += self._event({"type": "response.content_part.done", **common, "part": part})
        else:
            out += self._event(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item.item_id,
                    "output_index": item.output_index,
                    "name": item.name,
                    "arguments": item.text,
                }
            )
        return out + self._event(
            {
                "type": "response.output_item.done",
                "output_index": item.output_index,
                "item": self._item_json(item, "completed"),
            }
        )

    def _add(self, item: _Item) -> bytes:
        out = self._close(self._open)
        self._items.append(item)
        self._open = item
        out += self._event(
            {
                "type": "response.output_item.added",
                "output_index": item.output_index,
                "item": self._item_json(item, "in_progress"),
            }
        )
        if item.kind == "message":
            out += self._event(
                {
                    "type": "response.content_part.added",
                    "item_id": item.item_id,
                    "output_index": item.output_index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                }
            )
        return out

    def feed(self, chunk: JSONObject) -> bytes:
        """The SSE bytes for one chat.completion.chunk (maybe none)."""
        if self.finished:
            return b""
        out = b"" if self.started else self._start()
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out += self._delta(delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self.finish_reason = finish
                for item in self._items:
                    out += self._close(item)
        return out

    def _delta(self, delta: JSONObject) -> bytes:
        out = b""
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open is None or self._open.kind != "message":
                out += self._add(_Item(len(self._items), new_id("msg"), "message"))
            item = self._open
            assert item is not None
            item.parts.append(text)
            out += self._event(
                {
                    "type": "response.output_text.delta",
                    "item_id": item.item_id,
                    "output_index": item.output_index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }
            )
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            index = call.get("index", 0)
            function: JSONObject = call["function"] if isinstance(call.get("function"), dict) else {}
            item = self._tools.get(index)
            if item is None:
                item = _Item(
                    len(self._items),
                    new_id("fc"),
                    "function_call",
                    call_id=str(call.get("id") or new_id("call")),
                    name=str(function.get("name") or ""),
                )
                self._tools[index] = item
                out += self._add(item)
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments and not item.done:
                item.parts.append(arguments)
                out += self._event(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item.item_id,
                        "output_index": item.output_index,
                        "delta": arguments,
                    }
                )
        return out

    def finish(self, usage: Usage | None) -> bytes:
        """The closing events: any open item's .done events, then response.completed (or .incomplete).

        `usage` is what the call was metered with (the provider's, or the gateway's estimate). Idempotent.
        """
        if self.finished:
            return b""
        out = b"" if self.started else self._start()
        for item in self._items:
            out += self._close(item)
        self.finished = True
        response = dict(self.response)
        response["output"] = [self._item_json(item, "completed") for item in self._items]
        _finish(response, self.finish_reason, usage)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return out + self._event({"type": kind, "response": response})

    def fail(self, err: ProviderError) -> bytes:
        """A mid-stream failure as OpenAI sends it: an `error` event, then `response.failed`."""
        if self.finished:
            return b""
        out = b"" if self.started else self._start()
        self.finished = True
        out += self._event({"type": "error", "code": err.code, "message": err.message, "param": err.param})
        response = dict(self.response)
        response["status"] = "failed"
        # response.error.code is an enum in the SDK (server_error, rate_limit_exceeded, ...); the precise
        # code goes in the `error` event before it.
        code = "rate_limit_exceeded" if err.status == 429 else "server_error"
        response["error"] = {"code": code, "message": err.message}
        response["output"] = [self._item_json(item, "incomplete") for item in self._items]
        return out + self._event({"type": "response.failed", "response": response})
