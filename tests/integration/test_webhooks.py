"""Webhook alerts end to end: the outbox in the caller's transaction, a real receiver that is down and then
up, Standard Webhooks signatures, user scoping, the retry schedule and the 24-hour give-up, Slack bodies."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from storage.accounts.users import create_user
from storage.db import create_engine
from storage.models import WebhookDelivery, table_of
from storage.webhooks import backoff
from storage.webhooks.payloads import CreditsLow, InvoiceCreated
from storage.webhooks.service import (
    EndpointNotFound,
    WebhookInputError,
    WebhookScope,
    create_endpoint,
    delete_endpoint,
    deliver_due,
    enqueue,
    list_deliveries,
    list_endpoints,
)
from tests.environment import free_port

pytestmark = pytest.mark.integration

ADMIN = WebhookScope(user_id=None)
outbox = table_of(WebhookDelivery)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 that can be started late (the "down" receiver) and made to fail."""

    port: int
    status: int = 200
    got: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append(Received(request.path, dict(request.headers), await request.read()))
        return web.Response(status=self.status, text="ok" if self.status < 300 else "receiver says no")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture(params=["postgres", "sqlite"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    url = request.getfixturevalue("pg_reset_database" if request.param == "postgres" else "sqlite_database")
    engine = create_engine(url, pool_size=3)
    yield engine
    await engine.dispose()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    yield r
    await r.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def two_users(engine: AsyncEngine) -> tuple[uuid.UUID, uuid.UUID]:
    async with engine.begin() as conn:
        a = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
        b = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
    return a.user_id, b.user_id


def low(user_id: uuid.UUID, balance: int) -> CreditsLow:
    return CreditsLow(user_id=user_id, balance_nano=balance, threshold_nano=1_000_000_000)


async def test_down_receiver_gets_every_event_once_after_it_comes_up(
    engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    alice, bob = await two_users(engine)
    async with engine.begin() as conn:
        everything = await create_endpoint(
            conn, ADMIN, url=receiver.url("/all"), events=["credits.low", "invoice.created"]
        )
        alices = await create_endpoint(
            conn, WebhookScope(user_id=alice), url=receiver.url("/alice"), events=["credits.low"]
        )
    assert everything.secret.startswith("whsec_") and alices.endpoint.user_id == alice

    t0 = datetime.now(UTC).replace(microsecond=0)
    async with engine.begin() as conn:  # the events' causes and their outbox rows: one transaction each
        assert await enqueue(conn, "credits.low", low(alice, 5), user_id=alice, now=t0) == 2
        assert await enqueue(conn, "credits.low", low(bob, 7), user_id=bob, now=t0) == 1
        invoice = InvoiceCreated(
            invoice_id=uuid.uuid4(), user_id=bob, period_start=t0, period_end=t0, total_nano=1_500_000_000
        )
        assert await enqueue(conn, "invoice.created", invoice, user_id=bob, now=t0) == 1
    async with engine.begin() as conn:  # an event whose transaction rolls back leaves nothing behind
        await enqueue(conn, "credits.low", low(alice, 1), user_id=alice, now=t0)
        await conn.rollback()

    # The receiver is down: every attempt fails and is rescheduled by the backoff, nothing is lost.
    first = await deliver_due(engine, http, now=t0)
    assert (first.delivered, first.retrying, first.gave_up) == (0, 4, 0)
    assert (await deliver_due(engine, http, now=t0 + timedelta(seconds=4))).attempted == 0  # not due yet
    second = await deliver_due(engine, http, now=t0 + timedelta(seconds=5))
    assert second.retrying == 4
    async with engine.connect() as conn:
        pending = (
            await conn.execute(text("SELECT attempts, next_attempt_at, last_error FROM webhook_deliveries"))
        ).all()
    assert {r.attempts for r in pending} == {2}
    assert all(r.last_error for r in pending)

    await receiver.start()
    up = await deliver_due(engine, http, now=t0 + timedelta(seconds=35))
    assert (up.delivered, up.retrying, up.gave_up) == (4, 0, 0)
    assert (await deliver_due(engine, http, now=t0 + timedelta(hours=30))).attempted == 0  # never resent

    assert len(receiver.got) == 4
    ids = [r.headers["webhook-id"] for r in receiver.got]
    assert len(set(ids)) == 4
    secrets = {"/all": everything.secret, "/alice": alices.secret}
    seen: list[tuple[str, str, str]] = []
    for r in receiver.got:
        data = Webhook(secrets[r.path]).verify(r.body, r.headers)  # raises on a bad signature
        seen.append((r.path, data["type"], data["data"]["user_id"]))
        with pytest.raises(Exception, match="signature"):  # the other endpoint's secret does not verify
            Webhook(secrets["/alice" if r.path == "/all" else "/all"]).verify(r.body, r.headers)
    assert sorted(seen) == sorted(
        [
            ("/all", "credits.low", str(alice)),
            ("/all", "credits.low", str(bob)),
            ("/all", "invoice.created", str(bob)),
            ("/alice", "credits.low", str(alice)),  # the user-scoped endpoint: only Alice's event
        ]
    )
    money = next(
        Webhook(secrets[r.path]).verify(r.body, r.headers) for r in receiver.got if r.path == "/alice"
    )
    assert money["data"]["balance_nano"] == 5 and money["data"]["balance_usd"] == "0.000000005"

    async with engine.connect() as conn:
        rows, total = await list_deliveries(conn, WebhookScope(user_id=alice), alices.endpoint.id)
    assert total == 1 and rows[0].status == "delivered" and rows[0].attempts == 3
    assert rows[0].last_status == 200 and rows[0].webhook_id == next(
        r.headers["webhook-id"] for r in receiver.got if r.path == "/alice"
    )


async def test_gives_up_after_24_hours_on_the_backoff_schedule(
    engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    alice, _ = await two_users(engine)
    receiver.status = 500
    await receiver.start()
    async with engine.begin() as conn:
        await create_endpoint(conn, ADMIN, url=receiver.url("/x"), events=["credits.low"])
    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    async with engine.begin() as conn:
        await enqueue(conn, "credits.low", low(alice, 1), user_id=alice, now=t0)

    attempts_at: list[datetime] = []
    clock = t0
    for _ in range(100):
        report = await deliver_due(engine, http, now=clock)
        if report.attempted:
            attempts_at.append(clock)
        if report.gave_up:
            break
        async with engine.connect() as conn:
            clock = (await conn.execute(select(outbox.c.next_attempt_at))).scalar_one()
    assert attempts_at == backoff.schedule(t0)
    assert attempts_at[1] - t0 == timedelta(seconds=5) and attempts_at[2] - t0 == timedelta(seconds=35)
    assert attempts_at[-1] == t0 + timedelta(hours=24)
    assert len(receiver.got) == len(attempts_at)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, attempts, last_status, last_error FROM webhook_deliveries")
            )
        ).one()
    assert row.status == "failed" and row.attempts == len(attempts_at) and row.last_status == 500
    assert "receiver says no" in row.last_error
    assert (await deliver_due(engine, http, now=t0 + timedelta(days=3))).attempted == 0


async def test_slack_endpoints_get_text_and_scopes_hold(
    engine: AsyncEngine, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    alice, bob = await two_users(engine)
    await receiver.start()
    async with engine.begin() as conn:
        slack = await create_endpoint(
            conn, ADMIN, url=receiver.url("/slack"), events=["credits.low"], format="slack"
        )
        auto = await create_endpoint(
            conn, ADMIN, url="https://hooks.slack.com/services/T0/B0/xyz", events=["key.expired"]
        )
        with pytest.raises(WebhookInputError) as bad:
            await create_endpoint(conn, ADMIN, url=receiver.url("/y"), events=["nope"])
        assert bad.value.param == "events"
        with pytest.raises(EndpointNotFound):  # a user cannot aim an endpoint at someone else
            await create_endpoint(
                conn, WebhookScope(user_id=alice), url=receiver.url("/z"), events=["credits.low"], user_id=bob
            )
        bobs = await create_endpoint(
            conn, WebhookScope(user_id=bob), url=receiver.url("/bob"), events=["credits.low"]
        )
    assert slack.endpoint.format == "slack" and auto.endpoint.format == "slack"
    async with engine.begin() as conn:
        await enqueue(conn, "credits.low", low(alice, 2_500_000_000), user_id=alice)
    assert (await deliver_due(engine, http)).delivered == 1  # Bob's endpoint does not get Alice's event
    body = receiver.got[0].body
    assert receiver.got[0].path == "/slack"
    assert body.startswith(b'{"text":') and b"$2.5" in body and str(alice).encode() in body

    async with engine.begin() as conn:
        mine, total = await list_endpoints(conn, WebhookScope(user_id=bob))
        assert total == 1 and mine[0].id == bobs.endpoint.id
        assert not hasattr(mine[0], "secret")
        _, all_total = await list_endpoints(conn, ADMIN)
        assert all_total == 3
        with pytest.raises(EndpointNotFound):
            await delete_endpoint(conn, WebhookScope(user_id=alice), bobs.endpoint.id)
        with pytest.raises(EndpointNotFound):
            await list_deliveries(conn, WebhookScope(user_id=alice), bobs.endpoint.id)
        await delete_endpoint(conn, WebhookScope(user_id=bob), bobs.endpoint.id)
        assert (await list_endpoints(conn, WebhookScope(user_id=bob)))[1] == 0
