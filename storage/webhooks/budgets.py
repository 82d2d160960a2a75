"""`budget.threshold`: a key's, user's or workspace's budget reaching 50, 80 and 100 % — once per period.

Raised IN THE RECORDING TRANSACTION of the debit that crossed the level, so the event exists if and only if
the usage record that caused it committed (a gateway that dies after the commit loses nothing: the outbox
row is in the same commit). How "exactly once" holds, on both backends and with either ledger:
- `budget_spend` keeps each budget's spend per period. The debit's upsert adds its amount and returns the
  new spend; its row lock orders concurrent debits of one budget (across every gateway process; SQLite has
  a single writer), so each sees the exact spend before (after − its amount) and after it, and a level is
  crossed by one debit only. The row is created from Σ usage_logs.charged_nano of the period, which already
  holds this transaction's own rows, so the first debit of a period (or after a budget change) is exact too.
- `budget_alerts` claims each (budget, period, level) with ON CONFLICT DO NOTHING before its event is
  queued: a level is never announced twice in a period, even if the budget is lowered and raised again.
The thresholds compare integers (spent × 100 against level × budget): no rounding decides a level.
On PostgreSQL with the Redis ledger the recording call `sg_record_usage` (migration 0014) moves the spend
rows the same way from what `budget_move_of` puts in each record, and hands the batch back to the statement
path (which runs `budget_threshold_alerts`) only when a debit crosses a level not yet claimed: a change to the
rules here is a change to that function too (tests/integration/test_record_one_trip.py runs both).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.billing.ledger.limits import ScopeLimits, period_bounds
from storage.dialect import built_once, dialect_insert
from storage.models import BudgetAlert, BudgetSpend, UsageLog, table_of
from storage.webhooks.payloads import BudgetThreshold
from storage.webhooks.service import enqueue

spend = table_of(BudgetSpend)
alerts = table_of(BudgetAlert)
usage = table_of(UsageLog)

THRESHOLDS = (50, 80, 100)
_SCOPE_NAMES: dict[str, Literal["key", "user", "workspace"]] = {"k": "key", "u": "user", "w": "workspace"}
_USAGE_COLUMN = {"k": usage.c.api_key_id, "u": usage.c.user_id, "w": usage.c.workspace_id}


def crossed_thresholds(before_nano: int, after_nano: int, budget_nano: int) -> list[int]:
    """The levels (percent of the budget) a move from `before` to `after` reaches for the first time."""
    if budget_nano <= 0 or after_nano <= before_nano:
        return []
    return [t for t in THRESHOLDS if before_nano * 100 < t * budget_nano <= after_nano * 100]


@dataclass(frozen=True, slots=True)
class BudgetDebit:
    """One recorded debit against one budget: what the recording transaction tells `budget_alerts`."""

    limits: ScopeLimits  # the scope and its budget as the request's reservation held them
    amount_nano: int
    at: datetime  # the usage row's created_at: it decides the period, as the budget check does
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None


@dataclass(slots=True)
class _Move:
    scope: str
    period: str
    start: datetime
    reset: datetime | None
    budget_nano: int
    amount_nano: int
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class _Statements:
    spend_move: Any  # the usual case: the period's row exists
    spend_upsert: dict[str, Any]  # by scope kind: the row starts from Σ usage_logs of that column
    claim: Any


@built_once
def _statements(dialect: str) -> _Statements:
    upserts: dict[str, Any] = {}
    for kind, column in _USAGE_COLUMN.items():
        period_spend = (
            select(func.coalesce(func.sum(usage.c.charged_nano), 0))
            .where(
                column == bindparam("b_scope_id"),
                usage.c.created_at >= bindparam("b_start"),
                usage.c.created_at < bindparam("b_end"),
            )
            .scalar_subquery()
        )
        stmt = dialect_insert(dialect, spend).values(
            scope=bindparam("b_scope"),
            period=bindparam("b_period"),
            period_start=bindparam("b_start"),
            spent_nano=period_spend,
        )
        upserts[kind] = stmt.on_conflict_do_update(
            index_elements=["scope", "period", "period_start"],
            set_={"spent_nano": spend.c.spent_nano + bindparam("b_amount")},
        ).returning(spend.c.spent_nano)
    claim = (
        dialect_insert(dialect, alerts)
        .on_conflict_do_nothing(index_elements=["scope", "period", "period_start", "threshold_pct"])
        .returning(alerts.c.threshold_pct)
    )
    move = (
        update(spend)
        .where(
            spend.c.scope == bindparam("b_scope"),
            spend.c.period == bindparam("b_period"),
            spend.c.period_start == bindparam("b_start"),
        )
        .values(spent_nano=spend.c.spent_nano + bindparam("b_amount"))
        .returning(spend.c.spent_nano)
    )
    return _Statements(move, upserts, claim)


# A `total` budget never ends: an upper bound past any record keeps one statement shape.
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _period_of(d: BudgetDebit) -> tuple[str, datetime, datetime | None]:
    """(period, start, reset) of the budget period the debit falls in: its usage row's created_at decides."""
    period = d.limits.budget_period or "total"
    start, reset = period_bounds(period, d.at)
    return period, start, reset


def budget_move_of(d: BudgetDebit) -> dict[str, Any] | None:
    """What `sg_record_usage` (migration 0014) needs to move one debit's budget exactly as
    `budget_threshold_alerts` does: the scope, its budget, the period and its bounds (the Σ usage_logs
    window of the period's first debit; a `total` budget ends at _FAR_FUTURE). None: nothing to move.
    The amount is the record's charged_nano; the function sums a batch's debits per (scope, period, start)."""
    if d.limits.budget_nano is None or d.amount_nano <= 0:
        return None
    period, start, reset = _period_of(d)
    return {
        "scope": d.limits.scope,
        "period": period,
        "period_start": start,
        "period_end": reset or _FAR_FUTURE,
        "budget_nano": d.limits.budget_nano,
    }


async def budget_threshold_alerts(conn: AsyncConnection, debits: Sequence[BudgetDebit], now: datetime) -> int:
    """In the recording transaction: move each debited budget's spend and queue `budget.threshold` for every
    level its debits crossed (each level once per period). Returns how many events were raised.

    Debits of one budget and period are summed (a group commit moves each row once); rows are moved in one
    sorted order, so two transactions never wait on each other's rows in a cycle.
    """
    moves: dict[tuple[str, str, datetime], _Move] = {}
    for d in debits:
        if d.limits.budget_nano is None or d.amount_nano <= 0:
            continue
        period, start, reset = _period_of(d)
        key = (d.limits.scope, period, start)
        move = moves.get(key)
        if move is None:
            moves[key] = _Move(
                d.limits.scope, period, start, reset, d.limits.budget_nano, d.amount_nano, d.user_id,
                d.workspace_id,
            )  # fmt: skip
        else:
            move.amount_nano += d.amount_nano
    if not moves:
        return 0
    statements = _statements(conn)
    raised = 0
    for key in sorted(moves):
        move = moves[key]
        kind, _, ident = move.scope.partition(":")
        params = {
            "b_scope": move.scope,
            "b_period": move.period,
            "b_start": move.start,
            "b_amount": move.amount_nano,
        }
        # A primary-key UPDATE when the row exists; only the period's first debit pays for the Σ usage_logs
        # (an INSERT evaluates its VALUES before it meets a conflict). Two first debits at once: one inserts,
        # the other's conflict waits for it and adds its amount.
        after = (await conn.execute(statements.spend_move, params)).scalar_one_or_none()
        if after is None:
            params |= {"b_end": move.reset or _FAR_FUTURE, "b_scope_id": uuid.UUID(ident)}
            after = (await conn.execute(statements.spend_upsert[kind], params)).scalar_one()
        after = int(after)
        levels = crossed_thresholds(after - move.amount_nano, after, move.budget_nano)
        if not levels:
            continue
        claimed = [
            level
            for level in levels
            if (
                await conn.execute(
                    statements.claim,
                    {
                        "scope": move.scope,
                        "period": move.period,
                        "period_start": move.start,
                        "threshold_pct": level,
                        "budget_nano": move.budget_nano,
                        "spent_nano": after,
                        "created_at": now,
                    },
                )
            ).scalar_one_or_none()
            is not None  # None: this level was announced in this period already
        ]
        for level in claimed:
            raised += 1
            user_id, workspace_id = _owners(move, kind, ident)
            payload = _payload(move, kind, ident, level, after)
            await enqueue(
                conn, "budget.threshold", payload, user_id=user_id, workspace_id=workspace_id, now=now
            )
    return raised


def _payload(move: _Move, kind: str, ident: str, level: int, after: int) -> BudgetThreshold:
    user_id, workspace_id = _owners(move, kind, ident)
    return BudgetThreshold(
        scope=_SCOPE_NAMES[kind],
        id=uuid.UUID(ident),
        threshold_pct=level,
        budget_nano=move.budget_nano,
        spent_nano=after,
        period=move.period,
        period_start=move.start,
        resets_at=move.reset,
        user_id=user_id,
        workspace_id=workspace_id,
    )


def _owners(move: _Move, kind: str, ident: str) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """Whose budget it is, (user, workspace), which is also who hears it: a key's budget its user's (and the
    key's workspace's) endpoints, a user's budget the user's, a workspace's budget the workspace's; the
    operator's unscoped endpoints hear every one."""
    if kind == "w":
        return None, uuid.UUID(ident)
    if kind == "u":
        return move.user_id, None
    return move.user_id, move.workspace_id


async def forget_budget_spend(conn: AsyncConnection, scope: str) -> None:
    """Drop a scope's spend rows when its budget changes: the next debit rebuilds them from usage_logs
    (a budget cleared and set again must not resume from a count that missed the debits in between)."""
    await conn.execute(delete(spend).where(spend.c.scope == scope))
