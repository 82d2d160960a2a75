"""Credit top-ups and the ledger's events: the queries (the rules are in billing/service.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.billing.ledger.base import CreditLedger, HotMove
from storage.billing.ledger.entries import PostedEntry, post_entry
from storage.models import BillingEvent, table_of
from storage.paging import Page, PageRequest, fetch_page, page_of

events = table_of(BillingEvent)

CREDIT_KEY_PREFIX = "credit:"


async def add_credits(
    engine: AsyncEngine,
    ledger: CreditLedger,
    user_id: uuid.UUID,
    amount_nano: int,
    idempotency_key: str,
    *,
    description: str | None = None,
) -> PostedEntry:
    """Credit a user's balance once per idempotency key; a replay changes nothing and says so."""
    if amount_nano <= 0:
        raise ValueError("a credit must be a positive amount")
    async with engine.begin() as conn:
        posted = await post_entry(
            conn,
            user_id=user_id,
            type="credit",
            amount_nano=amount_nano,
            idempotency_key=CREDIT_KEY_PREFIX + idempotency_key,
            description=description,
        )
    if posted.created:
        await ledger.after_commit([HotMove(user_id, None, amount_nano, posted.version)])
    return posted


@dataclass(frozen=True, slots=True)
class EventInfo:
    """One billing_events row: signed nano-USD (credits positive, debits negative)."""

    id: int
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    type: str
    amount_nano: int
    status: str
    request_id: str | None
    idempotency_key: str
    description: str | None
    invoice_id: uuid.UUID | None
    created_at: datetime


def _event(row: Any) -> EventInfo:
    return EventInfo(
        int(row.id),
        row.user_id,
        row.workspace_id,
        row.type,
        int(row.amount_nano),
        row.status,
        row.request_id,
        row.idempotency_key,
        row.description,
        row.invoice_id,
        row.created_at,
    )


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
    """A user's ledger events in `[start, end)`, in time order (ties by id) or the reverse."""
    conds = [events.c.user_id == user_id]
    if types:
        conds.append(events.c.type.in_(list(types)))
    if start is not None:
        conds.append(events.c.created_at >= start)
    if end is not None:
        conds.append(events.c.created_at < end)
    if invoice_id is not None:
        conds.append(events.c.invoice_id == invoice_id)
    order = (
        (events.c.created_at.desc(), events.c.id.desc())
        if newest_first
        else (events.c.created_at, events.c.id)
    )
    rows, total = await fetch_page(conn, select(events).where(and_(*conds)).order_by(*order), page)
    return page_of([_event(r) for r in rows], total, page)


async def event_by_idempotency_key(conn: AsyncConnection, idempotency_key: str) -> EventInfo | None:
    row = (
        await conn.execute(select(events).where(events.c.idempotency_key == idempotency_key))
    ).one_or_none()
    return None if row is None else _event(row)
