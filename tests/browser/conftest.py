"""Browser fixtures: the real gateway (uvicorn thread) with seeded traffic, driven by Debian's Chromium.

Playwright for Python drives `/usr/bin/chromium` (never `playwright install`: no downloads). Each module
gets one gateway on PostgreSQL with sessions in Redis (the production setup). What a browser adds (htmx,
forms, console errors, layout) does not depend on the database; the pages' SQL on the embedded default
(SQLite, sessions in the database) is walked in process by tests/integration/test_dashboard_pages.py.
Each gateway is seeded through the public APIs: two users with keys and credit, 60+ chat calls through the
mock upstream (some failing), and feedback on a message. Every page a test opens collects console errors
and page errors; a test fails if any appeared.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis as redis_sync

from devtools.mock_upstream import MockConfig, MockServerThread
from tests.environment import redis_url_for_this_process
from tests.integration.conftest import GatewayThread, make_settings, off_loop

CHROMIUM = "/usr/bin/chromium"
ADMIN_KEY = "sk-admin-browser-test"
PG_HOST = os.environ.get("SYNAPGATE_TEST_PG_HOST", "127.0.0.1")
REDIS_URL = redis_url_for_this_process()

playwright_sync = pytest.importorskip("playwright.sync_api")

if not Path(CHROMIUM).exists():  # scripts/test installs it with apt-get where it is missing
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(f"postgresql://postgres@{PG_HOST}:5432/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Site:
    """A running gateway with known data: who can sign in, and what they did."""

    url: str
    admin_key: str
    user_a: uuid.UUID
    key_a: str
    user_b: uuid.UUID
    key_b: str
    request_ids_a: list[str] = field(default_factory=list)
    request_ids_b: list[str] = field(default_factory=list)
    error_request_id: str | None = None
    database_url: str = ""  # for the jobs a test runs itself (the daily churn prediction)

    def api(self, path: str, key: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        response = httpx.get(f"{self.url}/api/v1{path}", params=params, headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()


def _seed(url: str) -> Site:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        people = []
        for name in ("ada", "bob"):
            user = client.post(
                "/api/v1/users", json={"email": f"{name}-{uuid.uuid4().hex[:6]}@example.com"}, headers=admin
            ).json()
            key = client.post(
                "/api/v1/keys", json={"user_id": user["id"], "name": f"{name}'s laptop"}, headers=admin
            ).json()
            added = client.post(
                "/api/v1/billing/add-credits",
                json={"user_id": user["id"], "amount_usd": "25", "idempotency_key": f"seed-{user['id']}"},
                headers=admin,
            )
            assert added.status_code in (200, 201), added.text
            people.append((uuid.UUID(user["id"]), key["key"]))
        (user_a, key_a), (user_b, key_b) = people
        site = Site(url, ADMIN_KEY, user_a, key_a, user_b, key_b)
        plan = [("gpt-4o-mini", key_a)] * 40 + [("claude-3-haiku", key_a)] * 14 + [("gpt-4o", key_b)] * 6
        for i, (model, key) in enumerate(plan):
            prompt = f"Question {i}: what is {i} squared? [mock completion_tokens={5 + i % 7}]"
            answer = client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": prompt}]},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert answer.status_code == 200, answer.text
            ids = site.request_ids_a if key == key_a else site.request_ids_b
            ids.append(answer.headers["x-request-id"])
            if i == 3:
                message_id = answer.headers["x-synapgate-message-id"]
                rated = client.post(
                    f"/api/v1/messages/{message_id}/feedback",
                    json={"rating": 4, "comment": "clear answer"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert rated.status_code in (200, 201), rated.text
        failed = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[mock status=500]"}]},
            headers={"Authorization": f"Bearer {key_a}"},
        )
        assert failed.status_code >= 500, failed.text
        site.error_request_id = failed.headers.get("x-request-id")
    return site


@pytest.fixture(scope="module")
def mock_provider() -> Iterator[MockServerThread]:
    server = MockServerThread(MockConfig(latency_ms=3))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(mock_provider: MockServerThread, pg_template: str) -> Iterator[Site]:
    """A gateway on PostgreSQL with Redis (sessions there), on a copy of the session's migrated template."""
    pg_name = f"sg_browser_{uuid.uuid4().hex[:10]}"
    off_loop(asyncio.run, _pg_admin(f'CREATE DATABASE "{pg_name}" TEMPLATE "{pg_template}"'))
    database_url = f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{pg_name}"
    client = redis_sync.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    settings = make_settings(
        database_url,
        REDIS_URL,
        mock_provider.url,
        admin_key=ADMIN_KEY,
        store_message_content=True,
        upstream_max_retries=0,
    )
    server = GatewayThread(settings)
    server.start()
    try:
        site = _seed(server.url)
        site.database_url = database_url
        yield site
    finally:
        server.stop()
        off_loop(asyncio.run, _pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module. Not per session: Playwright's sync API keeps an event loop running on this
    thread while it is open, which the asyncio tests of other modules must not find."""
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


class Console:
    """Console errors and uncaught page errors of a browser context.

    A page a test deliberately opens with an error status (a 404 outside the user's scope, a refused
    form) makes Chromium log "Failed to load resource … status of N"; a test names such statuses in
    `expected_statuses`. Anything else logged as an error fails the test.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected_statuses: set[int] = set()

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        text = str(msg.text)
        if any(f"status of {code} " in text for code in self.expected_statuses):
            return
        self.errors.append(f"console: {text} at {msg.location.get('url')}")

    def watch(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_page(browser: Any, console: Console) -> Iterator[Any]:
    """Make pages in fresh contexts (separate cookie jars); every one is watched for console errors."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None) -> Any:
        context = browser.new_context(viewport=viewport or {"width": 1366, "height": 900})
        contexts.append(context)
        page = context.new_page()
        console.watch(page)
        return page

    yield make
    for context in contexts:
        context.close()
    assert console.errors == [], console.errors


def sign_in(page: Any, site: Site, key: str, next_path: str = "/dashboard") -> None:
    page.goto(f"{site.url}{next_path}")
    assert "/dashboard/login" in page.url
    page.fill("input[name=key]", key)
    page.press("input[name=key]", "Enter")
    page.wait_for_load_state("networkidle")
