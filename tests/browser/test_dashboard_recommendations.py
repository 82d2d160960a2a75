"""The insights page's model recommendations in real Chromium: an honest empty state before the daily job
has stored any, then — after planted cheaper-equal traffic and the job — every figure equal to what
GET /api/v1/analytics/recommendations?source=snapshot (and the live API) returns, for the operator (the
platform's) and for a user key (its own); a user with nothing to recommend sees that said."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from storage.db import create_engine
from storage.insights.service import RecommendationsRun, run_recommendations
from tests.browser.conftest import Site, sign_in
from tests.browser.recommendation_traffic import PLANTS, plant_cheaper_equal_models
from tests.integration.conftest import off_loop


def _run_job(site: Site) -> RecommendationsRun:
    """The daily insights job's recommendations step, on the site's database (as `synapgate insights run`)."""

    async def run() -> RecommendationsRun:
        engine = create_engine(site.database_url, pool_size=2)
        try:
            return await run_recommendations(engine)
        finally:
            await engine.dispose()

    result: RecommendationsRun = off_loop(asyncio.run, run())
    return result


def _value(row: Any, name: str) -> str:
    return str(row.locator(f"[data-metric='{name}']").get_attribute("data-value"))


def test_recommendations_equal_the_api(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.admin_key, "/dashboard/insights")
    panel = page.locator("#recommendations")
    # the worker has not run (the embedded default runs it in process: test_dashboard_pages.py)
    assert "Not computed yet" in panel.locator(".empty").inner_text()
    assert site.api("/analytics/recommendations", source="snapshot")["computed_at"] is None
    assert panel.locator("tbody tr").count() == 0

    off_loop(asyncio.run, plant_cheaper_equal_models(site.database_url, site.user_a))
    run = _run_job(site)
    assert run.recommendations == len(PLANTS)
    snap = site.api("/analytics/recommendations", source="snapshot")
    live = site.api("/analytics/recommendations")
    assert snap["data"] == live["data"] and len(snap["data"]) == len(PLANTS)

    _page_equals(page, site, "/dashboard/insights", snap)

    mine = new_page()  # a user key: its own snapshot, equal to what its key reads from the API
    sign_in(mine, site, site.key_a, "/dashboard/insights")
    own = site.api("/analytics/recommendations", key=site.key_a, source="snapshot")
    assert own["data"] == site.api("/analytics/recommendations", key=site.key_a)["data"]
    assert len(own["data"]) == len(PLANTS)  # only user A's traffic is tagged
    _page_equals(mine, site, "/dashboard/insights", own)

    theirs = new_page()  # B has no tagged traffic: computed, nothing for them, said so
    sign_in(theirs, site, site.key_b, "/dashboard/insights")
    assert site.api("/analytics/recommendations", key=site.key_b, source="snapshot")["data"] == []
    panel_b = theirs.locator("#recommendations")
    assert panel_b.locator("tbody tr").count() == 0
    assert "Nothing to recommend for your traffic" in panel_b.locator(".empty").inner_text()


def _page_equals(page: Any, site: Site, path: str, snap: dict[str, Any]) -> None:
    """Every recommendation's figures on the page equal the API's (`data-value`s), in the API's order."""
    page.goto(f"{site.url}{path}")
    panel = page.locator("#recommendations")
    shown = panel.locator("tbody tr").evaluate_all(
        "rs => rs.map(r => [r.dataset.tag, r.dataset.currentModel])"
    )
    assert shown == [[r["tag"], r["current_model"]] for r in snap["data"]]
    computed = panel.locator("[data-metric='recommendations_computed_at']").get_attribute("data-value")
    assert datetime.fromisoformat(str(computed)) == datetime.fromisoformat(snap["computed_at"])
    for r in snap["data"]:
        row = panel.locator(f"tr[data-tag='{r['tag']}'][data-current-model='{r['current_model']}']")
        assert _value(row, "recommended_model") == r["recommended_model"]
        assert int(_value(row, "recommendation_requests")) == r["requests"]
        assert _value(row, "recommendation_current_cost_usd") == r["current_cost_usd"]
        assert _value(row, "recommendation_projected_cost_usd") == r["projected_cost_usd"]
        assert _value(row, "recommendation_savings_usd") == r["savings_usd"]
        assert _value(row, "recommendation_savings_pct") == r["savings_pct"]
        for arm in ("current", "candidate"):
            assert int(_value(row, f"evidence_{arm}_requests")) == r["evidence"][arm]["requests"]
            assert int(_value(row, f"evidence_{arm}_ratings")) == r["evidence"][arm]["ratings"]
