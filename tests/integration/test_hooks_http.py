"""Webhooks, alerts and Stripe through the running gateway's HTTP API (issue 12, the wiring).

- A receiver that is down for a minute (the delivery clock is injected, nothing sleeps a minute) gets every
  event afterwards — `invoice.created`, `credits.low` (raised by a real chat call), `key.expired` — once
  each, every signature verifying with `standardwebhooks`; a user key sees only its own endpoints.
- A hooks.slack.com URL gets Slack's `{"text"}` body (its name resolved to a local receiver).
- A replayed Stripe event credits once through `POST /api/v1/billing/stripe/webhook` (no admin key; the
  Stripe signature is the auth); a bad signature is a 400 and changes nothing; checkout answers 503 when
  Stripe is not configured and a Checkout URL when it is.
- On SQLite, `serve` runs the job runner in-process: an invoice's event arrives without anyone driving it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
import stripe
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import update
from standardwebhooks import Webhook

from storage.accounts.users import create_user
from storage.db import create_engine
from storage.models import ApiKey, table_of
from storage.webhooks.alerts import emit_key_expirations
from storage.webhooks.payloads import CreditsLow
from storage.webhooks.service import WebhookScope, create_endpoint, deliver_due, enqueue
from tests.environment import free_port
from tests.integration.helpers import ADMIN, REPO, api, cli, cli_env, error_of

pytestmark = pytest.mark.integration

STRIPE_SECRET = "whsec_test_hooks_http"


@pytest.fixture
def gateway_transport() -> str:
    return "asgi"


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    # The delivery passes of these tests run on an injected clock: the in-process runner (SQLite) polls
    # rarely so that it does not race them. Stripe: the webhook secret only (checkout is not configured).
    return {"webhook_poll_seconds": 60, "stripe_webhook_secret": STRIPE_SECRET, "admin_key": ADMIN}


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 that is started late (the "down" receiver)."""

    port: int = field(default_factory=free_port)
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.path, dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class SlackToLocal(AbstractResolver):
    """DNS for the test: hooks.slack.com is this machine, so a real Slack-shaped URL reaches the receiver."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host in ("hooks.slack.com", "127.0.0.1"), host
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    yield r
    await r.stop()


api_keys = table_of(ApiKey)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=SlackToLocal())) as session:
        yield session


async def expire_key(gw: Any, key_id: str, at: datetime) -> None:
    async with gw.engine.begin() as conn:
        await conn.execute(update(api_keys).where(api_keys.c.id == uuid.UUID(key_id)).values(expires_at=at))


async def test_down_receiver_gets_every_event_once_signed_and_scoped(
    gateway: Any, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    gw = gateway
    user_id, key = await gw.seed_user("1")
    _other_id, other_key = await gw.seed_user("1")
    events = ["invoice.created", "credits.low", "key.expired"]

    made = await api(
        gw,
        "POST",
        "/webhooks",
        json={"url": receiver.url("/hook"), "events": events, "user_id": str(user_id)},
    )
    assert made.status_code == 201, made.text
    endpoint = made.json()
    secret = endpoint["secret"]
    assert secret.startswith("whsec_") and endpoint["format"] == "json"
    slack = await api(
        gw,
        "POST",
        "/webhooks",
        json={
            "url": receiver.url("/services/T0/B0/x", "hooks.slack.com"),
            "events": ["invoice.created"],
            "user_id": str(user_id),
        },
    )
    assert slack.status_code == 201 and slack.json()["format"] == "slack", slack.text
    # The secret is shown once: never in a read.
    listed = await api(gw, "GET", "/webhooks")
    assert {e["id"] for e in listed.json()["data"]} >= {endpoint["id"], slack.json()["id"]}
    assert "secret" not in (await api(gw, "GET", f"/webhooks/{endpoint['id']}")).json()
    assert all("secret" not in e for e in listed.json()["data"])
    # A user key manages its own endpoints only; anyone else's is a 404, as if it did not exist.
    assert (await api(gw, "GET", f"/webhooks/{endpoint['id']}", key=key)).status_code == 200
    error_of(await api(gw, "GET", f"/webhooks/{endpoint['id']}", key=other_key), 404)
    error_of(await api(gw, "DELETE", f"/webhooks/{endpoint['id']}", key=other_key), 404)
    error_of(await api(gw, "GET", f"/webhooks/{endpoint['id']}/deliveries", key=other_key), 404)
    assert (await api(gw, "GET", "/webhooks", key=other_key)).json()["total"] == 0
    bad = error_of(
        await api(gw, "POST", "/webhooks", json={"url": receiver.url("/x"), "events": ["nope"]}), 400
    )
    assert bad["param"] == "events" and bad["code"] == "invalid_webhook"
    aimed = await api(
        gw,
        "POST",
        "/webhooks",
        key=other_key,
        json={"url": receiver.url("/x"), "events": events, "user_id": str(user_id)},
    )
    error_of(aimed, 404)

    # credits.low: a real call takes the balance (1 USD) under a threshold just below it; the next call,
    # already under, raises nothing more.
    alerts = await api(gw, "PUT", f"/users/{user_id}/alerts", json={"low_balance_usd": "0.999999999"})
    assert alerts.status_code == 200 and alerts.json()["low_balance_nano"] == 999_999_999, alerts.text
    error_of(
        await api(gw, "PUT", f"/users/{user_id}/alerts", key=other_key, json={"low_balance_usd": "1"}), 404
    )
    error_of(await api(gw, "PUT", f"/users/{user_id}/alerts", json={"low_balance_usd": "-1"}), 400)
    client = gw.openai(key)
    for _ in range(2):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    # invoice.created: closing a period through the API.
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    invoice = await api(
        gw,
        "POST",
        "/billing/invoices",
        json={
            "user_id": str(user_id),
            "period_start": (end - timedelta(days=1)).isoformat(),
            "period_end": end.isoformat(),
        },
    )
    assert invoice.status_code == 201, invoice.text
    # key.expired: the periodic job finds the key once its expiry has passed (once, however often it runs).
    key_id = (await api(gw, "GET", f"/keys?user_id={user_id}")).json()["data"][0]["id"]
    await expire_key(gw, key_id, datetime.now(UTC) - timedelta(seconds=1))
    assert await emit_key_expirations(gw.engine) == 1
    assert await emit_key_expirations(gw.engine) == 0

    # The receiver is down for a minute; the delivery clock walks the backoff schedule (0, 5 s, 35 s).
    t0 = datetime.now(UTC)
    for offset in (0, 5, 35):
        report = await deliver_due(gw.engine, http, now=t0 + timedelta(seconds=offset), http_timeout=2)
        assert report.delivered == 0 and report.retrying == 4, report
    pending = (await api(gw, "GET", f"/webhooks/{endpoint['id']}/deliveries", key=key)).json()
    assert pending["total"] == 3 and {d["status"] for d in pending["data"]} == {"pending"}
    assert all(d["attempts"] == 3 and d["last_error"] for d in pending["data"])
    await receiver.start()
    assert (await deliver_due(gw.engine, http, now=t0 + timedelta(seconds=60), http_timeout=2)).attempted == 0
    report = await deliver_due(gw.engine, http, now=t0 + timedelta(seconds=95), http_timeout=2)
    assert report.delivered == 4 and report.retrying == 0, report
    assert (await deliver_due(gw.engine, http, now=t0 + timedelta(hours=25), http_timeout=2)).attempted == 0

    json_hits = [(h, b) for p, h, b in receiver.got if p == "/hook"]
    got = {}
    for headers, body in json_hits:
        Webhook(secret).verify(body, headers)  # raises unless the signature is ours over exactly this body
        envelope = json.loads(body)
        got[envelope["type"]] = envelope["data"]
    assert len(json_hits) == 3 and set(got) == set(events)
    assert len({h["webhook-id"] for h, _ in json_hits}) == 3
    assert (
        got["credits.low"]["user_id"] == str(user_id) and got["credits.low"]["threshold_usd"] == "0.999999999"
    )
    assert got["credits.low"]["balance_nano"] < 999_999_999
    assert got["invoice.created"]["invoice_id"] == invoice.json()["id"]
    assert got["invoice.created"]["total_nano"] == invoice.json()["total_nano"]
    assert got["key.expired"]["key_id"] == key_id
    slack_hits = [(h, b) for p, h, b in receiver.got if p == "/services/T0/B0/x"]
    assert len(slack_hits) == 1 and slack_hits[0][0]["Host"].startswith("hooks.slack.com")
    assert (
        set(json.loads(slack_hits[0][1])) == {"text"}
        and invoice.json()["id"] in json.loads(slack_hits[0][1])["text"]
    )
    done = (await api(gw, "GET", f"/webhooks/{endpoint['id']}/deliveries")).json()
    assert {d["status"] for d in done["data"]} == {"delivered"} and all(
        d["attempts"] == 4 for d in done["data"]
    )

    # Deleting the endpoint stops its events: a new invoice reaches only the Slack endpoint's outbox.
    assert (await api(gw, "DELETE", f"/webhooks/{endpoint['id']}", key=key)).status_code == 204
    error_of(await api(gw, "GET", f"/webhooks/{endpoint['id']}"), 404)


def stripe_event(event_type: str, obj: dict[str, Any], event_id: str) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()


async def test_replayed_stripe_event_credits_once_through_http(gateway: Any) -> None:
    gw = gateway
    user_id, _key = await gw.seed_user("0")
    session = {
        "id": f"cs_test_{uuid.uuid4().hex[:10]}",
        "object": "checkout.session",
        "client_reference_id": str(user_id),
        "metadata": {"user_id": str(user_id)},
        "amount_total": 2500,
        "currency": "usd",
        "payment_status": "paid",
        "payment_intent": f"pi_{uuid.uuid4().hex[:10]}",
    }
    body = stripe_event("checkout.session.completed", session, f"evt_{uuid.uuid4().hex[:12]}")

    async def post(payload: bytes, signature: str | None) -> Any:
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers["stripe-signature"] = signature
        return await gw.request("POST", "/api/v1/billing/stripe/webhook", content=payload, headers=headers)

    async def balance() -> int:
        return int((await api(gw, "GET", f"/billing/balance/{user_id}")).json()["balance_nano"])

    sign = stripe.WebhookSignature.generate_signature_header
    bad = error_of(await post(body, sign(body.decode(), "whsec_not_the_secret")), 400)
    assert bad["code"] == "invalid_signature"
    error_of(await post(body, None), 400)
    assert await balance() == 0
    first = await post(body, sign(body.decode(), STRIPE_SECRET))
    assert first.status_code == 200, first.text
    assert first.json()["action"] == "credited" and first.json()["amount_nano"] == 25 * 10**9
    replay = await post(body, sign(body.decode(), STRIPE_SECRET))  # Stripe retries with a fresh signature
    assert replay.status_code == 200 and replay.json()["action"] == "duplicate", replay.text
    assert await balance() == 25 * 10**9
    # Checkout needs the Stripe API key, which this gateway does not have: 503, in the error envelope.
    missing = error_of(
        await api(gw, "POST", "/billing/checkout", json={"user_id": str(user_id), "amount_usd": "25"}), 503
    )
    assert missing["code"] == "payments_not_configured"


@dataclass
class FakeStripe:
    """Just enough of api.stripe.com: POST /v1/checkout/sessions."""

    port: int = field(default_factory=free_port)
    forms: list[dict[str, list[str]]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def create_session(self, request: web.Request) -> web.Response:
        form = parse_qs(await request.text())
        self.forms.append(form)
        sid = f"cs_test_{uuid.uuid4().hex[:12]}"
        return web.json_response(
            {"id": sid, "object": "checkout.session", "url": f"https://checkout.stripe.com/c/pay/{sid}"}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self.create_session)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


FAKE_STRIPE = FakeStripe()


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "gateway_settings_overrides",
    [
        {
            "stripe_api_key": "sk_test_fake",
            "stripe_api_base": f"http://127.0.0.1:{FAKE_STRIPE.port}",
            "admin_key": ADMIN,
        }
    ],
)
@pytest.mark.parametrize("gateway_transport", ["http"])  # uvicorn's own loop; the fake Stripe uses this one
async def test_checkout_returns_the_session_url(gateway: Any) -> None:
    gw = gateway
    await FAKE_STRIPE.start()
    try:
        user_id, key = await gw.seed_user("0")
        made = await api(
            gw, "POST", "/billing/checkout", key=key, json={"user_id": str(user_id), "amount_usd": "25.50"}
        )
        assert made.status_code == 201, made.text
        assert (
            made.json()["url"].startswith("https://checkout.stripe.com/")
            and made.json()["amount_cents"] == 2550
        )
        assert FAKE_STRIPE.forms[-1]["client_reference_id"] == [str(user_id)]
        assert FAKE_STRIPE.forms[-1]["line_items[0][price_data][unit_amount]"] == ["2550"]
        cents = error_of(
            await api(
                gw, "POST", "/billing/checkout", json={"user_id": str(user_id), "amount_usd": "25.001"}
            ),
            400,
        )
        assert cents["param"] == "amount_usd"
        other_id, _ = await gw.seed_user("0")
        error_of(
            await api(
                gw, "POST", "/billing/checkout", key=key, json={"user_id": str(other_id), "amount_usd": "25"}
            ),
            404,
        )
    finally:
        assert FAKE_STRIPE.runner is not None
        await FAKE_STRIPE.runner.cleanup()
    # Stripe unreachable: a 503 in the error envelope, never a 500.
    down = await api(gw, "POST", "/billing/checkout", json={"user_id": str(user_id), "amount_usd": "25"})
    assert error_of(down, 503)["code"] == "payments_unavailable"


@pytest.mark.parametrize(
    ("backend", "gateway_settings_overrides"),
    [
        ("sqlite", {"webhook_poll_seconds": 1, "admin_key": ADMIN}),  # always in-process on SQLite
        ("postgres+redis", {"webhook_poll_seconds": 1, "admin_key": ADMIN, "jobs_in_process": True}),
    ],
)
async def test_serve_runs_the_jobs_in_process(gateway: Any, receiver: Receiver) -> None:
    """SQLite: the in-process runner; PostgreSQL + SYNAPGATE_JOBS_IN_PROCESS: procrastinate inside serve."""
    gw = gateway
    await receiver.start()
    user_id, _key = await gw.seed_user("0")
    made = await api(
        gw, "POST", "/webhooks", json={"url": receiver.url("/in-process"), "events": ["invoice.created"]}
    )
    secret = made.json()["secret"]
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    invoice = await api(
        gw,
        "POST",
        "/billing/invoices",
        json={
            "user_id": str(user_id),
            "period_start": (end - timedelta(days=1)).isoformat(),
            "period_end": end.isoformat(),
        },
    )
    assert invoice.status_code == 201, invoice.text
    await asyncio.wait_for(receiver.arrived.wait(), 30)  # the runner polls every second
    assert len(receiver.got) == 1, "the in-process runner did not deliver"
    _path, headers, body = receiver.got[0]
    assert Webhook(secret).verify(body, headers)["data"]["invoice_id"] == invoice.json()["id"]


async def test_cli_users_alerts_sets_shows_and_clears_the_threshold(sqlite_database: str) -> None:
    engine = create_engine(sqlite_database, pool_size=1)
    try:
        async with engine.begin() as conn:
            user = await create_user(conn, f"{uuid.uuid4().hex[:10]}@example.com")
    finally:
        await engine.dispose()
    uid = str(user.user_id)
    run = await asyncio.to_thread(cli, sqlite_database, "users", "alerts", uid, "--low-balance-usd", "2.5")
    assert run.code == 0, run.err
    assert json.loads(run.out)["low_balance_threshold_nano"] == 2_500_000_000
    shown = await asyncio.to_thread(cli, sqlite_database, "users", "alerts", uid)
    assert (
        json.loads(shown.out)["low_balance_threshold_usd"] == json.loads(run.out)["low_balance_threshold_usd"]
    )
    off = await asyncio.to_thread(cli, sqlite_database, "users", "alerts", uid, "--off")
    assert off.code == 0 and json.loads(off.out)["low_balance_threshold_nano"] is None
    bad = await asyncio.to_thread(cli, sqlite_database, "users", "alerts", uid, "--low-balance-usd", "lots")
    assert bad.code == 1 and "--low-balance-usd" in bad.err and not bad.out
    unknown = await asyncio.to_thread(cli, sqlite_database, "users", "alerts", str(uuid.uuid4()), "--off")
    assert unknown.code == 1 and "no user" in unknown.err


async def test_synapgate_worker_delivers_the_outbox_and_stops_on_sigterm(
    sqlite_database: str, receiver: Receiver
) -> None:
    await receiver.start()
    engine = create_engine(sqlite_database, pool_size=1)
    try:
        async with engine.begin() as conn:
            user = await create_user(conn, f"{uuid.uuid4().hex[:10]}@example.com")
            made = await create_endpoint(
                conn, WebhookScope(user_id=None), url=receiver.url("/worker"), events=["credits.low"]
            )
            payload = CreditsLow(user_id=user.user_id, balance_nano=1, threshold_nano=2)
            assert await enqueue(conn, "credits.low", payload, user_id=user.user_id) == 1
    finally:
        await engine.dispose()
    env = cli_env(sqlite_database, {"SYNAPGATE_WEBHOOK_POLL_SECONDS": "1", "SYNAPGATE_LOG_LEVEL": "warning"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "worker",
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(receiver.arrived.wait(), 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    _path, headers, body = receiver.got[0]
    assert Webhook(made.secret).verify(body, headers)["data"]["user_id"] == str(user.user_id)
