"""Every dashboard page on the embedded default (SQLite, sessions in the database), in process over ASGI.

The browser suite (tests/browser/) drives the pages in Chromium on PostgreSQL + Redis, the production setup:
what a browser adds (htmx swaps, forms, console errors, layout) does not depend on the database. What does —
the pages' SQL — is checked here on SQLite: signed in through the login form (its CSRF cookie) as the
operator and as a user, every page answers 200 with the admin API's figures in its `data-metric`s, a user
gets 404 for another user's pages, and the recommendations panel shows the snapshot the in-process
`insights.daily` stores at start, then the planted recommendations after the job ran.
"""

from __future__ import annotations

import asyncio
import re
import time
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from storage.insights import repository as insights_repository
from storage.insights.service import run_recommendations
from tests.browser.recommendation_traffic import PLANTS, plant_cheaper_equal_models
from tests.integration.conftest import Gateway

ADMIN = "sk-admin-dashboard-pages"

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    return {"admin_key": ADMIN, "store_message_content": True, "upstream_max_retries": 0}


class Metrics(HTMLParser):
    """The page's `data-metric` → `data-value` pairs (first of each name) and `data-*` rows by attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.rows: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if "data-metric" in found and "data-value" in found:
            self.values.setdefault(found["data-metric"], found["data-value"])
        if tag == "tr" and any(k.startswith("data-") for k in found):
            self.rows.append(found)


def metrics(html: str) -> Metrics:
    parsed = Metrics()
    parsed.feed(html)
    return parsed


async def sign_in(gateway: Gateway, key: str) -> httpx.AsyncClient:
    """A client with a dashboard session, signed in through the form as a browser would (CSRF cookie). It
    shares the test gateway's in-process transport, whose lifespan the fixture ends (nothing to close)."""
    assert gateway.client is not None
    client = httpx.AsyncClient(transport=gateway.client._transport, base_url=gateway.url, timeout=30)
    form = await client.get("/dashboard/login")
    assert form.status_code == 200, form.text
    token = re.search(r'name="_csrf" value="([^"]+)"', form.text)
    assert token is not None, form.text
    signed = await client.post(
        "/dashboard/login", data={"key": key, "_csrf": token.group(1), "next": "/dashboard"}
    )
    assert signed.status_code == 303, signed.text
    return client


async def page(client: httpx.AsyncClient, path: str, status: int = 200) -> Metrics:
    answer = await client.get(path)
    assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
    return metrics(answer.text)


async def api(gateway: Gateway, path: str, key: str = ADMIN, **params: Any) -> Any:
    answer = await gateway.request(
        "GET", f"/api/v1{path}", params=params, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def seed(gateway: Gateway) -> dict[str, Any]:
    """Two users; A makes 8 calls on two models (one rated), B 3; one call fails upstream."""
    user_a, key_a = await gateway.seed_user("25")
    user_b, key_b = await gateway.seed_user("25")
    seen: dict[str, Any] = {
        "user_a": user_a,
        "key_a": key_a,
        "user_b": user_b,
        "key_b": key_b,
        "a": [],
        "b": [],
    }
    plan = (
        [("gpt-4o-mini", key_a, "a")] * 6
        + [("claude-3-haiku", key_a, "a")] * 2
        + [("gpt-4o", key_b, "b")] * 3
    )
    for i, (model, key, who) in enumerate(plan):
        answer = await gateway.request(
            "POST",
            "/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": f"Q{i} [mock completion_tokens={5 + i}]"}],
            },
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 200, answer.text
        seen[who].append(answer.headers["x-request-id"])
        if i == 1:
            rated = await gateway.request(
                "POST",
                f"/api/v1/messages/{answer.headers['x-synapgate-message-id']}/feedback",
                json={"rating": 4, "comment": "clear answer"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert rated.status_code in (200, 201), rated.text
    failed = await gateway.request(
        "POST",
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[mock status=500]"}]},
        headers={"Authorization": f"Bearer {key_a}"},
    )
    assert failed.status_code >= 500, failed.text
    seen["error"] = failed.headers["x-request-id"]
    return seen


async def test_every_page_answers_with_the_api_figures_on_sqlite(gateway: Gateway) -> None:
    seen = await seed(gateway)
    admin = await sign_in(gateway, ADMIN)
    top = await api(gateway, "/analytics/top-llms", limit=100)
    overview = await page(admin, "/dashboard")
    assert overview.values["total_cost_usd"] == top["totals"]["cost_usd"]
    assert int(overview.values["requests"]) == top["totals"]["requests"] == 12

    costs = await page(admin, "/dashboard/costs")
    assert costs.values["total_cost_usd"] == top["totals"]["cost_usd"]
    csv_answer = await admin.get("/dashboard/costs.csv", params={"table": "model"})
    assert csv_answer.status_code == 200 and "gpt-4o-mini" in csv_answer.text

    perf = await api(gateway, "/analytics/llm-performance")
    models = await page(admin, "/dashboard/models")
    assert {r["data-model"] for r in models.rows if "data-model" in r} == {m["model"] for m in perf["data"]}

    requests_page = await page(admin, "/dashboard/requests")
    assert int(requests_page.values["requests"]) == 12
    await page(admin, f"/dashboard/requests/{seen['a'][1]}")
    await page(admin, f"/dashboard/requests/{seen['error']}")

    users = await page(admin, "/dashboard/users")
    assert int(users.values["users"]) == (await api(gateway, "/users", limit=1000))["total"]
    balance = await api(gateway, f"/billing/balance/{seen['user_a']}")
    user_page = await page(admin, f"/dashboard/users/{seen['user_a']}")
    assert user_page.values["balance_usd"] == balance["balance_usd"]
    assert int(user_page.values["requests"]) == 9
    keys = await page(admin, "/dashboard/keys")
    assert int(keys.values["keys"]) == (await api(gateway, "/keys", limit=1000))["total"]
    for path in (
        f"/dashboard/billing?user_id={seen['user_b']}",
        "/dashboard/catalog",
        "/dashboard/catalog?model=gpt-4o",
        "/dashboard/insights",
    ):
        await page(admin, path)

    detail = await admin.get(f"/dashboard/requests/{seen['a'][1]}")
    conversation = re.search(r'href="(/dashboard/conversations/[^"]+)"', detail.text)
    assert conversation is not None
    shown = await page(admin, conversation.group(1))
    from_api = await api(gateway, conversation.group(1).replace("/dashboard", ""))
    assert int(shown.values["messages"]) == from_api["messages"]["total"]

    user = await sign_in(gateway, seen["key_a"])
    own = await api(gateway, "/analytics/usage/" + str(seen["user_a"]), key=seen["key_a"])
    mine = await page(user, "/dashboard")
    assert mine.values["total_cost_usd"] == own["totals"]["cost_usd"]
    assert int((await page(user, "/dashboard/requests")).values["requests"]) == 9  # not B's 3
    for path in (
        f"/dashboard/users/{seen['user_b']}",
        f"/dashboard/billing?user_id={seen['user_b']}",
        f"/dashboard/requests/{seen['b'][0]}",
        f"/dashboard/costs?user_id={seen['user_b']}",
    ):
        await page(user, path, status=404)


async def test_recommendations_panel_shows_the_stored_snapshot_on_sqlite(gateway: Gateway) -> None:
    """The embedded default runs `insights.daily` in process at start: its snapshot (nothing to recommend on
    untagged traffic) is on the page; after planted traffic and the job, the page's rows are the API's."""
    user_a, _key_a = await gateway.seed_user("25")
    deadline = time.monotonic() + 30
    while True:
        async with gateway.engine.connect() as conn:
            if await insights_repository.stored_recommendations(conn) is not None:
                break
        assert time.monotonic() < deadline, "the in-process insights.daily did not run"
        await asyncio.sleep(0.1)
    admin = await sign_in(gateway, ADMIN)
    before = await admin.get("/dashboard/insights")
    assert "Nothing to recommend" in before.text, before.text[:800]
    await plant_cheaper_equal_models(gateway.settings.database_url, user_a)
    run = await run_recommendations(gateway.engine)
    assert run.recommendations == len(PLANTS)
    snap = await api(gateway, "/analytics/recommendations", source="snapshot")
    after = metrics((await admin.get("/dashboard/insights")).text)
    shown = [(r["data-tag"], r["data-current-model"]) for r in after.rows if "data-tag" in r]
    assert shown == [(r["tag"], r["current_model"]) for r in snap["data"]] and len(shown) == len(PLANTS)
