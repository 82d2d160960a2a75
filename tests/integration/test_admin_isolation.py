"""One user's key cannot see or touch another user's data through any admin endpoint.

User A's own key is sent to every route of the admin API, read from the OpenAPI schema the gateway serves
(so routes added later are covered without editing this test), with user B's ids in every id-shaped
place: path parameters, the `user_id` query parameter, and `user_id` in request bodies. Each answer must
be 404 (exactly as for an id that does not exist); routes that take no user's id must either refuse a
user key (403) or answer with A's own rows only. B's identifiers never appear in any answer, and B's data
is unchanged afterwards. A fixed list of URLs (analytics, conversations, feedback, tags) is probed too.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integration.conftest import Gateway
from tests.integration.helpers import ADMIN, api, chat, create_key, create_user, db_id

# Path parameters that name a user's object, and where B's value for each comes from.
OWNED_PARAMS = {
    "user_id": "user",
    "key_id": "key",
    "invoice_id": "invoice",
    "conversation_id": "conversation",
    "message_id": "message",
    "workspace_id": "workspace",
    "target_id": "conversation",
    "webhook_id": "webhook",
}
# Path parameters that name shared things (the catalog, a provider): no user's data.
SHARED_PARAMS = {
    "name": "gpt-4o-mini",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "target_type": "conversation",
}
# The routes of accounts, billing and catalog: held to the strict answers below.
OUR_PREFIXES = (
    "/api/v1/users",
    "/api/v1/keys",
    "/api/v1/workspaces",
    "/api/v1/billing",
    "/api/v1/llms",
    "/api/v1/webhooks",
)
# Routes that take no gateway key at all (their own signature is the auth): tested in test_hooks_http.
UNKEYED = ("/api/v1/billing/stripe/webhook",)
# Admin routes of the other admin modules, probed by URL whether or not they exist yet.
EXTRA_PROBES = [
    ("GET", "/analytics/usage?user_id={user}"),
    ("GET", "/analytics/costs?user_id={user}"),
    ("GET", "/analytics/latency?user_id={user}"),
    ("GET", "/analytics/models?user_id={user}"),
    ("GET", "/analytics/users/{user}"),
    ("GET", "/analytics/feedback?user_id={user}"),
    ("GET", "/conversations?user_id={user}"),
    ("GET", "/conversations/{conversation}"),
    ("GET", "/conversations/{conversation}/messages"),
    ("GET", "/messages/{message}"),
    ("POST", "/messages/{message}/feedback"),
    ("GET", "/messages/{message}/feedback"),
    ("GET", "/tags?target_id={conversation}"),
    ("POST", "/conversations/{conversation}/tags"),
    ("GET", "/users/{user}/conversations"),
]


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


async def _tenant(gw: Gateway, credits: str) -> dict[str, str]:
    """A user with a key, credits, one chat, a provider key and an invoice: ids of everything they own."""
    user = await create_user(gw)
    key = await create_key(gw, user["id"], name="main")
    credit = {"user_id": user["id"], "amount_usd": credits, "idempotency_key": user["id"]}
    response = await api(gw, "POST", "/billing/add-credits", json=credit)
    assert response.status_code == 201
    start = datetime.now(UTC) - timedelta(seconds=5)
    raw = await chat(gw, key["key"])
    put = await api(
        gw, "PUT", f"/users/{user['id']}/provider-keys/anthropic", json={"api_key": "sk-ant-1234"}
    )
    assert put.status_code == 200
    invoice = await api(gw, "POST", "/billing/invoices",
                        json={"user_id": user["id"], "period_start": start.isoformat(),
                              "period_end": datetime.now(UTC).isoformat()})  # fmt: skip
    assert invoice.status_code == 201, invoice.text
    hook_body = {"url": "http://127.0.0.1:9/hook", "events": ["credits.low"], "user_id": user["id"]}
    hook = await api(gw, "POST", "/webhooks", json=hook_body)
    assert hook.status_code == 201, hook.text
    return {
        "webhook": hook.json()["id"],
        "user": user["id"],
        "email": user["email"],
        "workspace": user["workspaces"][0]["workspace_id"],
        "key": key["id"],
        "key_plaintext": key["key"],
        "key_prefix": key["key_prefix"],
        "invoice": invoice.json()["id"],
        "conversation": raw.headers["x-synapgate-conversation-id"],
        "message": raw.headers["x-synapgate-message-id"],
        "request": raw.headers["x-request-id"],
    }


def _sample(schema: dict[str, Any], components: dict[str, Any], b: dict[str, str]) -> Any:
    """A plausible value for a JSON schema, with B's ids wherever a user's id fits."""
    if "$ref" in schema:
        return _sample(components[schema["$ref"].rsplit("/", 1)[-1]], components, b)
    for variant in schema.get("oneOf") or schema.get("anyOf") or []:
        if variant.get("type") != "null":
            return _sample(variant, components, b)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        body = {}
        for name in schema.get("required", []):
            body[name] = _field_value(name, props.get(name, {}), components, b)
        for name in props:
            if name.endswith("user_id") or name in ("target_id", "conversation_id", "message_id"):
                body[name] = _field_value(name, props[name], components, b)
        return body
    if kind == "array":
        return [_sample(schema.get("items", {}), components, b)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    if schema.get("format") == "uuid":
        return b["user"]
    if "enum" in schema:
        return schema["enum"][0]
    return "1"


def _field_value(name: str, schema: dict[str, Any], components: dict[str, Any], b: dict[str, str]) -> Any:
    owned = {"user_id": "user", "target_id": "conversation", "conversation_id": "conversation",
             "message_id": "message", "workspace_id": "workspace", "owner_user_id": "user"}  # fmt: skip
    if name in owned:
        return b[owned[name]]
    if name == "period_start":
        return (datetime.now(UTC) - timedelta(days=30)).isoformat()
    if name == "period_end":
        return (datetime.now(UTC) - timedelta(days=29)).isoformat()
    if name == "amount_usd":
        return "1"
    if name == "api_key":
        return "sk-probe-0000"
    if name == "email":
        return f"probe-{uuid.uuid4().hex[:6]}@example.com"
    if name in ("input_price", "output_price"):
        return "1"
    return _sample(schema, components, b)


def _leaks(text: str, b: dict[str, str]) -> list[str]:
    """Which of B's identifiers a response body contains (either uuid spelling)."""
    found = []
    for name in ("user", "email", "workspace", "key", "key_prefix", "invoice", "conversation", "message",
                 "request", "key_plaintext"):  # fmt: skip
        value = b[name]
        spellings = {value, value.replace("-", "")} if name in OWNED_PARAMS.values() else {value}
        if any(s in text for s in spellings):
            found.append(name)
    return found


def _without_what_was_sent(text: str, url: str, body: Any) -> str:
    """The answer minus the ids the probe itself sent (an error may echo its URL); what is left is news."""
    sent = set(re.split(r"[/?&=]", url))
    if isinstance(body, dict):
        sent |= {str(v) for v in body.values()}
    for value in sorted(sent, key=len, reverse=True):
        if len(value) >= 8:
            text = text.replace(value, "<sent>")
    return text


async def _b_state(gw: Gateway, b: dict[str, str]) -> tuple[Any, ...]:
    u = db_id(gw, b["user"])
    return (
        await gw.scalar("SELECT balance_nano FROM credit_accounts WHERE user_id = :u", u=u),
        await gw.scalar("SELECT COUNT(*) FROM billing_events WHERE user_id = :u", u=u),
        await gw.scalar("SELECT COUNT(*) FROM billing_events WHERE user_id = :u AND invoice_id IS NULL", u=u),
        tuple(await gw.rows("SELECT status FROM api_keys WHERE user_id = :u ORDER BY id", u=u)),
        tuple(await gw.rows("SELECT provider, key_last4 FROM provider_credentials WHERE user_id = :u", u=u)),
        tuple(await gw.rows("SELECT id, total_nano, status FROM invoices WHERE user_id = :u", u=u)),
        await gw.scalar("SELECT COUNT(*) FROM users"),
        await gw.scalar("SELECT COUNT(*) FROM workspaces"),
        await gw.scalar("SELECT COUNT(*) FROM api_keys"),
        await gw.scalar("SELECT SUM(price_version) FROM llms"),
        await gw.scalar("SELECT COUNT(*) FROM llms WHERE is_active"),
    )


async def test_a_users_key_cannot_reach_another_users_data_through_any_endpoint(gateway: Gateway) -> None:
    a, b = await _tenant(gateway, "3"), await _tenant(gateway, "7")
    before = await _b_state(gateway, b)
    schema = (await gateway.request("GET", "/schema/openapi.json")).json()
    components = schema.get("components", {}).get("schemas", {})
    as_a = {"Authorization": f"Bearer {a['key_plaintext']}"}

    probes: list[tuple[str, str, Any, str, bool]] = []  # method, url, body, expectation, strict
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/v1/") or path in UNKEYED:
            continue
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = {p["name"]: p for p in operation.get("parameters", [])}
            url, owned = path, False
            for name in re.findall(r"{(\w+)}", path):
                if name in OWNED_PARAMS:
                    url, owned = url.replace(f"{{{name}}}", b[OWNED_PARAMS[name]]), True
                else:
                    url = url.replace(f"{{{name}}}", SHARED_PARAMS.get(name, str(uuid.uuid4())))
            query = {
                name: _field_value(name, p.get("schema", {}), components, b)
                for name, p in params.items()
                if p["in"] == "query" and (p.get("required") or name == "user_id")
            }
            if query:
                url += "?" + urlencode(query)
                owned = owned or "user_id" in query
            body = None
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is not None:
                body = _sample(content["schema"], components, b)
                owned = owned or any(k.endswith("user_id") or k == "target_id" for k in body)
            expectation = "404" if owned else ("list" if method == "get" else "refused")
            probes.append((method.upper(), url, body, expectation, path.startswith(OUR_PREFIXES)))
    for method, template in EXTRA_PROBES:
        url = "/api/v1" + template.format(**b)
        body = None
        if method == "POST":
            body = {"rating": 1, "scale": "thumbs"} if url.endswith("/feedback") else {"name": "probe"}
        probes.append((method, url, body, "absent", method == "GET"))

    checked = {"404": 0, "absent": 0, "list": 0, "refused": 0}
    inconclusive: list[str] = []
    for method, url, body, expectation, strict in probes:
        response = await gateway.request(method, url, json=body, headers=as_a)
        where = f"{method} {url} → {response.status_code} {response.text[:300]}"
        leaked = _leaks(_without_what_was_sent(response.text, url, body), b)
        assert not leaked, (where, leaked)
        assert response.status_code < 500, where
        if not strict and response.status_code == 400:
            inconclusive.append(where)  # another module's route refused the probe's made-up input
        elif expectation == "404":
            assert response.status_code == 404, where
        elif expectation == "absent":  # a guessed URL: B's id, or no such route (404/405) at all
            assert response.status_code in (404, 405), where
        elif expectation == "refused":
            assert response.status_code in (403, 404, 405), where
        else:
            assert response.status_code in (200, 403), where
        checked[expectation] += 1
    print(f"{len(probes)} probes {checked}; refused as bad input by other modules' routes (no leak):")
    print(*inconclusive, sep="\n")
    # Every route of this module's API was among the probes (they are in the schema).
    assert checked["404"] >= 14 and checked["list"] >= 4 and checked["refused"] >= 4
    assert checked["absent"] == len(EXTRA_PROBES)
    assert await _b_state(gateway, b) == before
    # B's key still works: nothing A sent revoked or changed it.
    assert (await chat(gateway, b["key_plaintext"])).status_code == 200


async def test_list_endpoints_show_a_user_only_their_own_rows(gateway: Gateway) -> None:
    a, b = await _tenant(gateway, "3"), await _tenant(gateway, "7")
    key = a["key_plaintext"]
    users = (await api(gateway, "GET", "/users", key=key)).json()
    assert [u["id"] for u in users["data"]] == [a["user"]] and users["total"] == 1
    keys = (await api(gateway, "GET", "/keys", key=key)).json()
    assert [k["id"] for k in keys["data"]] == [a["key"]]
    workspaces = (await api(gateway, "GET", "/workspaces", key=key)).json()
    assert [w["id"] for w in workspaces["data"]] == [a["workspace"]]
    invoices = (await api(gateway, "GET", "/billing/invoices", key=key)).json()
    assert [i["id"] for i in invoices["data"]] == [a["invoice"]]
    events = (await api(gateway, "GET", f"/billing/events/{a['user']}", key=key)).json()
    assert {e["request_id"] for e in events["data"]} == {None, a["request"]}
    own = await api(gateway, "GET", f"/billing/invoice/{a['invoice']}", key=key)
    assert own.status_code == 200 and own.json()["user_id"] == a["user"]
    balance = (await api(gateway, "GET", f"/billing/balance/{a['user']}", key=key)).json()
    assert balance["user_id"] == a["user"] and 0 < balance["balance_nano"] < 3_000_000_000
    # The admin key sees both.
    everyone = (await api(gateway, "GET", "/users")).json()
    assert {u["id"] for u in everyone["data"]} == {a["user"], b["user"]}
    all_keys = (await api(gateway, "GET", "/keys")).json()
    assert {k["id"] for k in all_keys["data"]} == {a["key"], b["key"]}
