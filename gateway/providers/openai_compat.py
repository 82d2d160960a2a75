"""One adapter for every provider that speaks OpenAI's chat-completions wire format.

Providers differ only in what their profile says: parameters they reject and how they count usage.
The client gets the provider's JSON unchanged; only our `Usage` is converted to SynapGate's meaning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeGuard

import msgspec

from gateway.providers.base import (
    ChatRequest,
    ChatResult,
    Credential,
    JSONObject,
    ProviderAdapter,
    ProviderError,
    SSEEvent,
    StreamState,
    UpstreamRequest,
)
from gateway.providers.messages_api import split_finish_chunk
from gateway.providers.wire import bad_response as _bad_response
from gateway.providers.wire import refuse_unhonoured
from gateway.providers.wire import retry_after_seconds as _retry_after
from gateway.providers.wire import token_count as _int
from pricing.cost import Usage

_decode = msgspec.json.decode
_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class OpenAICompatProfile:
    """What sets one OpenAI-wire provider apart: its name, the fields it rejects, and its usage quirks."""

    name: str
    default_base_url: str
    # Request fields the provider cannot take: refused with a 400 naming the field (unless null or set to
    # their neutral value, e.g. `logprobs: false`), never silently removed.
    refused_params: frozenset[str] = frozenset()
    # The provider documents only `max_tokens`: send the client's `max_completion_tokens` under that name,
    # or it is ignored and the output is no longer capped by what the gateway reserved credit for.
    max_tokens_only: bool = False
    # `completion_tokens_details.reasoning_tokens` is NOT part of `completion_tokens` (xAI).
    reasoning_outside_completion: bool = False


OPENAI_PROFILE = OpenAICompatProfile(name="openai", default_base_url="https://api.openai.com/v1")
# xAI bills reasoning on top of completion_tokens: the recorded grok-3-mini usage has total_tokens =
# prompt + completion + reasoning (291 + 26 + 189 = 506), and its cost_in_usd_ticks matches grok-3-mini's
# prices only with the 189 reasoning tokens charged as output.
XAI_PROFILE = OpenAICompatProfile(
    name="xai", default_base_url="https://api.x.ai/v1", reasoning_outside_completion=True
)
DEEPSEEK_PROFILE = OpenAICompatProfile(
    name="deepseek", default_base_url="https://api.deepseek.com", max_tokens_only=True
)
TOGETHER_PROFILE = OpenAICompatProfile(
    name="together", default_base_url="https://api.together.xyz/v1", max_tokens_only=True
)
# Groq's OpenAI-compatibility page: these fields "will result in a 400 error if they are supplied".
GROQ_PROFILE = OpenAICompatProfile(
    name="groq",
    default_base_url="https://api.groq.com/openai/v1",
    refused_params=frozenset({"logprobs", "logit_bias", "top_logprobs"}),
)
OPENROUTER_PROFILE = OpenAICompatProfile(
    name="openrouter", default_base_url="https://openrouter.ai/api/v1", max_tokens_only=True
)


class OpenAICompatAdapter:
    """The ProviderAdapter for OpenAI-wire providers; a subclass per provider names its profile.

    The name is a class attribute (the protocol wants a ClassVar), derived from the subclass's profile.
    """

    profile: ClassVar[OpenAICompatProfile]
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.profile.name

    # --- request -----------------------------------------------------------------------------------

    def build_request(self, req: ChatRequest, upstream_model: str, cred: Credential) -> UpstreamRequest:
        """POST {base_url}/chat/completions with the client's body, our model name, and usage on streams."""
        profile = self.profile
        if profile.refused_params:
            refuse_unhonoured(
                {k: v for k, v in req.body.items() if k in profile.refused_params}, frozenset(), profile.name
            )
        body = dict(req.body)
        body["model"] = upstream_model
        if profile.max_tokens_only and "max_completion_tokens" in body:
            body["max_tokens"] = body.pop("max_completion_tokens")
        if req.stream:
            body["stream"] = True
            options = body.get("stream_options")
            # Always ask for the usage chunk: it is what the call is billed by. The proxy hides it from
            # clients that did not ask (req.include_usage).
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return UpstreamRequest(
            method="POST",
            url=cred.base_url.rstrip("/") + "/chat/completions",
            headers={"Authorization": f"Bearer {cred.api_key}", "Content-Type": "application/json"},
            body=_encode(body),
        )

    # --- non-streaming response --------------------------------------------------------------------

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> ChatResult:
        """The provider's `chat.completion` as-is, with typed usage; ProviderError for an error answer."""
        if not 200 <= status < 300:
            raise self._http_error(status, headers, body)
        obj = self._decode_object(body)
        error = obj.get("error")
        if error and "choices" not in obj:
            # Some hosts (OpenRouter among them) answer 200 with only an error envelope.
            raise self._error_from_object(error, default_status=502)
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise _bad_response(f"{self.name} returned a completion without choices")
        parts: list[str] = []
        finish_reason: str | None = None
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            if isinstance(message, dict):
                _message_text(message, parts)
            if i == 0:
                fr = choice.get("finish_reason")
                finish_reason = fr if isinstance(fr, str) else None
        return ChatResult(
            body=obj,
            usage=self._usage(obj.get("usage")),
            content_text="".join(parts),
            finish_reason=finish_reason,
        )

    # --- streaming ---------------------------------------------------------------------------------

    def new_stream_state(self) -> StreamState:
        return StreamState()

    def parse_stream_event(self, state: StreamState, event: SSEEvent) -> Sequence[JSONObject]:
        """Each upstream chunk unchanged, accumulating id, text, finish reason and usage into `state`."""
        data = event.data
        if event.event == "error":
            # Groq: HTTP 200, then `event: error` with an OpenAI-style error object, then the body ends.
            raise self._error_from_object(self._error_payload(data), default_status=502)
        if data == "[DONE]":
            state.done = True
            return ()
        if not data or data.isspace():
            return ()
        try:
            chunk = _decode(data)
        except msgspec.DecodeError:
            raise _bad_response(f"{self.name} sent a stream event that is not JSON") from None
        if not isinstance(chunk, dict):
            raise _bad_response(f"{self.name} sent a stream event that is not a JSON object")
        error = chunk.get("error")
        if error:
            # A data-only error chunk: Groq's error seen without its `event:` line, or OpenRouter's
            # mid-stream error (an integer HTTP status in `code`, sometimes beside a finish_reason "error").
            raise self._error_from_object(error, default_status=502)

        if state.response_id is None:
            rid = chunk.get("id")
            if isinstance(rid, str):
                state.response_id = rid
        if state.model is None:
            model = chunk.get("model")
            if isinstance(model, str):
                state.model = model
        if state.created is None:
            created = chunk.get("created")
            if isinstance(created, int):
                state.created = created

        choices = chunk.get("choices")
        if choices:
            parts = state.text_parts
            try:
                for choice in choices:
                    delta = choice.get("delta")
                    if delta:
                        _delta_text(delta, parts)
                    fr = choice.get("finish_reason")
                    # n>1 streams send one finish chunk per choice; the completion's reason is choice 0's.
                    if fr and isinstance(fr, str) and choice.get("index", 0) == 0:
                        state.finish_reason = fr
            except AttributeError:  # a choice or delta that is not an object
                raise _bad_response(f"{self.name} sent a malformed stream chunk") from None
        # OpenAI (and xAI) send usage on a last chunk with `choices: []`; DeepSeek and Groq send it on the
        # finish_reason chunk. Newer OpenAI chunks carry `"usage": null` until then.
        raw_usage = chunk.get("usage")
        if raw_usage:
            usage = self._usage(raw_usage)
            if usage is not None:
                state.usage = usage
        # Some hosts put the last delta and the finish_reason in one chunk; OpenAI never does, and the
        # openai SDK's stream helper needs the finish on a chunk of its own (for its `.done` events).
        return split_finish_chunk(chunk)

    # --- usage -------------------------------------------------------------------------------------

    def _usage(self, raw: Any) -> Usage | None:
        """The provider's usage object in SynapGate's meaning, or None if it sent none."""
        if not isinstance(raw, dict) or ("prompt_tokens" not in raw and "completion_tokens" not in raw):
            return None
        prompt = _int(raw.get("prompt_tokens"))
        completion = _int(raw.get("completion_tokens"))
        prompt_details = raw.get("prompt_tokens_details")
        completion_details = raw.get("completion_tokens_details")
        if isinstance(prompt_details, dict):
            # OpenAI: cached_tokens (cache reads) and, newer, cache_write_tokens are parts of prompt_tokens.
            cached = _int(prompt_details.get("cached_tokens"))
            cache_write = _int(prompt_details.get("cache_write_tokens"))
        else:
            # DeepSeek's own field for cache reads (older responses carry no prompt_tokens_details);
            # prompt_tokens = prompt_cache_hit_tokens + prompt_cache_miss_tokens.
            cached = _int(raw.get("prompt_cache_hit_tokens"))
            cache_write = 0
        reasoning = (
            _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        )
        if self.profile.reasoning_outside_completion and reasoning:
            total = raw.get("total_tokens")
            # xAI leaves reasoning out of completion_tokens (total = prompt + completion + reasoning): add it,
            # unless total_tokens shows it already inside (should xAI adopt OpenAI's counting).
            if not (isinstance(total, int) and total == prompt + completion):
                completion += reasoning
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=cache_write,
            reasoning_tokens=reasoning,
            source="provider",
        )

    # --- errors ------------------------------------------------------------------------------------

    def _decode_object(self, body: bytes) -> JSONObject:
        try:
            obj = _decode(body)
        except msgspec.DecodeError:
            raise _bad_response(f"{self.name} returned a response that is not JSON") from None
        if not isinstance(obj, dict):
            raise _bad_response(f"{self.name} returned a response that is not a JSON object")
        return obj

    def _http_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        retry_after = _retry_after(headers)
        try:
            obj = _decode(body)
        except msgspec.DecodeError:
            obj = None
        if not isinstance(obj, dict):
            # An HTML page from a proxy in front of the provider, an empty body: keep the status (a 429 or
            # 503 stays retryable) but do not relay the body.
            return ProviderError(
                status,
                f"{self.name} returned HTTP {status} without an error message",
                retry_after=retry_after,
            )
        payload = obj.get("error")
        if payload is None:
            payload = obj  # a bare {"message": ...} or {"detail": ...}
        err = self._error_from_object(payload, default_status=status)
        err.status = status  # the HTTP status is authoritative over any status inside the body
        err.retry_after = retry_after
        return err

    def _error_payload(self, data: str) -> Any:
        try:
            obj = _decode(data)
        except msgspec.DecodeError:
            return data.strip() or None
        if isinstance(obj, dict) and "error" in obj:
            return obj["error"]
        return obj

    def _error_from_object(self, err: Any, *, default_status: int) -> ProviderError:
        """A ProviderError carrying the provider's own message, type, code and param."""
        if isinstance(err, str):
            return ProviderError(default_status, err)
        if not isinstance(err, dict):
            return ProviderError(default_status, f"{self.name} reported an error without a message")
        message = err.get("message")
        if not isinstance(message, str) or not message:
            detail = err.get("detail")
            message = detail if isinstance(detail, str) and detail else f"{self.name} reported an error"
        code = err.get("code")
        status = default_status
        status_code = err.get("status_code")
        if _is_http_error_status(status_code):
            status = status_code  # Groq's in-stream errors carry the HTTP status they stand for
        elif _is_http_error_status(code):
            status = code  # OpenRouter's `code` is the HTTP status itself (429, 502, ...)
        etype = err.get("type")
        param = err.get("param")
        return ProviderError(
            status,
            message,
            type=etype if isinstance(etype, str) and etype else "upstream_error",
            code=str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
            param=param if isinstance(param, str) else None,
        )


def _message_text(message: JSONObject, parts: list[str]) -> None:
    content = message.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):  # content parts, as some hosts answer
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        parts.append(refusal)  # a refusal is generated (and billed) output like content
    _tool_call_text(message.get("tool_calls"), message.get("function_call"), parts)


def _delta_text(delta: JSONObject, parts: list[str]) -> None:
    content = delta.get("content")
    if content and isinstance(content, str):
        parts.append(content)
    refusal = delta.get("refusal")
    if refusal and isinstance(refusal, str):
        parts.append(refusal)
    tool_calls = delta.get("tool_calls")
    function_call = delta.get("function_call")
    if tool_calls or function_call:
        _tool_call_text(tool_calls, function_call, parts)


def _tool_call_text(tool_calls: Any, function_call: Any, parts: list[str]) -> None:
    """Tool-call arguments (fragments, in a stream), and those of the legacy `function_call`."""
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if isinstance(call, dict):
                function = call.get("function")
                if isinstance(function, dict):
                    arguments = function.get("arguments")
                    if arguments and isinstance(arguments, str):
                        parts.append(arguments)
    if isinstance(function_call, dict):
        arguments = function_call.get("arguments")
        if arguments and isinstance(arguments, str):
            parts.append(arguments)


def _is_http_error_status(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599


class OpenAIAdapter(OpenAICompatAdapter):
    profile = OPENAI_PROFILE


class XAIAdapter(OpenAICompatAdapter):
    profile = XAI_PROFILE


class DeepSeekAdapter(OpenAICompatAdapter):
    profile = DEEPSEEK_PROFILE


class TogetherAdapter(OpenAICompatAdapter):
    profile = TOGETHER_PROFILE


class GroqAdapter(OpenAICompatAdapter):
    profile = GROQ_PROFILE


class OpenRouterAdapter(OpenAICompatAdapter):
    profile = OPENROUTER_PROFILE


# One stateless instance per provider, by provider name. Typed as the protocol so mypy checks conformance.
OPENAI_COMPAT_ADAPTERS: Mapping[str, ProviderAdapter[StreamState]] = {
    cls.name: cls()
    for cls in (OpenAIAdapter, XAIAdapter, DeepSeekAdapter, TogetherAdapter, GroqAdapter, OpenRouterAdapter)
}
