"""Reconcile: prove that the ledger, the credit accounts and the hot copy agree to the nano-USD.

For every user: Σ completed billing_events = credit_accounts.balance_nano, and (with Redis) the Redis
balance equals it too. `fix` rebuilds a mismatched Redis copy from the database (the truth); a
database-side mismatch is reported, never "fixed" by rewriting history.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.ledger.base import CreditLedger
from storage.ledger.redis import RedisLedger
from storage.models import BillingEvent, CreditAccount, table_of

events = table_of(BillingEvent)
accounts = table_of(CreditAccount)


async def reconcile(engine: AsyncEngine, ledger: CreditLedger, *, fix: bool = False) -> dict[str, Any]:
    """A report of every disagreement (empty `mismatches` when all agree)."""
    async with engine.connect() as conn:
        sums = dict(
            (
                await conn.execute(
                    select(events.c.user_id, func.coalesce(func.sum(events.c.amount_nano), 0))
                    .where(events.c.status == "completed")
                    .group_by(events.c.user_id)
                )
            ).all()
        )
        balances = dict((await conn.execute(select(accounts.c.user_id, accounts.c.balance_nano))).all())
    mismatches: list[dict[str, Any]] = []
    for user_id in sorted(set(sums) | set(balances), key=str):
        ledger_sum, account = int(sums.get(user_id, 0)), int(balances.get(user_id, 0))
        if ledger_sum != account:
            mismatches.append({"user_id": str(user_id), "ledger_nano": ledger_sum, "account_nano": account})
        if isinstance(ledger, RedisLedger):
            hot = await ledger.hot_balance(user_id)
            if hot is not None and hot != account:
                mismatches.append({"user_id": str(user_id), "account_nano": account, "redis_nano": hot})
                if fix:
                    await ledger.forget(user_id)
                    await ledger.load_snapshot(user_id)
    return {
        "users": len(set(sums) | set(balances)),
        "mismatches": mismatches,
        "fixed": fix and bool(mismatches),
    }
