"""The accounts pages in a real browser: users, keys, billing, catalog, conversations, insights.

Figures are checked against the admin API; writes (create and revoke a key, add credits, change a price) go
through the forms with their CSRF tokens; a user's session cannot reach another user's pages (404); no
console errors anywhere (the `new_page` fixture asserts that).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.browser.conftest import Site, sign_in


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
    for what in ("Anomalies", "Churn risk", "Model recommendations"):
        assert page.get_by_text(what, exact=True).is_visible()

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
