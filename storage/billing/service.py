"""The billing rules, held once for the admin API and the CLI.

- an amount is a positive decimal USD string, exact to the nano-USD, at most a billion per top-up
  (`InvalidAmount`);
- a top-up is keyed by its idempotency key: a replay returns the first top-up and moves nothing, and the same
  key for another user or amount is refused (`IdempotencyConflict`);
- an invoice closes an ended period `[start, end)` of an existing user that overlaps none of their invoices.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pricing.money import MoneyError, parse_usd
from storage.accounts.users import require_user
from storage.billing import credits, invoices
from storage.billing.credits import CREDIT_KEY_PREFIX, EventInfo
from storage.billing.invoices import InvoiceRecord
from storage.billing.ledger.base import CreditLedger
from storage.billing.ledger.entries import account_state
from storage.errors import (
    IdempotencyConflict,
    InvalidAmount,
    InvalidInput,
    InvalidPeriod,
    InvoiceNotFound,
)
from storage.models import BILLING_EVENT_TYPES
from storage.paging import Page, PageRequest
from storage.types import utcnow

MAX_CREDIT_NANO = 10**18  # one top-up of at most a billion USD keeps every balance far inside BIGINT


def parse_amount(value: str, param: str = "amount_usd") -> int:
    """A positive decimal USD amount as integer nano-USD; InvalidAmount otherwise."""
    try:
        amount = parse_usd(value.strip())
    except MoneyError as exc:
        raise InvalidAmount(str(exc), param=param) from None
    if amount <= 0:
        raise InvalidAmount(f"must be a positive amount: {value!r}", param=param)
    if amount > MAX_CREDIT_NANO:
        raise InvalidAmount(f"larger than one top-up may be (1000000000 USD): {value!r}", param=param)
    return amount


@dataclass(frozen=True, slots=True)
class TopUp:
    """A top-up as the ledger holds it; `replayed` when its idempotency key had been used already."""

    event_id: int
    user_id: uuid.UUID
    type: str
    amount_nano: int
    idempotency_key: str
    description: str | None
    created_at: datetime
    replayed: bool
    balance_nano: int  # the balance now (after the top-up)


async def add_credits(
    engine: AsyncEngine,
    ledger: CreditLedger,
    user_id: uuid.UUID,
    amount_usd: str,
    idempotency_key: str,
    *,
    description: str | None = None,
) -> TopUp:
    """Credit an existing user once per idempotency key (see the module's rules)."""
    amount = parse_amount(amount_usd)
    if not idempotency_key or idempotency_key != idempotency_key.strip() or not idempotency_key.isprintable():
        raise InvalidInput(
            "the idempotency key must be printable, without surrounding spaces", param="idempotency_key"
        )
    async with engine.connect() as conn:
        await require_user(conn, user_id, "user_id")
    posted = await credits.add_credits(
        engine, ledger, user_id, amount, idempotency_key, description=description
    )
    async with engine.connect() as conn:
        event = await credits.event_by_idempotency_key(conn, CREDIT_KEY_PREFIX + idempotency_key)
        balance, _version = await account_state(conn, user_id)
    assert event is not None
    if not posted.created and (event.user_id != user_id or event.amount_nano != amount):
        raise IdempotencyConflict(idempotency_key)
    return TopUp(
        event.id,
        event.user_id,
        event.type,
        event.amount_nano,
        idempotency_key,
        event.description,
        event.created_at,
        not posted.created,
        balance,
    )


@dataclass(frozen=True, slots=True)
class Balance:
    user_id: uuid.UUID
    balance_nano: int  # settled: Σ of the ledger
    held_nano: int  # reserved by requests in flight
    available_nano: int  # what new requests may spend
    as_of: datetime


async def balance(engine: AsyncEngine, ledger: CreditLedger, user_id: uuid.UUID) -> Balance:
    """A user's settled balance, what requests in flight hold, and what is available to spend."""
    async with engine.connect() as conn:
        await require_user(conn, user_id, None)
        settled, _version = await account_state(conn, user_id)
    available = await ledger.available(user_id)
    return Balance(user_id, settled, settled - available, available, utcnow())


def check_event_types(values: Sequence[str]) -> list[str]:
    types = [v.strip() for value in values for v in value.split(",")]
    for item in types:
        if item not in BILLING_EVENT_TYPES:
            raise InvalidInput(
                f"'type' must be among {', '.join(BILLING_EVENT_TYPES)}, not {item!r}", param="type"
            )
    return types


async def list_events(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    page: PageRequest,
    *,
    types: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    invoice_id: uuid.UUID | None = None,
    newest_first: bool = False,
) -> Page[EventInfo]:
    """An existing user's ledger events in `[start, end)`."""
    if start is not None and end is not None and end <= start:
        raise InvalidPeriod("'end' must be after 'start'", param="end")
    await require_user(conn, user_id, None)
    return await credits.list_events(
        conn,
        user_id,
        page,
        types=check_event_types(types),
        start=start,
        end=end,
        invoice_id=invoice_id,
        newest_first=newest_first,
    )


def check_period(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """An ended period, both ends with a time zone, as UTC."""
    for value, param in ((start, "period_start"), (end, "period_end")):
        if value.tzinfo is None:
            raise InvalidPeriod(f"'{param}' needs a time zone, e.g. 2026-11-01T00:00:00Z", param=param)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise InvalidPeriod("'period_end' must be after 'period_start'", param="period_end")
    if end > utcnow():
        raise InvalidPeriod(
            "'period_end' is in the future: a period can be invoiced once it has ended", param="period_end"
        )
    return start, end


async def create_invoice(
    engine: AsyncEngine, user_id: uuid.UUID, period_start: datetime, period_end: datetime
) -> InvoiceRecord:
    """Close an existing user's ended period into one invoice (InvoiceOverlap if it overlaps one)."""
    start, end = check_period(period_start, period_end)
    async with engine.begin() as conn:
        return await invoices.create_invoice(conn, user_id, start, end)


async def get_invoice(
    conn: AsyncConnection, invoice_id: uuid.UUID, *, owner: uuid.UUID | None = None
) -> InvoiceRecord:
    """An invoice (of `owner`, when given); InvoiceNotFound otherwise."""
    invoice = await invoices.get_invoice(conn, invoice_id)
    if invoice is None or (owner is not None and invoice.user_id != owner):
        raise InvoiceNotFound(f"no invoice with id {invoice_id}", param=None)
    return invoice


async def list_invoices(
    conn: AsyncConnection, page: PageRequest, *, user_id: uuid.UUID | None = None
) -> Page[InvoiceRecord]:
    """Invoices by period, oldest first, of one existing user or of everyone."""
    if user_id is not None:
        await require_user(conn, user_id, "user_id")
    return await invoices.list_invoices(conn, page, user_id=user_id)


# -- dashboard reads (the users list shows many balances at once) ------------------------------------------

from sqlalchemy import select  # noqa: E402  (this block is the dashboard's; kept apart from the rules above)

from storage.models import CreditAccount, table_of  # noqa: E402


async def settled_balances(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Settled balances (Σ of the ledger, as `balance` reads it) of many users in one query; 0 without an
    account."""
    if not user_ids:
        return {}
    accounts = table_of(CreditAccount)
    stmt = select(accounts.c.user_id, accounts.c.balance_nano).where(accounts.c.user_id.in_(list(user_ids)))
    found = {row[0]: int(row[1]) for row in (await conn.execute(stmt)).all()}
    return {user_id: found.get(user_id, 0) for user_id in user_ids}
