"""Google Gemini API adapter: OpenAI chat completions in, `generateContent` upstream, OpenAI out.

Requests become `contents` of user/model turns with `parts`; answers (candidates) become choices, and
`streamGenerateContent?alt=sse` chunks become `chat.completion.chunk` objects. Gemini's stream has no end
marker, so the chunk with the finish reason ends it.
"""

from __future__ import annotations

import mimetypes
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
from gateway.providers.messages_api import split_finish_chunk
from gateway.providers.wire import bad_response as _bad_response
from gateway.providers.wire import decode_object as _decode_object
from gateway.providers.wire import reasoning_budget, refuse_unhonoured
from gateway.providers.wire import retry_after_seconds as _retry_after
from gateway.providers.wire import seconds as _seconds
from gateway.providers.wire import token_count as _int
from pricing.cost import Usage

_decode = msgspec.json.decode
_encode = msgspec.json.encode

# Gemini 3 rejects a replayed functionCall part without the thoughtSignature it was returned with, and
# an OpenAI client cannot carry that signature back. Google documents this value as the way to skip the
# check for history it did not produce (on the first functionCall part of each model turn).
SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "LANGUAGE": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}

# google.rpc status -> (HTTP status when none is known; OpenAI type; code).
_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "INVALID_ARGUMENT": (400, "invalid_request_error", None),
    "FAILED_PRECONDITION": (400, "invalid_request_error", "failed_precondition"),
    "OUT_OF_RANGE": (400, "invalid_request_error", None),
    "UNAUTHENTICATED": (401, "authentication_error", "invalid_api_key"),
    "PERMISSION_DENIED": (403, "permission_error", None),
    "NOT_FOUND": (404, "not_found_error", None),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error", "rate_limit_exceeded"),
    "CANCELLED": (499, "upstream_error", "cancelled"),
    "INTERNAL": (500, "server_error", "internal"),
    "UNAVAILABLE": (503, "server_error", "unavailable"),
    "DEADLINE_EXCEEDED": (504, "server_error", "timeout"),
}

# Gemini-native fields a client may set on purpose (openai SDK `extra_body`); other client fields are
# not forwarded, since Gemini rejects unknown fields.
_PASSTHROUGH = ("safetySettings", "cachedContent")
_CONFIG_PASSTHROUGH = ("thinkingConfig", "topK", "responseModalities", "mediaResolution")

# The OpenAI request fields this adapter passes or translates; any other is refused (wire.refuse_unhonoured).
# `parallel_tool_calls` is absent on purpose: Gemini cannot be told not to call functions in parallel, so
# only its neutral value (true) is accepted.
HANDLED_FIELDS = frozenset(
    {
        "temperature",
        "top_p",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "stop",
        "response_format",
        "reasoning_effort",
        "tools",
        "tool_choice",
        # Accepted, not sent: Gemini has no end-user identifier, and one never shapes the answer (the
        # Messages API translation passes Claude Code's metadata.user_id here).
        "user",
        "safety_identifier",
        *_PASSTHROUGH,
        *_CONFIG_PASSTHROUGH,
    }
)


@dataclass(slots=True)
class CandidateProgress:
    """One candidate of a Gemini stream: its tool calls so far (the next one's index), and if it ended."""

    tool_calls: int = 0
    finished: bool = False


@dataclass(slots=True)
class GeminiStreamState(StreamState):
    """A Gemini stream's state: each candidate's progress, and the function calls seen over all of them."""

    candidates: dict[int, CandidateProgress] = field(default_factory=dict)
    calls_seen: int = 0  # numbers the synthesized tool-call ids (Gemini sends none)


class GeminiAdapter:
    """The ProviderAdapter for the Gemini API (generativelanguage.googleapis.com/v1beta).

    `clock` gives `created` (Gemini answers carry no timestamp). Parts marked `thought` are reasoning:
    they never reach `content`, and are exposed as the non-standard `reasoning_content`.
    """

    name: ClassVar[str] = "gemini"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    # --- request -----------------------------------------------------------------------------------

    def build_request(self, req: ChatRequest, upstream_model: str, cred: Credential) -> UpstreamRequest:
        """POST {base_url}/models/{model}:generateContent (or :streamGenerateContent?alt=sse)."""
        src = req.body
        refuse_unhonoured(src, HANDLED_FIELDS, "gemini")
        system, contents = _translate_messages(req.messages)
        body: JSONObject = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        config = _generation_config(req)
        if config:
            body["generationConfig"] = config
        tools = src.get("tools")
        if tools:
            body["tools"] = [
                {"functionDeclarations": [_function_declaration(t, i) for i, t in enumerate(tools)]}
            ]
            tool_config = _tool_config(src.get("tool_choice"))
            if tool_config is not None:
                body["toolConfig"] = tool_config
        for key in _PASSTHROUGH:
            if src.get(key) is not None:
                body[key] = src[key]
        model = upstream_model.removeprefix("models/")
        base = cred.base_url.rstrip("/")
        # Usage arrives on every stream chunk unasked; alt=sse makes the stream SSE instead of a JSON array.
        url = (
            f"{base}/models/{model}:streamGenerateContent?alt=sse"
            if req.stream
            else f"{base}/models/{model}:generateContent"
        )
        return UpstreamRequest(
            method="POST",
            url=url,
            headers={"x-goog-api-key": cred.api_key, "content-type": "application/json"},
            body=_encode(body),
        )

    # --- non-streaming response --------------------------------------------------------------------

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> ChatResult:
        """A `chat.completion` from a GenerateContentResponse; ProviderError for an error answer."""
        if not 200 <= status < 300:
            raise _http_error(status, headers, body)
        obj = _decode_object(body, "gemini returned a response that is not a JSON object")
        if isinstance(obj.get("error"), dict):
            raise _error_from_payload(obj["error"], status=None, retry_after=_retry_after(headers))
        response_id = obj.get("responseId") if isinstance(obj.get("responseId"), str) else None
        choices: list[JSONObject] = []
        text_parts: list[str] = []
        calls_seen = 0
        for pos, cand in enumerate(obj.get("candidates") or ()):
            if not isinstance(cand, dict):
                continue
            texts, thoughts, calls = _split_parts(cand)
            tool_calls = []
            for call in calls:
                tool_calls.append(_tool_call(call, response_id, calls_seen))
                calls_seen += 1
            text = "".join(texts)
            text_parts.append(text)
            text_parts.extend(c["function"]["arguments"] for c in tool_calls)
            message: JSONObject = {
                "role": "assistant",
                "content": text if texts or not tool_calls else None,
                "refusal": None,
            }
            if tool_calls:
                message["tool_calls"] = tool_calls
            if thoughts:
                message["reasoning_content"] = "".join(thoughts)
            choices.append(
                {
                    "index": _candidate_index(cand, pos),
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(cand.get("finishReason"), bool(tool_calls)),
                }
            )
        if not choices:
            # A blocked prompt: 200 with promptFeedback.blockReason and no candidates.
            if not _prompt_blocked(obj):
                raise _bad_response("gemini returned a response without candidates")
            choices.append(
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "content_filter",
                }
            )
        usage = _usage(obj.get("usageMetadata"))
        out: JSONObject = {
            "id": response_id,
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": obj.get("modelVersion"),
            "choices": choices,
        }
        if usage is not None:
            out["usage"] = _openai_usage(usage)
        return ChatResult(
            body=out,
            usage=usage,
            content_text="".join(text_parts),
            finish_reason=choices[0]["finish_reason"],
        )

    # --- streaming ---------------------------------------------------------------------------------

    def new_stream_state(self) -> GeminiStreamState:
        return GeminiStreamState()

    def parse_stream_event(self, state: GeminiStreamState, event: SSEEvent) -> Sequence[JSONObject]:
        """OpenAI chunks for one Gemini stream chunk (a whole GenerateContentResponse).

        Usage is cumulative on every chunk, so the latest replaces `state.usage`. There is no [DONE]:
        the stream is done once every candidate seen has a finishReason, and the usage chunk
        (`choices: []`) is emitted then, once. `state.candidates` tracks each candidate.
        """
        data = event.data
        if not data or data.isspace():
            return ()
        payload = _decode_object(data.encode(), "gemini sent a stream event that is not a JSON object")
        if isinstance(payload.get("error"), dict):
            raise _error_from_payload(payload["error"], status=None, retry_after=None)
        if state.created is None:
            state.created = int(self.clock())
        if isinstance(payload.get("responseId"), str):
            state.response_id = payload["responseId"]
        if isinstance(payload.get("modelVersion"), str):
            state.model = payload["modelVersion"]
        usage = _usage(payload.get("usageMetadata"))
        if usage is not None:
            state.usage = usage  # cumulative: replace, never add
        seen = state.candidates
        chunks: list[JSONObject] = []
        for pos, cand in enumerate(payload.get("candidates") or ()):
            if isinstance(cand, dict):
                chunk = self._candidate_chunk(state, seen, cand, pos)
                if chunk is not None:
                    # Gemini puts the last text and the finishReason in one chunk; OpenAI sends the
                    # finish_reason on a chunk of its own, and the openai SDK's stream helper needs that
                    # for its `content.done` / `tool_calls.function.arguments.done` events.
                    chunks.extend(split_finish_chunk(chunk))
        if not seen and _prompt_blocked(payload):
            seen[0] = CandidateProgress(finished=True)
            state.finish_reason = "content_filter"
            delta = {"role": "assistant", "content": ""}
            chunks.append(_chunk(state, 0, delta, "content_filter"))
        if seen and not state.done and all(c.finished for c in seen.values()):
            state.done = True
            if state.usage is not None:
                chunks.append(
                    {
                        "id": state.response_id,
                        "object": "chat.completion.chunk",
                        "created": state.created,
                        "model": state.model,
                        "choices": [],
                        "usage": _openai_usage(state.usage),
                    }
                )
        return chunks

    def _candidate_chunk(
        self, state: GeminiStreamState, seen: dict[int, CandidateProgress], cand: JSONObject, pos: int
    ) -> JSONObject | None:
        index = _candidate_index(cand, pos)
        info = seen.get(index)
        delta: JSONObject = {}
        if info is None:
            info = seen[index] = CandidateProgress()
            delta["role"] = "assistant"
        texts, thoughts, calls = _split_parts(cand)
        # A trailing chunk may hold only {"text": ""}: nothing to send for it.
        text = "".join(texts)
        if text:
            delta["content"] = text
            state.text_parts.append(text)
        if thoughts:
            delta["reasoning_content"] = "".join(thoughts)
        if calls:
            # Gemini sends each function call whole, never as argument fragments.
            tool_calls = []
            for call in calls:
                seq = state.calls_seen
                state.calls_seen = seq + 1
                tool_call = _tool_call(call, state.response_id, seq)
                tool_call["index"] = info.tool_calls
                info.tool_calls += 1
                tool_calls.append(tool_call)
                state.text_parts.append(tool_call["function"]["arguments"])
            delta["tool_calls"] = tool_calls
        finish: str | None = None
        reason = cand.get("finishReason")
        if reason and not info.finished:
            info.finished = True
            finish = _finish_reason(reason, info.tool_calls > 0)
            if index == 0 or state.finish_reason is None:
                state.finish_reason = finish
        if not delta and finish is None:
            return None
        return _chunk(state, index, delta, finish)


# --- response helpers ------------------------------------------------------------------------------


def _chunk(state: StreamState, index: int, delta: JSONObject, finish_reason: str | None) -> JSONObject:
    return {
        "id": state.response_id,
        "object": "chat.completion.chunk",
        "created": state.created,
        "model": state.model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _split_parts(cand: JSONObject) -> tuple[list[str], list[str], list[JSONObject]]:
    """A candidate's parts as (answer texts, thought texts, functionCall objects)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[JSONObject] = []
    content = cand.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    for part in parts or ():
        if not isinstance(part, dict):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append(call)
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
        # thoughtSignature-only parts, executableCode, inlineData: not part of an OpenAI answer.
    return texts, thoughts, calls


def _tool_call(call: JSONObject, response_id: str | None, seq: int) -> JSONObject:
    """An OpenAI tool call for a functionCall. Gemini gives no call id (unless the model sets one), so
    one is made from the response id, unique across the turns of a conversation."""
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = f"call_{response_id}_{seq}" if response_id else f"call_{seq}"
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.get("name"), "arguments": _encode(call.get("args") or {}).decode()},
    }


def _candidate_index(cand: JSONObject, pos: int) -> int:
    # Early stream chunks (and single-candidate answers of some models) omit `index`.
    index = cand.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else pos


def _finish_reason(reason: Any, has_tool_calls: bool) -> str:
    # Gemini says STOP even when the answer is a function call (finishMessage "Model generated
    # function call(s)."); OpenAI clients look for "tool_calls" to run them.
    if reason is None or reason == "STOP":
        return "tool_calls" if has_tool_calls else "stop"
    return _FINISH_REASONS.get(reason, "stop")


def _prompt_blocked(obj: JSONObject) -> bool:
    feedback = obj.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


# --- usage -----------------------------------------------------------------------------------------


def _usage(meta: Any) -> Usage | None:
    """usageMetadata in SynapGate's meaning.

    promptTokenCount already includes cachedContentTokenCount. candidatesTokenCount excludes
    thoughtsTokenCount, which is billed as output: completion = candidates + thoughts (the recorded
    totals check: 17713 + 68 + 821 = 18602). candidatesTokenCount is missing on early stream chunks.
    toolUsePromptTokenCount (results of Google's built-in tools) is input outside promptTokenCount.
    """
    if not isinstance(meta, dict) or not any(
        k in meta for k in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount")
    ):
        return None
    thoughts = _int(meta.get("thoughtsTokenCount"))
    return Usage(
        prompt_tokens=_int(meta.get("promptTokenCount")) + _int(meta.get("toolUsePromptTokenCount")),
        completion_tokens=_int(meta.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_int(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
        source="provider",
    )


def _openai_usage(usage: Usage) -> JSONObject:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


# --- request translation ---------------------------------------------------------------------------


def _generation_config(req: ChatRequest) -> JSONObject:
    src = req.body
    config: JSONObject = {}
    if req.max_output_tokens is not None:
        config["maxOutputTokens"] = req.max_output_tokens
    for openai_key, gemini_key in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if src.get(openai_key) is not None:
            config[gemini_key] = src[openai_key]
    stop = src.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = list(stop)
    config.update(_response_format(src.get("response_format")))
    effort = src.get("reasoning_effort")
    if effort is not None and src.get("thinkingConfig") is None:
        config["thinkingConfig"] = {"thinkingBudget": reasoning_budget(effort)}
    for key in _CONFIG_PASSTHROUGH:
        if src.get(key) is not None:
            config[key] = src[key]
    return config


def _response_format(fmt: Any) -> JSONObject:
    """OpenAI response_format -> generationConfig: JSON mode (responseMimeType), and for json_schema the
    schema converted to Gemini's OpenAPI subset (responseSchema, which every Gemini model accepts)."""
    if fmt is None:
        return {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind != "json_schema":
        raise _invalid(
            "response_format.type must be text, json_object or json_schema", param="response_format.type"
        )
    assert isinstance(fmt, dict)
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise _invalid(
            "response_format.json_schema.schema must be a JSON Schema object",
            param="response_format.json_schema.schema",
        )
    return {"responseMimeType": "application/json", "responseSchema": gemini_schema(schema)}


# JSON Schema keywords that only annotate (or that Gemini enforces anyway): left out of responseSchema.
_SCHEMA_ANNOTATIONS = frozenset({"$schema", "$id", "title", "examples", "default", "$comment", "strict"})
_SCHEMA_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
_SCHEMA_PARAM = "response_format.json_schema.schema"
_SCHEMA_FORMATS: dict[Any, tuple[str, ...]] = {
    "STRING": ("date-time",),
    "NUMBER": ("float", "double"),
    "INTEGER": ("int32", "int64"),
}


def gemini_schema(schema: JSONObject) -> JSONObject:
    """A JSON Schema (as OpenAI clients and pydantic write it) in Gemini's OpenAPI subset (`Schema`).

    `$ref`s into `$defs` are inlined (a recursive schema cannot be: refused), `anyOf` with `null` and type
    lists with "null" become `nullable`, `const` a one-value `enum`, `oneOf` `anyOf`; annotations and
    `additionalProperties: false` are left out. A constraint Gemini cannot express is refused with a 400
    naming where it is, never dropped.
    """
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": value for name, value in schema[key].items()})
    return _schema_node(schema, defs, _SCHEMA_PARAM, ())


def _schema_node(node: Any, defs: Mapping[str, Any], where: str, refs: tuple[str, ...]) -> JSONObject:
    if not isinstance(node, dict):
        raise _invalid("a schema must be an object", param=where)
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in refs:
            raise _invalid("gemini cannot take a recursive schema", param=where)
        target = defs.get(ref)
        if target is None:
            raise _invalid(f"unresolvable $ref {ref!r}", param=where)
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _schema_node(merged, defs, where, (*refs, ref))
    out: JSONObject = {}
    nullable = False
    for key, value in node.items():
        if key in _SCHEMA_ANNOTATIONS or key in ("$defs", "definitions"):
            continue
        if key == "type":
            types = value if isinstance(value, list) else [value]
            nullable = nullable or "null" in types
            real = [t for t in types if t != "null"]
            if len(real) != 1 or real[0] not in _SCHEMA_TYPES:
                raise _invalid(f"gemini needs one schema type, got {value!r}", param=f"{where}.type")
            out["type"] = _SCHEMA_TYPES[real[0]]
        elif key in ("anyOf", "oneOf"):
            if not isinstance(value, list):
                raise _invalid(f"{key} must be a list", param=f"{where}.{key}")
            options = [v for v in value if not (isinstance(v, dict) and v.get("type") == "null")]
            nullable = nullable or len(options) < len(value)
            converted = [_schema_node(v, defs, f"{where}.{key}[{i}]", refs) for i, v in enumerate(options)]
            if len(converted) == 1:
                out.update(converted[0])
            else:
                out["anyOf"] = converted
        elif key == "allOf" and isinstance(value, list) and len(value) == 1:
            out.update(_schema_node(value[0], defs, f"{where}.allOf[0]", refs))
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {
                name: _schema_node(sub, defs, f"{where}.properties.{name}", refs)
                for name, sub in value.items()
            }
            out["propertyOrdering"] = list(value)  # Gemini otherwise orders keys alphabetically
        elif key == "items":
            out["items"] = _schema_node(value, defs, f"{where}.items", refs)
        elif key == "additionalProperties" and value is False:
            continue  # Gemini generates the declared properties only
        elif key == "const":
            out["enum"] = [value]
        elif key in ("description", "required", "enum", "nullable", "format", "minItems", "maxItems",
                     "minimum", "maximum", "minLength", "maxLength", "pattern", "minProperties",
                     "maxProperties"):  # fmt: skip
            out[key] = value
        else:
            raise _invalid(f"gemini's response schema cannot express {key!r}", param=f"{where}.{key}")
    if "enum" in out:
        # Gemini's enums are strings only.
        if not all(isinstance(v, str) for v in out["enum"]):
            raise _invalid("gemini's schema enums must be strings", param=f"{where}.enum")
        out["type"] = "STRING"
        out["format"] = "enum"
    elif out.get("format") not in _SCHEMA_FORMATS.get(out.get("type"), ()):
        # Gemini rejects other formats (uri, email, ...); they describe a string, they do not shape it.
        out.pop("format", None)
    if nullable:
        out["nullable"] = True
    return out


def _translate_messages(messages: Sequence[Any]) -> tuple[list[JSONObject], list[JSONObject]]:
    """OpenAI messages -> (systemInstruction parts, contents of alternating user/model turns).

    Tool results become functionResponse parts of a user turn; Gemini matches them to calls by name,
    which is looked up from the assistant tool call with that id. Consecutive same-role turns merge, so
    the responses to parallel calls travel together in one turn, as Gemini expects.
    """
    system: list[JSONObject] = []
    contents: list[JSONObject] = []
    call_names: dict[str, str] = {}

    def push(role: str, parts: list[JSONObject]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _invalid("each message must be an object", param=f"messages[{i}]")
        role = msg.get("role")
        content = msg.get("content")
        where = f"messages[{i}].content"
        if role in ("system", "developer"):
            system.extend(_parts(content, where, text_only=True))
        elif role == "user":
            push("user", _parts(content, where))
        elif role == "assistant":
            parts = _parts(content, where, text_only=True)
            for j, call in enumerate(msg.get("tool_calls") or ()):
                part = _function_call(call, f"messages[{i}].tool_calls[{j}]", call_names)
                if j == 0:
                    part["thoughtSignature"] = SKIP_THOUGHT_SIGNATURE
                parts.append(part)
            push("model", parts)
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            name = name or msg.get("name")
            if not isinstance(name, str) or not name:
                raise _invalid(
                    "tool message answers no earlier assistant tool call (tool_call_id not found)",
                    param=f"messages[{i}].tool_call_id",
                )
            response = _function_response(content)
            push("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            raise _invalid(f"unsupported message role {role!r}", param=f"messages[{i}].role")
    return system, contents


def _parts(content: Any, where: str, *, text_only: bool = False) -> list[JSONObject]:
    """OpenAI message content (a string or content parts) as Gemini parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid("message content must be a string or a list of content parts", param=where)
    parts: list[JSONObject] = []
    for j, part in enumerate(content):
        param = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise _invalid("content parts must be objects", param=param)
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                parts.append({"text": text})
        elif kind == "image_url" and not text_only:
            image = part.get("image_url")
            parts.append(_media_part(image.get("url") if isinstance(image, dict) else image, param))
        elif kind == "input_audio" and not text_only:
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise _invalid("input_audio needs base64 data", param=param)
            mime = f"audio/{audio.get('format') or 'wav'}"
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file" and not text_only:
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data, str) or not data.startswith("data:"):
                raise _invalid("gemini needs files inline as a data: URL in file_data", param=param)
            parts.append(_media_part(data, param))
        else:
            raise _invalid(f"content part type {kind!r} is not supported here by gemini", param=param)
    return parts


def _media_part(url: Any, param: str) -> JSONObject:
    """A `data:` URL becomes inlineData; an http(s) URL fileData, with a MIME type from its extension."""
    if not isinstance(url, str) or not url:
        raise _invalid("image_url.url must be a non-empty string", param=param)
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or ";base64" not in header:
            raise _invalid("data: URLs must be base64-encoded", param=param)
        return {"inlineData": {"mimeType": header[len("data:") :].split(";", 1)[0], "data": data}}
    if url.startswith(("http://", "https://")):
        # fileData requires a mimeType; a URL without a known extension is assumed to be a JPEG image.
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise _invalid("image URLs must be http(s) or data: URLs", param=param)


def _function_call(call: Any, param: str, call_names: dict[str, str]) -> JSONObject:
    """An assistant's OpenAI tool call as a functionCall part; remembers id -> name for its result."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(call, dict) or not isinstance(function, dict):
        raise _invalid("tool calls must have a function", param=param)
    name = function.get("name")
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
    if isinstance(call.get("id"), str) and isinstance(name, str):
        call_names[call["id"]] = name  # a later turn reusing an id rebinds it: results follow their call
    return {"functionCall": {"name": name, "args": args}}


def _function_response(content: Any) -> JSONObject:
    """A tool result as functionResponse.response, which must be an object: a JSON object is used as
    is, anything else is wrapped as {"result": ...}."""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        return {"result": content}
    try:
        parsed = _decode(content)
    except msgspec.DecodeError:
        return {"result": content}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def _function_declaration(tool: Any, i: int) -> JSONObject:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type", "function") != "function"
        or not isinstance(function, dict)
    ):
        raise _invalid("only function tools are supported by gemini", param=f"tools[{i}]")
    out: JSONObject = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("parameters"):
        # parametersJsonSchema takes full JSON Schema (what OpenAI tools carry); `parameters` takes only
        # Google's OpenAPI subset and rejects e.g. additionalProperties.
        out["parametersJsonSchema"] = function["parameters"]
    return out


def _tool_config(choice: Any) -> JSONObject | None:
    """OpenAI tool_choice -> functionCallingConfig: auto AUTO, none NONE, required ANY, a name ANY+allowed."""
    if choice is None:
        return None
    if choice == "auto":
        config: JSONObject = {"mode": "AUTO"}
    elif choice == "none":
        config = {"mode": "NONE"}
    elif choice == "required":
        config = {"mode": "ANY"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config = {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    else:
        raise _invalid("unsupported tool_choice", param="tool_choice")
    return {"functionCallingConfig": config}


# --- errors ----------------------------------------------------------------------------------------


def _http_error(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    retry_after = _retry_after(headers)
    try:
        obj = _decode(body)
    except msgspec.DecodeError:
        obj = None
    # Without alt=sse, Gemini wraps stream errors in a JSON array: [{"error": {...}}].
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), dict):
        return ProviderError(
            status, f"gemini returned HTTP {status} without an error message", retry_after=retry_after
        )
    return _error_from_payload(obj["error"], status=status, retry_after=retry_after)


def _error_from_payload(err: JSONObject, *, status: int | None, retry_after: float | None) -> ProviderError:
    """`{"code", "message", "status", "details"}` -> ProviderError; the HTTP status, if known, wins."""
    rpc_status = err.get("status")
    rpc_status = rpc_status if isinstance(rpc_status, str) else ""
    default_status, openai_type, code = _ERRORS.get(
        rpc_status, (502, "upstream_error", rpc_status.lower() or None)
    )
    http_status = default_status
    if status is not None:
        http_status = status
    else:
        body_code = err.get("code")  # the HTTP status the error stands for, e.g. in a stream
        if isinstance(body_code, int) and not isinstance(body_code, bool) and 400 <= body_code <= 599:
            http_status = body_code
    for detail in err.get("details") or ():
        if not isinstance(detail, dict):
            continue
        kind = detail.get("@type", "")
        if kind.endswith("google.rpc.RetryInfo") and retry_after is None:
            retry_after = _duration(detail.get("retryDelay"))
        elif kind.endswith("google.rpc.ErrorInfo") and detail.get("reason") == "API_KEY_INVALID":
            # A bad key is a 400 INVALID_ARGUMENT at Gemini; say what it is.
            openai_type, code = "authentication_error", "invalid_api_key"
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"gemini reported {rpc_status or 'an error'}"
    return ProviderError(http_status, message, type=openai_type, code=code, retry_after=retry_after)


def _duration(value: Any) -> float | None:
    """A google.protobuf.Duration in JSON ("7s", "0.5s") as seconds."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    return _seconds(value[:-1])


def _invalid(message: str, *, param: str | None = None) -> ProviderError:
    """The client's request cannot be expressed for Gemini: a 400 before anything goes upstream."""
    return ProviderError(400, message, type="invalid_request_error", param=param)
