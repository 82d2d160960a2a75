"""The admin API for users, workspaces, gateway keys and provider keys, in-process over ASGI.

One backend (PostgreSQL + Redis): these rules do not depend on the database; the backend-specific suites
(ledger, invoices' exactness, analytics SQL, schema) run on both.
"""

from __future__ import annotations

import uuid
from typing import Any

import openai
import pytest

from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, api, chat, create_key, create_user, db_id, error_of


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_database() -> str:
    return "reset"  # one PostgreSQL database for the module, emptied between tests


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN}


# -- users ---------------------------------------------------------------------------------------


async def test_create_user_makes_workspace_and_credit_account(gateway: Gateway) -> None:
    user = await create_user(gateway, "Ada@Example.com", name="Ada", workspace_name="Analytical")
    assert user["email"] == "ada@example.com" and user["name"] == "Ada" and user["status"] == "active"
    assert user["balance_usd"] == "0.000000000" and user["balance_nano"] == 0
    assert user["active_keys"] == 0
    assert [(w["name"], w["role"]) for w in user["workspaces"]] == [("Analytical", "owner")]
    uid = db_id(gateway, user["id"])
    assert await gateway.scalar("SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=uid) == 0
    role = await gateway.scalar("SELECT role FROM workspace_members WHERE user_id = :u", u=uid)
    assert role == "owner"

    shown = await api(gateway, "GET", f"/users/{user['id']}")
    assert shown.status_code == 200 and shown.json() == user

    duplicate = await api(gateway, "POST", "/users", json={"email": "ada@example.com"})
    error = error_of(duplicate, 409)
    assert error["code"] == "user_exists" and error["param"] == "email"
    assert await gateway.scalar("SELECT COUNT(*) FROM users") == 1

    missing = await api(gateway, "GET", f"/users/{uuid.uuid4()}")
    assert error_of(missing, 404)["code"] == "user_not_found"


async def test_validation_errors_name_the_field(gateway: Gateway) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"email": "not-an-email"}, "email"),
        ({"email": 5}, "email"),
        ({}, "email"),
        ({"email": "a@example.com", "emial": "typo"}, "emial"),
        ({"email": "a@example.com", "name": ""}, "name"),
    ]
    for body, field in cases:
        error = error_of(await api(gateway, "POST", "/users", json=body), 400)
        assert field in error["message"], (body, error)
        assert error["type"] == "invalid_request_error"
    assert error_of(await api(gateway, "POST", "/users", content=b"{not json"), 400)
    assert error_of(await api(gateway, "GET", "/users", params={"limit": 0}), 400)["param"] == "limit"
    assert error_of(await api(gateway, "GET", "/users", params={"offset": -1}), 400)["param"] == "offset"
    assert "limit" in error_of(await api(gateway, "GET", "/users", params={"limit": "ten"}), 400)["message"]
    assert await gateway.scalar("SELECT COUNT(*) FROM users") == 0


async def test_authentication_and_admin_only_operations(gateway: Gateway) -> None:
    for key in (None, "sk-sg-unknown", "admin-secre"):
        error = error_of(await api(gateway, "GET", "/users", key=key), 401)
        assert error["code"] == "invalid_api_key"
    # Authentication comes first: a bad body from an unknown caller is still a 401.
    assert error_of(await api(gateway, "POST", "/users", key="nope", json={"x": 1}), 401)
    _user, key = await gateway.seed_user("0")
    forbidden = await api(gateway, "POST", "/users", key=key, json={"email": "b@example.com"})
    assert error_of(forbidden, 403)["code"] == "admin_only"
    forbidden = await api(gateway, "POST", "/workspaces", key=key, json={"name": "mine"})
    assert error_of(forbidden, 403)["code"] == "admin_only"
    assert await gateway.scalar("SELECT COUNT(*) FROM users") == 1


async def test_user_list_pages_are_stable_and_filterable(gateway: Gateway) -> None:
    created = [await create_user(gateway, f"user{i}@example.com") for i in range(7)]
    full = (await api(gateway, "GET", "/users")).json()
    assert full["total"] == 7 and full["has_more"] is False
    assert sorted(u["id"] for u in full["data"]) == sorted(u["id"] for u in created)
    keys = [(u["created_at"], u["id"]) for u in full["data"]]
    assert keys == sorted(keys)  # oldest first, ties by id
    paged: list[str] = []
    for offset in range(0, 8, 3):
        page = (await api(gateway, "GET", "/users", params={"limit": 3, "offset": offset})).json()
        assert page["limit"] == 3 and page["offset"] == offset and page["total"] == 7
        assert page["has_more"] is (offset + 3 < 7)
        paged += [u["id"] for u in page["data"]]
    assert paged == [u["id"] for u in full["data"]]  # same order, nothing twice, nothing skipped
    one = (await api(gateway, "GET", "/users", params={"email": "USER3@example.com"})).json()
    assert [u["email"] for u in one["data"]] == ["user3@example.com"]
    error = error_of(await api(gateway, "GET", "/users", params={"status": "gone"}), 400)
    assert "status" in error["message"]


# -- workspaces ----------------------------------------------------------------------------------


async def test_workspaces_with_owner_and_members(gateway: Gateway) -> None:
    owner, member = await create_user(gateway), await create_user(gateway)
    response = await api(
        gateway,
        "POST",
        "/workspaces",
        json={"name": "Team", "owner_user_id": owner["id"], "member_user_ids": [member["id"], owner["id"]]},
    )
    assert response.status_code == 201, response.text
    team = response.json()
    assert team["name"] == "Team"
    assert sorted((m["user_id"], m["role"]) for m in team["members"]) == sorted(
        [(owner["id"], "owner"), (member["id"], "member")]
    )
    shown = (await api(gateway, "GET", f"/users/{member['id']}")).json()
    assert {w["name"] for w in shown["workspaces"]} == {"Team", f"{member['email']}'s workspace"}

    ghost = str(uuid.uuid4())
    error = error_of(
        await api(gateway, "POST", "/workspaces", json={"name": "X", "member_user_ids": [ghost]}), 404
    )
    assert error["param"] == "member_user_ids" and error["code"] == "user_not_found"
    assert await gateway.scalar("SELECT COUNT(*) FROM workspaces WHERE name = 'X'") == 0

    listed = (await api(gateway, "GET", "/workspaces", params={"limit": 2})).json()
    assert listed["total"] == 3 and len(listed["data"]) == 2 and listed["has_more"] is True
    # A key may be billed to a workspace its user belongs to, and to no other.
    key = await create_key(gateway, member["id"], workspace_id=team["id"])
    assert key["workspace_id"] == team["id"]
    other = await create_user(gateway)
    error = error_of(
        await api(gateway, "POST", "/keys", json={"user_id": other["id"], "workspace_id": team["id"]}), 400
    )
    assert error["param"] == "workspace_id"


# -- gateway keys --------------------------------------------------------------------------------


async def test_key_lifecycle_plaintext_once_prefix_listed_revoke_effective(gateway: Gateway) -> None:
    user = await create_user(gateway)
    created = await create_key(gateway, user["id"], name="laptop", allowed_models=["gpt-4o-mini"])
    plaintext = created["key"]
    assert plaintext.startswith("sk-sg-") and plaintext.startswith(created["key_prefix"])
    assert created["status"] == "active" and created["allowed_models"] == ["gpt-4o-mini"]
    assert created["workspace_id"] == user["workspaces"][0]["workspace_id"]
    await api(gateway, "POST", "/billing/add-credits",
              json={"user_id": user["id"], "amount_usd": "1", "idempotency_key": "k1"})  # fmt: skip
    assert (await chat(gateway, plaintext)).status_code == 200

    listed = await api(gateway, "GET", "/keys", params={"user_id": user["id"]})
    assert listed.status_code == 200
    assert plaintext not in listed.text and plaintext[12:] not in listed.text
    stored_hash = await gateway.scalar("SELECT key_hash FROM api_keys")
    assert stored_hash not in listed.text
    (entry,) = listed.json()["data"]
    assert "key" not in entry and "key_hash" not in entry
    assert entry["id"] == created["id"] and entry["key_prefix"] == created["key_prefix"]
    shown_user = (await api(gateway, "GET", f"/users/{user['id']}")).json()
    assert shown_user["active_keys"] == 1

    revoked = await api(gateway, "DELETE", f"/keys/{created['id']}")
    assert revoked.status_code == 204 and revoked.content == b""
    with pytest.raises(openai.AuthenticationError):
        await chat(gateway, plaintext)  # at once on this worker: the key cache is cleared
    row = (await gateway.rows("SELECT status, revoked_at FROM api_keys"))[0]
    assert row[0] == "revoked" and row[1] is not None
    again = await api(gateway, "DELETE", f"/keys/{created['id']}")
    assert again.status_code == 204  # idempotent
    listed = (await api(gateway, "GET", "/keys", params={"status": "revoked"})).json()
    assert [k["id"] for k in listed["data"]] == [created["id"]] and listed["data"][0]["revoked_at"]
    assert (await api(gateway, "GET", "/keys", params={"status": "active"})).json()["total"] == 0
    assert error_of(await api(gateway, "DELETE", f"/keys/{uuid.uuid4()}"), 404)["code"] == "key_not_found"


async def test_key_creation_is_validated(gateway: Gateway) -> None:
    user = await create_user(gateway)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"user_id": user["id"], "allowed_models": ["gpt-9"]}, 400, "allowed_models"),
        ({"user_id": user["id"], "allowed_models": []}, 400, "allowed_models"),
        ({"user_id": str(uuid.uuid4())}, 404, "user_id"),
    ]
    for body, status, param in cases:
        assert error_of(await api(gateway, "POST", "/keys", json=body), status)["param"] == param
    error = error_of(await api(gateway, "POST", "/keys", json={"user_id": "nope"}), 400)
    assert "user_id" in error["message"]
    assert await gateway.scalar("SELECT COUNT(*) FROM api_keys") == 0


async def test_a_users_own_key_reads_its_keys_but_cannot_create_or_revoke(gateway: Gateway) -> None:
    user = await create_user(gateway)
    first = await create_key(gateway, user["id"])
    second = await create_key(gateway, user["id"])
    own = await api(gateway, "GET", "/keys", key=first["key"])
    assert [k["id"] for k in own.json()["data"]] == [first["id"], second["id"]]
    assert error_of(await api(gateway, "POST", "/keys", key=first["key"], json={"user_id": user["id"]}), 403)
    assert error_of(await api(gateway, "DELETE", f"/keys/{second['id']}", key=first["key"]), 403)
    assert await gateway.scalar("SELECT COUNT(*) FROM api_keys WHERE status = 'active'") == 2


# -- provider keys (BYOK) ------------------------------------------------------------------------


async def test_provider_key_is_stored_encrypted_and_never_returned(gateway: Gateway) -> None:
    user = await create_user(gateway)
    key = await create_key(gateway, user["id"])
    secret = "sk-user-own-openai-key-9F3b"
    response = await api(
        gateway, "PUT", f"/users/{user['id']}/provider-keys/openai", json={"api_key": secret}
    )
    assert response.status_code == 200, response.text
    assert response.json()["key_last4"] == "9F3b" and response.json()["provider"] == "openai"
    assert secret not in response.text and secret[:-4] not in response.text
    stored = await gateway.scalar("SELECT encrypted_key FROM provider_credentials")
    assert secret.encode() not in bytes(stored)

    listed = await api(gateway, "GET", f"/users/{user['id']}/provider-keys", key=key["key"])
    assert [(p["provider"], p["key_last4"]) for p in listed.json()["data"]] == [("openai", "9F3b")]
    assert secret not in listed.text

    # The stored key is used at once for the user's calls: BYOK, metered but not debited.
    raw = await chat(gateway, key["key"])
    assert raw.status_code == 200
    assert gateway.mock.app.requests[-1].headers["authorization"] == f"Bearer {secret}"
    assert await gateway.scalar("SELECT user_api_key_used FROM usage_logs") in (True, 1)

    replaced = await api(
        gateway, "PUT", f"/users/{user['id']}/provider-keys/openai", json={"api_key": "sk-new-key-0000"}
    )
    assert replaced.json()["key_last4"] == "0000"
    assert await gateway.scalar("SELECT COUNT(*) FROM provider_credentials") == 1

    deleted = await api(gateway, "DELETE", f"/users/{user['id']}/provider-keys/openai")
    assert deleted.status_code == 204
    assert await gateway.scalar("SELECT COUNT(*) FROM provider_credentials") == 0
    gone = await api(gateway, "DELETE", f"/users/{user['id']}/provider-keys/openai")
    assert error_of(gone, 404)["code"] == "provider_key_not_found"


async def test_provider_key_input_is_validated(gateway: Gateway) -> None:
    user = await create_user(gateway)
    path = f"/users/{user['id']}/provider-keys"
    error = error_of(await api(gateway, "PUT", f"{path}/openia", json={"api_key": "sk-x"}), 400)
    assert error["param"] == "provider"
    error = error_of(await api(gateway, "PUT", f"{path}/openai", json={"api_key": "sk x y"}), 400)
    assert error["param"] == "api_key" and "sk x y" not in error["message"]
    error = error_of(await api(gateway, "PUT", f"{path}/openai", json={"key": "sk-x"}), 400)
    assert "api_key" in error["message"] or "key" in error["message"]
    ghost = await api(gateway, "PUT", f"/users/{uuid.uuid4()}/provider-keys/openai", json={"api_key": "k"})
    assert error_of(ghost, 404)["code"] == "user_not_found"
    assert await gateway.scalar("SELECT COUNT(*) FROM provider_credentials") == 0


@pytest.mark.parametrize("gateway_settings_overrides", [{"admin_key": ADMIN, "secret_key": None}])
async def test_provider_key_needs_the_secret_key(gateway: Gateway) -> None:
    user = await create_user(gateway)
    response = await api(
        gateway, "PUT", f"/users/{user['id']}/provider-keys/openai", json={"api_key": "sk-abcd"}
    )
    error = error_of(response, 503)
    assert error["code"] == "secret_key_not_configured" and "SYNAPGATE_SECRET_KEY" in error["message"]
    assert "sk-abcd" not in response.text
    assert await gateway.scalar("SELECT COUNT(*) FROM provider_credentials") == 0


# -- the schema ----------------------------------------------------------------------------------


async def test_openapi_schema_documents_the_admin_api(gateway: Gateway) -> None:
    schema = (await gateway.request("GET", "/schema/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        "/api/v1/users": {"get", "post"},
        "/api/v1/users/{user_id}": {"get"},
        "/api/v1/workspaces": {"get", "post"},
        "/api/v1/keys": {"get", "post"},
        "/api/v1/keys/{key_id}": {"delete"},
        "/api/v1/users/{user_id}/provider-keys": {"get"},
        "/api/v1/users/{user_id}/provider-keys/{provider}": {"put", "delete"},
        "/api/v1/billing/add-credits": {"post"},
        "/api/v1/billing/balance/{user_id}": {"get"},
        "/api/v1/billing/events/{user_id}": {"get"},
        "/api/v1/billing/invoices": {"get", "post"},
        "/api/v1/billing/invoice/{invoice_id}": {"get"},
        "/api/v1/llms": {"get"},
        "/api/v1/llms/{name}": {"get", "put"},
        "/api/v1/llms/{name}/activate": {"post"},
        "/api/v1/llms/{name}/deactivate": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    credit = schema["components"]["schemas"]["AddCreditsIn"]
    assert set(credit["required"]) == {"user_id", "amount_usd", "idempotency_key"}
    assert credit["properties"]["amount_usd"]["type"] == "string"
    events = {p["name"] for p in paths["/api/v1/billing/events/{user_id}"]["get"]["parameters"]}
    assert {"type", "start", "end", "limit", "offset"} <= events


# -- paging bounds, on every list ----------------------------------------------------------------


async def test_every_list_bounds_limit_and_offset_with_a_400_naming_the_parameter(gateway: Gateway) -> None:
    user = await create_user(gateway)
    schema = (await gateway.request("GET", "/schema/openapi.json")).json()
    lists = []
    for path, operations in schema["paths"].items():
        params = {p["name"] for p in operations.get("get", {}).get("parameters", []) if p["in"] == "query"}
        if {"limit", "offset"} <= params:
            lists.append(path.removeprefix("/api/v1"))
    assert len(lists) >= 9, lists  # users, workspaces, keys, events, invoices, llms, costs, messages, ...
    bad = [
        ({"offset": "3560301864148169668952064"}, "offset"),  # beyond int64: was a 500 from asyncpg
        ({"offset": str(2**53 + 1)}, "offset"),
        ({"offset": "-1"}, "offset"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
    ]
    for template in lists:
        path = template.replace("{user_id}", user["id"])
        path = path.replace("{workspace_id}", user["workspaces"][0]["workspace_id"])
        path = path.replace("{target_type}", "user").replace("{target_id}", user["id"])
        path = path.replace("{conversation_id}", str(uuid.uuid4())).replace("{message_id}", str(uuid.uuid4()))
        path = path.replace("{webhook_id}", str(uuid.uuid4()))  # paging is checked before the lookup
        for params, name in bad:
            error = error_of(await api(gateway, "GET", path, params=params), 400)
            assert error["param"] == name and name in error["message"], (path, params, error)
    fine = await api(gateway, "GET", "/users", params={"limit": "1000", "offset": str(2**53)})
    assert fine.status_code == 200 and fine.json()["data"] == [] and fine.json()["offset"] == 2**53
