"""Hostile input is a 400 in the envelope (chat and admin); provider keys never reach a client or a log line.

In-process over ASGI on PostgreSQL + Redis, with the mock upstream's `echo_key` directive: the provider's
error message repeats the key it received, as OpenAI's 401 does. Every test reads the gateway's own log
output at every level (the `synapgate` loggers and all that reaches the root) and fails on any key text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.logging_setup import JsonFormatter
from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, api, error_of

PLATFORM_KEY = "sk-platform-openai-7Hq2Lm9Xc4Vb8Nz1"
# Not shaped like any provider's key: only the gateway's knowledge of the key it sent can scrub these.
BYOK_KEY = "byok_user_owned_token_3Fk8Jd2Wq9Zx5Rt7"
STORED_KEY = "stored_user_token_6Yp4Tn8Gv1Mb3Ks9"


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_database() -> str:
    return "reset"


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN, "openai_api_key": PLATFORM_KEY, "upstream_max_retries": 0}


class _Capture(logging.Handler):
    """Every record the gateway logs, formatted as its JSON log line (message, extra fields, traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[_Capture]:
    """The gateway's log output at every level, from the `synapgate` loggers and the root."""
    capture = _Capture()
    gateway_log, root = logging.getLogger("synapgate"), logging.getLogger()
    levels = gateway_log.level, root.level
    gateway_log.addHandler(capture)
    root.addHandler(capture)
    gateway_log.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        gateway_log.removeHandler(capture)
        root.removeHandler(capture)
        gateway_log.setLevel(levels[0])
        root.setLevel(levels[1])


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def no_key_text(text: str, *keys: str) -> None:
    """No key, nor its longer part without the last four characters, appears in `text`."""
    for key in keys:
        assert key not in text and key[:-4] not in text, f"key text leaked: {text[:400]}"


async def _post_chat(gateway: Gateway, key: str, body: Any, **headers: str) -> httpx.Response:
    headers["Authorization"] = f"Bearer {key}"
    if isinstance(body, bytes):
        headers["content-type"] = "application/json"
        return await gateway.request("POST", "/v1/chat/completions", content=body, headers=headers)
    return await gateway.request("POST", "/v1/chat/completions", json=body, headers=headers)


# -- hostile bodies and out-of-range values --------------------------------------------------------

AS_ADMIN = {"content-type": "application/json", "authorization": f"Bearer {ADMIN}"}
HOSTILE = {
    "not_utf8": (b'{"email": "caf\xe9@example.com"}', "UTF-8"),
    "deep": (b'{"email": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "deeper"),
    "array": (b'[{"email": "a@example.com"}]', "JSON object"),
    "huge_int": (b'{"email": "a@example.com", "n": 3560301864148169668952064}', "64 bits"),
    "int_beyond_int64": (b'{"email": "a@example.com", "n": 9223372036854775808}', "64 bits"),
    "not_json": (b'{"email": ', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_admin_bodies_are_400_in_the_envelope(gateway: Gateway, case: str) -> None:
    body, fragment = HOSTILE[case]
    for path in ("/users", "/workspaces", "/billing/add-credits", "/tags"):
        response = await gateway.request("POST", f"/api/v1{path}", content=body, headers=AS_ADMIN)
        error = error_of(response, 400)
        assert fragment in error["message"], (path, error)
    assert await gateway.scalar("SELECT COUNT(*) FROM users") == 0  # nothing was created


async def test_a_hostile_admin_body_is_still_a_401_without_a_key(gateway: Gateway) -> None:
    response = await api(gateway, "POST", "/users", key=None, content=HOSTILE["deep"][0])
    error_of(response, 401)


async def test_out_of_range_query_parameters_are_400_naming_them(gateway: Gateway) -> None:
    for path in ("/workspaces", "/users", "/keys", "/llms"):
        response = await api(gateway, "GET", f"{path}?offset=3560301864148169668952064")
        assert error_of(response, 400)["param"] == "offset", path
        response = await api(gateway, "GET", f"{path}?limit=-1")
        assert error_of(response, 400)["param"] == "limit", path
    response = await api(gateway, "GET", "/analytics/top-llms?limit=100000000000000000000000")
    assert error_of(response, 400)["param"] == "limit"


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_chat_bodies_are_400_and_reach_no_provider(gateway: Gateway, case: str) -> None:
    _user, key = await gateway.seed_user("1")
    chat_body = HOSTILE[case][0].replace(b'"email"', b'"model": "gpt-4o-mini", "messages"', 1)
    response = await _post_chat(gateway, key, chat_body)
    error_of(response, 400)
    assert len(gateway.mock.app.requests) == 0


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_output_beyond_the_models_limit_is_a_400_naming_the_field(gateway: Gateway, field: str) -> None:
    _user, key = await gateway.seed_user("1")
    response = await _post_chat(gateway, key, chat(**{field: 10**12}))
    error = error_of(response, 400)
    assert error["param"] == field and "16384" in error["message"], error
    ok = await _post_chat(gateway, key, chat(**{field: 16_384}))  # the limit itself is allowed
    assert ok.status_code == 200, ok.text
    assert len(gateway.mock.app.requests) == 1


# -- keys in upstream errors -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_rejecting_the_platform_key_is_a_502_without_the_key(
    gateway: Gateway, logs: _Capture, stream: bool
) -> None:
    _user, key = await gateway.seed_user("1")
    response = await _post_chat(gateway, key, chat("[mock status=401 echo_key=yes]", stream=stream))
    error = error_of(response, 502)
    assert error["message"] == "The provider rejected the gateway's credentials."
    assert error["code"] == "upstream_auth_failed"  # not the user's invalid_api_key
    received = gateway.mock.app.requests[-1].headers["authorization"]
    assert received == f"Bearer {PLATFORM_KEY}"  # the mock did see (and echo) the platform key
    no_key_text(response.text, PLATFORM_KEY)
    operator_lines = [line for line in logs.lines if "rejected the platform's credentials" in line]
    assert operator_lines and PLATFORM_KEY[-4:] in operator_lines[0]  # the operator can tell which key
    no_key_text("\n".join(logs.lines), PLATFORM_KEY, key)
    assert await gateway.scalar("SELECT COUNT(*) FROM billing_events WHERE type <> 'credit'") == 0


@pytest.mark.parametrize("status", [500, 429, 400])
async def test_other_upstream_errors_echoing_the_platform_key_are_scrubbed(
    gateway: Gateway, logs: _Capture, status: int
) -> None:
    _user, key = await gateway.seed_user("1")
    response = await _post_chat(gateway, key, chat(f"[mock status={status} echo_key=yes]"))
    assert response.status_code == (502 if status >= 500 else status), response.text
    assert "Incorrect API key provided: [redacted" in response.text  # the message itself still arrives
    no_key_text(response.text, PLATFORM_KEY)
    no_key_text("\n".join(logs.lines), PLATFORM_KEY, key)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_byok_keys_401_stays_the_users_401_scrubbed(
    gateway: Gateway, logs: _Capture, stream: bool
) -> None:
    _user, key = await gateway.seed_user("1")
    response = await _post_chat(
        gateway,
        key,
        chat("[mock status=401 echo_key=yes]", stream=stream),
        **{"X-Provider-Api-Key": BYOK_KEY},
    )
    error = error_of(response, 401)
    assert error["code"] == "invalid_api_key"
    assert gateway.mock.app.requests[-1].headers["authorization"] == f"Bearer {BYOK_KEY}"
    assert f"[redacted…{BYOK_KEY[-4:]}]" in error["message"]
    no_key_text(response.text, BYOK_KEY, PLATFORM_KEY)
    no_key_text("\n".join(logs.lines), BYOK_KEY, PLATFORM_KEY, key)


async def test_a_stored_provider_keys_errors_and_logs_carry_no_key_text(
    gateway: Gateway, logs: _Capture
) -> None:
    user_id, key = await gateway.seed_user("1")
    stored = await api(gateway, "PUT", f"/users/{user_id}/provider-keys/openai", json={"api_key": STORED_KEY})
    assert stored.status_code in (200, 201), stored.text
    no_key_text(stored.text, STORED_KEY)
    listed = await api(gateway, "GET", f"/users/{user_id}/provider-keys")
    no_key_text(listed.text, STORED_KEY)
    assert STORED_KEY[-4:] in listed.text
    ok = await _post_chat(gateway, key, chat("hello"))
    assert ok.status_code == 200, ok.text
    assert gateway.mock.app.requests[-1].headers["authorization"] == f"Bearer {STORED_KEY}"
    failed = await _post_chat(gateway, key, chat("[mock status=401 echo_key=yes]"))
    assert failed.status_code == 401  # the user's own key: their 401
    no_key_text(failed.text, STORED_KEY)
    failed = await _post_chat(gateway, key, chat("[mock status=503 echo_key=yes]"))
    assert failed.status_code == 502
    no_key_text(failed.text, STORED_KEY)
    no_key_text("\n".join(logs.lines), STORED_KEY, PLATFORM_KEY, key)
    assert logs.lines  # the capture does see the gateway's log output
