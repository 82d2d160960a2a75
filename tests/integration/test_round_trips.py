"""What one chat request sends to Redis, counted through the real app (PostgreSQL + Redis, in-process).

Once the caches are warm (key, catalog, balance snapshot, budget, the Lua scripts), a request with a rate
limit and a budget on its key costs one Redis round trip before the upstream call (credit and every limit
reserved in one script) and one after it (credit and limit holds settled in one script). The PostgreSQL side,
one statement per batch (budgeted records too: only a batch crossing a budget level takes the statement
path), is counted in test_record_one_trip.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, api

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count"}], "max_tokens": 20}


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


async def test_one_redis_round_trip_each_side_of_the_upstream_call(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, _ = await gateway.seed_user("5")
    created = await api(
        gateway,
        "POST",
        "/keys",
        json={
            "user_id": str(user_id),
            "rpm_limit": 1000,
            "tpm_limit": 10**7,
            "budget_usd": "4",
            "budget_period": "month",
        },
    )
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['key']}"}
    sends: list[int] = []
    real = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        await real(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    for _ in range(3):  # warm: key and catalog cached, snapshot and budget loaded, scripts known to Redis
        assert (
            await gateway.request("POST", "/v1/chat/completions", headers=headers, json=BODY)
        ).status_code == 200
    rounds = []
    for _ in range(5):
        sends.clear()
        answer = await gateway.request("POST", "/v1/chat/completions", headers=headers, json=BODY)
        assert answer.status_code == 200
        rounds.append(len(sends))
    assert rounds == [2] * 5  # reserve (credit + limits, one script); settle (credit + limits, one script)
    limits = (await api(gateway, "GET", "/keys", params={"user_id": str(user_id)})).json()["data"][-1]
    detail = (await api(gateway, "GET", f"/keys/{limits['id']}")).json()["limits"]
    charged = await gateway.scalar(
        "SELECT COALESCE(SUM(charged_nano), 0) FROM usage_logs WHERE user_id = :u", u=str(user_id)
    )
    assert detail["spent_nano"] == int(charged) > 0  # the budget holds settled to the actual spend
