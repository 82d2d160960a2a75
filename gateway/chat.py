"""Chat completions, metered: the path of one request from parsed body to recorded answer.

parse → authenticate → model → credential → reserve worst case → upstream → usage → exact cost →
record (one transaction) → answer. Nothing is answered before its record is committed; a request
that fails upstream or cannot be recorded releases its reservation and is charged nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.auth import KeyAuthenticator
from gateway.catalog_cache import CatalogCache
from gateway.conversations import conversation_id_for
from gateway.credentials import CredentialResolver
from gateway.errors import GatewayError, bad_request, encode_error, insufficient_credits, record_failed
from gateway.providers.base import (
    ChatRequest,
    ChatResult,
    Credential,
    JSONObject,
    ProviderAdapter,
    ProviderError,
)
from gateway.providers.sse import SSEDecoder
from gateway.proxy import UpstreamClient, UpstreamResponse, UpstreamStream
from gateway.resilience import CircuitBreaker, backoff_seconds, is_fallback_worthy, is_retryable
from pricing.catalog import Model
from pricing.cost import Usage, price_usage, reservation_nano
from pricing.money import format_usd, round_to_nano
from pricing.tokens import count_completion_tokens, count_prompt_tokens
from storage.accounts.keys import KeyPrincipal
from storage.billing.ledger.base import CreditLedger, InsufficientCredit, Reservation
from storage.group_commit import GroupCommitRecorder
from storage.models import Conversation, table_of
from storage.recorder import (
    CompletionRecord,
    ConversationNotOwned,
    FailureRecord,
    record_failure,
)
from storage.types import utcnow

log = logging.getLogger("synapgate.chat")

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_CHOICES = 128
_conversations = table_of(Conversation)

Send = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")


def _positive_int(data: Mapping[str, Any], name: str, upper: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper and value > upper):
        bound = f" and at most {upper}" if upper else ""
        raise bad_request(f"'{name}' must be an integer of at least 1{bound}.", param=name)
    return value


def parse_chat_request(body: bytes) -> ChatRequest:
    """Validate a chat-completions body; bad input raises a 400 that names the offending field."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string.", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}] must be an object.", param=f"messages[{index}]")
        if message.get("role") not in ROLES:
            raise bad_request(
                f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{index}].role",
            )
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options")
    include_usage = bool(options.get("include_usage")) if options else False
    max_out = _positive_int(data, "max_completion_tokens") or _positive_int(data, "max_tokens")
    _positive_int(data, "n", MAX_CHOICES)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=bool(stream),
        include_usage=include_usage,
        max_output_tokens=max_out,
        body=data,
    )


def _upstream_to_gateway(exc: ProviderError) -> GatewayError:
    """A provider's error as the client sees it: its 4xx passed through, 5xx as 502, timeouts 504."""
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(0, round(exc.retry_after)))
    if 400 <= exc.status < 500:
        return GatewayError(
            exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param, headers=headers
        )
    if exc.code == "circuit_open":
        return GatewayError(
            503, exc.message, type="upstream_error", code=exc.code, headers={"retry-after": "5"}
        )
    status = 504 if exc.status == 504 else 502
    return GatewayError(
        status,
        f"Upstream provider error: {exc.message}",
        type="upstream_error",
        code=exc.code,
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a request: a catalog model, its adapter, and the key to call it with."""

    model: Model
    adapter: ProviderAdapter
    credential: Credential


@dataclass(slots=True)
class Call:
    """One admitted request: everything decided before the upstream call.

    `model`, `adapter` and `credential` are those of the route being tried (in the end: the one that
    answered); `routes` is the primary followed by its fallbacks.
    """

    request_id: str
    started: float
    created_at: datetime
    principal: KeyPrincipal
    request: ChatRequest
    model: Model
    adapter: ProviderAdapter
    credential: Credential
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    prompt_estimate: int
    reservation: Reservation | None
    routes: list[Route] = field(default_factory=list)
    attempts: int = 0
    extra_headers: dict[str, str] = field(default_factory=dict)

    def use(self, route: Route) -> None:
        self.model, self.adapter, self.credential = route.model, route.adapter, route.credential


@dataclass(slots=True)
class Outcome:
    """What the upstream call produced, ready to be priced and recorded."""

    usage: Usage
    content_text: str
    finish_reason: str | None
    status: str = "success"
    error_code: str | None = None
    http_status: int | None = 200
    ttft_ms: int | None = None
    upstream_ms: int | None = None


class ChatService:
    """Runs metered chat completions; owns nothing, uses the app's shared resources."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        ledger: CreditLedger,
        auth: KeyAuthenticator,
        credentials: CredentialResolver,
        catalog: CatalogCache,
        upstream: UpstreamClient,
        adapters: Mapping[str, ProviderAdapter],
        recorder: GroupCommitRecorder,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.ledger = ledger
        self.auth = auth
        self.credentials = credentials
        self.catalog = catalog
        self.upstream = upstream
        self.adapters = adapters
        self.recorder = recorder
        self.breaker = CircuitBreaker(settings.circuit_failure_threshold, settings.circuit_cooldown_seconds)

    # -- admission -----------------------------------------------------------------------------

    async def admit(self, headers: Mapping[str, str], body: bytes, request_id: str) -> Call:
        """Authenticate, validate, choose model and key, and reserve the worst-case cost."""
        started = time.perf_counter()
        principal = await self.auth.authenticate(headers.get("authorization"))
        request = parse_chat_request(body)
        model = (await self.catalog.get()).get(request.model)
        if model is None:
            raise GatewayError(
                404,
                f"The model '{request.model}' does not exist or is not available.",
                code="model_not_found",
                param="model",
            )
        if principal.allowed_models is not None and model.name not in principal.allowed_models:
            raise GatewayError(
                403,
                f"This API key may not use the model '{model.name}'.",
                type="permission_error",
                code="model_not_allowed",
                param="model",
            )
        adapter = self.adapters.get(model.provider)
        if adapter is None:
            raise GatewayError(
                501,
                f"The provider '{model.provider}' is not supported by this gateway yet.",
                type="server_error",
                code="provider_not_supported",
            )
        credential = await self.credentials.resolve(
            principal.user_id, model.provider, headers.get("x-provider-api-key")
        )
        routes = [Route(model, adapter, credential), *await self._fallback_routes(model, principal)]
        conversation_header = headers.get("x-conversation-id")
        conversation_id = conversation_id_for(
            conversation_header, principal.user_id, principal.key_id, request.messages
        )
        if conversation_header:
            await self._check_conversation_owner(conversation_id, principal.user_id)
        prompt_estimate, _ = count_prompt_tokens(
            model.upstream_model, request.messages, request.body.get("tools")
        )
        # Reserve for the dearest route, so a fallback to a pricier model cannot overspend.
        amount = max(
            self._reservation_amount(request, r.model, prompt_estimate, r.credential.byok) for r in routes
        )
        reservation = None
        if amount > 0:
            try:
                reservation = await self.ledger.reserve(principal.user_id, request_id, amount)
            except InsufficientCredit as exc:
                raise insufficient_credits(exc.available_nano, exc.needed_nano) from None
        return Call(
            request_id=request_id,
            started=started,
            created_at=utcnow(),
            principal=principal,
            request=request,
            model=model,
            adapter=adapter,
            credential=credential,
            conversation_id=conversation_id,
            message_id=uuid.uuid4(),
            prompt_estimate=prompt_estimate,
            reservation=reservation,
            routes=routes,
        )

    async def _fallback_routes(self, model: Model, principal: KeyPrincipal) -> list[Route]:
        """The configured fallbacks of a model that this key may use and the gateway can call.

        A per-request provider key belongs to the primary provider only: fallbacks use the user's stored
        key for their provider, else the platform's, and are skipped when neither exists.
        """
        routes = []
        catalog = await self.catalog.get()
        for name in self.settings.fallbacks.get(model.name, []):
            fallback = catalog.get(name)
            adapter = self.adapters.get(fallback.provider) if fallback else None
            if fallback is None or adapter is None or fallback.name == model.name:
                continue
            if principal.allowed_models is not None and fallback.name not in principal.allowed_models:
                continue
            try:
                credential = await self.credentials.resolve(principal.user_id, fallback.provider, None)
            except GatewayError:
                continue
            routes.append(Route(fallback, adapter, credential))
        return routes

    async def _check_conversation_owner(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> None:
        async with self.engine.connect() as conn:
            owner = (
                await conn.execute(
                    select(_conversations.c.user_id).where(_conversations.c.id == conversation_id)
                )
            ).scalar_one_or_none()
        if owner is not None and owner != user_id:
            raise GatewayError(
                404, "No such conversation.", code="conversation_not_found", param="X-Conversation-Id"
            )

    def _reservation_amount(self, request: ChatRequest, model: Model, prompt_tokens: int, byok: bool) -> int:
        max_out = request.max_output_tokens or model.max_output_tokens
        choices = int(request.body.get("n") or 1)
        worst = reservation_nano(model, prompt_tokens, max_out * choices)
        if byok:
            return self._byok_fee(Decimal(worst).scaleb(-9), up=True)
        return worst

    def _byok_fee(self, cost_usd: Decimal, *, up: bool = False) -> int:
        s = self.settings
        return round_to_nano(s.byok_fee_usd_per_request + s.byok_fee_rate * cost_usd, up=up)

    async def release(self, call: Call) -> None:
        if call.reservation is not None:
            try:
                await self.ledger.release(call.reservation)
            except Exception:  # the reservation expires by itself; never mask the original failure
                log.exception("reservation release failed", extra={"request_id": call.request_id})

    # -- metering and recording ----------------------------------------------------------------

    def _estimated_usage(self, call: Call, text: str) -> Usage:
        completion, estimator = count_completion_tokens(call.model.upstream_model, text)
        return Usage(
            prompt_tokens=call.prompt_estimate,
            completion_tokens=completion,
            source="estimated",
            estimator=estimator,
        )

    def _unfinished_usage(self, call: Call, partial: Usage | None, text: str) -> Usage:
        """Usage of a stream that did not finish: what was generated, counted.

        A provider may have reported part of it already (Anthropic's message_start has the exact input and a
        provisional output count): its input counts stand, and the output is the larger of its count and ours.
        """
        counted = self._estimated_usage(call, text)
        if partial is None:
            return counted
        return Usage(
            prompt_tokens=partial.prompt_tokens or counted.prompt_tokens,
            completion_tokens=max(partial.completion_tokens, counted.completion_tokens),
            cached_tokens=partial.cached_tokens,
            cache_write_tokens=partial.cache_write_tokens,
            reasoning_tokens=partial.reasoning_tokens,
            source="estimated",
            estimator=counted.estimator,
        )

    async def record(self, call: Call, outcome: Outcome) -> tuple[int, int, int]:
        """Price and commit one completion; returns (cost, charged, balance) in nano-USD.

        Raises GatewayError 503 (and releases the reservation) if the rows cannot be committed.
        """
        cost = price_usage(outcome.usage, call.model)
        charged = self._byok_fee(cost.total_usd) if call.credential.byok else cost.total_nano
        keep = self.settings.store_message_content
        rec = CompletionRecord(
            request_id=call.request_id,
            user_id=call.principal.user_id,
            workspace_id=call.principal.workspace_id,
            api_key_id=call.principal.key_id,
            conversation_id=call.conversation_id,
            message_id=call.message_id,
            llm_id=call.model.id,
            model=call.model.name,
            provider=call.model.provider,
            price_version=call.model.price_version,
            usage=outcome.usage,
            cost_nano=cost.total_nano,
            charged_nano=charged,
            byok=call.credential.byok,
            is_stream=call.request.stream,
            status=outcome.status,
            latency_ms=int((time.perf_counter() - call.started) * 1000),
            created_at=call.created_at,
            ttft_ms=outcome.ttft_ms,
            upstream_latency_ms=outcome.upstream_ms,
            error_code=outcome.error_code,
            http_status=outcome.http_status,
            attempts=call.attempts,
            finish_reason=outcome.finish_reason,
            prompt=call.request.messages if keep else None,
            content=outcome.content_text if keep else None,
        )
        try:
            result = await self.recorder.record(rec, call.reservation)
        except ConversationNotOwned:
            await self.release(call)
            raise GatewayError(
                404, "No such conversation.", code="conversation_not_found", param="X-Conversation-Id"
            ) from None
        except Exception:
            log.exception("recording failed; nothing charged", extra={"request_id": call.request_id})
            await self.release(call)
            raise record_failed() from None
        log.info(
            "chat completion",
            extra={
                "request_id": call.request_id,
                "user_id": str(call.principal.user_id),
                "model": call.model.name,
                "status": outcome.status,
                "prompt_tokens": outcome.usage.prompt_tokens,
                "completion_tokens": outcome.usage.completion_tokens,
                "usage_source": outcome.usage.source,
                "cost_nano": cost.total_nano,
                "charged_nano": charged,
                "byok": call.credential.byok,
                "latency_ms": rec.latency_ms,
            },
        )
        return cost.total_nano, charged, result.balance_nano

    def response_headers(self, call: Call) -> dict[str, str]:
        return {
            "x-request-id": call.request_id,
            "x-synapgate-message-id": str(call.message_id),
            "x-synapgate-conversation-id": str(call.conversation_id),
            "x-synapgate-model": call.model.name,
            "x-synapgate-attempts": str(call.attempts),
            **call.extra_headers,
        }

    # -- non-streaming -------------------------------------------------------------------------

    async def _call_upstream(self, call: Call, attempt: Callable[[Route], Awaitable[T]]) -> T:
        """Try the routes in order, each with retries, until one answers; the call then uses that route.

        Retries (connection errors, 408/409/429/5xx/529) back off exponentially with jitter and honour the
        provider's Retry-After; a provider whose circuit is open is skipped. Raises the last ProviderError.
        """
        s = self.settings
        last: ProviderError | None = None
        for route in call.routes:
            provider = route.model.provider
            if not self.breaker.allow(provider):
                last = ProviderError(
                    503,
                    f"The provider '{provider}' keeps failing and is skipped for now.",
                    code="circuit_open",
                )
                continue
            for number in range(1, s.upstream_max_retries + 2):
                call.attempts += 1
                try:
                    value = await attempt(route)
                except ProviderError as exc:
                    last = exc
                    if not is_retryable(exc):
                        self.breaker.record_success(provider)  # it answered: the request was the problem
                        break
                    self.breaker.record_failure(provider)
                    wait = backoff_seconds(
                        number,
                        s.upstream_retry_backoff_seconds,
                        s.upstream_retry_max_wait_seconds,
                        exc.retry_after,
                    )
                    if number > s.upstream_max_retries or wait is None or self.breaker.is_open(provider):
                        break
                    await asyncio.sleep(wait)
                    continue
                self.breaker.record_success(provider)
                call.use(route)
                return value
            if last is not None and not is_fallback_worthy(last):
                break
        assert last is not None
        raise last

    async def _fail(self, call: Call, error: ProviderError) -> GatewayError:
        """Release the reservation, log the failed request (no charge), and say what to answer."""
        await self.release(call)
        gateway_error = _upstream_to_gateway(error)
        try:
            await record_failure(
                self.engine,
                FailureRecord(
                    request_id=call.request_id,
                    user_id=call.principal.user_id,
                    workspace_id=call.principal.workspace_id,
                    api_key_id=call.principal.key_id,
                    llm_id=call.model.id,
                    model=call.model.name,
                    provider=call.model.provider,
                    price_version=call.model.price_version,
                    byok=call.credential.byok,
                    is_stream=call.request.stream,
                    latency_ms=int((time.perf_counter() - call.started) * 1000),
                    attempts=max(call.attempts, 1),
                    error_code=error.code or error.type,
                    http_status=gateway_error.status,
                    created_at=call.created_at,
                ),
            )
        except Exception:  # the client's answer is the upstream error; a lost error row is only logged
            log.exception("could not log a failed request", extra={"request_id": call.request_id})
        return gateway_error

    async def complete(self, call: Call) -> tuple[bytes, dict[str, str]]:
        """Run a non-streaming call to its recorded end; returns the body and headers to send."""

        async def attempt(route: Route) -> tuple[UpstreamResponse, ChatResult]:
            upstream_req = route.adapter.build_request(
                call.request, route.model.upstream_model, route.credential
            )
            response = await self.upstream.send(upstream_req, self.settings.timeouts(route.model.provider))
            return response, route.adapter.parse_response(response.status, response.headers, response.body)

        try:
            response, result = await self._call_upstream(call, attempt)
        except ProviderError as exc:
            raise await self._fail(call, exc) from None
        usage = result.usage or self._estimated_usage(call, result.content_text)
        outcome = Outcome(
            usage=usage,
            content_text=result.content_text,
            finish_reason=result.finish_reason,
            upstream_ms=response.elapsed_ms,
        )
        cost, charged, balance = await self.record(call, outcome)
        headers = self.response_headers(call)
        headers["x-synapgate-cost-usd"] = format_usd(cost)
        headers["x-synapgate-charged-usd"] = format_usd(charged)
        headers["x-synapgate-balance-usd"] = format_usd(balance)
        return msgspec.json.encode(result.body), headers

    # -- streaming -----------------------------------------------------------------------------

    async def open_stream(self, call: Call) -> UpstreamStream:
        """Open the upstream stream (with retries and fallbacks: nothing has reached the client yet)."""

        async def attempt(route: Route) -> UpstreamStream:
            upstream_req = route.adapter.build_request(
                call.request, route.model.upstream_model, route.credential
            )
            stream = await self.upstream.open_stream(
                upstream_req, self.settings.timeouts(route.model.provider)
            )
            if stream.status >= 300:
                body = await stream.read()
                await stream.close()
                route.adapter.parse_response(stream.status, stream.headers, body)  # raises ProviderError
                raise ProviderError(502, "The upstream provider answered with an unexpected status.")
            return stream

        try:
            return await self._call_upstream(call, attempt)
        except ProviderError as exc:
            raise await self._fail(call, exc) from None

    async def relay_stream(
        self, call: Call, stream: UpstreamStream, send: Send, disconnected: asyncio.Event
    ) -> None:
        """Relay chunks as they arrive, then record and only then send `[DONE]`.

        A client that goes away, or an upstream that cuts the stream, still leaves a record: billed
        for what was generated (the provider's usage if it sent any, else counted from the text).
        """
        state = call.adapter.new_stream_state()
        decoder = SSEDecoder()
        include_usage = call.request.include_usage
        ttft_ms: int | None = None
        error: ProviderError | None = None
        try:
            async for raw in stream.chunks():
                for event in decoder.feed(raw):
                    for chunk in _client_chunks(call.adapter.parse_stream_event(state, event), include_usage):
                        if ttft_ms is None:
                            ttft_ms = int((time.perf_counter() - call.started) * 1000)
                        await send(_sse(msgspec.json.encode(chunk)))
                if disconnected.is_set():
                    break
            if not disconnected.is_set():  # an event the upstream did not close with a blank line
                for event in decoder.flush():
                    for chunk in _client_chunks(call.adapter.parse_stream_event(state, event), include_usage):
                        await send(_sse(msgspec.json.encode(chunk)))
        except ProviderError as exc:
            error = exc
        finally:
            await stream.close()

        if disconnected.is_set():
            status, code = "cancelled", "client_disconnected"
        elif error is not None:
            status, code = "error", error.code or "upstream_stream_error"
        elif not state.done:
            status, code = "error", "upstream_stream_cut"
            error = ProviderError(502, "The upstream provider ended the stream early.", code=code)
        else:
            status, code = "success", None
        if status == "success" and state.usage is not None:
            usage = state.usage
        else:
            usage = self._unfinished_usage(call, state.usage, state.content_text)
        outcome = Outcome(
            usage=usage,
            content_text=state.content_text,
            finish_reason=state.finish_reason,
            status=status,
            error_code=code,
            http_status=200,
            ttft_ms=ttft_ms,
            upstream_ms=stream.first_byte_ms,
        )
        try:
            await self.record(call, outcome)
        except GatewayError as exc:
            if not disconnected.is_set():
                await send(_sse(exc.body()))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if disconnected.is_set():
            return
        if error is not None:
            gw = _upstream_to_gateway(error)
            await send(_sse(encode_error(gw.message, gw.type, gw.code, gw.param)))
        else:
            await send(_sse(b"[DONE]"))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _client_chunks(chunks: Sequence[JSONObject], include_usage: bool) -> Iterator[JSONObject]:
    """The chunks as the client asked for them: the gateway always asks upstream for usage, so when the
    client did not, the usage-only chunk is dropped and `usage` is removed from the others (DeepSeek puts
    it on the chunk that also carries finish_reason)."""
    for chunk in chunks:
        if not include_usage and "usage" in chunk:
            if not chunk.get("choices"):
                continue
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
        yield chunk


def _sse(data: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True}
