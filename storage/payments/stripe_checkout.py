"""Credit top-ups through Stripe Checkout: create a session, and turn Stripe's signed events into postings.

- `create_checkout` creates a Checkout Session (mode `payment`, one line of USD credit) naming the user in
  `client_reference_id` and `metadata.user_id`, and returns its URL.
- `handle_stripe_webhook` verifies the `Stripe-Signature` header (SYNAPGATE_STRIPE_WEBHOOK_SECRET), then:
  `checkout.session.completed` (paid) / `checkout.session.async_payment_succeeded` credit `amount_total`
  cents; `charge.refunded` posts a refund. Each posting is keyed by the Stripe event id
  (`credit:stripe:<id>` for credits, storage.billing.credits' prefix; `stripe:<id>` for refunds), so a
  replayed event moves nothing.

Refund rule: Stripe reports the charge's cumulative `amount_refunded`; we post the part not yet refunded,
capped at what that payment credited, and never taking the balance below zero — credit already spent on
calls cannot be clawed back from the ledger; that shortfall is kept on the payment as `unrecovered_nano`
(and logged) for the operator to settle with the customer.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config import Settings
from storage.billing.ledger.base import CreditLedger, HotMove
from storage.billing.ledger.entries import post_entry
from storage.dialect import insert_for
from storage.errors import InvalidAmount, InvalidInput, NotConfigured
from storage.models import CreditAccount, StripePayment, table_of
from storage.types import utcnow

log = logging.getLogger("synapgate.payments")

payments = table_of(StripePayment)
accounts = table_of(CreditAccount)

NANO_PER_CENT = 10_000_000
SIGNATURE_TOLERANCE_SECONDS = 300
CREDIT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


class PaymentsNotConfigured(NotConfigured, RuntimeError):
    """A Stripe setting the operation needs is missing (names the variable): a 503 in the admin API."""

    code = "payments_not_configured"


class PaymentsUnavailable(NotConfigured):
    """Stripe could not be reached or refused the request: a 503, nothing was created."""

    code = "payments_unavailable"


class InvalidTopUp(InvalidAmount):
    """The top-up amount is outside the configured bounds (or not whole cents)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="amount_usd")


class InvalidStripeSignature(InvalidInput):
    """The webhook's Stripe-Signature does not verify: nothing was changed (a 400)."""

    code = "invalid_signature"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="Stripe-Signature")


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    url: str
    amount_cents: int


@dataclass(frozen=True, slots=True)
class StripeOutcome:
    """What one Stripe event did: `credited`/`refunded` (with the amount moved), `duplicate`, or `ignored`."""

    event_id: str
    event_type: str
    action: Literal["credited", "refunded", "duplicate", "ignored"]
    user_id: uuid.UUID | None = None
    amount_nano: int = 0
    reason: str | None = None


def cents_of_usd(amount_usd: str) -> int:
    """A top-up amount in decimal USD text as whole US cents (Stripe's unit); InvalidTopUp otherwise."""
    try:
        amount = Decimal(amount_usd.strip())
    except InvalidOperation:
        raise InvalidTopUp(f"amount_usd must be a decimal amount of USD, got {amount_usd!r}") from None
    cents = amount * 100
    if not amount.is_finite() or cents != cents.to_integral_value():
        raise InvalidTopUp('amount_usd must be a whole number of cents, e.g. "25.00"')
    return int(cents)


def _secret(value: Any, variable: str) -> str:
    if value is None:
        raise PaymentsNotConfigured(f"SYNAPGATE_{variable} is not set")
    return str(value.get_secret_value())


async def create_checkout(
    settings: Settings, user_id: uuid.UUID, amount_cents: int, *, idempotency_key: str | None = None
) -> CheckoutSession:
    """Create a Stripe Checkout Session for `amount_cents` of USD credit for a user; returns its URL."""
    if not settings.stripe_min_topup_cents <= amount_cents <= settings.stripe_max_topup_cents:
        raise InvalidTopUp(
            f"amount must be between {settings.stripe_min_topup_cents} and "
            f"{settings.stripe_max_topup_cents} cents"
        )
    import stripe  # imported on use: with requests, httpx and their deps it is ~20 MB in every serving worker

    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(
        _secret(settings.stripe_api_key, "STRIPE_API_KEY"),
        base_addresses={"api": settings.stripe_api_base},
        http_client=http,
    )
    metadata = {"user_id": str(user_id)}
    params: Any = {
        "mode": "payment",
        "client_reference_id": str(user_id),
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": amount_cents,
                    "product_data": {"name": "SynapGate credit"},
                },
            }
        ],
        "success_url": settings.stripe_success_url,
        "cancel_url": settings.stripe_cancel_url,
    }
    options: Any = {"idempotency_key": idempotency_key} if idempotency_key else None
    try:
        session = await client.v1.checkout.sessions.create_async(params, options)
    except stripe.StripeError as exc:
        log.warning("stripe checkout failed", extra={"error": type(exc).__name__, "status": exc.http_status})
        raise PaymentsUnavailable(
            f"Stripe did not create the checkout session ({type(exc).__name__})"
        ) from None
    finally:
        await http.close_async()
    if not session.url:
        raise RuntimeError(f"Stripe returned checkout session {session.id} without a URL")
    return CheckoutSession(id=session.id, url=session.url, amount_cents=amount_cents)


def verify_stripe_event(payload: bytes, signature_header: str | None, secret: str) -> dict[str, Any]:
    """The event, if the header is Stripe's signature of exactly `payload`; else InvalidStripeSignature."""
    import stripe  # on use (see create_checkout)

    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature_header, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise InvalidStripeSignature(str(exc) or "bad signature") from None
    event = json.loads(payload)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise InvalidStripeSignature("not a Stripe event")
    return event


async def handle_stripe_webhook(
    engine: AsyncEngine,
    ledger: CreditLedger,
    settings: Settings,
    payload: bytes,
    signature_header: str | None,
) -> StripeOutcome:
    """Verify one Stripe webhook and post what it says, exactly once per event id."""
    event = verify_stripe_event(
        payload, signature_header, _secret(settings.stripe_webhook_secret, "STRIPE_WEBHOOK_SECRET")
    )
    event_id, event_type = event["id"], str(event.get("type"))
    obj = event.get("data", {}).get("object", {})
    if event_type in CREDIT_EVENTS:
        return await _credit(engine, ledger, event_id, event_type, obj)
    if event_type == "charge.refunded":
        return await _refund(engine, ledger, event_id, event_type, obj)
    return StripeOutcome(event_id, event_type, "ignored", reason="event type not handled")


def _user_of(session: dict[str, Any]) -> uuid.UUID | None:
    named = {session.get("client_reference_id"), (session.get("metadata") or {}).get("user_id")} - {None}
    if len(named) != 1:  # missing, or the two disagree: do not guess whose money it is
        return None
    try:
        return uuid.UUID(str(named.pop()))
    except ValueError:
        return None


async def _credit(
    engine: AsyncEngine, ledger: CreditLedger, event_id: str, event_type: str, session: dict[str, Any]
) -> StripeOutcome:
    user_id = _user_of(session)
    amount_cents = session.get("amount_total")
    if session.get("payment_status") != "paid":  # async methods: wait for async_payment_succeeded
        return StripeOutcome(event_id, event_type, "ignored", user_id, reason="not paid yet")
    if user_id is None or not isinstance(amount_cents, int) or amount_cents <= 0:
        log.error("stripe session without a usable user or amount", extra={"event_id": event_id})
        return StripeOutcome(event_id, event_type, "ignored", user_id, reason="no user or amount")
    if str(session.get("currency", "usd")).lower() != "usd":
        return StripeOutcome(event_id, event_type, "ignored", user_id, reason="not USD")
    amount_nano = amount_cents * NANO_PER_CENT
    now = utcnow()
    async with engine.begin() as conn:
        posted = await post_entry(
            conn,
            user_id=user_id,
            type="credit",
            amount_nano=amount_nano,
            idempotency_key=f"credit:stripe:{event_id}",
            description=f"Stripe Checkout {session.get('id')}",
        )
        if posted.created:
            claimed = await conn.execute(
                _insert_payment(conn)
                .values(
                    session_id=str(session.get("id")),
                    payment_intent_id=session.get("payment_intent"),
                    user_id=user_id,
                    credited_nano=amount_nano,
                    refunded_nano=0,
                    unrecovered_nano=0,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["session_id"])
                .returning(payments.c.session_id)
            )
            if claimed.scalar_one_or_none() is None:  # the same session under another event id
                await conn.rollback()
                return StripeOutcome(
                    event_id, event_type, "duplicate", user_id, reason="session already credited"
                )
    if not posted.created:
        return StripeOutcome(event_id, event_type, "duplicate", user_id)
    await ledger.after_commit([HotMove(user_id, None, amount_nano, posted.version)])
    return StripeOutcome(event_id, event_type, "credited", user_id, amount_nano)


def _insert_payment(conn: AsyncConnection) -> Any:
    return insert_for(conn, payments)


async def _refund(
    engine: AsyncEngine, ledger: CreditLedger, event_id: str, event_type: str, charge: dict[str, Any]
) -> StripeOutcome:
    intent = charge.get("payment_intent")
    refunded_cents = charge.get("amount_refunded")
    if not isinstance(intent, str) or not isinstance(refunded_cents, int):
        return StripeOutcome(event_id, event_type, "ignored", reason="no payment intent or amount")
    async with engine.begin() as conn:
        payment = (
            await conn.execute(
                select(payments).where(payments.c.payment_intent_id == intent).with_for_update()
            )
        ).one_or_none()
        if payment is None:
            return StripeOutcome(event_id, event_type, "ignored", reason="not a SynapGate top-up")
        user_id = payment.user_id
        # What this refund event newly refunds (cumulative minus what earlier events took back), capped.
        settled = payment.refunded_nano + payment.unrecovered_nano
        wanted = min(refunded_cents * NANO_PER_CENT, payment.credited_nano) - settled
        if wanted <= 0:
            return StripeOutcome(event_id, event_type, "duplicate", user_id, reason="already refunded")
        balance = (
            await conn.execute(
                select(accounts.c.balance_nano).where(accounts.c.user_id == user_id).with_for_update()
            )
        ).scalar_one_or_none() or 0
        take = min(wanted, max(balance, 0))
        posted = None
        if take > 0:
            posted = await post_entry(
                conn,
                user_id=user_id,
                type="refund",
                amount_nano=-take,
                idempotency_key=f"stripe:{event_id}",
                description=f"Stripe refund of {intent}",
            )
            if not posted.created:
                return StripeOutcome(event_id, event_type, "duplicate", user_id)
        await conn.execute(
            update(payments)
            .where(payments.c.session_id == payment.session_id)
            .values(
                refunded_nano=payments.c.refunded_nano + take,
                unrecovered_nano=payments.c.unrecovered_nano + (wanted - take),
                updated_at=utcnow(),
            )
        )
    if wanted > take:
        log.warning(
            "stripe refund exceeds the remaining balance",
            extra={"event_id": event_id, "user_id": str(user_id), "unrecovered_nano": wanted - take},
        )
    if posted is not None:
        await ledger.after_commit([HotMove(user_id, None, -take, posted.version)])
    return StripeOutcome(event_id, event_type, "refunded", user_id, -take)
