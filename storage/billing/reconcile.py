"""Reconcile: prove that the ledger, the credit accounts and the hot copy agree to the nano-USD.

For every user: Σ completed billing_events = credit_accounts.balance_nano, and the ledger's hot copy
(Redis, when there is one) equals it too. `fix` rebuilds a mismatched hot copy from the database (the
truth); a database-side mismatch is reported, never "fixed" by rewriting history. Open reservations are
counted, and those past their instance's lease (orphans of a dead instance) are released by `fix`.
With a spool (storage/usage/spool.py), the records waiting for replay and the dead letters are reported too:
the hot copy's spooled debits are not a mismatch (they are in the spool, not yet in the ledger).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.billing.ledger.base import CreditLedger
from storage.models import BillingEvent, CreditAccount, table_of
from storage.usage.spool import SpoolStatus

events = table_of(BillingEvent)
accounts = table_of(CreditAccount)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One disagreement: the ledger's sum vs the account, or the account vs the hot copy (`hot_nano`)."""

    user_id: uuid.UUID
    account_nano: int
    ledger_nano: int | None = None
    hot_nano: int | None = None


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    users: int
    mismatches: list[Mismatch] = field(default_factory=list)
    fixed: bool = False
    open_reservations: int = 0
    orphaned_reservations: int = 0  # past their instance's lease (a dead instance's); `fix` releases them
    released_reservations: int = 0
    spool: SpoolStatus | None = None  # records waiting for replay, torn bytes, dead letters (when spooling)

    def to_dict(self) -> dict[str, object]:
        """The report as the CLI prints it (nano-USD integers; a key per figure that was compared)."""
        out: list[dict[str, object]] = []
        for m in self.mismatches:
            item: dict[str, object] = {"user_id": str(m.user_id), "account_nano": m.account_nano}
            if m.ledger_nano is not None:
                item["ledger_nano"] = m.ledger_nano
            if m.hot_nano is not None:
                item["redis_nano"] = m.hot_nano
            out.append(item)
        report: dict[str, object] = {"users": self.users, "mismatches": out, "fixed": self.fixed}
        for name in ("open_reservations", "orphaned_reservations", "released_reservations"):
            if getattr(self, name):  # only when there are any: a clean ledger prints as before
                report[name] = getattr(self, name)
        if self.spool is not None:  # only what is there: an empty spool prints as before
            report.update({k: v for k, v in self.spool.to_dict().items() if v})
        return report


async def reconcile(
    engine: AsyncEngine, ledger: CreditLedger, *, fix: bool = False, spool: SpoolStatus | None = None
) -> ReconcileReport:
    """Every disagreement (none when all agree); with `fix`, mismatched hot copies are rebuilt. `spool`: the
    spool directory's status, reported as it is."""
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
    mismatches: list[Mismatch] = []
    for user_id in sorted(set(sums) | set(balances), key=str):
        ledger_sum, account = int(sums.get(user_id, 0)), int(balances.get(user_id, 0))
        if ledger_sum != account:
            mismatches.append(Mismatch(user_id, account, ledger_nano=ledger_sum))
        hot = await ledger.hot_balance(user_id)
        if hot is not None and hot != account:
            mismatches.append(Mismatch(user_id, account, hot_nano=hot))
            if fix:
                await ledger.rebuild_hot_copy(user_id)
    open_count, orphaned = await ledger.reservation_counts()
    released = await ledger.release_orphans() if fix and orphaned else 0
    return ReconcileReport(
        len(set(sums) | set(balances)),
        mismatches,
        fix and bool(mismatches),
        open_count,
        orphaned,
        released,
        spool,
    )
