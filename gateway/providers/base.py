"""The adapter protocol: pure translation between OpenAI chat completions and one provider's wire format.

Adapters do no I/O, no logging and no secret lookup: data in, data out. `gateway/proxy.py` does the HTTP.
Wire objects sent to and from clients are OpenAI JSON (`JSONObject`); everything else is typed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from gateway.secrets_scrub import scrub
from pricing.cost import Usage

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Credential:
    """The key a call goes upstream with. `byok` marks a user's own key (metered, not debited)."""

    api_key: str = field(repr=False)
    base_url: str
    byok: bool = False


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A client's chat-completions request: the fields the gateway acts on, and the body as sent."""

    model: str
    messages: list[JSONObject]
    stream: bool
    include_usage: bool  # the client asked for the usage chunk (stream_options.include_usage)
    max_output_tokens: int | None  # max_completion_tokens, else max_tokens, else None
    body: JSONObject  # the whole client body; unknown fields are passed through


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    body: bytes


@dataclass(slots=True)
class ChatResult:
    """A finished non-streaming completion, as the client will receive it."""

    body: JSONObject  # an OpenAI `chat.completion` object
    usage: Usage | None  # None: the provider reported none (the gateway then estimates)
    content_text: str  # generated text and tool-call arguments, for estimation and storage
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: its `event:` name (if any) and its joined `data:` lines."""

    data: str
    event: str | None = None


@dataclass(slots=True)
class StreamState:
    """What every adapter accumulates over one stream: usage, generated text, finish reason, ids.

    An adapter that must remember more declares its own subclass (e.g. `AnthropicStreamState`), so every
    field it keeps is named and typed.
    """

    usage: Usage | None = None
    text_parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    done: bool = False  # the provider said the stream is complete

    @property
    def content_text(self) -> str:
        return "".join(self.text_parts)


class ProviderError(Exception):
    """An error to send to the client in the OpenAI envelope: from the provider, or about its answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "upstream_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # Providers echo keys in their messages: anything shaped like one is redacted before it can travel.
        message = scrub(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def envelope(self) -> JSONObject:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


StateT = TypeVar("StateT", bound=StreamState)


class ProviderAdapter(Protocol[StateT]):
    """Translate one provider's wire format. Every method is pure; `StateT` is the adapter's stream state."""

    name: ClassVar[str]

    def build_request(self, req: ChatRequest, upstream_model: str, cred: Credential) -> UpstreamRequest:
        """The HTTP request that asks the provider for this completion (streams always ask for usage)."""
        ...

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> ChatResult:
        """A finished completion from a 2xx answer; raises ProviderError for an error answer."""
        ...

    def new_stream_state(self) -> StateT: ...

    def parse_stream_event(self, state: StateT, event: SSEEvent) -> Sequence[JSONObject]:
        """OpenAI `chat.completion.chunk` objects for one upstream event (maybe none).

        Updates `state` (usage, text, finish reason, done); raises ProviderError for an error event.
        """
        ...


AnyAdapter = ProviderAdapter[Any]  # an adapter whose stream state type does not matter to the caller
