"""Credit top-ups: a ledger posting keyed by the caller's idempotency key, then the hot copy."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.ledger.base import CreditLedger, HotMove
from storage.ledger.entries import PostedEntry, post_entry


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
            idempotency_key=f"credit:{idempotency_key}",
            description=description,
        )
    if posted.created:
        await ledger.after_commit([HotMove(user_id, None, amount_nano, posted.version)])
    return posted
