"""Invoices: closing a user's billing period into one statement whose total equals the ledger.

An invoice covers `[period_start, period_end)` and takes the user's completed billing_events posted in
that time (by the ledger's own timestamp) that are on no invoice yet, marking each with the invoice id
in the same transaction. Its lines partition those events:

- `usage`: platform calls, one line per model (requests, tokens, metered cost, the debits);
- `fee`: BYOK platform fees, one line per model; fees without a request, one line each;
- `credit`, `refund`, `adjustment`, `subscription`: one line per event.

So Σ line amounts = `total_nano` = Σ of the period's ledger amounts, exactly (signed as in the ledger:
credits positive, charges negative).

Overlap rule: a user's invoices (other than void ones) never overlap. A period that intersects an existing
invoice is refused (`InvoiceOverlap`), so a period is billed once; the `invoice_id IS NULL` condition is a
second guard that keeps an event off two invoices whatever happens. Invoice creation for one user is
serialised by a lock on the user's row (PostgreSQL; SQLite serialises writers anyway).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pricing.money import format_usd
from storage.errors import InvoiceOverlap, UserNotFound
from storage.models import BillingEvent, Invoice, UsageLog, User, table_of
from storage.paging import Page, PageRequest, fetch_page, page_of
from storage.types import utcnow
from storage.views import to_dict
from storage.webhooks.payloads import InvoiceCreated
from storage.webhooks.service import enqueue

invoices = table_of(Invoice)
events = table_of(BillingEvent)
usage_logs = table_of(UsageLog)
users = table_of(User)

PER_MODEL_TYPES = ("usage", "fee")  # event types whose request's usage log names a model
LINE_ORDER = {"usage": 0, "fee": 1}


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line of an invoice. Per-model lines carry usage figures; per-event lines the event."""

    kind: str
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
    cost_nano: int | None = None
    event_id: int | None = None
    description: str | None = None
    posted_at: str | None = None  # ISO 8601 (UTC) of a single event


_LINE_FIELDS = frozenset(f.name for f in dataclasses.fields(InvoiceLine))


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    status: str
    total_nano: int
    lines: list[InvoiceLine]
    created_at: datetime
    opening_balance_nano: int | None = None  # Σ ledger before the period (on a single invoice's read)
    closing_balance_nano: int | None = None  # Σ ledger before the period's end

    def total_of(self, kind: str) -> int:
        return sum(line.amount_nano for line in self.lines if line.kind == kind)


def _lines_from_json(value: Any) -> list[InvoiceLine]:
    return [InvoiceLine(**{k: v for k, v in item.items() if k in _LINE_FIELDS}) for item in value or []]


def _record(row: Any) -> InvoiceRecord:
    return InvoiceRecord(
        id=row.id,
        user_id=row.user_id,
        period_start=row.period_start,
        period_end=row.period_end,
        status=row.status,
        total_nano=int(row.total_nano),
        lines=_lines_from_json(row.lines),
        created_at=row.created_at,
    )


async def _ledger_sum_before(conn: AsyncConnection, user_id: uuid.UUID, moment: datetime) -> int:
    total = (
        await conn.execute(
            select(func.coalesce(func.sum(events.c.amount_nano), 0)).where(
                events.c.user_id == user_id,
                events.c.status == "completed",
                events.c.created_at < moment,
            )
        )
    ).scalar_one()
    return int(total)


async def _with_balances(conn: AsyncConnection, record: InvoiceRecord) -> InvoiceRecord:
    opening = await _ledger_sum_before(conn, record.user_id, record.period_start)
    closing = await _ledger_sum_before(conn, record.user_id, record.period_end)
    return dataclasses.replace(record, opening_balance_nano=opening, closing_balance_nano=closing)


async def _per_model_lines(conn: AsyncConnection, invoice_id: uuid.UUID) -> list[InvoiceLine]:
    joined = events.join(
        usage_logs,
        and_(usage_logs.c.request_id == events.c.request_id, usage_logs.c.user_id == events.c.user_id),
    )
    rows = (
        await conn.execute(
            select(
                events.c.type,
                usage_logs.c.model,
                usage_logs.c.provider,
                func.count().label("n"),
                func.sum(events.c.amount_nano).label("amount"),
                func.sum(case((usage_logs.c.user_api_key_used == true(), 1), else_=0)).label("byok"),
                func.sum(usage_logs.c.input_tokens).label("input_tokens"),
                func.sum(usage_logs.c.cached_input_tokens).label("cached_input_tokens"),
                func.sum(usage_logs.c.cache_write_tokens).label("cache_write_tokens"),
                func.sum(usage_logs.c.output_tokens).label("output_tokens"),
                func.sum(usage_logs.c.reasoning_tokens).label("reasoning_tokens"),
                func.sum(usage_logs.c.cost_nano).label("cost"),
            )
            .select_from(joined)
            .where(events.c.invoice_id == invoice_id, events.c.type.in_(PER_MODEL_TYPES))
            .group_by(events.c.type, usage_logs.c.model, usage_logs.c.provider)
        )
    ).all()
    lines = [
        InvoiceLine(
            kind=r.type,
            amount_nano=int(r.amount),
            events=int(r.n),
            model=r.model,
            provider=r.provider,
            requests=int(r.n),
            byok_requests=int(r.byok),
            input_tokens=int(r.input_tokens),
            cached_input_tokens=int(r.cached_input_tokens),
            cache_write_tokens=int(r.cache_write_tokens),
            output_tokens=int(r.output_tokens),
            reasoning_tokens=int(r.reasoning_tokens),
            cost_nano=int(r.cost),
        )
        for r in rows
    ]
    return sorted(lines, key=lambda line: (LINE_ORDER[line.kind], line.model or "", line.provider or ""))


async def _per_event_lines(conn: AsyncConnection, invoice_id: uuid.UUID) -> list[InvoiceLine]:
    joined = events.outerjoin(
        usage_logs,
        and_(usage_logs.c.request_id == events.c.request_id, usage_logs.c.user_id == events.c.user_id),
    )
    rows = (
        await conn.execute(
            select(
                events.c.id, events.c.type, events.c.amount_nano, events.c.description, events.c.created_at
            )
            .select_from(joined)
            .where(
                events.c.invoice_id == invoice_id,
                or_(events.c.type.not_in(PER_MODEL_TYPES), usage_logs.c.id.is_(None)),
            )
            .order_by(events.c.created_at, events.c.id)
        )
    ).all()
    return [
        InvoiceLine(
            kind=r.type,
            amount_nano=int(r.amount_nano),
            events=1,
            event_id=int(r.id),
            description=r.description,
            posted_at=r.created_at.isoformat(),
        )
        for r in rows
    ]


async def create_invoice(
    conn: AsyncConnection, user_id: uuid.UUID, period_start: datetime, period_end: datetime
) -> InvoiceRecord:
    """Close a user's period into an issued invoice, in the caller's transaction.

    Raises UnknownUser, InvoiceOverlap, or ValueError for an empty or reversed period.
    """
    if period_end <= period_start:
        raise ValueError("period_end must be after period_start")
    lock = select(users.c.id).where(users.c.id == user_id)
    if conn.dialect.name == "postgresql":
        lock = lock.with_for_update(key_share=True)  # FOR NO KEY UPDATE: postings' FK checks still pass
    if (await conn.execute(lock)).first() is None:
        raise UserNotFound(user_id, param="user_id")
    clash = (
        await conn.execute(
            select(invoices.c.id, invoices.c.period_start, invoices.c.period_end)
            .where(
                invoices.c.user_id == user_id,
                invoices.c.status != "void",
                invoices.c.period_start < period_end,
                invoices.c.period_end > period_start,
            )
            .order_by(invoices.c.period_start, invoices.c.id)
            .limit(1)
        )
    ).first()
    if clash is not None:
        raise InvoiceOverlap(clash.id, clash.period_start, clash.period_end)

    invoice_id, now = uuid.uuid4(), utcnow()
    await conn.execute(
        invoices.insert().values(
            id=invoice_id,
            user_id=user_id,
            period_start=period_start,
            period_end=period_end,
            total_nano=0,
            status="issued",
            lines=[],
            created_at=now,
        )
    )
    await conn.execute(
        update(events)
        .where(
            events.c.user_id == user_id,
            events.c.status == "completed",
            events.c.created_at >= period_start,
            events.c.created_at < period_end,
            events.c.invoice_id.is_(None),
        )
        .values(invoice_id=invoice_id)
    )
    lines = await _per_model_lines(conn, invoice_id) + await _per_event_lines(conn, invoice_id)
    total = int(
        (
            await conn.execute(
                select(func.coalesce(func.sum(events.c.amount_nano), 0)).where(
                    events.c.invoice_id == invoice_id
                )
            )
        ).scalar_one()
    )
    if sum(line.amount_nano for line in lines) != total:  # the lines partition the events: cannot differ
        raise RuntimeError(f"invoice lines do not add up to the ledger total for {invoice_id}")
    await conn.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id)
        .values(total_nano=total, lines=[dataclasses.asdict(line) for line in lines])
    )
    record = InvoiceRecord(invoice_id, user_id, period_start, period_end, "issued", total, lines, now)
    # `invoice.created` goes to the outbox in this transaction: sent if and only if the invoice commits.
    await enqueue(
        conn,
        "invoice.created",
        InvoiceCreated(
            invoice_id=invoice_id,
            user_id=user_id,
            period_start=period_start,
            period_end=period_end,
            total_nano=total,
        ),
        user_id=user_id,
        now=now,
    )
    return await _with_balances(conn, record)


async def get_invoice(conn: AsyncConnection, invoice_id: uuid.UUID) -> InvoiceRecord | None:
    """An invoice with the user's ledger balance before and at the end of its period."""
    row = (await conn.execute(select(invoices).where(invoices.c.id == invoice_id))).one_or_none()
    return None if row is None else await _with_balances(conn, _record(row))


async def list_invoices(
    conn: AsyncConnection, page: PageRequest, *, user_id: uuid.UUID | None = None
) -> Page[InvoiceRecord]:
    """Invoices by period, oldest first (ties by id), optionally of one user."""
    query = select(invoices).order_by(invoices.c.period_start, invoices.c.id)
    if user_id is not None:
        query = query.where(invoices.c.user_id == user_id)
    rows, total = await fetch_page(conn, query, page)
    return page_of([_record(r) for r in rows], total, page)


def invoice_to_dict(inv: InvoiceRecord) -> dict[str, Any]:
    """An invoice as the admin API and the CLI show it: lines, totals per kind, total and balances."""
    lines = []
    for line in inv.lines:
        item = to_dict(line)
        item["posted_at"] = datetime.fromisoformat(line.posted_at) if line.posted_at else None
        lines.append(item)
    totals: dict[str, Any] = {}
    for kind, name in (
        ("usage", "usage"),
        ("fee", "fees"),
        ("credit", "credits"),
        ("refund", "refunds"),
        ("adjustment", "adjustments"),
        ("subscription", "subscriptions"),
    ):
        totals[f"{name}_usd"] = format_usd(inv.total_of(kind))
        totals[f"{name}_nano"] = inv.total_of(kind)
    out: dict[str, Any] = to_dict(inv)
    out["lines"] = lines
    out["totals"] = totals
    return out
