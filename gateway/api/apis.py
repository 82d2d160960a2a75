"""Routes of the other client APIs: `/v1/messages` (+ `/count_tokens`), `/v1/responses`, `/v1/embeddings`
(raw ASGI, like chat completions: body size limit, disconnect watch, errors written directly) and
`GET /v1/models/{id}`. Errors on the Messages routes are in Anthropic's envelope, elsewhere in OpenAI's.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.handlers import asgi
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath

from gateway.api.admin.common import ErrorEnvelope
from gateway.api.openai import StreamStart, _read_body, _send_json
from gateway.chat import ChatService, Inbound
from gateway.chat.embeddings import estimate_request as embeddings_estimate
from gateway.chat.embeddings import serve_embeddings
from gateway.chat.messages import estimate_request as messages_estimate
from gateway.chat.messages import gateway_error_of, serve_messages
from gateway.chat.responses import estimate_request as responses_estimate
from gateway.chat.responses import serve_responses
from gateway.errors import GatewayError, encode_error, from_provider_error
from gateway.providers.base import ProviderError
from gateway.providers.embeddings import parse_embeddings_request
from gateway.providers.messages_api import (
    MessagesApiError,
    build_native_request,
    count_input_tokens,
    count_tokens_body,
    count_tokens_result,
    messages_error,
    parse_messages_request,
)
from gateway.providers.responses_api import parse_responses_request

log = logging.getLogger("synapgate.api")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
StartStream = Callable[[dict[str, str]], Awaitable[None]]
# (service, request id, headers, body, start of the request, start_stream, send, disconnected) -> JSON answer
Serve = Callable[
    [ChatService, str, dict[str, str], bytes, float, StartStream, Send, asyncio.Event],
    Awaitable[tuple[bytes, dict[str, str]] | None],
]


def anthropic_body(error: GatewayError) -> bytes:
    """A gateway error in Anthropic's envelope (`{"type":"error","error":{"type","message"}}`)."""
    return msgspec.json.encode(messages_error(error.status, error.type, error.code, error.message).envelope())


def _request_error(exc: ProviderError | MessagesApiError) -> GatewayError:
    if isinstance(exc, MessagesApiError):
        return gateway_error_of(exc)
    return GatewayError(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param)


def api_handler(
    path: str, chat: Callable[[], ChatService], max_body_bytes: int, serve: Serve, anthropic: bool
) -> Any:
    """The ASGI route for one API, bound to the app's ChatService."""
    encode = anthropic_body if anthropic else GatewayError.body

    @asgi(path, copy_scope=False)
    async def handler(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        request_id = f"req_{uuid.uuid4().hex}"
        if scope.get("method") != "POST":
            error = GatewayError(405, f"Use POST for {path}.", code="method_not_allowed")
            await _send_json(send, 405, encode(error), {"x-request-id": request_id, "allow": "POST"})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if "authorization" not in headers and headers.get("x-api-key"):  # the anthropic SDK's header
            headers["authorization"] = f"Bearer {headers['x-api-key']}"
        start_stream = StreamStart(receive, send)

        try:
            received = await _read_body(receive, max_body_bytes, headers.get("content-length"))
            if received is None:
                return
            started = time.perf_counter()
            answer = await serve(
                chat(), request_id, headers, received, started, start_stream, send, start_stream.disconnected
            )
            if answer is not None:
                await _send_json(send, 200, answer[0], answer[1])
        except (ProviderError, MessagesApiError) as exc:
            if not start_stream.started:
                error = _request_error(exc)
                await _send_json(send, error.status, encode(error), {"x-request-id": request_id})
        except GatewayError as exc:
            if not start_stream.started:
                await _send_json(send, exc.status, encode(exc), {"x-request-id": request_id, **exc.headers})
        except Exception:
            log.exception("unexpected failure", extra={"request_id": request_id})
            if not start_stream.started:
                error = GatewayError(
                    500, "Internal gateway error.", type="server_error", code="internal_error"
                )
                await _send_json(send, 500, encode(error), {"x-request-id": request_id})
        finally:
            start_stream.stop()

    return handler


async def _messages(
    service: ChatService, request_id: str, headers: dict[str, str], body: bytes, started: float,
    start: StartStream, send: Send, disconnected: asyncio.Event,
) -> tuple[bytes, dict[str, str]] | None:  # fmt: skip
    principal = await service.authenticate(headers)
    req = parse_messages_request(body)
    inbound = Inbound(request_id, headers, principal, messages_estimate(req), started)
    return await serve_messages(service, inbound, req, start, send, disconnected)


async def _count_tokens(
    service: ChatService, request_id: str, headers: dict[str, str], body: bytes, started: float,
    start: StartStream, send: Send, disconnected: asyncio.Event,
) -> tuple[bytes, dict[str, str]] | None:  # fmt: skip
    """count_tokens is free (Anthropic charges nothing for it): authenticated, not metered."""
    principal = await service.authenticate(headers)
    req = parse_messages_request(body, count_tokens=True)
    model = (await service.catalog.get()).get(req.model)
    if model is None:
        raise GatewayError(404, f"The model '{req.model}' does not exist or is not available.", param="model")
    if principal.allowed_models is not None and model.name not in principal.allowed_models:
        raise GatewayError(
            403, f"This API key may not use the model '{model.name}'.", type="permission_error"
        )
    if model.provider == "anthropic":
        credential = await service.credentials.resolve(
            principal.user_id, model.provider, headers.get("x-provider-api-key")
        )
        upstream_req = build_native_request(req, model.upstream_model, credential, headers, count_tokens=True)
        try:
            response = await service.upstream.send(upstream_req, service.settings.timeouts(model.provider))
            if not 200 <= response.status < 300:
                service.adapters["anthropic"].parse_response(response.status, response.headers, response.body)
            tokens = count_tokens_result(response.body)
        except ProviderError as exc:
            raise from_provider_error(exc) from None
    else:
        tokens, _ = count_input_tokens(req)
    return msgspec.json.encode(count_tokens_body(tokens)), {"x-request-id": request_id}


async def _responses(
    service: ChatService, request_id: str, headers: dict[str, str], body: bytes, started: float,
    start: StartStream, send: Send, disconnected: asyncio.Event,
) -> tuple[bytes, dict[str, str]] | None:  # fmt: skip
    principal = await service.authenticate(headers)
    req = parse_responses_request(body)
    inbound = Inbound(request_id, headers, principal, responses_estimate(req), started)
    return await serve_responses(service, inbound, req, start, send, disconnected)


async def _embeddings(
    service: ChatService, request_id: str, headers: dict[str, str], body: bytes, started: float,
    start: StartStream, send: Send, disconnected: asyncio.Event,
) -> tuple[bytes, dict[str, str]] | None:  # fmt: skip
    principal = await service.authenticate(headers)
    req = parse_embeddings_request(body)
    inbound = Inbound(request_id, headers, principal, embeddings_estimate(req), started)
    return await serve_embeddings(service, inbound, req)


def api_handlers(chat: Callable[[], ChatService], max_body_bytes: int) -> list[Any]:
    """Every route of this module, bound to the app's ChatService."""
    return [
        api_handler("/v1/messages", chat, max_body_bytes, _messages, anthropic=True),
        api_handler("/v1/messages/count_tokens", chat, max_body_bytes, _count_tokens, anthropic=True),
        api_handler("/v1/responses", chat, max_body_bytes, _responses, anthropic=False),
        api_handler("/v1/embeddings", chat, max_body_bytes, _embeddings, anthropic=False),
        retrieve_model,
    ]


@get(
    "/v1/models/{model_id:str}",
    responses={
        404: ResponseSpec(data_container=ErrorEnvelope, description="No such model", generate_examples=False)
    },
)
async def retrieve_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[Any]:
    """One catalog model in OpenAI's model format (404 in the OpenAI envelope)."""
    name = model_id
    model = (await request.app.state.runtime.chat.catalog.get()).get(name)
    if model is None:
        body = encode_error(
            f"The model '{name}' does not exist", "invalid_request_error", "model_not_found", "model"
        )
        return Response(content=body, status_code=404, media_type="application/json")
    return Response(
        content={"id": model.name, "object": "model", "created": 0, "owned_by": model.provider},
        media_type="application/json",
    )
