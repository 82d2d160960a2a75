"""The accounts pages in a real browser: users, keys, billing, catalog, conversations, insights.

Figures are checked against the admin API; writes (create and revoke a key, add credits, change a price) go
through the forms with their CSRF tokens; a user's session cannot reach another user's pages (404); no
console errors anywhere (the `new_page` fixture asserts that).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from insights.anomaly import Anomaly
from storage.db import create_engine
from storage.insights import repository as insights_repository
from storage.insights.service import ChurnRun, run_churn
from tests.browser.conftest import Site, sign_in
from tests.integration.conftest import off_loop


def metric(page: Any, name: str) -> str:
    return str(page.locator(f"[data-metric='{name}']").first.get_attribute("data-value"))


def _conversation_href(page: Any, site: Site, request_id: str) -> str:
    page.goto(f"{site.url}/dashboard/requests/{request_id}")
    href = page.locator("a[href^='/dashboard/conversations/']").first.get_attribute("href")
    assert href is not None
    return str(href)


def test_admin_visits_every_page(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.admin_key, "/dashboard/users")
    assert page.get_by_role("heading", name="Users").is_visible()
    users = site.api("/users", limit=1000)
    assert int(metric(page, "users")) == users["total"] >= 2
    row = page.locator(f"tr[data-user-id='{site.user_a}']")
    balance_a = site.api(f"/billing/balance/{site.user_a}")
    assert row.locator("[data-metric='balance_usd']").get_attribute("data-value") == balance_a["balance_usd"]

    row.locator("a").first.click()  # htmx-boosted: the URL changes once the page is swapped in
    page.wait_for_url(f"**/dashboard/users/{site.user_a}*")
    assert metric(page, "balance_usd") == balance_a["balance_usd"]
    assert metric(page, "available_usd") == balance_a["available_usd"]
    assert int(metric(page, "requests")) == 55
    assert float(metric(page, "runway_days")) > 0
    assert page.get_by_role("heading", name="Churn risk").is_visible()
    assert page.locator("tr[data-request-id]").count() == 10

    for path, heading in (
        ("/dashboard/keys", "Gateway keys"),
        (f"/dashboard/billing?user_id={site.user_b}", "Billing"),
        ("/dashboard/catalog", "Model catalog"),
        ("/dashboard/catalog?model=gpt-4o", "Model catalog"),
        ("/dashboard/insights", "Insights"),
    ):
        response = page.goto(f"{site.url}{path}")
        assert response is not None and response.status == 200, path
        assert page.get_by_role("heading", name=heading, exact=True).is_visible(), path
    keys = site.api("/keys", limit=1000)
    page.goto(f"{site.url}/dashboard/keys")
    assert int(metric(page, "keys")) == keys["total"]
    assert page.locator("tr[data-key-id]").count() == keys["total"]
    page.goto(f"{site.url}/dashboard/insights")
    assert page.get_by_role("heading", name="Churn risk").is_visible()

    href = _conversation_href(page, site, site.request_ids_a[3])
    page.goto(f"{site.url}{href}")
    conversation = site.api(href.replace("/dashboard", ""))
    assert int(metric(page, "messages")) == conversation["messages"]["total"]
    assert page.locator("#conversation-llms tr[data-model]").count() == len(conversation["llms"])
    assert page.locator("[data-feedback='stars:4']").count() == 1
    assert page.get_by_text("clear answer").is_visible()


def test_user_pages_are_their_own(site: Site, new_page: Any, console: Any) -> None:
    console.expected_statuses.add(404)
    page = new_page()
    sign_in(page, site, site.key_a, "/dashboard/users")
    assert page.locator("tr[data-user-id]").count() == 1
    assert page.locator(f"tr[data-user-id='{site.user_a}']").count() == 1
    page.goto(f"{site.url}/dashboard/users/{site.user_a}")
    own = site.api(f"/billing/balance/{site.user_a}", key=site.key_a)
    assert metric(page, "balance_usd") == own["balance_usd"]
    page.goto(f"{site.url}/dashboard/billing")
    assert metric(page, "balance_usd") == own["balance_usd"]
    assert page.locator("#add-credits").count() == 0  # admin only
    page.goto(f"{site.url}/dashboard/keys")
    assert page.locator("#create-key").count() == 0
    assert page.locator("tr[data-key-id]").count() == site.api("/keys", key=site.key_a)["total"]
    for path in ("/dashboard/catalog", "/dashboard/insights"):
        response = page.goto(f"{site.url}{path}")
        assert response is not None and response.status == 200, path

    admin = new_page()
    sign_in(admin, site, site.admin_key)
    foreign_conversation = _conversation_href(admin, site, site.request_ids_b[0])
    own_conversation = _conversation_href(admin, site, site.request_ids_a[0])
    for path in (
        f"/dashboard/users/{site.user_b}",
        f"/dashboard/billing?user_id={site.user_b}",
        f"/dashboard/keys?user_id={site.user_b}",
        f"/dashboard/users?user_id={site.user_b}",
        foreign_conversation,
    ):
        response = page.goto(f"{site.url}{path}")
        assert response is not None and response.status == 404, path
        assert page.get_by_role("heading", name="Not found").is_visible()
    response = page.goto(f"{site.url}{own_conversation}")
    assert response is not None and response.status == 200


def test_create_and_revoke_a_key(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.admin_key, f"/dashboard/keys?user_id={site.user_b}")
    page.select_option("#k-user", str(site.user_b))
    page.fill("#k-name", "browser-made")
    page.fill("#k-models", "gpt-4o")
    page.focus("#k-models")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # keyboard-usable: Enter submits
    plaintext = page.locator("#new-key").input_value()
    assert plaintext.startswith("sk-sg-")
    key_id = page.locator("#new-key").get_attribute("data-key-id")
    found = httpx.get(
        f"{site.url}/api/v1/users", headers={"Authorization": f"Bearer {plaintext}"}, timeout=30
    )
    assert found.status_code == 200 and found.json()["data"][0]["id"] == str(site.user_b)
    row = page.locator(f"tr[data-key-id='{key_id}']")
    assert "gpt-4o" in row.inner_text()
    page.goto(f"{site.url}/dashboard/keys")  # shown once: the page read again no longer holds it
    assert page.locator("#new-key").count() == 0
    assert plaintext not in page.content()

    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first: "no" keeps the key
    page.locator(f"tr[data-key-id='{key_id}'] button", has_text="Revoke").click()
    assert "active" in page.locator(f"tr[data-key-id='{key_id}']").inner_text()
    page.once("dialog", lambda dialog: dialog.accept())  # "Revoke sk-sg-…? Requests with it will be refused."
    with page.expect_navigation():
        page.locator(f"tr[data-key-id='{key_id}'] button", has_text="Revoke").click()
    assert page.locator("#revoked").is_visible()
    assert "revoked" in page.locator(f"tr[data-key-id='{key_id}']").inner_text()
    assert site.api(f"/keys?status=revoked&user_id={site.user_b}")["total"] >= 1
    refused = httpx.get(
        f"{site.url}/api/v1/users", headers={"Authorization": f"Bearer {plaintext}"}, timeout=30
    )
    assert refused.status_code == 401


def test_add_credits_and_page_the_events(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.admin_key, f"/dashboard/billing?user_id={site.user_b}")
    before = site.api(f"/billing/balance/{site.user_b}")
    assert metric(page, "balance_usd") == before["balance_usd"]
    form = {
        name: str(page.locator(f"#add-credits input[name={name}]").get_attribute("value"))
        for name in ("_csrf", "user_id", "idempotency_key")
    }
    page.fill("#c-amount", "3.141592653")
    page.fill("#c-desc", "browser top-up")
    with page.expect_navigation():
        page.click("#add-credits button[type=submit]")
    assert page.locator("#credited").is_visible()
    after = site.api(f"/billing/balance/{site.user_b}")
    assert after["balance_nano"] - before["balance_nano"] == 3_141_592_653
    assert metric(page, "balance_usd") == after["balance_usd"]
    assert page.get_by_text("browser top-up").first.is_visible()
    # The same form posted again (a double submit) replays its idempotency key: nothing moves.
    again = page.request.post(
        f"{site.url}/dashboard/billing/credits", form={**form, "amount_usd": "3.141592653"}
    )
    assert again.ok and "replayed=1" in again.url
    assert site.api(f"/billing/balance/{site.user_b}")["balance_nano"] == after["balance_nano"]
    page.reload()  # a form rendered again has a new key
    assert (
        page.locator("#add-credits input[name=idempotency_key]").get_attribute("value")
        != form["idempotency_key"]
    )

    page.goto(f"{site.url}/dashboard/billing?user_id={site.user_a}")
    events = site.api(f"/billing/events/{site.user_a}", limit=1000)
    assert int(metric(page, "events")) == events["total"] > 25
    first_page = page.locator("tr[data-event-id]").first.get_attribute("data-event-id")
    assert first_page == str(max(e["id"] for e in events["data"]))  # newest first
    page.locator("#events a[rel=next]").click()
    page.wait_for_url("**page=2*")
    assert page.locator("tr[data-event-id]").count() == min(25, events["total"] - 25)
    assert page.locator("tr[data-event-id]").first.get_attribute("data-event-id") != first_page


def test_change_a_price(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.admin_key, "/dashboard/catalog?model=claude-3-haiku")
    before = site.api("/llms/claude-3-haiku")
    assert metric(page, "input_price") == before["prices"]["input"]
    versions = page.locator("#price-history tr[data-version]").count()
    assert versions == len(before["price_history"])
    page.fill("#p-input_price", "0.333333333")
    page.fill("#p-output_price", "1.5")
    with page.expect_navigation():
        page.click("#set-price button[type=submit]")
    assert page.locator("#price-changed").is_visible()
    after = site.api("/llms/claude-3-haiku")
    assert after["price_version"] == before["price_version"] + 1
    assert after["prices"]["input"] == "0.333333333"
    assert metric(page, "input_price") == "0.333333333"
    assert page.locator("#price-history tr[data-version]").count() == versions + 1
    # an optional price left blank keeps its value
    assert after["prices"]["cached_input"] == before["prices"]["cached_input"]


def test_user_cannot_post_admin_forms(site: Site, new_page: Any, console: Any) -> None:
    console.expected_statuses.update({403, 404})
    page = new_page()
    sign_in(page, site, site.key_a, "/dashboard/billing")
    token = page.locator("form[action='/dashboard/logout'] input[name=_csrf]").get_attribute("value")
    before = site.api(f"/billing/balance/{site.user_a}")
    answer = page.request.post(
        f"{site.url}/dashboard/billing/credits",
        form={"_csrf": token, "user_id": str(site.user_a), "amount_usd": "100", "idempotency_key": "x-1"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert site.api(f"/billing/balance/{site.user_a}")["balance_nano"] == before["balance_nano"]
    answer = page.request.post(
        f"{site.url}/dashboard/catalog/price",
        form={"_csrf": token, "model": "gpt-4o", "input_price": "0", "output_price": "0"},
        max_redirects=0,
    )
    assert answer.status == 403
    keys_b = site.api("/keys", user_id=str(site.user_b))["data"]
    answer = page.request.post(
        f"{site.url}/dashboard/keys/{keys_b[0]['id']}/revoke", form={"_csrf": token}, max_redirects=0
    )
    assert answer.status == 404  # another user's key: not even its existence is told
    answer = page.request.post(
        f"{site.url}/dashboard/billing/credits",
        form={"_csrf": "forged", "user_id": str(site.user_a), "amount_usd": "1", "idempotency_key": "x-2"},
        max_redirects=0,
    )
    assert answer.status == 403


def _predict_churn(site: Site) -> ChurnRun:
    """The daily insights job's churn step, on the site's database (as `synapgate insights run` does)."""

    async def run() -> ChurnRun:
        engine = create_engine(site.database_url, pool_size=2)
        try:
            return await run_churn(engine)
        finally:
            await engine.dispose()

    result: ChurnRun = off_loop(asyncio.run, run())
    return result


def _churn_matches(page: Any, scope: str, api: dict[str, Any]) -> None:
    """The churn figures rendered in `scope` equal the API's prediction (probability, risk, factors)."""
    box = page.locator(scope)
    assert (
        float(str(box.locator("[data-metric='churn_probability']").first.get_attribute("data-value")))
        == (api["churn_probability"])
    )
    assert box.locator("[data-metric='churn_risk']").first.get_attribute("data-value") == api["risk"]


def test_churn_risk_equals_the_api(site: Site, new_page: Any, console: Any) -> None:
    run = _predict_churn(site)
    assert run.predictions >= 2  # both seeded users were active today
    listed = site.api("/analytics/churn-prediction", limit=100)
    assert listed["total"] == run.predictions
    own = site.api(f"/analytics/churn-prediction/{site.user_a}")

    page = new_page()
    sign_in(page, site, site.admin_key, "/dashboard/users")
    _churn_matches(page, f"tr[data-user-id='{site.user_a}'] .churn-cell", own)

    page.goto(f"{site.url}/dashboard/users/{site.user_a}")
    _churn_matches(page, "#churn", own)
    assert metric(page, "churn_model_version") == own["model_version"] == run.model_version
    heuristic = own["model_version"].startswith("heuristic")
    assert (page.locator("#churn [data-metric='churn_heuristic']").count() == 1) == heuristic
    assert page.locator("#churn tr[data-factor]").count() == len(own["factors"]) > 0
    for factor in own["factors"]:
        row = page.locator(f"#churn tr[data-factor='{factor['name']}']")
        value = row.locator("[data-metric='churn_factor_value']").get_attribute("data-value")
        effect = row.locator("[data-metric='churn_factor_effect']").get_attribute("data-value")
        assert float(str(value)) == factor["value"] and float(str(effect)) == factor["effect"], factor

    page.goto(f"{site.url}/dashboard/insights")
    assert int(metric(page, "churn_predictions")) == listed["total"]
    shown = page.locator("#churn-list tbody tr").evaluate_all("rs => rs.map(r => r.dataset.userId)")
    assert shown == [c["user_id"] for c in listed["data"]]  # most likely to churn first, as the API lists
    for c in listed["data"]:
        _churn_matches(page, f"#churn-list tr[data-user-id='{c['user_id']}']", c)
    page.locator(f"#churn-list .chips a:text-is('{own['risk']}')").click()
    page.wait_for_url(f"**/dashboard/insights?risk={own['risk']}")
    at_risk = site.api("/analytics/churn-prediction", risk=own["risk"], limit=100)
    assert page.locator("#churn-list tbody tr").count() == at_risk["total"] >= 1
    console.expected_statuses.add(400)
    response = page.goto(f"{site.url}/dashboard/insights?risk=extreme")
    assert response is not None and response.status == 400

    mine = new_page()  # a user key: its own prediction only, equal to what its key reads from the API
    sign_in(mine, site, site.key_a, "/dashboard/insights")
    assert mine.locator("#churn-list tbody tr").evaluate_all("rs => rs.map(r => r.dataset.userId)") == [
        str(site.user_a)
    ]
    _churn_matches(
        mine, "#churn-list", site.api(f"/analytics/churn-prediction/{site.user_a}", key=site.key_a)
    )
    mine.goto(f"{site.url}/dashboard/users/{site.user_a}")
    _churn_matches(mine, "#churn", own)
    mine.goto(f"{site.url}/dashboard/users")
    assert mine.locator("tr[data-user-id] .churn-cell [data-metric='churn_risk']").count() == 1


def _store_anomalies(site: Site, found: list[Anomaly], owners: dict[tuple[str, str], Any]) -> None:
    """Anomalies stored as the hourly job stores them (its detector needs weeks of history to find any)."""

    async def run() -> None:
        engine = create_engine(site.database_url, pool_size=2)
        try:
            async with engine.begin() as conn:
                await insights_repository.insert_new_anomalies(conn, found, owners)
        finally:
            await engine.dispose()

    off_loop(asyncio.run, run())


def test_anomalies_equal_the_api(site: Site, new_page: Any) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    key_b = next(k for k in site.api("/keys", limit=1000)["data"] if k["user_id"] == str(site.user_b))
    owner = insights_repository.EntityOwner
    found = [
        Anomaly("user", str(site.user_a), "spend_nano", hour - timedelta(hours=1), 987_654_321, 12_345, 9.5),
        Anomaly("key", key_b["id"], "requests", hour - timedelta(hours=2), 400, 3, 12.25),
        Anomaly("user", str(site.user_a), "requests", hour - timedelta(days=20), 50, 2, 7.0),  # out of range
    ]
    owners = {
        ("user", str(site.user_a)): owner(site.user_a, None),
        ("key", key_b["id"]): owner(site.user_b, None),
    }
    _store_anomalies(site, found, owners)
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=6)).isoformat(), (today + timedelta(days=1)).isoformat()
    listed = site.api("/analytics/anomalies", start=f"{start}T00:00:00Z", end=f"{end}T00:00:00Z", limit=100)
    assert listed["total"] >= 2

    page = new_page()
    sign_in(page, site, site.admin_key, "/dashboard/insights")
    assert int(metric(page, "anomalies")) == listed["total"]
    rows = page.locator("#anomaly-list tr[data-anomaly-id]")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.anomalyId)") == [a["id"] for a in listed["data"]]
    for a in listed["data"]:
        row = page.locator(f"#anomaly-list tr[data-anomaly-id='{a['id']}']")
        assert (
            float(str(row.locator("[data-metric='anomaly_score']").get_attribute("data-value"))) == a["score"]
        )
        if a["metric"] == "spend_nano":
            money = row.locator("[data-metric='anomaly_observed_usd']").get_attribute("data-value")
            assert money == "0.987654321" and a["observed"] == 987_654_321
        else:
            assert (
                int(str(row.locator("[data-metric='anomaly_observed']").get_attribute("data-value")))
                == (a["observed"])
            )
    assert "bob's laptop" in page.locator("#anomaly-list").inner_text()  # a key is named by prefix and name
    page.locator("#anomaly-list .chips a", has_text="30 days").click()
    page.wait_for_url("**/dashboard/insights?start=*")
    month = site.api(
        "/analytics/anomalies",
        start=f"{today - timedelta(days=29)}T00:00:00Z",
        end=f"{end}T00:00:00Z",
        limit=100,
    )
    assert int(metric(page, "anomalies")) == month["total"] == listed["total"] + 1

    mine = new_page()  # a user key: the anomalies of its own user and keys, as its key reads them
    sign_in(mine, site, site.key_a, "/dashboard/insights")
    own = site.api(
        "/analytics/anomalies", key=site.key_a, start=f"{start}T00:00:00Z", end=f"{end}T00:00:00Z", limit=100
    )
    assert int(metric(mine, "anomalies")) == own["total"] >= 1
    shown = mine.locator("#anomaly-list tr[data-anomaly-id]").evaluate_all(
        "rs => rs.map(r => r.dataset.anomalyId)"
    )
    assert shown == [a["id"] for a in own["data"]]
    assert all(uuid.UUID(a["user_id"]) == site.user_a for a in own["data"])
