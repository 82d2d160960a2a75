"""Admin API: credits, balances, the ledger's events, and invoices.

Amounts are exact: every one is given as a decimal string of USD and as integer nano-USD, signed as in
the ledger (credits positive, charges negative). Top-ups go through the credit ledger of the running
gateway, so the Redis hot copy moves with the database.

Invoices close a user's period `[period_start, period_end)`: the period must have ended, and it may not
overlap an invoice the user already has (409); see storage/invoices.py for the lines and the guarantees.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from gateway.api.admin.common import (
    Body,
    Limit,
    Offset,
    Struct,
    aware,
    conflict,
    money,
    page_limits,
    runtime_of,
    user_not_found,
)
from gateway.api.admin.scope import GUARDS, caller, not_found
from gateway.errors import bad_request
from pricing.money import MoneyError, parse_usd
from storage import admin as queries
from storage.billing import invoices as invoice_store
from storage.billing.credits import add_credits
from storage.billing.ledger.entries import account_state
from storage.models import BILLING_EVENT_TYPES
from storage.types import utcnow

MAX_CREDIT_NANO = 10**18  # one top-up of at most a billion USD keeps every balance far inside BIGINT
CREDIT_KEY_PREFIX = "credit:"

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


def event_out(e: queries.EventInfo) -> EventOut:
    return EventOut(
        id=e.id,
        type=e.type,
        **money(e.amount_nano),
        status=e.status,
        request_id=e.request_id,
        idempotency_key=e.idempotency_key,
        description=e.description,
        invoice_id=e.invoice_id,
        workspace_id=e.workspace_id,
        created_at=e.created_at,
    )


def _line_out(line: invoice_store.InvoiceLine) -> InvoiceLineOut:
    cost = money(line.cost_nano, "cost") if line.cost_nano is not None else {}
    return InvoiceLineOut(
        kind=line.kind,
        **money(line.amount_nano),
        events=line.events,
        model=line.model,
        provider=line.provider,
        requests=line.requests,
        byok_requests=line.byok_requests,
        input_tokens=line.input_tokens,
        cached_input_tokens=line.cached_input_tokens,
        cache_write_tokens=line.cache_write_tokens,
        output_tokens=line.output_tokens,
        reasoning_tokens=line.reasoning_tokens,
        **cost,
        event_id=line.event_id,
        description=line.description,
        posted_at=datetime.fromisoformat(line.posted_at) if line.posted_at else None,
    )


def invoice_out(inv: invoice_store.InvoiceRecord) -> InvoiceOut:
    """The API (and CLI) form of an invoice."""
    balances: dict[str, Any] = {}
    if inv.opening_balance_nano is not None and inv.closing_balance_nano is not None:
        balances = {
            **money(inv.opening_balance_nano, "opening_balance"),
            **money(inv.closing_balance_nano, "closing_balance"),
        }
    totals = InvoiceTotalsOut(
        **money(inv.total_of("usage"), "usage"),
        **money(inv.total_of("fee"), "fees"),
        **money(inv.total_of("credit"), "credits"),
        **money(inv.total_of("refund"), "refunds"),
        **money(inv.total_of("adjustment"), "adjustments"),
        **money(inv.total_of("subscription"), "subscriptions"),
    )
    return InvoiceOut(
        id=inv.id,
        user_id=inv.user_id,
        period_start=inv.period_start,
        period_end=inv.period_end,
        status=inv.status,
        created_at=inv.created_at,
        lines=[_line_out(line) for line in inv.lines],
        totals=totals,
        **money(inv.total_nano, "total"),
        **balances,
    )


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


class CreateInvoiceIn(Body):
    user_id: uuid.UUID
    period_start: Annotated[datetime, msgspec.Meta(description="with a time zone, e.g. 2026-11-01T00:00:00Z")]
    period_end: Annotated[datetime, msgspec.Meta(description="exclusive; the period must have ended")]


# -- credits and balances ------------------------------------------------------------------------


@post("/billing/add-credits", guards=GUARDS, tags=["billing"])
async def add_credits_route(
    request: Request[Any, Any, Any], data: JSONBody[AddCreditsIn]
) -> Response[CreditOut]:
    """Add credits to a user's balance, once per idempotency key: a replay returns the first top-up (200)
    and moves nothing; a first top-up answers 201. Reusing a key for another user or amount is a 409.
    Admin only."""
    scope = caller(request)
    scope.require_user(data.user_id)
    scope.require_admin()
    try:
        amount = parse_usd(data.amount_usd.strip())
    except MoneyError as exc:
        raise bad_request(f"'amount_usd': {exc}.", param="amount_usd") from None
    if amount <= 0:
        raise bad_request("'amount_usd' must be a positive amount.", param="amount_usd")
    if amount > MAX_CREDIT_NANO:
        raise bad_request("'amount_usd' is larger than one top-up may be (1000000000).", param="amount_usd")
    key = data.idempotency_key
    if key != key.strip() or not key.isprintable():
        raise bad_request(
            "'idempotency_key' must be printable, without surrounding spaces.", param="idempotency_key"
        )
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        if await queries.get_user(conn, data.user_id) is None:
            raise user_not_found("user_id")
    posted = await add_credits(
        runtime.engine, runtime.ledger, data.user_id, amount, key, description=data.description
    )
    async with runtime.engine.connect() as conn:
        event = await queries.event_by_idempotency_key(conn, CREDIT_KEY_PREFIX + key)
        balance, _version = await account_state(conn, data.user_id)
    assert event is not None
    if not posted.created and (event.user_id != data.user_id or event.amount_nano != amount):
        raise conflict(
            "This idempotency_key was used for a different top-up; nothing was added.",
            "idempotency_key_reused",
            "idempotency_key",
        )
    body = CreditOut(
        event_id=event.id,
        user_id=event.user_id,
        type=event.type,
        **money(event.amount_nano),
        idempotency_key=key,
        description=event.description,
        created_at=event.created_at,
        replayed=not posted.created,
        **money(balance, "balance"),
    )
    return Response(body, status_code=201 if posted.created else 200)


@get("/billing/balance/{user_id:uuid}", guards=GUARDS, tags=["billing"])
async def balance_route(request: Request[Any, Any, Any], user_id: FromPath[uuid.UUID]) -> BalanceOut:
    """A user's settled balance, what requests in flight hold, and what is available to spend."""
    caller(request).require_user(user_id)
    runtime = runtime_of(request)
    async with runtime.engine.connect() as conn:
        if await queries.get_user(conn, user_id) is None:
            raise not_found("user")
        balance, _version = await account_state(conn, user_id)
    available = await runtime.ledger.available(user_id)
    return BalanceOut(
        user_id=user_id,
        **money(balance, "balance"),
        **money(balance - available, "held"),
        **money(available, "available"),
        as_of=utcnow(),
    )


@get("/billing/events/{user_id:uuid}", guards=GUARDS, tags=["billing"])
async def events_route(
    request: Request[Any, Any, Any],
    user_id: FromPath[uuid.UUID],
    event_types: Annotated[
        list[str] | None, QueryParameter(name="type", description="repeatable: usage, credit, refund, …")
    ] = None,
    start: Annotated[datetime | None, QueryParameter(description="inclusive, with a time zone")] = None,
    end: Annotated[datetime | None, QueryParameter(description="exclusive, with a time zone")] = None,
    invoice_id: FromQuery[uuid.UUID | None] = None,
    order: FromQuery[Literal["asc", "desc"]] = "asc",
    limit: Limit = 100,
    offset: Offset = 0,
) -> EventPage:
    """A user's ledger events in time order (ties by id), filtered by type, time range and invoice."""
    caller(request).require_user(user_id)
    limit, offset = page_limits(limit, offset)
    types: list[str] = []
    for value in event_types or []:
        for item in value.split(","):
            if item.strip() not in BILLING_EVENT_TYPES:
                raise bad_request(
                    f"'type' must be among {', '.join(BILLING_EVENT_TYPES)}, not {item.strip()!r}.",
                    param="type",
                )
            types.append(item.strip())
    since, until = aware(start, "start"), aware(end, "end")
    if since is not None and until is not None and until <= since:
        raise bad_request("'end' must be after 'start'.", param="end")
    async with runtime_of(request).engine.connect() as conn:
        if await queries.get_user(conn, user_id) is None:
            raise not_found("user")
        page = await queries.list_events(
            conn,
            user_id,
            types=types,
            start=since,
            end=until,
            invoice_id=invoice_id,
            newest_first=order == "desc",
            limit=limit,
            offset=offset,
        )
    return EventPage(
        data=[event_out(e) for e in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        has_more=offset + len(page.items) < page.total,
    )


# -- invoices ------------------------------------------------------------------------------------


@post("/billing/invoices", guards=GUARDS, status_code=201, tags=["billing"])
async def create_invoice_route(
    request: Request[Any, Any, Any], data: JSONBody[CreateInvoiceIn]
) -> InvoiceOut:
    """Close a user's period into one invoice: usage per model, fees, credits, refunds and adjustments,
    whose total equals the ledger over the period to the nano-USD. Refused (409) when the period overlaps
    one of the user's invoices. Admin only."""
    scope = caller(request)
    scope.require_user(data.user_id)
    scope.require_admin()
    start = aware(data.period_start, "period_start")
    end = aware(data.period_end, "period_end")
    assert start is not None and end is not None
    if end <= start:
        raise bad_request("'period_end' must be after 'period_start'.", param="period_end")
    if end > utcnow():
        raise bad_request(
            "'period_end' is in the future: a period can be invoiced once it has ended.", param="period_end"
        )
    try:
        async with runtime_of(request).engine.begin() as conn:
            invoice = await invoice_store.create_invoice(conn, data.user_id, start, end)
    except queries.UnknownUser:
        raise user_not_found("user_id") from None
    except invoice_store.InvoiceOverlap as exc:
        raise conflict(
            f"The period overlaps invoice {exc.invoice_id} ({exc.period_start.isoformat()} to "
            f"{exc.period_end.isoformat()}); a period is invoiced once.",
            "invoice_period_overlap",
            "period_start",
        ) from None
    return invoice_out(invoice)


@get("/billing/invoice/{invoice_id:uuid}", guards=GUARDS, tags=["billing"])
async def get_invoice_route(request: Request[Any, Any, Any], invoice_id: FromPath[uuid.UUID]) -> InvoiceOut:
    """One invoice with its lines, totals and the balance before and at the end of its period."""
    scope = caller(request)
    async with runtime_of(request).engine.connect() as conn:
        invoice = await invoice_store.get_invoice(conn, invoice_id)
    if invoice is None or (not scope.is_admin and invoice.user_id != scope.user_id):
        raise not_found("invoice")
    return invoice_out(invoice)


@get("/billing/invoices", guards=GUARDS, tags=["billing"])
async def list_invoices_route(
    request: Request[Any, Any, Any],
    user_id: FromQuery[uuid.UUID | None] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> InvoicePage:
    """Invoices by period, oldest first, optionally of one user. A user's own key sees its user's."""
    scope = caller(request)
    if user_id is not None:
        scope.require_user(user_id)
    limit, offset = page_limits(limit, offset)
    async with runtime_of(request).engine.connect() as conn:
        page = await invoice_store.list_invoices(
            conn, user_id=user_id or scope.user_id, limit=limit, offset=offset
        )
    return InvoicePage(
        data=[invoice_out(i) for i in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        has_more=offset + len(page.items) < page.total,
    )


ROUTES: list[Any] = [
    add_credits_route,
    balance_route,
    events_route,
    create_invoice_route,
    get_invoice_route,
    list_invoices_route,
]
