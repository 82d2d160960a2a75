"""Admission while PostgreSQL is known to be down, through the app: served only when the record can be made
durable — the Redis ledger with a writable spool. A full or unwritable spool, and the SQL ledger (the embedded
default), are refused with 503 `database_unavailable` + Retry-After before the upstream call.

Real app (in-process ASGI), real PostgreSQL + Redis or SQLite, the mock upstream. The database's up/down state
is the app's own watch, marked down as its first failed call would mark it (the fault suite stops a real
PostgreSQL: tests/faults/test_spool.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.runtime import runtime_of
from tests.integration.conftest import Gateway


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"spool_dir": tmp_path / "spool", "spool_instance": "admission"}


async def _unreachable() -> None:
    raise ConnectionRefusedError(111, "Connect call failed")


def _body() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def _ask(gateway: Gateway, key: str) -> Any:
    return await gateway.request(
        "POST", "/v1/chat/completions", json=_body(), headers={"authorization": f"Bearer {key}"}
    )


async def test_admission_while_the_database_is_down_depends_on_the_spool(
    gateway: Gateway, backend: str
) -> None:
    _user, key = await gateway.seed_user("1")
    assert (await _ask(gateway, key)).status_code == 200  # warm: the key is cached, the snapshot loaded
    assert gateway.client is not None
    runtime = runtime_of(gateway.client.app)
    runtime.database_health._probe = _unreachable  # its probe would find this PostgreSQL up and say so
    down = ConnectionRefusedError(111, "Connect call failed")
    runtime.database_health.failed(down)
    calls = len(gateway.mock.app.requests)

    if backend == "sqlite":  # the SQL ledger: no spool, the fast 503 as before
        assert runtime.spool is None
    else:
        assert runtime.spool is not None and runtime.spool.accepting
        served = await _ask(gateway, key)  # durable if it must be: admitted
        assert served.status_code == 200, served.text
        calls = len(gateway.mock.app.requests)
        runtime.database_health.failed(down)  # (its record committed after all: that said "up" again)
        runtime.spool.spool.max_bytes = 0  # full

    refused = await _ask(gateway, key)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "database_unavailable"
    assert refused.headers["retry-after"] == "1"
    assert len(gateway.mock.app.requests) == calls  # decided before the upstream call
    runtime.database_health.succeeded()
