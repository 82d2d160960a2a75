"""Every failure answered in the OpenAI envelope with the right status, and none of them charged."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from storage.accounts.keys import revoke_key
from tests.integration.conftest import Gateway
from tests.integration.helpers import PRODUCTION_BACKEND_ONLY


async def post(gw: Gateway, key: str | None, body: Any, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with httpx.AsyncClient(timeout=30) as http:
        if isinstance(body, bytes | str):
            return await http.post(f"{gw.v1}/chat/completions", content=body, headers=headers)
        return await http.post(f"{gw.v1}/chat/completions", json=body, headers=headers)


def chat(text: str = "hi", model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def envelope(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"].startswith("req_")
    return dict(body["error"])


async def nothing_charged(gw: Gateway, user_id: uuid.UUID, start: int) -> None:
    assert await gw.ledger.available(user_id) == start
    assert await gw.scalar("SELECT COUNT(*) FROM billing_events WHERE type <> 'credit'") == 0


@PRODUCTION_BACKEND_ONLY  # the envelope is the gateway's: the backend is not the subject
async def test_authentication_failures_are_401(gateway: Gateway) -> None:
    for key, fragment in ((None, "Missing API key"), ("sk-sg-unknown", "Invalid API key")):
        response = await post(gateway, key, chat())
        assert response.status_code == 401
        error = envelope(response)
        assert fragment in error["message"] and error["code"] == "invalid_api_key"
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{gateway.v1}/chat/completions", json=chat(), headers={"Authorization": "Basic x"}
        )
    assert response.status_code == 401
    assert gateway.mock.app.requests.maxlen and len(gateway.mock.app.requests) == 0


async def test_revoked_key_stops_working_within_five_seconds(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    assert (await post(gateway, key, chat())).status_code == 200  # cached as valid now
    key_id = await gateway.scalar("SELECT id FROM api_keys")
    async with gateway.engine.begin() as conn:
        assert await revoke_key(conn, uuid.UUID(str(key_id)))
    revoked_at = time.monotonic()
    while (await post(gateway, key, chat())).status_code == 200:
        assert time.monotonic() - revoked_at < 5, "a revoked key still worked after 5 seconds"
        await asyncio.sleep(0.1)
    assert (await post(gateway, key, chat())).status_code == 401


@PRODUCTION_BACKEND_ONLY  # the envelope is the gateway's: the backend is not the subject
async def test_unknown_model_is_404_and_disallowed_model_403(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1", models=["gpt-4o-mini"])
    response = await post(gateway, key, chat(model="gpt-9-ultra"))
    assert response.status_code == 404
    assert envelope(response)["code"] == "model_not_found"
    response = await post(gateway, key, chat(model="gpt-4o"))
    assert response.status_code == 403
    assert envelope(response)["code"] == "model_not_allowed"
    assert (await post(gateway, key, chat(model="gpt-4o-mini"))).status_code == 200
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": ["hi"]}, "messages[0]"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (chat(stream="yes"), "stream"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(max_completion_tokens=1.5), "max_completion_tokens"),
        (chat(n=0), "n"),
        (chat(stream_options=[1]), "stream_options"),
    ],
)
@PRODUCTION_BACKEND_ONLY  # the envelope is the gateway's: the backend is not the subject
async def test_bad_requests_name_the_field(gateway: Gateway, body: Any, param: str | None) -> None:
    user_id, key = await gateway.seed_user("1")
    start = await gateway.ledger.available(user_id)
    response = await post(gateway, key, body)
    assert response.status_code == 400
    error = envelope(response)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    await nothing_charged(gateway, user_id, start)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_oversized_body_is_413(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    response = await post(gateway, key, chat("x" * (gateway.settings.max_body_bytes + 10)))
    assert response.status_code == 413
    assert envelope(response)["code"] == "request_too_large"


async def test_insufficient_credit_is_402_without_an_upstream_call(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("0.000001")
    with pytest.raises(openai.APIStatusError) as refused:
        openai.OpenAI(base_url=gateway.v1, api_key=key).chat.completions.create(  # default retries on
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    response = refused.value.response
    assert response.status_code == 402
    assert response.headers["x-should-retry"] == "false"
    assert envelope(response)["type"] == "insufficient_quota"
    assert len(gateway.mock.app.requests) == 0  # neither the SDK (no retry) nor the gateway called upstream
    await nothing_charged(gateway, user_id, 1_000)


@pytest.mark.parametrize(
    ("directive", "status", "kind"),
    [
        ("[mock status=400]", 400, "invalid_request_error"),
        ("[mock status=429]", 429, None),
        ("[mock status=500]", 502, "upstream_error"),
        ("[mock status=503]", 502, "upstream_error"),
    ],
)
async def test_upstream_errors_are_mapped_and_not_charged(
    gateway: Gateway, directive: str, status: int, kind: str | None
) -> None:
    user_id, key = await gateway.seed_user("1")
    start = await gateway.ledger.available(user_id)
    for stream in (False, True):
        response = await post(gateway, key, chat(f"fail {directive}", stream=stream))
        assert response.status_code == status
        error = envelope(response)
        if kind:
            assert error["type"] == kind
        if status == 429:
            assert response.headers["retry-after"] == "0"
    await nothing_charged(gateway, user_id, start)
    # Each failed request leaves one error row: no tokens, no cost, every attempt counted.
    rows = await gateway.rows(
        "SELECT status, cost_nano, charged_nano, output_tokens, attempts, http_status FROM usage_logs"
    )
    attempts = 1 if status == 400 else 1 + gateway.settings.upstream_max_retries
    assert [tuple(r) for r in rows] == [("error", 0, 0, 0, attempts, status)] * 2


@PRODUCTION_BACKEND_ONLY  # the envelope is the gateway's: the backend is not the subject
async def test_upstream_unreachable_is_502(gateway: Gateway) -> None:
    user_id, key = await gateway.seed_user("1")
    start = await gateway.ledger.available(user_id)
    # The deepseek provider points at a closed port for this call.
    closed = httpx.URL("http://127.0.0.1:9")
    gateway.settings.__dict__["deepseek_base_url"] = str(closed)
    response = await post(gateway, key, chat(model="deepseek-chat"))
    assert response.status_code == 502
    assert envelope(response)["code"] == "upstream_unreachable"
    await nothing_charged(gateway, user_id, start)


async def test_stream_cut_by_upstream_sends_an_error_event_and_bills_what_was_delivered(
    gateway: Gateway,
) -> None:
    user_id, key = await gateway.seed_user("1")
    start = await gateway.ledger.available(user_id)
    response = await post(gateway, key, chat("cut [mock completion_tokens=40 cut_after=3]", stream=True))
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert '"error"' in events[-1] and "upstream_stream_cut" in events[-1]
    status, source, output, cost = (
        await gateway.rows("SELECT status, usage_source, output_tokens, cost_nano FROM usage_logs")
    )[0]
    assert status == "error" and source == "estimated"
    assert 0 < output < 40
    assert await gateway.ledger.available(user_id) == start - cost
    debit = await gateway.scalar("SELECT amount_nano FROM billing_events WHERE type = 'usage'")
    assert debit == -cost


@PRODUCTION_BACKEND_ONLY  # the envelope is the gateway's: the backend is not the subject
async def test_method_not_allowed_and_unknown_routes_use_the_envelope(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{gateway.v1}/chat/completions")
        assert response.status_code == 405 and envelope(response)["code"] == "method_not_allowed"
        response = await http.get(f"{gateway.url}/v1/nothing-here")
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
