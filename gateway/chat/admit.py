"""Step 1, admission: who is asking, for which model, with which key, in which conversation, for how much.

Everything here is decided before the upstream call: the key's principal, the catalog model and that the
key may use it, the adapter, the credential (platform or BYOK), the fallback routes, the conversation id
(its ownership checked in storage) and the worst-case amount to reserve. The reservation itself is made by
the service, which alone reserves, releases and settles.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.auth import KeyAuthenticator
from gateway.catalog_cache import CatalogCache
from gateway.chat.limits import check_key_expiry, limit_request
from gateway.conversations import conversation_id_for
from gateway.credentials import CredentialResolver
from gateway.errors import GatewayError, conversation_not_found
from gateway.providers.base import AnyAdapter, ChatRequest, Credential
from pricing.catalog import Model
from pricing.cost import byok_fee_nano, reservation_nano
from pricing.tokens import count_prompt_tokens
from storage.accounts.keys import KeyPrincipal
from storage.billing.ledger.base import Reservation
from storage.billing.ledger.limits import LimitRequest
from storage.types import utcnow
from storage.usage.recorder import ConversationNotOwned, check_conversation_owner


@dataclass(frozen=True, slots=True)
class Inbound:
    """A request as the route hands it over: authenticated and parsed, not yet admitted."""

    request_id: str
    headers: Mapping[str, str]  # lowercase names
    principal: KeyPrincipal
    request: ChatRequest
    started: float = field(default_factory=time.perf_counter)
    # The platform's own request (the insights tagger model): never auto-tagged, its text never stored.
    internal: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a request: a catalog model, its adapter, and the key to call it with."""

    model: Model
    adapter: AnyAdapter
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
    adapter: AnyAdapter
    credential: Credential
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    prompt_estimate: int
    reserve_nano: int  # the worst case over every route; 0: nothing to reserve
    routes: list[Route] = field(default_factory=list)
    reservation: Reservation | None = None  # set and cleared by the service only
    attempts: int = 0
    recorded: bool = False  # the record is committed (the reservation is settled with it)
    endpoint: str = "chat"  # chat | messages | responses | embeddings (recorded in usage_logs)
    limits: LimitRequest | None = None  # what the request asks of its key's, user's, workspace's limits
    internal: bool = False  # the platform's own request (Inbound.internal)

    def use(self, route: Route) -> None:
        self.model, self.adapter, self.credential = route.model, route.adapter, route.credential


class Admission:
    """Authenticates keys and admits requests: model, credential, fallbacks, conversation, amount."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        auth: KeyAuthenticator,
        credentials: CredentialResolver,
        catalog: CatalogCache,
        adapters: Mapping[str, AnyAdapter],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.auth = auth
        self.credentials = credentials
        self.catalog = catalog
        self.adapters = adapters

    async def authenticate(self, headers: Mapping[str, str]) -> KeyPrincipal:
        """The principal of the request's gateway key (401 if there is none or it is not valid)."""
        return await self.auth.authenticate(headers.get("authorization"))

    async def admit(self, inbound: Inbound, *, kind: str = "chat", endpoint: str = "chat") -> Call:
        """Choose model, key and fallbacks, check the conversation, and size the reservation.

        `kind` is the kind of model the route serves (chat | embedding): the other kind is a 400."""
        principal, request, headers = inbound.principal, inbound.request, inbound.headers
        check_key_expiry(principal)
        model = (await self.catalog.get()).get(request.model)
        if model is None:
            raise GatewayError(
                404,
                f"The model '{request.model}' does not exist or is not available.",
                code="model_not_found",
                param="model",
            )
        if model.kind != kind:
            what = "an embedding model" if model.kind == "embedding" else f"a {model.kind} model"
            raise GatewayError(
                400,
                f"The model '{model.name}' is {what}; this endpoint serves {kind} models.",
                code="wrong_model_kind",
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
        _check_output_limit(request, model)
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
        if conversation_header:  # a derived id is the key's own by construction
            try:
                await check_conversation_owner(self.engine, conversation_id, principal.user_id)
            except ConversationNotOwned:
                raise conversation_not_found() from None
        # Reserve for the dearest route, each estimated by its own provider's rule, so a fallback to a
        # pricier model (or a provider that counts more tokens) cannot overspend.
        estimates = [_prompt_estimate(request, r.model) for r in routes]
        # What the record counts when a provider reports no usage: the plain count, not the bound above.
        prompt_estimate, _ = count_prompt_tokens(
            model.upstream_model, request.messages, request.body.get("tools")
        )
        amount = max(
            self._worst_case(request, r.model, estimate, r.credential.byok)
            for r, estimate in zip(routes, estimates, strict=True)
        )
        return Call(
            request_id=inbound.request_id,
            started=inbound.started,
            created_at=utcnow(),
            principal=principal,
            request=request,
            model=model,
            adapter=adapter,
            credential=credential,
            conversation_id=conversation_id,
            message_id=uuid.uuid4(),
            prompt_estimate=prompt_estimate,
            reserve_nano=amount,
            routes=routes,
            endpoint=endpoint,
            limits=limit_request(principal, self._worst_tokens(request, routes, prompt_estimate)),
            internal=inbound.internal,
        )

    def _worst_tokens(self, request: ChatRequest, routes: list[Route], prompt_tokens: int) -> int:
        """The most tokens the request can use on any route: what a TPM limit reserves (settled to actual)."""
        choices = int(request.body.get("n") or 1)
        return max(
            prompt_tokens + (request.max_output_tokens or r.model.max_output_tokens) * choices for r in routes
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
            if fallback.kind != model.kind:  # an embedding model cannot stand in for a chat model
                continue
            if principal.allowed_models is not None and fallback.name not in principal.allowed_models:
                continue
            try:
                credential = await self.credentials.resolve(principal.user_id, fallback.provider, None)
            except GatewayError:
                continue
            routes.append(Route(fallback, adapter, credential))
        return routes

    def _worst_case(self, request: ChatRequest, model: Model, prompt_tokens: int, byok: bool) -> int:
        """The most this request can cost on `model`: every output token of every choice."""
        max_out = request.max_output_tokens or model.max_output_tokens
        choices = int(request.body.get("n") or 1)
        worst = reservation_nano(model, prompt_tokens, max_out * choices)
        if byok:
            s = self.settings
            return byok_fee_nano(
                s.byok_fee_usd_per_request, s.byok_fee_rate, Decimal(worst).scaleb(-9), up=True
            )
        return worst


def _check_output_limit(request: ChatRequest, model: Model) -> None:
    """A requested output beyond the model's limit is a 400 naming the field, as OpenAI answers it (and not a
    402 for a reservation no balance could cover)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > model.max_output_tokens:
            raise GatewayError(
                400,
                f"'{name}' is too large: {value}. The model '{model.name}' supports at most "
                f"{model.max_output_tokens} completion tokens.",
                param=name,
                code="invalid_value",
            )


def _thinking_requested(body: Mapping[str, Any]) -> bool:
    """Extended thinking asked for: Anthropic's `thinking` block (not disabled) or a reasoning effort."""
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping):
        return thinking.get("type") not in (None, "disabled")
    return bool(thinking) or body.get("reasoning_effort") not in (None, "none", "minimal")


def _prompt_estimate(request: ChatRequest, model: Model) -> int:
    """The prompt's token estimate on `model`: its provider's image rule, tool preamble and safety factor."""
    tokens, _ = count_prompt_tokens(
        model.upstream_model,
        request.messages,
        request.body.get("tools"),
        provider=model.provider,
        response_format=request.body.get("response_format"),
        thinking=_thinking_requested(request.body),
    )
    return tokens
