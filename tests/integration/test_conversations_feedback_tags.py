"""Conversations, feedback and tags through the admin API, on SQLite and on PostgreSQL + Redis.

The conversations are made through the gateway with the openai SDK (mock directives fix the tokens), so
what the API shows is what the real recorder wrote.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from storage.accounts.users import default_workspace
from storage.models import Workspace, WorkspaceMember, table_of
from tests.integration.conftest import Gateway

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-annotations-test"


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
    return {"admin_key": ADMIN, "store_message_content": True}


async def call(
    gw: Gateway, method: str, path: str, key: str | None = ADMIN, body: Any = None, **params: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await gw.request(method, f"/api/v1{path}", json=body, params=params or None, headers=headers)


def db(gw: Gateway, value: uuid.UUID | str) -> str:
    """A uuid as the database stores it (32 hex characters on SQLite)."""
    return uuid.UUID(str(value)).hex if gw.settings.is_sqlite else str(value)


async def chat(gw: Gateway, key: str, model: str, text: str, conversation: str) -> dict[str, str]:
    raw = await gw.openai(key).chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        extra_headers={"X-Conversation-Id": conversation},
    )
    return {
        "message": raw.headers["x-synapgate-message-id"],
        "conversation": raw.headers["x-synapgate-conversation-id"],
        "request": raw.headers["x-request-id"],
    }


async def two_users(gw: Gateway) -> dict[str, Any]:
    """A with a three-turn conversation (mini, mini, gpt-4o); B with a one-turn conversation."""
    a, key_a = await gw.seed_user("1")
    b, key_b = await gw.seed_user("1")
    conv_a, conv_b = str(uuid.uuid4()), str(uuid.uuid4())
    m1 = await chat(gw, key_a, "gpt-4o-mini", "one [mock prompt_tokens=1000 completion_tokens=7]", conv_a)
    m2 = await chat(gw, key_a, "gpt-4o-mini", "two [mock prompt_tokens=1000 completion_tokens=7]", conv_a)
    m3 = await chat(gw, key_a, "gpt-4o", "three [mock prompt_tokens=100 completion_tokens=10]", conv_a)
    mb = await chat(gw, key_b, "gpt-4o-mini", "mine [mock prompt_tokens=5 completion_tokens=5]", conv_b)
    assert m1["conversation"] == m2["conversation"] == m3["conversation"] == conv_a
    async with gw.engine.connect() as conn:
        ws_a, ws_b = await default_workspace(conn, a), await default_workspace(conn, b)
    return {
        "a": a,
        "b": b,
        "key_a": key_a,
        "key_b": key_b,
        "conv_a": conv_a,
        "conv_b": conv_b,
        "m1": m1,
        "m2": m2,
        "m3": m3,
        "mb": mb,
        "ws_a": ws_a,
        "ws_b": ws_b,
    }


# -- conversations -------------------------------------------------------------------------------


async def test_conversation_with_messages_usage_and_model_totals(gateway: Gateway) -> None:
    s = await two_users(gateway)
    response = await call(gateway, "GET", f"/conversations/{s['conv_a']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["user_id"], body["workspace_id"]) == (s["conv_a"], str(s["a"]), str(s["ws_a"]))
    assert body["tags"] == []
    messages = body["messages"]
    assert (messages["total"], messages["limit"], messages["offset"], messages["has_more"]) == (
        3,
        100,
        0,
        False,
    )
    assert [m["id"] for m in messages["data"]] == [s["m1"]["message"], s["m2"]["message"], s["m3"]["message"]]
    first = messages["data"][0]
    assert (first["model"], first["role"], first["request_id"], first["finish_reason"]) == (
        "gpt-4o-mini",
        "assistant",
        s["m1"]["request"],
        "stop",
    )
    assert first["prompt"] == [
        {"role": "user", "content": "one [mock prompt_tokens=1000 completion_tokens=7]"}
    ]
    assert first["content"] == "mock0 mock1 mock2 mock3 mock4 mock5 mock6"
    assert first["feedback"] == []
    # 1000 × 0.15 + 7 × 0.60 per 1M tokens = 154.2 µUSD
    usage = first["usage"]
    assert usage["tokens"] == {
        "input": 1000,
        "cached_input": 0,
        "cache_write": 0,
        "output": 7,
        "reasoning": 0,
        "total": 1007,
    }
    assert (usage["status"], usage["cost_usd"], usage["cost_nano"], usage["charged_nano"]) == (
        "success",
        "0.000154200",
        154_200,
        154_200,
    )
    assert usage["byok"] is False and usage["stream"] is False and usage["latency_ms"] >= 0
    # 100 × 2.50 + 10 × 10.00 per 1M = 350 µUSD
    assert messages["data"][2]["usage"]["cost_nano"] == 350_000
    latencies = {
        str(r[0]): int(r[1])
        for r in await gateway.rows(
            "SELECT model, SUM(latency_ms) FROM usage_logs WHERE conversation_id = :c GROUP BY model",
            c=db(gateway, s["conv_a"]),
        )
    }
    llms = body["llms"]
    assert [
        (
            x["model"],
            x["provider"],
            x["message_count"],
            x["input_tokens"],
            x["output_tokens"],
            x["cost_usd"],
            x["cost_nano"],
        )
        for x in llms
    ] == [
        ("gpt-4o-mini", "openai", 2, 2000, 14, "0.000308400", 308_400),
        ("gpt-4o", "openai", 1, 100, 10, "0.000350000", 350_000),
    ]
    assert llms[0]["average_latency_ms"] == round(latencies["gpt-4o-mini"] / 2, 3)
    assert llms[1]["average_latency_ms"] == float(latencies["gpt-4o"])
    assert llms[0]["first_used_at"] <= llms[0]["last_used_at"] <= llms[1]["first_used_at"]
    # the owner's key sees the same; anyone else's, and unknown ids, get 404
    assert (await call(gateway, "GET", f"/conversations/{s['conv_a']}", key=s["key_a"])).json() == body
    other = await call(gateway, "GET", f"/conversations/{s['conv_a']}", key=s["key_b"])
    assert other.status_code == 404 and other.json()["error"]["code"] == "conversation_not_found"
    assert s["m1"]["message"] not in other.text
    assert (await call(gateway, "GET", f"/conversations/{uuid.uuid4()}")).status_code == 404
    assert (await call(gateway, "GET", f"/conversations/{s['conv_a']}", key=None)).status_code == 401


async def test_conversation_messages_are_paged_in_a_stable_order(gateway: Gateway) -> None:
    s = await two_users(gateway)
    ids = [s[m]["message"] for m in ("m1", "m2", "m3")]
    page1 = (await call(gateway, "GET", f"/conversations/{s['conv_a']}", limit=2)).json()["messages"]
    page2 = (await call(gateway, "GET", f"/conversations/{s['conv_a']}", limit=2, offset=2)).json()[
        "messages"
    ]
    assert [m["id"] for m in page1["data"]] == ids[:2] and page1["has_more"] is True and page1["total"] == 3
    assert [m["id"] for m in page2["data"]] == ids[2:] and page2["has_more"] is False
    # messages at the same instant are ordered by id
    same = await gateway.scalar("SELECT created_at FROM messages WHERE id = :m", m=db(gateway, ids[0]))
    async with gateway.engine.begin() as conn:
        await conn.execute(
            text("UPDATE messages SET created_at = :t WHERE conversation_id = :c"),
            {"t": same, "c": db(gateway, s["conv_a"])},
        )
    tied = (await call(gateway, "GET", f"/conversations/{s['conv_a']}")).json()["messages"]["data"]
    assert [m["id"] for m in tied] == sorted(ids, key=lambda i: uuid.UUID(i).hex)
    for bad, param in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset")):
        response = await call(gateway, "GET", f"/conversations/{s['conv_a']}", **bad)
        assert response.status_code == 400 and response.json()["error"]["param"] == param


# -- feedback ------------------------------------------------------------------------------------


async def test_feedback_is_saved_replaced_listed_and_counted(gateway: Gateway) -> None:
    s = await two_users(gateway)
    m1, m3 = s["m1"]["message"], s["m3"]["message"]
    first = await call(
        gateway,
        "POST",
        f"/messages/{m1}/feedback",
        key=s["key_a"],
        body={"rating": 4, "comment": "good", "categories": ["accuracy", " tone ", "accuracy"]},
    )
    assert first.status_code == 201, first.text
    fb = first.json()
    assert (fb["message_id"], fb["user_id"], fb["scale"], fb["rating"], fb["comment"], fb["categories"]) == (
        m1,
        str(s["a"]),
        "stars",
        4,
        "good",
        ["accuracy", "tone"],
    )
    # the same user again: the rating is replaced (200), not added
    again = await call(gateway, "POST", f"/messages/{m1}/feedback", key=s["key_a"], body={"rating": "down"})
    assert again.status_code == 200
    replaced = again.json()
    assert (replaced["id"], replaced["scale"], replaced["rating"], replaced["comment"]) == (
        fb["id"],
        "thumbs",
        -1,
        None,
    )
    # the admin's ratings have no user and are each kept
    for rating in (5, 3):
        response = await call(
            gateway, "POST", f"/messages/{m1}/feedback", body={"rating": rating, "scale": "stars"}
        )
        assert response.status_code == 201 and response.json()["user_id"] is None
    up = await call(
        gateway, "POST", f"/messages/{m3}/feedback", key=s["key_a"], body={"rating": 1, "scale": "thumbs"}
    )
    assert up.status_code == 201 and (up.json()["scale"], up.json()["rating"]) == ("thumbs", 1)

    listed = (await call(gateway, "GET", f"/messages/{m1}/feedback", key=s["key_a"])).json()
    # oldest first (a replaced rating is as old as its last change)
    assert [(f["user_id"], f["scale"], f["rating"]) for f in listed["data"]] == [
        (str(s["a"]), "thumbs", -1),
        (None, "stars", 5),
        (None, "stars", 3),
    ]
    assert listed["total"] == 3 and listed["has_more"] is False
    times = [f["created_at"] for f in listed["data"]]
    assert times == sorted(times)
    one = (await call(gateway, "GET", f"/messages/{m1}/feedback", limit=1, offset=1)).json()
    assert one["data"] == [listed["data"][1]] and one["has_more"] is True
    # under the message in the conversation view
    conv = (await call(gateway, "GET", f"/conversations/{s['conv_a']}")).json()
    under = {m["id"]: m["feedback"] for m in conv["messages"]["data"]}
    assert (
        under[m1] == listed["data"]
        and [f["rating"] for f in under[m3]] == [1]
        and under[s["m2"]["message"]] == []
    )
    # the rated message's model, owner and time are copied into the feedback rows
    copied = await gateway.rows(
        "SELECT f.llm_id = m.llm_id, f.message_user_id = m.user_id, f.message_created_at = m.created_at "
        "FROM message_feedback f JOIN messages m ON m.id = f.message_id"
    )
    assert len(copied) == 4 and all(all(r) for r in copied)
    # counted in llm-performance: mini has thumbs down + stars 5 and 3; gpt-4o one thumbs up
    perf = {
        m["model"]: m["feedback"]
        for m in (await call(gateway, "GET", "/analytics/llm-performance")).json()["data"]
    }
    assert perf["gpt-4o-mini"] == {
        "count": 3,
        "stars_count": 2,
        "stars_average": 4.0,
        "thumbs_up": 0,
        "thumbs_down": 1,
        "thumbs_up_rate": 0.0,
        "sentiment": {"positive": 0, "neutral": 0, "negative": 0},
    }
    assert perf["gpt-4o"] == {
        "count": 1,
        "stars_count": 0,
        "stars_average": None,
        "thumbs_up": 1,
        "thumbs_down": 0,
        "thumbs_up_rate": 1.0,
        "sentiment": {"positive": 0, "neutral": 0, "negative": 0},
    }


async def test_feedback_scope(gateway: Gateway) -> None:
    s = await two_users(gateway)
    m1 = s["m1"]["message"]
    for method, body in (("POST", {"rating": 5}), ("GET", None)):
        refused = await call(gateway, method, f"/messages/{m1}/feedback", key=s["key_b"], body=body)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "message_not_found"
    assert await gateway.scalar("SELECT COUNT(*) FROM message_feedback") == 0
    missing = await call(gateway, "POST", f"/messages/{uuid.uuid4()}/feedback", body={"rating": 5})
    assert missing.status_code == 404
    assert (
        await call(gateway, "POST", f"/messages/{m1}/feedback", key=None, body={"rating": 5})
    ).status_code == 401
    # B's own message is fine
    mine = await call(
        gateway, "POST", f"/messages/{s['mb']['message']}/feedback", key=s["key_b"], body={"rating": 2}
    )
    assert mine.status_code == 201 and mine.json()["user_id"] == str(s["b"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rating": 6}, "rating"),
        ({"rating": 0}, "rating"),
        ({"rating": "sideways"}, "rating"),
        ({"rating": "up", "scale": "stars"}, "rating"),
        ({"rating": 3, "scale": "thumbs"}, "rating"),
        ({"rating": 4, "categories": ["x"] * 21}, "categories"),
        ({"rating": 4, "categories": ["  "]}, "categories"),
        ({"rating": 4, "comment": "x" * 10_001}, "comment"),
    ],
)
async def test_feedback_validation_names_the_field(
    gateway: Gateway, body: dict[str, Any], param: str
) -> None:
    s = await two_users(gateway)
    response = await call(
        gateway, "POST", f"/messages/{s['m1']['message']}/feedback", key=s["key_a"], body=body
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param and param in response.json()["error"]["message"]


async def test_feedback_body_type_errors_name_the_field(gateway: Gateway) -> None:
    s = await two_users(gateway)
    path = f"/messages/{s['m1']['message']}/feedback"
    for body, field in (
        ({"rating": True}, "rating"),
        ({}, "rating"),
        ({"rating": 4, "stars": 4}, "stars"),
        ({"rating": 4, "scale": "emoji"}, "scale"),
    ):
        response = await call(gateway, "POST", path, body=body)
        assert response.status_code == 400 and field in response.json()["error"]["message"], response.text
    assert await gateway.scalar("SELECT COUNT(*) FROM message_feedback") == 0


# -- tags ----------------------------------------------------------------------------------------


async def test_tags_on_own_objects_with_their_author(gateway: Gateway) -> None:
    s = await two_users(gateway)
    key_a = s["key_a"]
    made = await call(
        gateway,
        "POST",
        "/tags",
        key=key_a,
        body={"target_type": "conversation", "target_id": s["conv_a"], "name": "billing"},
    )
    assert made.status_code == 201, made.text
    tag = made.json()
    assert (
        tag["target_type"],
        tag["target_id"],
        tag["name"],
        tag["is_auto"],
        tag["confidence"],
        tag["author_user_id"],
    ) == ("conversation", s["conv_a"], "billing", False, None, str(s["a"]))
    # the same name again (spacing aside) is the same tag
    again = await call(
        gateway,
        "POST",
        "/tags",
        key=key_a,
        body={"target_type": "conversation", "target_id": s["conv_a"], "name": "  billing "},
    )
    assert again.status_code == 200 and again.json() == tag
    for target_type, target_id in (
        ("message", s["m1"]["message"]),
        ("user", str(s["a"])),
        ("workspace", str(s["ws_a"])),
    ):
        response = await call(
            gateway,
            "POST",
            "/tags",
            key=key_a,
            body={"target_type": target_type, "target_id": target_id, "name": "vip"},
        )
        assert response.status_code == 201 and response.json()["author_user_id"] == str(s["a"]), response.text
    # the admin: automatic tags with a confidence and no author, or a named author
    auto = await call(
        gateway,
        "POST",
        "/tags",
        body={
            "target_type": "conversation",
            "target_id": s["conv_a"],
            "name": "topic:refunds",
            "is_auto": True,
            "confidence": "0.87",
        },
    )
    assert auto.status_code == 201
    assert (auto.json()["is_auto"], auto.json()["confidence"], auto.json()["author_user_id"]) == (
        True,
        "0.87",
        None,
    )
    authored = await call(
        gateway,
        "POST",
        "/tags",
        body={
            "target_type": "conversation",
            "target_id": s["conv_a"],
            "name": "reviewed",
            "author_user_id": str(s["b"]),
        },
    )
    assert authored.status_code == 201 and authored.json()["author_user_id"] == str(s["b"])

    listed = (await call(gateway, "GET", f"/tags/conversation/{s['conv_a']}", key=key_a)).json()
    assert [t["name"] for t in listed["data"]] == ["billing", "topic:refunds", "reviewed"]
    assert (listed["total"], listed["has_more"]) == (3, False)
    page = (
        await call(gateway, "GET", f"/tags/conversation/{s['conv_a']}", key=key_a, limit=1, offset=1)
    ).json()
    assert [t["name"] for t in page["data"]] == ["topic:refunds"] and page["has_more"] is True
    conv = (await call(gateway, "GET", f"/conversations/{s['conv_a']}", key=key_a)).json()
    assert conv["tags"] == listed["data"]
    msg_tags = (await call(gateway, "GET", f"/tags/message/{s['m1']['message']}", key=key_a)).json()
    assert [(t["name"], t["author_user_id"]) for t in msg_tags["data"]] == [("vip", str(s["a"]))]


async def test_tags_scope_and_permissions(gateway: Gateway) -> None:
    s = await two_users(gateway)
    key_a = s["key_a"]
    for target_type, target_id in (
        ("conversation", s["conv_b"]),
        ("message", s["mb"]["message"]),
        ("user", str(s["b"])),
        ("workspace", str(s["ws_b"])),
        ("conversation", str(uuid.uuid4())),
    ):
        body = {
            "target_type": target_type,
            "target_id": target_id,
            "name": "x",
            "author_user_id": str(s["b"]),
        }
        refused = await call(gateway, "POST", "/tags", key=key_a, body=body)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == f"{target_type}_not_found"
        listed = await call(gateway, "GET", f"/tags/{target_type}/{target_id}", key=key_a)
        assert listed.status_code == 404
    assert await gateway.scalar("SELECT COUNT(*) FROM tags") == 0
    own = {"target_type": "conversation", "target_id": s["conv_a"], "name": "x"}
    auto = await call(gateway, "POST", "/tags", key=key_a, body={**own, "is_auto": True})
    assert auto.status_code == 403 and auto.json()["error"]["param"] == "is_auto"
    forged = await call(gateway, "POST", "/tags", key=key_a, body={**own, "author_user_id": str(s["b"])})
    assert forged.status_code == 403 and forged.json()["error"]["param"] == "author_user_id"
    unknown_author = await call(gateway, "POST", "/tags", body={**own, "author_user_id": str(uuid.uuid4())})
    assert unknown_author.status_code == 400 and unknown_author.json()["error"]["param"] == "author_user_id"
    assert await gateway.scalar("SELECT COUNT(*) FROM tags") == 0


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\u0000b"}, "name"),
        ({"confidence": "1.5"}, "confidence"),
        ({"confidence": -0.1}, "confidence"),
        ({"confidence": "0.123456"}, "confidence"),
    ],
)
async def test_tag_validation_names_the_field(gateway: Gateway, change: dict[str, Any], param: str) -> None:
    s = await two_users(gateway)
    body = {"target_type": "conversation", "target_id": s["conv_a"], "name": "ok", "is_auto": True, **change}
    response = await call(gateway, "POST", "/tags", body=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    bad_type = await call(gateway, "POST", "/tags", body={**body, "target_type": "team"} | {"name": "ok"})
    assert bad_type.status_code == 400 and "target_type" in bad_type.json()["error"]["message"]
    listed = await call(gateway, "GET", f"/tags/team/{s['conv_a']}")
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "target_type"


async def test_workspace_tags_are_shared_by_members_and_removed_by_their_author(gateway: Gateway) -> None:
    s = await two_users(gateway)
    team = uuid.uuid4()
    async with gateway.engine.begin() as conn:
        await conn.execute(table_of(Workspace).insert().values(id=team, name="Team"))
        await conn.execute(
            table_of(WorkspaceMember).insert(),
            [
                {"workspace_id": team, "user_id": s["a"], "role": "owner"},
                {"workspace_id": team, "user_id": s["b"], "role": "member"},
            ],
        )
    made = await call(
        gateway,
        "POST",
        "/tags",
        key=s["key_a"],
        body={"target_type": "workspace", "target_id": str(team), "name": "enterprise"},
    )
    assert made.status_code == 201
    tag_id = made.json()["id"]
    seen_by_b = (await call(gateway, "GET", f"/tags/workspace/{team}", key=s["key_b"])).json()
    assert [t["id"] for t in seen_by_b["data"]] == [tag_id]
    not_author = await call(gateway, "DELETE", f"/tags/{tag_id}", key=s["key_b"])
    assert not_author.status_code == 403 and not_author.json()["error"]["code"] == "not_tag_author"
    assert (await call(gateway, "DELETE", f"/tags/{tag_id}", key=s["key_a"])).status_code == 204
    assert (await call(gateway, "GET", f"/tags/workspace/{team}", key=s["key_b"])).json()["data"] == []
    assert (await call(gateway, "DELETE", f"/tags/{tag_id}", key=s["key_a"])).status_code == 404

    # a tag on A's conversation is invisible to B (404), and the admin removes any tag
    on_conv = await call(
        gateway,
        "POST",
        "/tags",
        key=s["key_a"],
        body={"target_type": "conversation", "target_id": s["conv_a"], "name": "keep"},
    )
    conv_tag = on_conv.json()["id"]
    hidden = await call(gateway, "DELETE", f"/tags/{conv_tag}", key=s["key_b"])
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "tag_not_found"
    assert (await call(gateway, "DELETE", f"/tags/{conv_tag}")).status_code == 204
    assert await gateway.scalar("SELECT COUNT(*) FROM tags") == 0
