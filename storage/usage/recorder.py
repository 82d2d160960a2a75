"""Recording a request: every row of it in one transaction, committed before the answer.

A completion: conversation (upsert) + message + usage_log + the ledger debit + closing the reservation +
conversation_llms (upsert) + the analytics rollups, then the hot ledger copy is brought up to date. If the
transaction fails nothing is written and the caller must release the reservation and fail the request.
Once it commits, the record is the answer: a failure to move the hot copy afterwards never fails the call
(the ledger keeps it for retry, and its version rule makes a late or repeated move harmless).

A failure (every attempt failed upstream) is the same `CompletionRecord` with status `error`, no tokens,
no cost and no conversation or message: only its usage_log row and its rollups are written, through the
same column mapping (`record_failure`).

Conversation ownership is checked here only: `check_conversation_owner` before the upstream call, and the
same rule again inside the recording transaction (a conversation created meanwhile cannot be taken over).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pricing.cost import Usage
from storage.billing.ledger.base import CreditLedger, HotMove, Reservation
from storage.billing.ledger.entries import account_state, move_accounts
from storage.dialect import built_once, dialect_insert
from storage.models import (
    BillingEvent,
    Conversation,
    ConversationLlm,
    Message,
    UsageLog,
    recorded_request_ids,
    table_of,
)
from storage.outage import is_outage
from storage.types import utcnow
from storage.usage.partitions import month_start
from storage.usage.rollups import UsageFacts, apply_facts, latency_bucket
from storage.webhooks.alerts import low_balance_alerts
from storage.webhooks.budgets import BudgetDebit, budget_move_of, budget_threshold_alerts

log = logging.getLogger("synapgate.recorder")

conversations = table_of(Conversation)
messages = table_of(Message)
usage_logs = table_of(UsageLog)
conversation_llms = table_of(ConversationLlm)
events = table_of(BillingEvent)


class ConversationNotOwned(Exception):
    """The conversation id belongs to another user."""


@dataclass(frozen=True, slots=True)
class CompletionRecord:
    """Everything recorded about one request: a completion, or a failure (status `error`, no usage, no cost).

    A failure has no conversation or message (`None`): nothing was said in the conversation.
    """

    request_id: str
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    llm_id: int
    model: str
    provider: str
    price_version: int
    usage: Usage
    cost_nano: int  # the metered cost at catalog prices
    charged_nano: int  # what the ledger debits: the cost, or for BYOK the platform fee
    byok: bool
    is_stream: bool
    status: str  # success | error | cancelled
    latency_ms: int
    created_at: datetime
    ttft_ms: int | None = None
    upstream_latency_ms: int | None = None
    error_code: str | None = None
    http_status: int | None = None
    attempts: int = 1
    finish_reason: str | None = None
    prompt: Any | None = None  # stored only when the operator keeps message content
    content: str | None = None
    endpoint: str = "chat"  # chat | messages | responses | embeddings: the API it came in on


@dataclass(frozen=True, slots=True)
class RecordResult:
    balance_nano: int
    posted: bool


def facts_of_record(rec: CompletionRecord) -> UsageFacts:
    """What the analytics rollups count of one record."""
    usage = rec.usage
    return UsageFacts(
        created_at=rec.created_at,
        user_id=rec.user_id,
        workspace_id=rec.workspace_id,
        model=rec.model,
        byok=rec.byok,
        status=rec.status,
        input_tokens=usage.prompt_tokens,
        cached_input_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.completion_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_nano=rec.cost_nano,
        charged_nano=rec.charged_nano,
        latency_ms=rec.latency_ms,
        ttft_ms=rec.ttft_ms,
        api_key_id=rec.api_key_id,
    )


async def apply_usage_rollups(conn: AsyncConnection, records: Sequence[CompletionRecord]) -> None:
    """Count the usage_logs rows of `records` in the rollups, inside the caller's transaction.

    Called last in the transaction: the rollup rows it locks (one per model and hour, shared by every
    request to that model) are then held only until the commit.
    """
    await apply_facts(conn, [facts_of_record(rec) for rec in records])


async def check_conversation_owner(
    engine: AsyncEngine, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Raise ConversationNotOwned if the conversation exists and belongs to another user.

    Called before the upstream call, so a foreign conversation id costs no upstream spend; the recording
    transaction applies the same rule again (`_foreign_conversation`).
    """
    async with engine.connect() as conn:
        owners = await _conversation_owners(conn, [conversation_id])
    if _foreign_conversation(owners, [(conversation_id, user_id)], missing_ok=True) is not None:
        raise ConversationNotOwned(str(conversation_id))


async def _conversation_owners(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    rows = (await conn.execute(_statements(conn).conversation_owners, {"ids": list(ids)})).all()
    return {row[0]: row[1] for row in rows}


def _foreign_conversation(
    owners: dict[uuid.UUID, uuid.UUID], wanted: Sequence[tuple[uuid.UUID, uuid.UUID]], *, missing_ok: bool
) -> uuid.UUID | None:
    """The first conversation of `wanted` (conversation, user) that is not that user's, else None."""
    for conversation_id, user_id in wanted:
        owner = owners.get(conversation_id)
        if (owner is None and not missing_ok) or (owner is not None and owner != user_id):
            return conversation_id
    return None


def _conversation_row(rec: CompletionRecord) -> dict[str, Any]:
    return {
        "id": rec.conversation_id,
        "user_id": rec.user_id,
        "workspace_id": rec.workspace_id,
        "api_key_id": rec.api_key_id,
        "created_at": rec.created_at,
        "updated_at": rec.created_at,
    }


def _message_row(rec: CompletionRecord) -> dict[str, Any]:
    return {
        "id": rec.message_id,
        "conversation_id": rec.conversation_id,
        "user_id": rec.user_id,
        "llm_id": rec.llm_id,
        "request_id": rec.request_id,
        "role": "assistant",
        "prompt": rec.prompt,
        "content": rec.content,
        "finish_reason": rec.finish_reason,
        "created_at": rec.created_at,
    }


def _usage_row(rec: CompletionRecord) -> dict[str, Any]:
    usage = rec.usage
    return {
        "request_id": rec.request_id,
        "message_id": rec.message_id,
        "user_id": rec.user_id,
        "workspace_id": rec.workspace_id,
        "api_key_id": rec.api_key_id,
        "llm_id": rec.llm_id,
        "conversation_id": rec.conversation_id,
        "provider": rec.provider,
        "model": rec.model,
        "price_version": rec.price_version,
        "input_tokens": usage.prompt_tokens,
        "cached_input_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost_nano": rec.cost_nano,
        "charged_nano": rec.charged_nano,
        "latency_ms": rec.latency_ms,
        "ttft_ms": rec.ttft_ms,
        "upstream_latency_ms": rec.upstream_latency_ms,
        "status": rec.status,
        "error_code": rec.error_code,
        "http_status": rec.http_status,
        "user_api_key_used": rec.byok,
        "usage_source": usage.source,
        "usage_estimator": usage.estimator,
        "is_stream": rec.is_stream,
        "attempts": rec.attempts,
        "created_at": rec.created_at,
        "endpoint": rec.endpoint,
    }


@dataclass(frozen=True, slots=True)
class _Statements:
    conversation_upsert: Any
    conversation_owners: Any
    conversation_llms_upsert: Any


@built_once
def _statements(dialect: str) -> _Statements:
    upsert = dialect_insert(dialect, conversations)
    cl = dialect_insert(dialect, conversation_llms)
    return _Statements(
        conversation_upsert=upsert.on_conflict_do_update(
            index_elements=["id"],
            set_={"updated_at": upsert.excluded.updated_at},
            where=conversations.c.user_id == upsert.excluded.user_id,  # never touch another user's chat
        ),
        conversation_owners=select(conversations.c.id, conversations.c.user_id).where(
            conversations.c.id.in_(bindparam("ids", expanding=True))
        ),
        conversation_llms_upsert=cl.on_conflict_do_update(
            index_elements=["conversation_id", "llm_id"],
            set_={
                "message_count": conversation_llms.c.message_count + cl.excluded.message_count,
                "input_tokens": conversation_llms.c.input_tokens + cl.excluded.input_tokens,
                "output_tokens": conversation_llms.c.output_tokens + cl.excluded.output_tokens,
                "cost_nano": conversation_llms.c.cost_nano + cl.excluded.cost_nano,
                "latency_ms_sum": conversation_llms.c.latency_ms_sum + cl.excluded.latency_ms_sum,
                "last_used_at": cl.excluded.last_used_at,
            },
        ),
    )


def _posts(rec: CompletionRecord) -> bool:
    """A platform call is always debited (a zero-cost one too, so every call has its ledger line);
    a BYOK call only when the operator charges a fee for it."""
    return not rec.byok or rec.charged_nano != 0


def _budget_debits(items: Sequence[tuple[CompletionRecord, Reservation | None]]) -> list[BudgetDebit]:
    """Each posted debit against each budget its reservation held (the budgets as admission saw them)."""
    return [
        BudgetDebit(scope, rec.charged_nano, rec.created_at, rec.user_id, rec.workspace_id)
        for rec, reservation in items
        if reservation is not None and reservation.limits is not None and _posts(rec) and rec.charged_nano > 0
        for scope in reservation.limits.scopes
        if scope.budget_nano is not None
    ]


def _limits_actual(rec: CompletionRecord, reservation: Reservation | None) -> tuple[int, int] | None:
    """What a limited reservation settles to: the charged amount and the tokens used (as ChatService does)."""
    if reservation is None or reservation.limits is None:
        return None
    return rec.charged_nano, rec.usage.prompt_tokens + rec.usage.completion_tokens


async def record_batch(
    engine: AsyncEngine, ledger: CreditLedger, items: Sequence[tuple[CompletionRecord, Reservation | None]]
) -> list[RecordResult]:
    """Commit the rows of many completions in ONE transaction (group commit), then move the hot copy.

    On PostgreSQL with a ledger that closes reservations after the commit (Redis), the whole batch is one
    call of `sg_record_usage` on asyncpg in autocommit: one round trip including the durable commit
    (`_write_one_trip`), budgeted debits included (the function moves their budgets' spend rows, migration
    0014). Otherwise (SQLite, the SQL ledger, and a batch the function hands back because it crosses a
    low-balance threshold or a budget level not yet announced: a webhook to render) SQLAlchemy writes it
    statement by statement (`_write_statements`). Both write the same rows, rollups and budget spend included.

    Idempotent by request id: a record whose request id is already recorded (a replay) writes nothing, is not
    debited again, and its result says `posted=False`. All or nothing otherwise: on any error nothing is
    committed and the exception propagates.
    """
    records = [rec for rec, _ in items]
    for rec in records:
        if rec.conversation_id is None or rec.message_id is None:
            raise ValueError(f"{rec.request_id}: a record without a message is written by record_failure")
    written: _Written | None = None
    # A record dated before this month (a spool replay) may land in a compacted month: the statement path
    # writes it, and lowers the monthly tier's watermark in the same transaction (rollups.apply_facts).
    this_month = month_start(utcnow())
    late = any(rec.created_at < this_month for rec in records)
    if _one_trip_applies(engine, ledger) and not late:
        try:
            written = await _write_one_trip(engine, items)
        except _SqlPathNeeded:  # an alert to queue (low balance, budget level): the statement path renders it
            written = None
    if written is None:
        written = await _write_statements(engine, ledger, items)
    deltas, moved = written.deltas, written.moved

    # The hot copy: every reservation closes and its limit holds settle to the actual figures (in the same
    # round trip); each user's batch delta applies once, at its new version.
    moves: list[HotMove] = []
    applied: set[uuid.UUID] = set()
    for rec, reservation in items:
        first = rec.user_id in deltas and rec.user_id not in applied
        applied.add(rec.user_id)
        settles = reservation is not None and rec.request_id in written.fresh
        moves.append(
            HotMove(
                rec.user_id,
                reservation,
                deltas[rec.user_id] if first else 0,
                moved[rec.user_id][1] if first else None,
                _limits_actual(rec, reservation) if settles else None,
            )
        )
    try:
        await ledger.after_commit(moves)
    except Exception as exc:  # committed is committed: the answer stands, the hot copy heals from the ledger
        log.warning(
            "hot ledger copy not moved after a commit; it is rebuilt from the ledger",
            extra={"error": f"{type(exc).__name__}: {exc}"[:300], "records": len(records)},
        )
    return [
        RecordResult(balance_nano=moved[r.user_id][0], posted=_posts(r) and r.request_id in written.fresh)
        for r in records
    ]


@dataclass(frozen=True, slots=True)
class _Written:
    """What a committed batch did: the request ids it recorded now (not replays), each debited user's
    signed move, and (balance, version) of every user of the batch after it."""

    fresh: frozenset[str]
    deltas: dict[uuid.UUID, int]
    moved: dict[uuid.UUID, tuple[int, int]]


class _SqlPathNeeded(Exception):
    """The one-round-trip function rolled back a batch the statement path must write (an alert to queue)."""


RECORD_CALL = "SELECT sg_record_usage($1::jsonb)::text"


def _one_trip_applies(engine: AsyncEngine, ledger: CreditLedger) -> bool:
    """PostgreSQL, and a ledger with nothing to do inside the transaction (the Redis ledger)."""
    return engine.dialect.name == "postgresql" and bool(getattr(ledger, "closes_after_commit", False))


def _one_trip_row(rec: CompletionRecord, reservation: Reservation | None) -> dict[str, Any]:
    """One record as `sg_record_usage` reads it (migration 0014): its columns, plus what Python
    defines — the rollup keys (`UsageFacts.rollup_keys`, with the NO_WORKSPACE / NO_KEY sentinels), the
    latency buckets, whether it posts a debit, and the budgets its debit moves (`budget_move_of`: scope,
    budget, period and its bounds, as `budget_threshold_alerts` computes them)."""
    facts = facts_of_record(rec)
    daily = facts.daily_key()
    by_key = facts.rollup_keys()["usage_key_daily"]
    return {
        **_usage_row(rec),
        "byok": rec.byok,
        "posts": _posts(rec),
        "prompt": rec.prompt,
        "content": rec.content,
        "finish_reason": rec.finish_reason,
        "workspace_key": daily["workspace_id"],
        "api_key_key": by_key["api_key_id"],
        "hour": facts.hourly_key()["hour"],
        "day": daily["day"],
        "latency_bucket": latency_bucket(rec.latency_ms),
        "ttft_bucket": None if rec.ttft_ms is None else latency_bucket(rec.ttft_ms),
        "budgets": [
            move
            for debit in _budget_debits([(rec, reservation)])
            if (move := budget_move_of(debit)) is not None
        ],
    }


async def _write_one_trip(
    engine: AsyncEngine, items: Sequence[tuple[CompletionRecord, Reservation | None]]
) -> _Written:
    """The batch in one call of `sg_record_usage`, in autocommit on the pooled asyncpg connection: one round
    trip (the statement is prepared once per connection by asyncpg's cache), one durable commit."""
    payload = msgspec.json.encode([_one_trip_row(rec, res) for rec, res in items]).decode()
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            out = await driver.fetchval(RECORD_CALL, payload)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == "SGN01":
                raise ConversationNotOwned(_message(exc)) from None
            if exc.sqlstate == "SGA01":
                raise _SqlPathNeeded(_message(exc)) from None
            if is_outage(exc):
                await conn.invalidate()
            raise
        except BaseException:
            await conn.invalidate()  # the connection's state is unknown (cancelled mid-call, socket lost)
            raise
    result = msgspec.json.decode(out)
    deltas: dict[uuid.UUID, int] = {}
    moved: dict[uuid.UUID, tuple[int, int]] = {}
    for user, balance, version, delta, was_moved in result["accounts"]:
        user_id = uuid.UUID(user)
        moved[user_id] = (int(balance), int(version))
        if was_moved:
            deltas[user_id] = int(delta)
    return _Written(frozenset(result["fresh"]), deltas, moved)


def _message(exc: asyncpg.PostgresError) -> str:
    return str(getattr(exc, "message", None) or exc)


async def _write_statements(
    engine: AsyncEngine, ledger: CreditLedger, items: Sequence[tuple[CompletionRecord, Reservation | None]]
) -> _Written:
    """The batch through SQLAlchemy, statement by statement in one transaction (SQLite, the SQL ledger, and
    the batches the one-round-trip function hands back)."""
    async with engine.begin() as conn:
        done = await _recorded_already(conn, [rec.request_id for rec, _ in items])
        records = [rec for rec, _ in items if rec.request_id not in done]
        latest: dict[uuid.UUID, dict[str, Any]] = {}
        for rec in records:
            assert rec.conversation_id is not None
            latest[rec.conversation_id] = _conversation_row(rec)
        statements = _statements(conn)
        if latest:
            await conn.execute(statements.conversation_upsert, list(latest.values()))
            owners = await _conversation_owners(conn, list(latest))
            wanted = [
                (rec.conversation_id, rec.user_id) for rec in records if rec.conversation_id is not None
            ]
            foreign = _foreign_conversation(owners, wanted, missing_ok=False)
            if foreign is not None:
                raise ConversationNotOwned(str(foreign))
        if records:
            await conn.execute(messages.insert(), [_message_row(r) for r in records])
            await conn.execute(usage_logs.insert(), [_usage_row(r) for r in records])

        debits = [r for r in records if _posts(r)]
        if debits:
            await conn.execute(
                events.insert(),
                [
                    {
                        "user_id": r.user_id,
                        "workspace_id": r.workspace_id,
                        "type": "fee" if r.byok else "usage",
                        "amount_nano": -r.charged_nano,
                        "status": "completed",
                        "request_id": r.request_id,
                        "idempotency_key": f"usage:{r.request_id}",
                        "created_at": r.created_at,
                    }
                    for r in debits
                ],
            )
        deltas: dict[uuid.UUID, int] = defaultdict(int)
        for r in debits:
            deltas[r.user_id] -= r.charged_nano
        moved = await move_accounts(conn, deltas)
        for user_id in {rec.user_id for rec, _ in items} - set(moved):
            balance, version = await account_state(conn, user_id)
            moved[user_id] = (balance, version)
        # Alerts: `credits.low` when a debit takes a balance under the user's threshold, in this transaction.
        await low_balance_alerts(conn, deltas, moved)
        reservations = [res for _, res in items if res is not None]
        await ledger.settle_in_transaction(conn, reservations)

        per_model: dict[tuple[uuid.UUID, int], dict[str, Any]] = {}
        for r in records:
            assert r.conversation_id is not None
            key = (r.conversation_id, r.llm_id)
            row = per_model.setdefault(
                key,
                {
                    "conversation_id": r.conversation_id,
                    "llm_id": r.llm_id,
                    "message_count": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_nano": 0,
                    "latency_ms_sum": 0,
                    "first_used_at": r.created_at,
                    "last_used_at": r.created_at,
                },
            )
            row["message_count"] += 1
            row["input_tokens"] += r.usage.prompt_tokens
            row["output_tokens"] += r.usage.completion_tokens
            row["cost_nano"] += r.cost_nano
            row["latency_ms_sum"] += r.latency_ms
            row["first_used_at"] = min(row["first_used_at"], r.created_at)
            row["last_used_at"] = max(row["last_used_at"], r.created_at)
        if per_model:
            await conn.execute(statements.conversation_llms_upsert, list(per_model.values()))
        # Alerts: `budget.threshold` when these debits take a budget past 50/80/100 %, in this transaction
        # (the records written now only: a replay was counted when it was first recorded).
        # Late, like the rollups: each budget's spend row is shared by its concurrent requests.
        fresh_items = [(rec, res) for rec, res in items if rec.request_id not in done]
        await budget_threshold_alerts(conn, _budget_debits(fresh_items), utcnow())
        # Last in the transaction: one rollup row per model and hour is shared by concurrent requests.
        if records:
            await apply_usage_rollups(conn, records)
    return _Written(frozenset(r.request_id for r in records), dict(deltas), moved)


async def _recorded_already(conn: AsyncConnection, request_ids: Sequence[str]) -> set[str]:
    """The request ids among these that already have their usage_logs row (replays). On PostgreSQL the
    request-id gate (migration 0015) answers: one index, not one per monthly partition, and it still knows the
    requests of months the retention detached."""
    recorded = recorded_request_ids(conn.dialect.name)
    rows = await conn.execute(select(recorded).where(recorded.in_(list(request_ids))))
    return {row[0] for row in rows}


async def record_completion(
    engine: AsyncEngine, ledger: CreditLedger, rec: CompletionRecord, reservation: Reservation | None
) -> RecordResult:
    """Commit all rows of one completion; then move the hot ledger copy. Raises if nothing was committed."""
    return (await record_batch(engine, ledger, [(rec, reservation)]))[0]


async def record_failure(engine: AsyncEngine, rec: CompletionRecord) -> None:
    """One usage_logs row with status `error`, zero tokens and zero cost (for error rates and audits).

    Nothing is debited and no reservation is touched (the caller released it); the rollups count it.
    Idempotent by request id like `record_batch`: a replayed failure writes nothing.
    """
    if rec.status != "error" or rec.cost_nano or rec.charged_nano or rec.usage.total_tokens:
        raise ValueError(f"{rec.request_id}: a failure record has status error and no usage or cost")
    async with engine.begin() as conn:
        if await _recorded_already(conn, [rec.request_id]):
            return
        await conn.execute(usage_logs.insert(), [_usage_row(rec)])
        await apply_usage_rollups(conn, [rec])
