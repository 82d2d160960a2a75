"""The dashboard in a real browser: sign-in, every page, figures equal to the admin API, filters and paging,
scope isolation, CSRF, sign-out; no console errors anywhere (the `new_page` fixture asserts that)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.browser.conftest import Site, sign_in


def _range() -> tuple[str, str, str, str]:
    """The last 7 UTC days: as the dashboard's date inputs, and as the API's [start, end) instants."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=6)
    after = today + timedelta(days=1)
    return first.isoformat(), today.isoformat(), f"{first}T00:00:00Z", f"{after}T00:00:00Z"


def metric(page: Any, name: str, scope: str = "") -> str:
    return str(page.locator(f"{scope} [data-metric='{name}']").first.get_attribute("data-value"))


def test_admin_overview_equals_the_admin_api(site: Site, new_page: Any) -> None:
    page = new_page()
    start, end, api_start, api_end = _range()
    sign_in(page, site, site.admin_key, f"/dashboard?start={start}&end={end}")
    assert page.url.endswith(f"/dashboard?start={start}&end={end}")
    top = site.api("/analytics/top-llms", start=api_start, end=api_end, limit=100)
    perf = site.api("/analytics/llm-performance", start=api_start, end=api_end)
    assert metric(page, "total_cost_usd") == top["totals"]["cost_usd"]
    assert metric(page, "total_charged_usd") == top["totals"]["charged_usd"]
    assert int(metric(page, "requests")) == top["totals"]["requests"] == 61
    errors = sum(m["errors"] for m in perf["data"])
    assert int(metric(page, "errors")) == errors == 1
    assert float(metric(page, "error_rate")) == round(errors / 61, 6)
    tokens = sum(m["tokens"]["input"] + m["tokens"]["output"] for m in top["data"])
    assert int(metric(page, "total_tokens")) == tokens
    assert page.locator("svg.chart rect.bar").count() > 0
    assert float(metric(page, "latency_p95_ms")) >= float(metric(page, "latency_p50_ms")) > 0
    money = page.locator(".card [data-metric='total_cost_usd']")
    assert money.inner_text().startswith("$")
    assert "title" in (money.evaluate("e => e.getAttributeNames().join(' ')") or "")


def test_user_sees_only_their_own_figures(site: Site, new_page: Any, console: Any) -> None:
    console.expected_statuses.add(404)
    page = new_page()
    start, end, api_start, api_end = _range()
    sign_in(page, site, site.key_a, f"/dashboard?start={start}&end={end}")
    usage = site.api(f"/analytics/usage/{site.user_a}", key=site.key_a, start=api_start, end=api_end)
    assert metric(page, "total_cost_usd") == usage["totals"]["cost_usd"]
    assert metric(page, "total_charged_usd") == usage["totals"]["charged_usd"]
    assert int(metric(page, "requests")) == usage["totals"]["requests"] == 55
    assert int(metric(page, "input_tokens")) == usage["totals"]["tokens"]["input"]
    assert page.get_by_text("My account").is_visible()
    assert page.locator("text=Top users").count() == 0

    page.goto(f"{site.url}/dashboard/requests")
    assert int(metric(page, "requests")) == 55  # not Bob's 6
    for path in (
        f"/dashboard/requests/{site.request_ids_b[0]}",
        f"/dashboard?user_id={site.user_b}",
        f"/dashboard/costs?user_id={site.user_b}",
        f"/dashboard/requests?user_id={site.user_b}",
    ):
        response = page.goto(f"{site.url}{path}")
        assert response is not None and response.status == 404, path
        assert page.get_by_role("heading", name="Not found").is_visible()
    response = page.goto(f"{site.url}/dashboard/requests/{site.request_ids_a[0]}")
    assert response is not None and response.status == 200


def test_every_page_with_the_api_figures(site: Site, new_page: Any) -> None:
    page = new_page()
    start, end, api_start, api_end = _range()
    query = f"start={start}&end={end}"
    sign_in(page, site, site.admin_key, f"/dashboard/costs?{query}")
    top = site.api("/analytics/top-llms", start=api_start, end=api_end, limit=100)
    assert metric(page, "total_cost_usd") == top["totals"]["cost_usd"]
    for row in top["data"]:
        cells = f"#costs-model tr[data-key='{row['model']}']"
        assert metric(page, "cost_usd", cells) == row["cost_usd"]
        assert metric(page, "charged_usd", cells) == row["charged_usd"]
    assert page.locator("#costs-user tbody tr").count() == 2
    assert page.locator("#costs-key tbody tr").count() == 2
    with page.expect_download() as download:
        page.locator("#costs-model a:has-text('Export CSV')").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {r["model"]: r["cost_usd"] for r in rows} == {r["model"]: r["cost_usd"] for r in top["data"]}

    page.goto(f"{site.url}/dashboard/models?{query}")
    perf = site.api("/analytics/llm-performance", start=api_start, end=api_end)
    assert page.locator("tbody tr[data-model]").count() == len(perf["data"]) == 3
    for m in perf["data"]:
        row = f"tr[data-model='{m['model']}']"
        assert int(metric(page, "requests", row)) == m["requests"]
        assert metric(page, "cost_usd", row) == m["cost_usd"]
        assert metric(page, "cost_per_1k_output_tokens_usd", row) == m["cost_per_1k_output_tokens_usd"]
        assert float(metric(page, "latency_p50_ms", row)) == m["latency_ms"]["p50"]
        assert float(metric(page, "latency_p95_ms", row)) == m["latency_ms"]["p95"]
        assert int(metric(page, "feedback_count", row)) == m["feedback"]["count"]
        rate = metric(page, "error_rate", row)
        assert (float(rate) if rate else None) == m["error_rate"]
    assert sum(m["feedback"]["count"] for m in perf["data"]) == 1

    page.goto(f"{site.url}/dashboard/requests/{site.request_ids_a[3]}")
    assert page.locator(".message.current").count() == 1
    assert page.locator("[data-feedback='stars:4']").is_visible()
    assert "clear answer" in page.locator(".feedback").inner_text()
    assert page.locator(".message.current .content").inner_text().strip() != ""
    if site.error_request_id:
        page.goto(f"{site.url}/dashboard/requests/{site.error_request_id}")
        assert page.locator(".status-error").first.is_visible()


def test_cost_tables_sort_and_page_on_the_server(site: Site, new_page: Any) -> None:
    """A cost table shows one page in the order its URL asks; its links keep every other parameter; the
    figures on every page are the API's; the CSV holds the whole table in the same order."""
    page = new_page()
    start, end, api_start, api_end = _range()
    top = site.api("/analytics/top-llms", start=api_start, end=api_end, limit=100, order_by="requests")
    by_requests = [row["model"] for row in top["data"]]
    assert len(by_requests) == 3
    query = f"start={start}&end={end}&model_size=2&model_sort=requests&key_size=1"
    sign_in(page, site, site.admin_key, f"/dashboard/costs?{query}")
    table = page.locator("#costs-model")
    assert table.get_attribute("data-total") == "3" and table.get_attribute("data-pages") == "2"
    shown = [str(k) for k in table.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.key)")]
    assert shown == by_requests[:2]
    assert page.locator("#costs-key tbody tr").count() == 1  # key_size=1: one of two keys
    assert page.locator("#costs-user tbody tr").count() == 2  # other tables keep their own size

    table.locator("a[rel=next]").click()
    page.wait_for_url("**model_page=2*")
    for kept in (f"start={start}", f"end={end}", "model_size=2", "model_sort=requests", "key_size=1"):
        assert kept in page.url, (kept, page.url)
    rows = page.locator("#costs-model tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-key") == by_requests[2]
    assert page.locator("#costs-model tbody tr").first.get_attribute("data-rank") == "3"
    last = next(r for r in top["data"] if r["model"] == by_requests[2])
    assert metric(page, "cost_usd", "#costs-model tbody") == last["cost_usd"]
    assert metric(page, "charged_usd", "#costs-model tbody") == last["charged_usd"]
    assert page.locator("#costs-key tbody tr").count() == 1  # its page did not move

    # the Requests heading toggles to ascending and goes back to page 1
    page.locator("#costs-model th a[data-sort-key=requests]").click()
    page.wait_for_url("**model_dir=asc*")
    assert "model_page" not in page.url
    shown = [
        str(k) for k in page.locator("#costs-model tbody tr").evaluate_all("rs => rs.map(r => r.dataset.key)")
    ]
    assert shown == list(reversed(by_requests))[:2]
    with page.expect_download() as download:
        page.locator("#costs-model a:has-text('Export CSV')").click()
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["model"] for r in exported] == list(reversed(by_requests))  # all of it, in the page's order
    assert {r["model"]: r["cost_usd"] for r in exported} == {r["model"]: r["cost_usd"] for r in top["data"]}


def test_cost_table_parameters_are_checked(site: Site, new_page: Any, console: Any) -> None:
    console.expected_statuses.add(400)
    page = new_page()
    sign_in(page, site, site.admin_key, "/dashboard/costs")
    for bad in ("model_sort=email", "user_dir=up", "key_page=0", "workspace_size=100000", "model_page=x"):
        response = page.goto(f"{site.url}/dashboard/costs?{bad}")
        assert response is not None and response.status == 400, bad
    response = page.goto(f"{site.url}/dashboard/costs.csv?table=model&model_sort=email")
    assert response is not None and response.status == 400


def test_request_log_filters_and_pages(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.admin_key, "/dashboard/requests")
    assert int(metric(page, "requests")) == 61
    assert page.locator("#request-log tbody tr").count() == 50
    newest = page.locator("#request-log tbody tr").first.get_attribute("data-request-id")
    page.locator("a[rel=next]").click()  # htmx swaps the table and pushes the URL
    page.wait_for_url("**/dashboard/requests?*page=2*")
    page.wait_for_load_state("networkidle")
    assert page.locator("#request-log tbody tr").count() == 11
    assert page.locator("#request-log tbody tr").first.get_attribute("data-request-id") != newest

    page.select_option("#f-model", "claude-3-haiku")
    page.locator("form.filters button[type=submit]").click()
    page.wait_for_url("**model=claude-3-haiku*")
    page.wait_for_load_state("networkidle")
    assert int(metric(page, "requests")) == 14
    models = page.locator("#request-log tbody tr td:nth-child(3)").all_inner_texts()
    assert set(models) == {"claude-3-haiku"}
    page.reload()  # the URL alone reproduces the view
    assert int(metric(page, "requests")) == 14

    page.goto(f"{site.url}/dashboard/requests?status=error")
    assert int(metric(page, "requests")) == 1


def test_csrf_and_sign_out(site: Site, new_page: Any, console: Any) -> None:
    console.expected_statuses.add(403)
    page = new_page()
    refused = page.request.post(f"{site.url}/dashboard/login", form={"key": site.admin_key}, max_redirects=0)
    assert refused.status == 403
    sign_in(page, site, site.admin_key)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["sg_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert site.admin_key not in session["value"]
    no_token = page.request.post(f"{site.url}/dashboard/logout", form={}, max_redirects=0)
    assert no_token.status == 403
    wrong = page.request.post(f"{site.url}/dashboard/logout", form={"_csrf": "forged"}, max_redirects=0)
    assert wrong.status == 403
    page.goto(f"{site.url}/dashboard")
    assert page.url.endswith("/dashboard")  # still signed in
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/login")
    page.goto(f"{site.url}/dashboard/costs")
    assert "/dashboard/login" in page.url


def test_bad_key_is_refused_and_phone_layout(site: Site, new_page: Any, console: Any) -> None:
    console.expected_statuses.add(401)
    page = new_page({"width": 390, "height": 844})
    page.goto(f"{site.url}/dashboard/login")
    page.fill("input[name=key]", "sk-sg-not-a-key")
    with page.expect_response(lambda r: r.url.endswith("/dashboard/login") and r.request.method == "POST"):
        page.keyboard.press("Enter")
    page.get_by_role("alert").wait_for(state="visible")
    sign_in(page, site, site.key_b)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    total = page.evaluate(
        "performance.getEntriesByType('resource').filter(e => /\\.(js|css)$/.test(e.name))"
        ".reduce((s, e) => s + e.decodedBodySize, 0)"
    )
    assert 0 < total < 300_000


def test_session_cookie_is_secure_behind_https(site: Site) -> None:
    """Behind a TLS-terminating proxy (X-Forwarded-Proto: https) the session cookie gets `Secure`."""
    import httpx

    with httpx.Client(base_url=site.url, follow_redirects=False) as client:
        form = client.get("/dashboard/login", headers={"X-Forwarded-Proto": "https"})
        token = form.text.split('name="_csrf" value="')[1].split('"')[0]
        signed = client.post(
            "/dashboard/login",
            data={"key": site.key_a, "_csrf": token, "next": "/dashboard"},
            # the login form's CSRF cookie is Secure too, so a client on plain HTTP would not send it back
            headers={
                "X-Forwarded-Proto": "https",
                "Cookie": f"sg_login_csrf={form.cookies['sg_login_csrf']}",
            },
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
        cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith("sg_session="))
        assert "Secure" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        assert site.key_a not in cookie
        plain = client.get("/dashboard/login")  # a new login form over plain HTTP: no Secure flag
        assert "Secure" not in plain.headers["set-cookie"]
