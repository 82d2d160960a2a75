"""The job runner: registered periodic jobs run, and webhook delivery runs under it, on both databases —
procrastinate (its own schema, installed on first start) on PostgreSQL, the in-process runner on SQLite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from config import Settings
from storage.accounts.users import create_user
from storage.db import create_engine
from storage.jobs.runner import (
    JobResources,
    PeriodicJob,
    default_registry,
    ensure_job_schema,
    start_jobs_in_process,
)
from storage.webhooks.payloads import CreditsLow
from storage.webhooks.service import WebhookScope, create_endpoint, enqueue
from tests.environment import free_port
from tests.integration.test_webhooks import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "sqlite"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = request.getfixturevalue("pg_reset_database" if request.param == "postgres" else "sqlite_database")
    engine = create_engine(url, pool_size=3)
    yield url, engine
    await engine.dispose()


async def wait_for(predicate: object, seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the job runner")
        await asyncio.sleep(0.1)


def test_periods_map_to_crons_and_bad_ones_are_refused() -> None:
    async def noop(_: JobResources) -> None:
        return None

    assert PeriodicJob("a", 2, noop).cron() == "* * * * * */2"
    assert PeriodicJob("b", 300, noop).cron() == "*/5 * * * *"
    assert PeriodicJob("c", 86400, noop).cron() == "0 */24 * * *"
    registry = default_registry(Settings())
    with pytest.raises(ValueError, match="divide"):
        registry.add(PeriodicJob("d", 7, noop))
    with pytest.raises(ValueError, match="twice"):
        registry.add(PeriodicJob("webhooks.deliver", 1, noop))


async def test_runner_delivers_webhooks_and_runs_registered_jobs(db: tuple[str, AsyncEngine]) -> None:
    url, engine = db
    settings = Settings(database_url=url, webhook_poll_seconds=1)
    receiver = Receiver(free_port())
    await receiver.start()
    ticks: list[str] = []

    async def tick(resources: JobResources) -> None:
        async with resources.engine.connect() as conn:
            ticks.append(str((await conn.execute(text("SELECT count(*) FROM users"))).scalar()))

    registry = default_registry(settings)
    registry.add(PeriodicJob("test.tick", 1, tick))
    async with engine.begin() as conn:
        user = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
        hook = await create_endpoint(
            conn, WebhookScope(user_id=None), url=receiver.url("/hook"), events=["credits.low"]
        )
        await enqueue(
            conn,
            "credits.low",
            CreditsLow(user_id=user.user_id, balance_nano=1, threshold_nano=2),
            user_id=user.user_id,
        )
    handle = await start_jobs_in_process(settings, engine, registry)
    try:
        await wait_for(lambda: len(receiver.got) >= 1 and len(ticks) >= 2)
        await asyncio.sleep(1.5)  # more polls: the delivered event is not sent again
    finally:
        await handle.stop()
        await receiver.stop()
    assert len(receiver.got) == 1
    assert Webhook(hook.secret).verify(receiver.got[0].body, receiver.got[0].headers)["type"] == "credits.low"
    assert ticks[0] == "1"
    if url.startswith("postgresql"):
        async with engine.connect() as conn:
            installed = (
                await conn.execute(text("SELECT to_regclass('procrastinate.procrastinate_jobs')"))
            ).scalar()
        assert installed is not None
        await ensure_job_schema(url)  # a second worker's start finds it installed and changes nothing
