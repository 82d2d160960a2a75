"""Screenshots of the dashboard into docs/screenshots/: a real gateway on a temporary SQLite database,
seeded through the public APIs (the browser tests' seed plus more traffic), some rows moved back over two
weeks so the charts have a shape, driven by Debian's Chromium.

    .venv/bin/python scripts/screenshots.py
    .venv/bin/python scripts/screenshots.py costs users user insights   # only these pages
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright
from sqlalchemy import create_engine, select, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.mock_upstream import MockConfig, MockServerThread  # noqa: E402
from migrations.runner import upgrade  # noqa: E402
from storage.db import create_engine as create_async_engine  # noqa: E402
from storage.insights.service import run_churn, run_recommendations  # noqa: E402
from storage.models import UsageLog, table_of  # noqa: E402
from storage.usage.rollups import rebuild_usage_rollups  # noqa: E402
from tests.browser.conftest import ADMIN_KEY, CHROMIUM, _seed  # noqa: E402
from tests.browser.recommendation_traffic import plant_cheaper_equal_models  # noqa: E402
from tests.integration.conftest import GatewayThread, make_settings  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-haiku", "claude-3-sonnet", "gemini-1.5-flash"]


def more_traffic(url: str, keys: list[str], count: int) -> None:
    rng = random.Random(7)
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(count):
            model = rng.choices(MODELS, weights=[8, 3, 4, 2, 3])[0]
            tokens = f"[mock completion_tokens={rng.randint(20, 400)}]"
            directive = "[mock status=500]" if rng.random() < 0.03 else tokens
            prompt = f"Task {i}: summarise. {directive}"
            client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": prompt}]},
                headers={"Authorization": f"Bearer {rng.choice(keys)}"},
            )


def spread_over_two_weeks(sync_url: str) -> None:
    """Move most rows back in time (a demo only), then rebuild the rollups from usage_logs."""
    rng = random.Random(11)
    logs = table_of(UsageLog)
    engine = create_engine(sync_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ids = [row[0] for row in conn.execute(select(logs.c.id)).all()]
        for row_id in ids[:-40]:
            when = now - timedelta(days=rng.triangular(0, 13, 10), minutes=rng.randint(0, 600))
            conn.execute(update(logs).where(logs.c.id == row_id).values(created_at=when))
        rebuild_usage_rollups(conn)
    engine.dispose()


async def predict_churn(url: str) -> None:
    """The daily insights job (churn, recommendations), so the users and insights pages show its results."""
    engine = create_async_engine(url, pool_size=1)
    try:
        await run_churn(engine)
        await run_recommendations(engine)
    finally:
        await engine.dispose()


def main() -> None:
    only = set(sys.argv[1:])  # names of the screenshots to write (default: all)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sg-shots-"))
    database = tmp / "synapgate.db"
    upgrade(f"sqlite+aiosqlite:///{database}")
    mock = MockServerThread(MockConfig(latency_ms=25))
    mock.start()
    settings = make_settings(
        f"sqlite+aiosqlite:///{database}",
        None,
        mock.url,
        admin_key=ADMIN_KEY,
        store_message_content=True,
        upstream_max_retries=0,
    )
    server = GatewayThread(settings)
    server.start()
    try:
        site = _seed(server.url)
        more_traffic(server.url, [site.key_a, site.key_b], 240)
        # tagged traffic with a cheaper-equal model per tag (priced, so the rollups below include it)
        asyncio.run(plant_cheaper_equal_models(f"sqlite+aiosqlite:///{database}", site.user_b))
        spread_over_two_weeks(f"sqlite:///{database}")
        asyncio.run(predict_churn(f"sqlite+aiosqlite:///{database}"))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            for scheme in ("light",):
                context = browser.new_context(viewport={"width": 1366, "height": 900}, color_scheme=scheme)
                page = context.new_page()
                page.goto(f"{server.url}/dashboard/login")
                if not only or "login" in only:
                    page.screenshot(path=str(OUT / "login.png"))
                page.fill("input[name=key]", ADMIN_KEY)
                page.press("input[name=key]", "Enter")
                page.wait_for_load_state("networkidle")
                today = datetime.now(UTC).date()
                query = f"start={today - timedelta(days=13)}&end={today}"
                for name, path in (
                    ("overview", f"/dashboard?{query}"),
                    ("costs", f"/dashboard/costs?{query}&model_size=3"),
                    ("models", f"/dashboard/models?{query}"),
                    ("requests", f"/dashboard/requests?{query}"),
                    ("request", f"/dashboard/requests/{site.request_ids_a[3]}"),
                    ("users", f"/dashboard/users?{query}"),
                    ("user", f"/dashboard/users/{site.user_a}?{query}"),
                    ("keys", "/dashboard/keys"),
                    ("billing", f"/dashboard/billing?user_id={site.user_a}"),
                    ("catalog", "/dashboard/catalog?model=gpt-4o-mini"),
                    ("insights", "/dashboard/insights"),
                ):
                    if only and name not in only:
                        continue
                    page.goto(f"{server.url}{path}")
                    page.wait_for_load_state("networkidle")
                    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                if only and "conversation" not in only:
                    context.close()
                    continue
                page.goto(f"{server.url}/dashboard/requests/{site.request_ids_a[3]}")
                href = page.locator("a[href^='/dashboard/conversations/']").first.get_attribute("href")
                page.goto(f"{server.url}{href}")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / "conversation.png"), full_page=True)
                context.close()
            if only and "user-phone" not in only:
                browser.close()
                return
            phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page = phone.new_page()
            page.goto(f"{server.url}/dashboard/login")
            page.fill("input[name=key]", site.key_a)
            page.press("input[name=key]", "Enter")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(OUT / "user-phone.png"), full_page=True)
            phone.close()
            browser.close()
    finally:
        server.stop()
        mock.stop()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
