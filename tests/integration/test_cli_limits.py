"""The CLI's limit commands (`keys create|update`, `users update`, `workspaces update`) on the same service
functions as the admin API: what the CLI sets, the API reads back; bad input changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, Run, api, cli


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


def run(gw: Gateway, *args: str) -> Run:
    env = {"SYNAPGATE_REDIS_URL": gw.redis_url} if gw.redis_url else {}
    return cli(gw.settings.database_url, *args, env=env)


async def test_cli_sets_limits_that_the_api_reads(gateway: Gateway) -> None:
    user = run(gateway, "users", "create", "--email", "limits@example.com").json()
    created = run(
        gateway, "keys", "create", "--user", user["user_id"], "--rpm", "7", "--tpm", "9000",
        "--budget-usd", "2.50", "--budget-period", "week", "--expires-at", "2030-01-01T00:00:00Z",
    )  # fmt: skip
    assert created.code == 0, created.err
    key_id = created.json()["id"]
    limits = (await api(gateway, "GET", f"/keys/{key_id}")).json()
    assert limits["expires_at"].startswith("2030-01-01")
    assert limits["limits"]["rpm_limit"] == 7 and limits["limits"]["tpm_limit"] == 9000
    assert limits["limits"]["budget_usd"] == "2.5" or limits["limits"]["budget_nano"] == 2_500_000_000
    assert limits["limits"]["budget_period"] == "week" and limits["limits"]["spent_nano"] == 0

    updated = run(gateway, "keys", "update", key_id, "--rpm", "none", "--budget-usd", "1")
    assert updated.code == 0, updated.err
    after = (await api(gateway, "GET", f"/keys/{key_id}")).json()["limits"]
    assert after["rpm_limit"] is None and after["tpm_limit"] == 9000
    assert after["budget_nano"] == 1_000_000_000 and after["budget_period"] == "month"

    assert run(gateway, "users", "update", user["user_id"], "--tpm", "500").code == 0
    user_limits = (await api(gateway, "GET", f"/users/{user['user_id']}/limits")).json()["limits"]
    assert user_limits["tpm_limit"] == 500
    ws = run(
        gateway, "workspaces", "update", user["workspace_id"], "--budget-usd", "3", "--budget-period", "day"
    )
    assert ws.code == 0, ws.err
    ws_limits = (await api(gateway, "GET", f"/workspaces/{user['workspace_id']}/limits")).json()["limits"]
    assert ws_limits["budget_nano"] == 3_000_000_000 and ws_limits["resets_at"] is not None

    bad = run(gateway, "keys", "update", key_id, "--budget-usd", "-1")
    assert bad.code != 0 and bad.out == "" and "--budget-usd" in bad.err
    assert (await api(gateway, "GET", f"/keys/{key_id}")).json()["limits"]["budget_nano"] == 1_000_000_000
