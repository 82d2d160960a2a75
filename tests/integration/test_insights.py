"""Insights through the real HTTP path (uvicorn, the openai SDK, PostgreSQL + Redis): automatic tags with
content storage off, feedback sentiment, a planted cheaper-equal model recommended with exact savings, a
planted spend spike raising a signed webhook, and churn predictions scoped like the other analytics."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from pricing.cost import Usage, price_usage
from storage.catalog.repository import load_catalog
from storage.insights.service import run_anomalies, run_churn
from storage.models import (
    Conversation,
    Message,
    MessageFeedback,
    Tag,
    UsageLog,
    table_of,
)
from storage.webhooks.service import WebhookScope, create_endpoint, deliver_due
from tests.environment import free_port
from tests.integration.conftest import Gateway
from tests.integration.test_webhooks import Receiver

pytestmark = pytest.mark.integration

ADMIN = "sk-admin-insights-test"


@pytest.fixture
def backend() -> str:
    return "postgres+redis"


@pytest.fixture
def gateway_transport() -> str:
    return "http"  # real sockets: uvicorn in a thread


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN, "auto_tags": True, "store_message_content": False}


async def api(gw: Gateway, method: str, path: str, key: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await gw.request(method, f"/api/v1{path}", headers=headers, **kwargs)


async def chat(gw: Gateway, key: str, text: str) -> dict[str, str]:
    raw = await gw.openai(key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    return {
        "message": raw.headers["x-synapgate-message-id"],
        "conversation": raw.headers["x-synapgate-conversation-id"],
    }


async def test_first_exchange_is_tagged_automatically_with_content_storage_off(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    sent = await chat(
        gateway,
        key,
        "Write a Python function that parses a CSV file and raises a ValueError on a bad row. "
        "[mock completion_tokens=5]",
    )
    tags: list[dict[str, Any]] = []
    for _ in range(240):  # the classifier trains on first use (seconds on a busy machine)
        response = await api(gateway, "GET", f"/tags/conversation/{sent['conversation']}")
        assert response.status_code == 200, response.text
        tags = response.json()["data"]
        if tags:
            break
        await asyncio.sleep(0.5)
    assert [t["name"] for t in tags] == ["coding"]
    assert tags[0]["is_auto"] is True and tags[0]["author_user_id"] is None
    assert 0.3 <= float(tags[0]["confidence"]) <= 1
    # Nothing of the text was kept: the message has neither prompt nor content.
    async with gateway.engine.connect() as conn:
        m = table_of(Message).c
        row = (
            await conn.execute(select(m.prompt, m.content).where(m.id == uuid.UUID(sent["message"])))
        ).one()
    assert tuple(row) == (None, None)
    # On demand, a conversation whose text was not stored cannot be tagged again.
    refused = await api(
        gateway,
        "POST",
        "/tags/auto-generate",
        json={"target_type": "conversation", "target_id": sent["conversation"]},
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_not_stored"
    coverage = await api(gateway, "GET", "/analytics/tag-coverage")
    assert coverage.json() == {"conversations": 1, "auto_tagged": 1, "coverage": 1.0}


async def test_feedback_comment_gets_its_sentiment(gateway: Gateway) -> None:
    _user, key = await gateway.seed_user("1")
    sent = await chat(gateway, key, "Translate 'good morning' to French [mock completion_tokens=4]")
    bad = await api(
        gateway,
        "POST",
        f"/messages/{sent['message']}/feedback",
        key=key,
        json={
            "rating": "down",
            "comment": "Terrible answer, completely wrong and useless. Very disappointed.",
        },
    )
    assert bad.status_code == 201, bad.text
    assert bad.json()["sentiment"] == "negative" and bad.json()["sentiment_score"] < 0
    good = await api(
        gateway,
        "POST",
        f"/messages/{sent['message']}/feedback",
        json={"rating": 5, "comment": "Excelente resposta, muito obrigado! Perfeito."},
    )
    assert good.json()["sentiment"] == "positive" and good.json()["sentiment_score"] > 0
    listed = (await api(gateway, "GET", f"/messages/{sent['message']}/feedback")).json()["data"]
    assert sorted(f["sentiment"] for f in listed) == ["negative", "positive"]
    perf = await api(gateway, "GET", "/analytics/llm-performance")
    mini = next(m for m in perf.json()["data"] if m["model"] == "gpt-4o-mini")
    assert mini["feedback"]["sentiment"] == {"positive": 1, "neutral": 0, "negative": 1}


async def _plant_traffic(
    gw: Gateway,
    user_id: uuid.UUID,
    model: str,
    llm_id: int,
    n: int,
    ups: int,
    downs: int,
    tokens: tuple[int, int],
) -> list[Usage]:
    """n successful requests of `model` in conversations tagged coding, with ups/downs thumbs ratings."""
    now = datetime.now(UTC) - timedelta(days=1)
    usages: list[Usage] = []
    conv_rows, msg_rows, log_rows, fb_rows, tag_rows = [], [], [], [], []
    for i in range(n):
        conv, msg = uuid.uuid4(), uuid.uuid4()
        request_id = f"plant-{uuid.uuid4().hex}"
        prompt, completion = tokens[0] + i % 7, tokens[1] + i % 5
        usages.append(Usage(prompt_tokens=prompt, completion_tokens=completion))
        conv_rows.append({"id": conv, "user_id": user_id, "created_at": now, "updated_at": now})
        msg_rows.append(
            {
                "id": msg,
                "conversation_id": conv,
                "user_id": user_id,
                "llm_id": llm_id,
                "request_id": request_id,
                "role": "assistant",
                "created_at": now,
            }
        )
        log_rows.append(
            {
                "request_id": request_id,
                "message_id": msg,
                "user_id": user_id,
                "llm_id": llm_id,
                "conversation_id": conv,
                "provider": "openai",
                "model": model,
                "input_tokens": prompt,
                "output_tokens": completion,
                "cost_nano": 0,
                "charged_nano": 0,
                "latency_ms": 400,
                "status": "success",
                "created_at": now,
            }
        )
        tag_rows.append(
            {
                "id": uuid.uuid4(),
                "target_type": "conversation",
                "target_id": conv,
                "name": "coding",
                "is_auto": True,
                "created_at": now,
            }
        )
        if i < ups + downs:
            fb_rows.append(
                {
                    "id": uuid.uuid4(),
                    "message_id": msg,
                    "user_id": user_id,
                    "scale": "thumbs",
                    "rating": 1 if i < ups else -1,
                    "created_at": now,
                    "llm_id": llm_id,
                    "message_user_id": user_id,
                    "message_created_at": now,
                }
            )
    async with gw.engine.begin() as conn:
        await conn.execute(table_of(Conversation).insert(), conv_rows)
        await conn.execute(table_of(Message).insert(), msg_rows)
        await conn.execute(table_of(UsageLog).insert(), log_rows)
        await conn.execute(table_of(Tag).insert(), tag_rows)
        await conn.execute(table_of(MessageFeedback).insert(), fb_rows)
    return usages


async def test_planted_cheaper_equal_model_is_recommended_with_exact_savings(gateway: Gateway) -> None:
    user, key = await gateway.seed_user("1")
    async with gateway.engine.connect() as conn:
        catalog = await load_catalog(conn)
    big, small = catalog.get("gpt-4o"), catalog.get("gpt-4o-mini")
    assert big is not None and small is not None
    # The rule's sample sizes: ≥ 200 requests and 30 ratings for the current model; the candidate's
    # Wilson bounds (97/100 up, 0 errors in 300) clear the current's rates (90 %, 0 %) within tolerance.
    current = await _plant_traffic(gateway, user, "gpt-4o", big.id, 220, 90, 10, (900, 300))
    await _plant_traffic(gateway, user, "gpt-4o-mini", small.id, 300, 97, 3, (900, 300))

    response = await api(gateway, "GET", "/analytics/recommendations", params={"user_id": str(user)})
    assert response.status_code == 200, response.text
    [rec] = response.json()["data"]
    expected_current = sum(price_usage(u, big).total_nano for u in current)
    expected_projected = sum(price_usage(u, small).total_nano for u in current)
    assert (rec["tag"], rec["current_model"], rec["recommended_model"], rec["requests"]) == (
        "coding",
        "gpt-4o",
        "gpt-4o-mini",
        220,
    )
    assert rec["current_cost_nano"] == expected_current
    assert rec["projected_cost_nano"] == expected_projected
    assert rec["savings_nano"] == expected_current - expected_projected > 0
    assert rec["evidence"]["current"]["ratings"] == 100 and rec["evidence"]["candidate"]["ratings"] == 100
    # A user key sees its own recommendations; another user's id is a 404.
    own = await api(gateway, "GET", "/analytics/recommendations", key=key)
    assert own.json()["data"] == response.json()["data"]
    other, _ = await gateway.seed_user("1")
    assert (
        await api(gateway, "GET", "/analytics/recommendations", key=key, params={"user_id": str(other)})
    ).status_code == 404
    # No evidence, no recommendation: another user with no traffic gets none.
    assert (await api(gateway, "GET", "/analytics/recommendations", params={"user_id": str(other)})).json()[
        "data"
    ] == []


async def test_planted_spike_raises_a_signed_webhook_once(gateway: Gateway) -> None:
    user, key = await gateway.seed_user("1")
    receiver = Receiver(free_port())
    await receiver.start()
    try:
        async with gateway.engine.begin() as conn:
            hook = await create_endpoint(
                conn, WebhookScope(user_id=None), url=receiver.url("/alerts"), events=["spend.anomaly"]
            )
        now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
        spike_hour = now.replace(minute=0) - timedelta(hours=1)
        rows = []
        for h in range(1, 21 * 24):  # three quiet weeks: one request of 0.001 USD an hour
            at = spike_hour - timedelta(hours=h)
            rows.append({"at": at, "cost": 1_000_000})
        rows += [{"at": spike_hour + timedelta(minutes=i), "cost": 100_000_000} for i in range(40)]
        async with gateway.engine.begin() as conn:
            await conn.execute(
                table_of(UsageLog).insert(),
                [
                    {
                        "request_id": f"spike-{uuid.uuid4().hex}",
                        "user_id": user,
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "cost_nano": r["cost"],
                        "charged_nano": r["cost"],
                        "status": "success",
                        "created_at": r["at"],
                    }
                    for r in rows
                ],
            )
        run = await run_anomalies(gateway.engine, now)
        assert run.new == 2 and run.webhooks_queued == 2  # spend and requests of the user, that hour
        again = await run_anomalies(gateway.engine, now)
        assert again.new == 0 and again.webhooks_queued == 0  # found again, not raised again
        async with aiohttp.ClientSession() as http:
            report = await deliver_due(gateway.engine, http, limit=10, http_timeout=10)
        assert report.attempted == 2
    finally:
        await receiver.stop()
    events = [Webhook(hook.secret).verify(r.body, r.headers) for r in receiver.got]
    spend = next(e for e in events if e["data"]["metric"] == "spend_nano")
    assert spend["type"] == "spend.anomaly"
    assert spend["data"]["user_id"] == str(user) and spend["data"]["entity_type"] == "user"
    assert spend["data"]["spent_nano"] == 40 * 100_000_000 and spend["data"]["expected_nano"] == 1_000_000
    assert spend["data"]["window_start"] == spike_hour.isoformat().replace("+00:00", "Z")
    listed = await api(gateway, "GET", "/analytics/anomalies", key=key)
    assert listed.status_code == 200 and listed.json()["total"] == 2
    assert {a["metric"] for a in listed.json()["data"]} == {"spend_nano", "requests"}
    _other, other_key = await gateway.seed_user("1")
    assert (await api(gateway, "GET", "/analytics/anomalies", key=other_key)).json()["total"] == 0


async def test_churn_prediction_per_user_and_by_risk(gateway: Gateway) -> None:
    active, key = await gateway.seed_user("1")
    _idle, idle_key = await gateway.seed_user("1")
    await chat(gateway, key, "hello [mock completion_tokens=2]")
    assert (await api(gateway, "GET", f"/analytics/churn-prediction/{active}")).status_code == 404
    run = await run_churn(gateway.engine)
    assert run.model_version == "heuristic-1" and run.predictions == 1  # only users active in 30 days
    got = await api(gateway, "GET", f"/analytics/churn-prediction/{active}", key=key)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["user_id"] == str(active) and body["model_version"] == "heuristic-1"
    assert body["risk"] in ("low", "medium", "high") and 0 <= body["churn_probability"] <= 1
    assert {f["name"] for f in body["factors"]} >= {"days_since_last_request", "balance_runway_days"}
    assert (
        await api(gateway, "GET", f"/analytics/churn-prediction/{active}", key=idle_key)
    ).status_code == 404
    page = (await api(gateway, "GET", "/analytics/churn-prediction", params={"risk": body["risk"]})).json()
    assert page["total"] == 1 and page["data"][0]["user_id"] == str(active)
    other_risk = next(r for r in ("low", "high") if r != body["risk"])
    assert (await api(gateway, "GET", "/analytics/churn-prediction", params={"risk": other_risk})).json()[
        "total"
    ] == 0
    assert (await api(gateway, "GET", "/analytics/churn-prediction", key=idle_key)).json()["total"] == 0


async def test_cli_simulates_a_history_and_runs_the_jobs(request: pytest.FixtureRequest) -> None:
    """`synapgate insights simulate` writes users, usage through the recorder, task tags, feedback and planted
    spikes; after `insights run` the insights API shows the anomalies and the planted recommendation. On the
    embedded default, where a newcomer tries it first (the jobs on PostgreSQL: the tests above)."""
    from litestar.testing import AsyncTestClient

    from gateway.app import create_app
    from tests.integration.conftest import make_settings
    from tests.integration.helpers import cli

    url = request.getfixturevalue("sqlite_database")
    short = await asyncio.to_thread(cli, url, "insights", "simulate", "--days", "20")
    assert short.code == 1 and short.err.startswith("synapgate: error: --days: "), short.err
    many = await asyncio.to_thread(cli, url, "insights", "simulate", "--spikes", "21")
    assert many.code == 1 and many.err.startswith("synapgate: error: --spikes: "), many.err
    simulated = await asyncio.to_thread(
        cli, url, "insights", "simulate", "--users", "12", "--days", "60", "--max-per-day", "40"
    )
    assert simulated.code == 0, simulated.err
    written = json.loads(simulated.out)
    assert written["users"] == 12 and written["requests"] > 0
    assert written["feedback"] > 0 and 0 < written["comments"] < written["feedback"]
    assert len(written["spikes"]) == 2 and all(s["requests"] == 150 for s in written["spikes"])
    ran = await asyncio.to_thread(cli, url, "insights", "run")
    assert ran.code == 0, ran.err
    done = json.loads(ran.out)
    assert done["churn"]["model_version"] == "heuristic-1" and done["churn"]["predictions"] >= 1
    assert done["anomalies"]["new"] >= 2

    settings = make_settings(url, None, "http://127.0.0.1:9", admin_key=ADMIN)
    async with AsyncTestClient(create_app(settings), timeout=60) as client:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        anomalies = (await client.get("/api/v1/analytics/anomalies", headers=headers)).json()["data"]
        spiked = {(s["user_id"], s["hour"][:13]) for s in written["spikes"]}
        found = {(a["user_id"], a["hour"][:13]) for a in anomalies if a["entity_type"] == "user"}
        assert spiked <= found, (spiked, found)  # every planted spike is found …
        # … and nothing else: every anomaly (user, key or workspace) is in a planted spike's hour
        assert {a["hour"][:13] for a in anomalies} <= {hour for _user, hour in spiked}, anomalies
        recs = (await client.get("/api/v1/analytics/recommendations", headers=headers)).json()["data"]
        pairs = {(r["tag"], r["current_model"], r["recommended_model"]) for r in recs}
        assert ("translation", "gpt-4-turbo", "gemini-1.5-flash") in pairs, recs
        assert not any(r["recommended_model"] == "gpt-4o-mini" and r["tag"] == "coding" for r in recs)
        # `insights run` stored them too: the snapshot the dashboard reads equals the live answer
        snapshot = await client.get(
            "/api/v1/analytics/recommendations", headers=headers, params={"source": "snapshot"}
        )
        assert snapshot.json()["data"] == recs and done["recommendations"]["recommendations"] == len(recs)
        perf = (await client.get("/api/v1/analytics/llm-performance", headers=headers)).json()["data"]
        assert sum(sum(m["feedback"]["sentiment"].values()) for m in perf) == written["comments"]
