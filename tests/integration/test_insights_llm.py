"""The tagger model through SynapGate's own metered path (SYNAPGATE_TAGGER_MODEL), over real HTTP
(uvicorn, the openai SDK, PostgreSQL + Redis, the mock provider steered by `[mock reply=...]`): with
content storage off a conversation gets the model's tag; the tagging request is a usage_log of the
platform user with its cost and ledger debit; an unparsable answer or a platform user without credit
falls back to the offline tagger; a feedback comment's sentiment is replaced by the model's."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from pricing.cost import Usage, price_usage
from storage.accounts.keys import KeyPrincipal
from storage.billing.credits import add_credits
from storage.catalog.repository import load_catalog
from storage.insights.platform import platform_principal
from tests.integration.conftest import Gateway
from tests.integration.test_insights import api, chat

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-insights-test"
TAGGER = "tagger@example.com"


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "http"


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {
        "admin_key": ADMIN,
        "auto_tags": True,
        "store_message_content": False,
        "tagger_model": "gpt-4o-mini",
        "tagger_user": TAGGER,
    }


def reply(obj: Any) -> str:
    """A mock directive making the provider answer `obj` (JSON) or a raw string."""
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return f"[mock reply={quote(text, safe='')}]"


async def funded_platform_user(gw: Gateway, usd_nano: int = 1_000_000_000) -> KeyPrincipal:
    principal = await platform_principal(gw.engine, TAGGER)
    assert principal is not None
    if usd_nano:
        await add_credits(gw.engine, gw.ledger, principal.user_id, usd_nano, f"seed:{principal.user_id}")
    return principal


async def auto_tags(gw: Gateway, conversation: str) -> list[dict[str, Any]]:
    for _ in range(240):  # the offline fallback trains on first use (seconds on a busy machine)
        response = await api(gw, "GET", f"/tags/conversation/{conversation}")
        assert response.status_code == 200, response.text
        if tags := response.json()["data"]:
            return list(tags)
        await asyncio.sleep(0.5)
    return []


async def platform_usage(gw: Gateway, user_id: uuid.UUID) -> list[Any]:
    return await gw.rows(
        "SELECT status, input_tokens, output_tokens, cost_nano, charged_nano, request_id, message_id "
        "FROM usage_logs WHERE user_id = :u",
        u=user_id,
    )


async def test_conversation_gets_the_models_tag_charged_to_the_platform_user(gateway: Gateway) -> None:
    platform = await funded_platform_user(gateway)
    user_id, key = await gateway.seed_user("1")
    # The offline tagger would say "coding"; the model says "legal": the tag shows whose answer was used.
    wanted = {"tags": [{"tag": "legal", "confidence": 0.91}]}
    sent = await chat(gateway, key, f"Write a Python function that parses a CSV file. {reply(wanted)}")
    tags = await auto_tags(gateway, sent["conversation"])
    assert [(t["name"], t["is_auto"], float(t["confidence"])) for t in tags] == [("legal", True, 0.91)]

    # The tagging request went through the chat service: one success row of the platform user, priced
    # exactly, its debit in the ledger, its text not stored (content storage is off, and it is internal).
    rows = await platform_usage(gateway, platform.user_id)
    assert len(rows) == 1
    status, prompt, completion, cost, charged, request_id, message_id = rows[0]
    async with gateway.engine.connect() as conn:
        model = (await load_catalog(conn)).get("gpt-4o-mini")
    assert model is not None
    assert status == "success" and (prompt, completion) == (12, 8)  # the mock's reported usage
    assert cost == charged == price_usage(Usage(prompt_tokens=12, completion_tokens=8), model).total_nano > 0
    debit = await gateway.scalar(
        "SELECT amount_nano FROM billing_events WHERE request_id = :r AND type = 'usage'", r=request_id
    )
    assert debit == -cost
    assert (await gateway.rows("SELECT prompt, content FROM messages WHERE id = :m", m=message_id)) == [
        (None, None)
    ]
    # It shows in the analytics like any user's spend, and the user's own request was billed to the user.
    usage = await api(gateway, "GET", f"/analytics/usage/{platform.user_id}")
    assert usage.status_code == 200, usage.text
    assert usage.json()["totals"]["requests"] == 1
    assert usage.json()["totals"]["cost_nano"] == cost
    assert len(await platform_usage(gateway, user_id)) == 1
    # The tagger's own request is never queued for tagging (no recursion): its conversation has no tag.
    await asyncio.sleep(0.5)
    platform_tags = await gateway.scalar(
        "SELECT count(*) FROM tags t JOIN conversations c ON c.id = t.target_id WHERE c.user_id = :u",
        u=platform.user_id,
    )
    assert platform_tags == 0 and len(await platform_usage(gateway, platform.user_id)) == 1


async def test_unparsable_answer_falls_back_to_the_offline_tagger(gateway: Gateway) -> None:
    platform = await funded_platform_user(gateway)
    _user, key = await gateway.seed_user("1")
    sent = await chat(
        gateway,
        key,
        "Write a Python function that parses a CSV file and raises a ValueError on a bad row. "
        + reply("Sure! This conversation is about programming."),
    )
    tags = await auto_tags(gateway, sent["conversation"])
    assert [t["name"] for t in tags] == ["coding"]  # the offline tagger's
    rows = await platform_usage(gateway, platform.user_id)
    assert [r[0] for r in rows] == ["success"]  # the model was asked (and paid for), its answer unusable


async def test_platform_user_without_credit_falls_back_offline(gateway: Gateway) -> None:
    platform = await funded_platform_user(gateway, usd_nano=0)
    _user, key = await gateway.seed_user("1")
    sent = await chat(
        gateway,
        key,
        "Write a Python function that parses a CSV file and raises a ValueError on a bad row. "
        + reply({"tags": [{"tag": "legal", "confidence": 0.9}]}),
    )
    assert [t["name"] for t in await auto_tags(gateway, sent["conversation"])] == ["coding"]
    assert await platform_usage(gateway, platform.user_id) == []  # refused (402) before any upstream call


async def test_feedback_sentiment_is_replaced_by_the_models(gateway: Gateway) -> None:
    platform = await funded_platform_user(gateway)
    _user, key = await gateway.seed_user("1")
    sent = await chat(gateway, key, "Translate 'good morning' to French [mock completion_tokens=4]")
    comment = "Great answer, thank you so much! " + reply(
        {"sentiment": "negative", "score": -0.7, "confidence": 0.9}
    )
    saved = await api(
        gateway,
        "POST",
        f"/messages/{sent['message']}/feedback",
        key=key,
        json={"rating": 5, "comment": comment},
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["sentiment"] == "positive"  # the offline model's, at once
    found: dict[str, Any] = {}
    for _ in range(120):
        listed = (await api(gateway, "GET", f"/messages/{sent['message']}/feedback")).json()["data"]
        found = listed[0]
        if found["sentiment"] == "negative":
            break
        await asyncio.sleep(0.25)
    assert (found["sentiment"], found["sentiment_score"]) == ("negative", -0.7)
    statuses = [r[0] for r in await platform_usage(gateway, platform.user_id)]
    assert statuses.count("success") == 2  # the first exchange's tags, then the comment's sentiment


@pytest.mark.parametrize(
    "gateway_settings_overrides",
    [
        {
            "admin_key": ADMIN,
            "auto_tags": True,
            "store_message_content": True,
            "tagger_model": "gpt-4o-mini",
            "tagger_user": TAGGER,
        }
    ],
)
async def test_on_demand_tags_use_the_model_and_its_requests_keep_no_text(gateway: Gateway) -> None:
    platform = await funded_platform_user(gateway)
    _user, key = await gateway.seed_user("1")
    wanted = {"tags": [{"tag": "legal", "confidence": 0.8}, {"tag": "business", "confidence": 0.7}]}
    sent = await chat(gateway, key, f"Write a Python function that parses a CSV file. {reply(wanted)}")
    assert [t["name"] for t in await auto_tags(gateway, sent["conversation"])] == ["legal", "business"]
    again = await api(
        gateway,
        "POST",
        "/tags/auto-generate",
        json={"target_type": "conversation", "target_id": sent["conversation"]},
    )
    assert again.status_code == 200, again.text
    assert [t["name"] for t in again.json()["data"]] == ["legal", "business"]
    rows = await platform_usage(gateway, platform.user_id)
    assert [r[0] for r in rows] == ["success", "success"]
    # The user's own message is stored (content storage is on); the platform's requests, carrying the
    # user's text, are not.
    stored = await gateway.rows(
        "SELECT prompt IS NOT NULL FROM messages WHERE id = :m", m=uuid.UUID(sent["message"])
    )
    assert stored == [(True,)]
    for row in rows:
        assert await gateway.rows("SELECT prompt, content FROM messages WHERE id = :m", m=row[6]) == [
            (None, None)
        ]
