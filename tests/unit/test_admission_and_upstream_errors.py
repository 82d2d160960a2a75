"""Pure rules of admission (output limit, per-provider estimate) and of upstream errors as they leave."""

from __future__ import annotations

import logging
from decimal import Decimal

import msgspec
import pytest

from gateway.api.chat_request import parse_chat_request
from gateway.chat.admit import _check_output_limit, _prompt_estimate, _thinking_requested
from gateway.errors import GatewayError, credential_safe, from_provider_error
from gateway.providers.base import ChatRequest, Credential, ProviderError
from pricing.catalog import Model, PriceTier, Pricing

PLATFORM = Credential("sk-proj-Platform0Key1With2Digits3abcd", "https://api.example", byok=False)
BYOK = Credential("users_own_token_not_key_shaped_7xQ2", "https://api.example", byok=True)


def model(provider: str = "openai", max_output_tokens: int = 16_384) -> Model:
    return Model(
        id=1,
        name="m",
        provider=provider,
        upstream_model="gpt-4o-mini",
        display_name="M",
        pricing=Pricing(PriceTier(Decimal("0.15"), Decimal("0.60"))),
        price_version=1,
        context_window=128_000,
        max_output_tokens=max_output_tokens,
    )


def request(**extra: object) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], **extra}
    return parse_chat_request(msgspec.json.encode(body))


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_output_above_the_models_limit_is_a_400_naming_the_field(field: str) -> None:
    _check_output_limit(request(**{field: 16_384}), model())
    with pytest.raises(GatewayError) as caught:
        _check_output_limit(request(**{field: 16_385}), model())
    assert (caught.value.status, caught.value.param) == (400, field)


def test_thinking_is_requested_by_an_enabled_block_or_a_reasoning_effort() -> None:
    assert _thinking_requested({"thinking": {"type": "enabled", "budget_tokens": 2048}})
    assert not _thinking_requested({"thinking": {"type": "disabled"}})
    assert _thinking_requested({"reasoning_effort": "high"})
    assert not _thinking_requested({})


def test_the_estimate_follows_the_provider_tools_schema_and_thinking() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    plain = _prompt_estimate(request(), model("anthropic"))
    with_tools = _prompt_estimate(request(tools=tools), model("anthropic"))
    thinking = _prompt_estimate(request(thinking={"type": "enabled"}), model("anthropic"))
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    formatted = _prompt_estimate(request(response_format=schema), model("anthropic"))
    assert with_tools > plain + 100  # Anthropic's tool-use system prompt
    assert thinking > plain and formatted > plain


def test_a_rejected_platform_key_becomes_a_502_and_the_operator_sees_only_its_last_four(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logging.getLogger("synapgate").propagate = True
    try:
        with caplog.at_level(logging.DEBUG):
            for status in (401, 403):
                text = f"Incorrect API key provided: {PLATFORM.api_key}"
                echoed = ProviderError(status, text, code="invalid_api_key")
                safe = credential_safe(echoed, PLATFORM)
                assert (safe.status, safe.code) == (502, "upstream_auth_failed")
                client = from_provider_error(safe)
                assert client.message == "The provider rejected the gateway's credentials."
                assert client.status == 502
    finally:
        logging.getLogger("synapgate").propagate = False
    logged = [r for r in caplog.records if "platform's credentials" in r.getMessage()]
    assert logged and all(getattr(r, "key_last4", None) == "abcd" for r in logged)
    assert PLATFORM.api_key[:-4] not in caplog.text


def test_a_byok_keys_401_stays_a_401_with_the_key_scrubbed() -> None:
    echoed = ProviderError(401, f"Incorrect API key provided: {BYOK.api_key}.", code="invalid_api_key")
    assert BYOK.api_key in echoed.message  # not shaped like a provider key: only the known key finds it
    safe = credential_safe(echoed, BYOK)
    assert (safe.status, safe.code) == (401, "invalid_api_key")
    assert BYOK.api_key not in safe.message and "[redacted…7xQ2]" in safe.message
    assert BYOK.api_key not in from_provider_error(safe).message


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_other_errors_keep_their_status_and_lose_the_key(status: int) -> None:
    escaped = BYOK.api_key.replace("_", "\\u005f")  # as a JSON body may carry it
    echoed = ProviderError(status, f"bad request for key {escaped} / {BYOK.api_key}")
    safe = credential_safe(echoed, BYOK)
    assert safe.status == status
    assert BYOK.api_key not in safe.message and escaped not in safe.message


def test_a_provider_error_never_holds_a_key_shaped_text() -> None:
    error = ProviderError(500, "upstream said: key sk-ant-api03-Abc123Def456Ghi789 is wrong")
    assert "sk-ant-api03-Abc123Def456Ghi789" not in error.message
    assert "sk-ant-api03-Abc123Def456Ghi789" not in from_provider_error(error).message
