"""Admin API: credits, balances, the ledger's events, and invoices.

Amounts are exact: every one is given as a decimal string of USD and as integer nano-USD, signed as in
the ledger (credits positive, charges negative). Top-ups go through the credit ledger of the running
gateway, so the Redis hot copy moves with the database. The rules (amounts, idempotency, periods) live in
storage/billing/service.py.

Invoices close a user's period `[period_start, period_end)`: the period must have ended, and it may not
overlap an invoice the user already has (409); see storage/billing/invoices.py for the lines.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from gateway.api.admin.common import Body, Struct, aware, money, shape
from gateway.api.admin.scope import AppRuntime, Caller, Engine, Paging
from storage.billing import service
from storage.billing.invoices import invoice_to_dict
from storage.payments import stripe_checkout
from storage.payments.stripe_checkout import NANO_PER_CENT

# -- response shapes -----------------------------------------------------------------------------


class CreditOut(Struct):
    """A top-up as the ledger holds it; `replayed` when the idempotency key had been used already."""

    event_id: int
    user_id: uuid.UUID
    type: str
    amount_usd: str
    amount_nano: int
    idempotency_key: str
    description: str | None
    created_at: datetime
    replayed: bool
    balance_usd: str  # the balance now (after the top-up)
    balance_nano: int


class BalanceOut(Struct):
    user_id: uuid.UUID
    balance_usd: str  # settled: Σ of the ledger
    balance_nano: int
    held_usd: str  # reserved by requests in flight
    held_nano: int
    available_usd: str  # what new requests may spend
    available_nano: int
    as_of: datetime


class EventOut(Struct):
    id: int
    type: str
    amount_usd: str
    amount_nano: int
    status: str
    request_id: str | None
    idempotency_key: str
    description: str | None
    invoice_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    created_at: datetime


class EventPage(Struct):
    data: list[EventOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class InvoiceLineOut(Struct):
    """`usage` and BYOK `fee` lines are per model; credit, refund, adjustment, subscription: per event."""

    kind: str
    amount_usd: str
    amount_nano: int
    events: int
    model: str | None = None
    provider: str | None = None
    requests: int | None = None
    byok_requests: int | None = None
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: str | None = None  # metered at catalog prices (for BYOK, not what was charged)
    cost_nano: int | None = None
    event_id: int | None = None
    description: str | None = None
    posted_at: datetime | None = None  # when the single event of this line was posted


class InvoiceTotalsOut(Struct):
    usage_usd: str
    usage_nano: int
    fees_usd: str
    fees_nano: int
    credits_usd: str
    credits_nano: int
    refunds_usd: str
    refunds_nano: int
    adjustments_usd: str
    adjustments_nano: int
    subscriptions_usd: str
    subscriptions_nano: int


class InvoiceOut(Struct):
    """`total` = Σ lines = Σ of the period's ledger events; closing − opening balance = total."""

    id: uuid.UUID
    user_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    status: str
    created_at: datetime
    lines: list[InvoiceLineOut]
    totals: InvoiceTotalsOut
    total_usd: str
    total_nano: int
    opening_balance_usd: str | None = None
    opening_balance_nano: int | None = None
    closing_balance_usd: str | None = None
    closing_balance_nano: int | None = None


class InvoicePage(Struct):
    data: list[InvoiceOut]
    total: int
    limit: int
    offset: int
    has_more: bool


# -- request shapes ------------------------------------------------------------------------------


class AddCreditsIn(Body):
    user_id: uuid.UUID
    amount_usd: Annotated[
        str, msgspec.Meta(min_length=1, max_length=40, description='decimal USD, e.g. "10.50"')
    ]
    idempotency_key: Annotated[
        str, msgspec.Meta(min_length=1, max_length=150, description="replaying the same key adds nothing")
    ]
    description: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class CheckoutIn(Body):
    user_id: uuid.UUID
    amount_usd: Annotated[
        str, msgspec.Meta(min_length=1, max_length=40, description='decimal USD in whole cents, e.g. "25.00"')
    ]
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=150)] | None = None


class CheckoutOut(Struct):
    """A Stripe Checkout Session to send the payer to; the credit is posted when Stripe reports it paid."""

    id: str
    url: str
    user_id: uuid.UUID
    amount_cents: int
    amount_usd: str
    amount_nano: int


class StripeWebhookOut(Struct):
    """What one Stripe event did: `credited`/`refunded` (the amount moved), `duplicate` or `ignored`."""

    event_id: str
    event_type: str
    action: str
    user_id: uuid.UUID | None
    amount_usd: str
    amount_nano: int
    reason: str | None


class CreateInvoiceIn(Body):
    user_id: uuid.UUID
    period_start: Annotated[datetime, msgspec.Meta(description="with a time zone, e.g. 2026-11-01T00:00:00Z")]
    period_end: Annotated[datetime, msgspec.Meta(description="exclusive; the period must have ended")]


def invoice_out(inv: Any) -> InvoiceOut:
    return msgspec.convert(invoice_to_dict(inv), InvoiceOut)


# -- credits and balances ------------------------------------------------------------------------


# -- invoices ------------------------------------------------------------------------------------


class BillingController(Controller):
    """Credits, balances, ledger events and invoices. (Guard and dependencies: on the admin router.)"""

    path = "/"
    tags = ("billing",)

    @post("/billing/add-credits")
    async def add_credits_route(
        self, caller: Caller, runtime: AppRuntime, data: JSONBody[AddCreditsIn]
    ) -> Response[CreditOut]:
        """Add credits to a user's balance, once per idempotency key: a replay returns the first top-up (200)
        and moves nothing; a first top-up answers 201. Reusing a key for another user or amount is a 409.
        Admin only."""
        caller.require_user(data.user_id)
        caller.require_admin()
        top_up = await service.add_credits(
            runtime.engine,
            runtime.ledger,
            data.user_id,
            data.amount_usd,
            data.idempotency_key,
            description=data.description,
        )
        return Response(shape(top_up, CreditOut), status_code=200 if top_up.replayed else 201)

    @get("/billing/balance/{user_id:uuid}")
    async def balance_route(
        self, caller: Caller, runtime: AppRuntime, user_id: FromPath[uuid.UUID]
    ) -> BalanceOut:
        """A user's settled balance, what requests in flight hold, and what is available to spend."""
        caller.require_user(user_id)
        return shape(await service.balance(runtime.engine, runtime.ledger, user_id), BalanceOut)

    @get("/billing/events/{user_id:uuid}")
    async def events_route(
        self,
        caller: Caller,
        engine: Engine,
        page: Paging,
        user_id: FromPath[uuid.UUID],
        event_types: Annotated[
            list[str] | None, QueryParameter(name="type", description="repeatable: usage, credit, refund, …")
        ] = None,
        start: Annotated[datetime | None, QueryParameter(description="inclusive, with a time zone")] = None,
        end: Annotated[datetime | None, QueryParameter(description="exclusive, with a time zone")] = None,
        invoice_id: FromQuery[uuid.UUID | None] = None,
        order: FromQuery[Literal["asc", "desc"]] = "asc",
    ) -> EventPage:
        """A user's ledger events in time order (ties by id), filtered by type, time range and invoice."""
        caller.require_user(user_id)
        async with engine.connect() as conn:
            found = await service.list_events(
                conn,
                user_id,
                page,
                types=event_types or [],
                start=aware(start, "start"),
                end=aware(end, "end"),
                invoice_id=invoice_id,
                newest_first=order == "desc",
            )
        return EventPage(
            data=[shape(e, EventOut) for e in found.items],
            total=found.total,
            limit=found.limit,
            offset=found.offset,
            has_more=found.has_more,
        )

    @post("/billing/invoices", status_code=201)
    async def create_invoice_route(
        self, caller: Caller, engine: Engine, data: JSONBody[CreateInvoiceIn]
    ) -> InvoiceOut:
        """Close a user's period into one invoice: usage per model, fees, credits, refunds and adjustments,
        whose total equals the ledger over the period to the nano-USD. Refused (409) when the period overlaps
        one of the user's invoices. Admin only."""
        caller.require_user(data.user_id)
        caller.require_admin()
        return invoice_out(
            await service.create_invoice(engine, data.user_id, data.period_start, data.period_end)
        )

    @get("/billing/invoice/{invoice_id:uuid}")
    async def get_invoice_route(
        self, caller: Caller, engine: Engine, invoice_id: FromPath[uuid.UUID]
    ) -> InvoiceOut:
        """One invoice with its lines, totals and the balance before and at the end of its period."""
        async with engine.connect() as conn:
            return invoice_out(await service.get_invoice(conn, invoice_id, owner=caller.user_id))

    @get("/billing/invoices")
    async def list_invoices_route(
        self, caller: Caller, engine: Engine, page: Paging, user_id: FromQuery[uuid.UUID | None] = None
    ) -> InvoicePage:
        """Invoices by period, oldest first, optionally of one user. A user's own key sees its user's."""
        if user_id is not None:
            caller.require_user(user_id)
        async with engine.connect() as conn:
            found = await service.list_invoices(conn, page, user_id=user_id or caller.user_id)
        return InvoicePage(
            data=[invoice_out(i) for i in found.items],
            total=found.total,
            limit=found.limit,
            offset=found.offset,
            has_more=found.has_more,
        )

    @post("/billing/checkout", status_code=201)
    async def checkout_route(
        self, caller: Caller, runtime: AppRuntime, data: JSONBody[CheckoutIn]
    ) -> CheckoutOut:
        """Start a credit top-up: a Stripe Checkout Session for `amount_usd` (whole cents) naming the user;
        returns its URL. The credit is posted when Stripe's signed `checkout.session.completed` arrives.
        The admin key, or a user's own key for itself. 503 when Stripe is not configured."""
        caller.require_user(data.user_id)
        cents = stripe_checkout.cents_of_usd(data.amount_usd)
        session = await stripe_checkout.create_checkout(
            runtime.settings, data.user_id, cents, idempotency_key=data.idempotency_key
        )
        return CheckoutOut(
            id=session.id,
            url=session.url,
            user_id=data.user_id,
            amount_cents=session.amount_cents,
            **money(session.amount_cents * NANO_PER_CENT),
        )


class StripeWebhookController(Controller):
    """Stripe's webhook: no admin guard — the `Stripe-Signature` over the raw body is the authentication
    (SYNAPGATE_STRIPE_WEBHOOK_SECRET). A bad signature is a 400 and changes nothing; a replayed event
    (the same event id) moves nothing and answers 200 so Stripe stops retrying."""

    path = "/"
    tags = ("billing",)

    @post("/billing/stripe/webhook", status_code=200)
    async def stripe_webhook_route(
        self, request: Request[Any, Any, Any], runtime: AppRuntime
    ) -> StripeWebhookOut:
        """Post what a verified Stripe event says: credit on a paid Checkout, refund on charge.refunded."""
        outcome = await stripe_checkout.handle_stripe_webhook(
            runtime.engine,
            runtime.ledger,
            runtime.settings,
            await request.body(),
            request.headers.get("stripe-signature"),
        )
        return StripeWebhookOut(
            event_id=outcome.event_id,
            event_type=outcome.event_type,
            action=outcome.action,
            user_id=outcome.user_id,
            reason=outcome.reason,
            **money(outcome.amount_nano),
        )
