"""Stripe top-ups: a Checkout Session created against a local fake Stripe API, and signed webhook events
that credit exactly once, refuse bad signatures, and refund once (never below a zero balance)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from storage.accounts.users import create_user
from storage.billing.ledger.entries import account_state
from storage.billing.ledger.sql import SqlLedger
from storage.db import create_engine
from storage.payments.stripe_checkout import (
    InvalidStripeSignature,
    create_checkout,
    handle_stripe_webhook,
)
from tests.environment import free_port

pytestmark = pytest.mark.integration

FAKE_STRIPE_PORT = free_port()  # one per test process (xdist workers run side by side)
WEBHOOK_SECRET = "whsec_test_synapgate"
CENT = 10_000_000  # nano-USD


@dataclass
class FakeStripe:
    """Just enough of api.stripe.com: POST /v1/checkout/sessions, recording each form it received."""

    forms: list[dict[str, list[str]]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def create_session(self, request: web.Request) -> web.Response:
        form = parse_qs(await request.text())
        self.forms.append(form)
        self.auth.append(request.headers.get("Authorization", ""))
        sid = f"cs_test_{uuid.uuid4().hex[:12]}"
        return web.json_response(
            {
                "id": sid,
                "object": "checkout.session",
                "url": f"https://checkout.stripe.com/c/pay/{sid}",
                "amount_total": int(form["line_items[0][price_data][unit_amount]"][0]),
                "client_reference_id": form["client_reference_id"][0],
                "mode": "payment",
                "status": "open",
            }
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self.create_session)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", FAKE_STRIPE_PORT).start()


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    await fake.start()
    yield fake
    assert fake.runner is not None
    await fake.runner.cleanup()


def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        stripe_api_key="sk_test_fake",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=f"http://127.0.0.1:{FAKE_STRIPE_PORT}",
    )


def stripe_signature(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """Stripe-Signature as Stripe documents it: t=<unix>,v1=HMAC-SHA256(secret, "<t>.<payload>")."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()


def session_completed(user_id: uuid.UUID, cents: int, intent: str, session_id: str = "") -> dict[str, Any]:
    return {
        "id": session_id or f"cs_test_{uuid.uuid4().hex[:10]}",
        "object": "checkout.session",
        "client_reference_id": str(user_id),
        "metadata": {"user_id": str(user_id)},
        "amount_total": cents,
        "currency": "usd",
        "payment_status": "paid",
        "payment_intent": intent,
    }


@pytest.fixture(params=["postgres", "sqlite"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = request.getfixturevalue("pg_reset_database" if request.param == "postgres" else "sqlite_database")
    engine = create_engine(url, pool_size=3)
    yield url, engine
    await engine.dispose()


async def new_user(engine: AsyncEngine) -> uuid.UUID:
    async with engine.begin() as conn:
        return (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id


async def balance(engine: AsyncEngine, user_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        return (await account_state(conn, user_id))[0]


async def test_checkout_session_names_the_user_and_amount(
    db: tuple[str, AsyncEngine], fake_stripe: FakeStripe
) -> None:
    url, engine = db
    user_id = await new_user(engine)
    checkout = await create_checkout(settings(url), user_id, 2500)
    assert checkout.url.startswith("https://checkout.stripe.com/c/pay/cs_test_")
    assert checkout.amount_cents == 2500
    form = fake_stripe.forms[-1]
    assert form["client_reference_id"] == [str(user_id)]
    assert form["metadata[user_id]"] == [str(user_id)]
    assert form["payment_intent_data[metadata][user_id]"] == [str(user_id)]
    assert form["line_items[0][price_data][unit_amount]"] == ["2500"]
    assert form["line_items[0][price_data][currency]"] == ["usd"]
    assert form["mode"] == ["payment"]
    assert fake_stripe.auth[-1] == "Bearer sk_test_fake"


async def test_completed_checkout_credits_once_bad_signature_changes_nothing_refund_once(
    db: tuple[str, AsyncEngine],
) -> None:
    url, engine = db
    s = settings(url)
    ledger = SqlLedger(engine, 600)
    user_id = await new_user(engine)
    paid = event("checkout.session.completed", session_completed(user_id, 2000, "pi_1"))

    forged = paid.replace(b'"amount_total": 2000', b'"amount_total": 9000')
    with pytest.raises(InvalidStripeSignature):
        await handle_stripe_webhook(engine, ledger, s, forged, stripe_signature(paid))
    with pytest.raises(InvalidStripeSignature):
        await handle_stripe_webhook(engine, ledger, s, paid, stripe_signature(paid, secret="whsec_other"))
    with pytest.raises(InvalidStripeSignature):  # a replayed capture from an hour ago is too old
        await handle_stripe_webhook(
            engine, ledger, s, paid, stripe_signature(paid, timestamp=int(time.time()) - 3600)
        )
    with pytest.raises(InvalidStripeSignature):
        await handle_stripe_webhook(engine, ledger, s, paid, None)
    assert await balance(engine, user_id) == 0

    first = await handle_stripe_webhook(engine, ledger, s, paid, stripe_signature(paid))
    assert (first.action, first.user_id, first.amount_nano) == ("credited", user_id, 2000 * CENT)
    again = await handle_stripe_webhook(engine, ledger, s, paid, stripe_signature(paid))
    assert again.action == "duplicate"
    assert await balance(engine, user_id) == 2000 * CENT == 20 * 10**9
    async with engine.connect() as conn:
        keys = (
            await conn.execute(text("SELECT idempotency_key, type, amount_nano FROM billing_events"))
        ).all()
    event_id = json.loads(paid)["id"]
    assert [tuple(k) for k in keys] == [(f"credit:stripe:{event_id}", "credit", 2000 * CENT)]

    # The user spends $5, then Stripe refunds $8 of the $20, then the rest (cumulative amount_refunded).
    async with engine.begin() as conn:
        from storage.billing.ledger.entries import post_entry

        await post_entry(
            conn, user_id=user_id, type="usage", amount_nano=-500 * CENT, idempotency_key="usage:r1"
        )
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_1",
        "amount": 2000,
        "amount_refunded": 800,
    }
    partial = event("charge.refunded", charge)
    out = await handle_stripe_webhook(engine, ledger, s, partial, stripe_signature(partial))
    assert (out.action, out.amount_nano) == ("refunded", -800 * CENT)
    assert (
        await handle_stripe_webhook(engine, ledger, s, partial, stripe_signature(partial))
    ).action == "duplicate"
    assert await balance(engine, user_id) == (2000 - 500 - 800) * CENT

    full = event("charge.refunded", {**charge, "amount_refunded": 2000})
    out = await handle_stripe_webhook(engine, ledger, s, full, stripe_signature(full))
    # $12 more is refunded but only $7 is left: the balance stops at zero, $5 is recorded as unrecovered.
    assert (out.action, out.amount_nano) == ("refunded", -700 * CENT)
    assert await balance(engine, user_id) == 0
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT refunded_nano, unrecovered_nano FROM stripe_payments"))).one()
        refunds = (
            await conn.execute(
                text("SELECT count(*), sum(amount_nano) FROM billing_events WHERE type = 'refund'")
            )
        ).one()
    assert (row.refunded_nano, row.unrecovered_nano) == (1500 * CENT, 500 * CENT)
    assert tuple(refunds) == (2, -1500 * CENT)
    assert (
        await handle_stripe_webhook(engine, ledger, s, full, stripe_signature(full))
    ).action == "duplicate"

    unpaid = event(
        "checkout.session.completed", {**session_completed(user_id, 900, "pi_2"), "payment_status": "unpaid"}
    )
    assert (
        await handle_stripe_webhook(engine, ledger, s, unpaid, stripe_signature(unpaid))
    ).action == "ignored"
    other = event("customer.created", {"id": "cus_1"})
    assert (
        await handle_stripe_webhook(engine, ledger, s, other, stripe_signature(other))
    ).action == "ignored"
    assert await balance(engine, user_id) == 0
