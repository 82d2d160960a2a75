"""`/v1/embeddings` on the metered path: OpenAI relayed natively, Gemini translated; priced per input token.

The reservation is the input estimate × the input price (an embedding has no output tokens); the usage is
the provider's `prompt_tokens` (Gemini: `promptTokenCount`), else the gateway's count.
"""

from __future__ import annotations

import msgspec

from gateway.chat.admit import Inbound, Route
from gateway.chat.apis import Answer, complete
from gateway.chat.service import ChatService
from gateway.providers.base import ChatRequest, ProviderError, UpstreamRequest
from gateway.providers.embeddings import (
    EmbeddingsRequest,
    build_gemini_request,
    build_openai_request,
    estimate_input_tokens,
    parse_gemini_response,
    parse_openai_response,
)


def estimate_request(req: EmbeddingsRequest) -> ChatRequest:
    """The inputs as a ChatRequest for admission (its conversation id; the amount is re-sized below)."""
    messages = [{"role": "user", "content": x if isinstance(x, str) else ""} for x in req.inputs]
    return ChatRequest(req.model, messages, False, False, None, {})


class EmbeddingsCodec:
    """Embeddings on each route: OpenAI native, Gemini translated, any other provider refused."""

    def __init__(self, req: EmbeddingsRequest) -> None:
        self.req = req

    def build_request(self, route: Route) -> UpstreamRequest:
        provider = route.model.provider
        if provider == "openai":
            return build_openai_request(self.req, route.model.upstream_model, route.credential)
        if provider == "gemini":
            return build_gemini_request(self.req, route.model.upstream_model, route.credential)
        raise ProviderError(
            400, f"Embeddings are not supported for the provider '{provider}'.", param="model"
        )

    def parse_error(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> ProviderError:
        try:
            self._parse(route, status, headers, body)
        except ProviderError as exc:
            return exc
        return ProviderError(502, "The upstream provider answered with an unexpected status.")

    def _parse(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> Answer:
        if route.model.provider == "openai":
            result = parse_openai_response(status, headers, body, self.req)
        else:
            result = parse_gemini_response(status, headers, body, self.req, model=self.req.model)
        encoded = msgspec.json.encode(result.body)
        return Answer(result.usage, "", None, lambda _usage: encoded)

    def parse_response(self, route: Route, status: int, headers: dict[str, str], body: bytes) -> Answer:
        return self._parse(route, status, headers, body)

    def stream_codec(self, route: Route) -> None:
        raise NotImplementedError("embeddings are not streamed")


async def serve_embeddings(
    service: ChatService, inbound: Inbound, req: EmbeddingsRequest
) -> tuple[bytes, dict[str, str]]:
    """One `/v1/embeddings` request, recorded before its answer (body, headers)."""
    call = await service.admission.admit(inbound, kind="embedding", endpoint="embeddings")
    tokens = estimate_input_tokens(req).prompt_tokens
    call.prompt_estimate = tokens
    # Re-sized for the input alone (admission counted chat-message overheads): input tokens × input price.
    call.reserve_nano = max(
        service.admission._worst_case(call.request, r.model, tokens, r.credential.byok) for r in call.routes
    )
    return await complete(service, call, EmbeddingsCodec(req))  # type: ignore[arg-type]
