"""Errors in the OpenAI envelope: `{"error": {"message", "type", "param", "code"}}` with the right status."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from gateway.providers.base import Credential, ProviderError
from gateway.secrets_scrub import scrub

log = logging.getLogger("synapgate.upstream")
GATEWAY_WORDED = frozenset({"upstream_auth_failed"})


class GatewayError(Exception):
    """An error the client receives as an OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> bytes:
        return encode_error(self.message, self.type, self.code, self.param)


def encode_error(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    envelope: dict[str, Any] = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return msgspec.json.encode(envelope)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, type="invalid_request_error", code="invalid_api_key")


def insufficient_credits(available_nano: int, needed_nano: int) -> GatewayError:
    from pricing.money import format_usd

    return GatewayError(
        402,
        f"Insufficient credits: this request may cost up to ${format_usd(needed_nano)} and "
        f"${format_usd(max(available_nano, 0))} is available. Add credits and retry.",
        type="insufficient_quota",
        code="insufficient_credits",
        headers={"x-should-retry": "false"},
    )


def record_failed() -> GatewayError:
    return GatewayError(
        503,
        "The request could not be recorded, so no answer is returned and nothing was charged. Retry later.",
        type="server_error",
        code="record_failed",
        headers={"retry-after": "1"},
    )


def conversation_not_found() -> GatewayError:
    return GatewayError(
        404, "No such conversation.", code="conversation_not_found", param="X-Conversation-Id"
    )


def credential_safe(exc: ProviderError, credential: Credential) -> ProviderError:
    """A provider's error as it may leave the gateway: the key the gateway sent scrubbed from its text, and a
    rejection of the PLATFORM's key (401/403) turned into a 502 — the user's request was not at fault, and
    the user must not be told their key is invalid. A BYOK key's rejection stays the user's own 401/403."""
    key = credential.api_key
    if not credential.byok and exc.status in (401, 403):
        log.error(
            "the provider rejected the platform's credentials",
            extra={"upstream_status": exc.status, "key_last4": key[-4:] if len(key) >= 16 else "?"},
        )
        return ProviderError(
            502,
            "The provider rejected the gateway's credentials.",
            type="upstream_error",
            code="upstream_auth_failed",
        )
    message = scrub(exc.message, [key])
    if message == exc.message:
        return exc
    return ProviderError(
        exc.status, message, type=exc.type, code=exc.code, param=exc.param, retry_after=exc.retry_after
    )


def from_provider_error(exc: ProviderError) -> GatewayError:
    """A provider's error as the client sees it: its 4xx passed through, 5xx as 502, timeouts 504.

    The message is scrubbed once more of anything shaped like a key (the known key is `credential_safe`'s)."""
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(0, round(exc.retry_after)))
    if 400 <= exc.status < 500:
        return GatewayError(
            exc.status, scrub(exc.message), type=exc.type, code=exc.code, param=exc.param, headers=headers
        )
    if exc.code == "circuit_open":
        return GatewayError(
            503, exc.message, type="upstream_error", code=exc.code, headers={"retry-after": "5"}
        )
    status = 504 if exc.status == 504 else 502
    own = exc.code in GATEWAY_WORDED  # the gateway's own sentence, not the provider's text
    return GatewayError(
        status,
        scrub(exc.message) if own else f"Upstream provider error: {scrub(exc.message)}",
        type="upstream_error",
        code=exc.code,
        headers=headers,
    )
