"""Recording a completion: every row of one request in one transaction, committed before the answer.

conversation (upsert) + message + usage_log + the ledger debit + closing the reservation +
conversation_llms (upsert), then the hot ledger copy is brought up to date. If the transaction fails
nothing is written and the caller must release the reservation and fail the request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.cost import Usage
from storage.dialect import insert_for
from storage.ledger.base import CreditLedger, Reservation
from storage.ledger.entries import account_state, post_entry
from storage.models import Conversation, ConversationLlm, Message, UsageLog, table_of

conversations = table_of(Conversation)
messages = table_of(Message)
usage_logs = table_of(UsageLog)
conversation_llms = table_of(ConversationLlm)


class ConversationNotOwned(Exception):
    """The conversation id belongs to another user."""


@dataclass(frozen=True, slots=True)
class CompletionRecord:
    """Everything recorded about one request that reached the provider."""

    request_id: str
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    conversation_id: uuid.UUID
    message_id: uuid.UUID
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


@dataclass(frozen=True, slots=True)
class RecordResult:
    balance_nano: int
    posted: bool


async def record_completion(
    engine: AsyncEngine, ledger: CreditLedger, rec: CompletionRecord, reservation: Reservation | None
) -> RecordResult:
    """Commit all rows of one completion; then move the hot ledger copy. Raises if nothing was committed."""
    usage = rec.usage
    async with engine.begin() as conn:
        upsert = insert_for(conn, conversations).values(
            id=rec.conversation_id,
            user_id=rec.user_id,
            workspace_id=rec.workspace_id,
            api_key_id=rec.api_key_id,
            created_at=rec.created_at,
            updated_at=rec.created_at,
        )
        owned = await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["id"],
                set_={"updated_at": rec.created_at},
                where=conversations.c.user_id == rec.user_id,
            ).returning(conversations.c.id)
        )
        if owned.scalar_one_or_none() is None:
            raise ConversationNotOwned(str(rec.conversation_id))
        await conn.execute(
            messages.insert().values(
                id=rec.message_id,
                conversation_id=rec.conversation_id,
                user_id=rec.user_id,
                llm_id=rec.llm_id,
                request_id=rec.request_id,
                role="assistant",
                prompt=rec.prompt,
                content=rec.content,
                finish_reason=rec.finish_reason,
                created_at=rec.created_at,
            )
        )
        await conn.execute(
            usage_logs.insert().values(
                request_id=rec.request_id,
                message_id=rec.message_id,
                user_id=rec.user_id,
                workspace_id=rec.workspace_id,
                api_key_id=rec.api_key_id,
                llm_id=rec.llm_id,
                conversation_id=rec.conversation_id,
                provider=rec.provider,
                model=rec.model,
                price_version=rec.price_version,
                input_tokens=usage.prompt_tokens,
                cached_input_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                output_tokens=usage.completion_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                cost_nano=rec.cost_nano,
                charged_nano=rec.charged_nano,
                latency_ms=rec.latency_ms,
                ttft_ms=rec.ttft_ms,
                upstream_latency_ms=rec.upstream_latency_ms,
                status=rec.status,
                error_code=rec.error_code,
                http_status=rec.http_status,
                user_api_key_used=rec.byok,
                usage_source=usage.source,
                usage_estimator=usage.estimator,
                is_stream=rec.is_stream,
                attempts=rec.attempts,
                created_at=rec.created_at,
            )
        )
        posted = None
        # A platform call is always debited (a zero-cost one too, so every call has its ledger line);
        # a BYOK call only when the operator charges a fee for it.
        if not rec.byok or rec.charged_nano:
            posted = await post_entry(
                conn,
                user_id=rec.user_id,
                workspace_id=rec.workspace_id,
                type="fee" if rec.byok else "usage",
                amount_nano=-rec.charged_nano,
                idempotency_key=f"usage:{rec.request_id}",
                request_id=rec.request_id,
            )
        if reservation is not None:
            await ledger.settle_in_transaction(conn, reservation)
        cl_upsert = insert_for(conn, conversation_llms).values(
            conversation_id=rec.conversation_id,
            llm_id=rec.llm_id,
            message_count=1,
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            cost_nano=rec.cost_nano,
            latency_ms_sum=rec.latency_ms,
            first_used_at=rec.created_at,
            last_used_at=rec.created_at,
        )
        await conn.execute(
            cl_upsert.on_conflict_do_update(
                index_elements=["conversation_id", "llm_id"],
                set_={
                    "message_count": conversation_llms.c.message_count + 1,
                    "input_tokens": conversation_llms.c.input_tokens + usage.prompt_tokens,
                    "output_tokens": conversation_llms.c.output_tokens + usage.completion_tokens,
                    "cost_nano": conversation_llms.c.cost_nano + rec.cost_nano,
                    "latency_ms_sum": conversation_llms.c.latency_ms_sum + rec.latency_ms,
                    "last_used_at": rec.created_at,
                },
            )
        )
        balance = posted.balance_nano if posted is not None else (await account_state(conn, rec.user_id))[0]
    created = posted is not None and posted.created
    await ledger.after_commit(
        rec.user_id,
        reservation,
        -rec.charged_nano if created else 0,
        posted.version if created and posted is not None else None,
    )
    return RecordResult(balance_nano=balance, posted=created)


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """A request that reached no answer: every attempt failed upstream. Nothing is charged for it."""

    request_id: str
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    llm_id: int
    model: str
    provider: str
    price_version: int
    byok: bool
    is_stream: bool
    latency_ms: int
    attempts: int
    error_code: str | None
    http_status: int
    created_at: datetime


async def record_failure(engine: AsyncEngine, rec: FailureRecord) -> None:
    """One usage_logs row with status `error`, zero tokens and zero cost (for error rates and audits)."""
    async with engine.begin() as conn:
        await conn.execute(
            usage_logs.insert().values(
                request_id=rec.request_id,
                user_id=rec.user_id,
                workspace_id=rec.workspace_id,
                api_key_id=rec.api_key_id,
                llm_id=rec.llm_id,
                provider=rec.provider,
                model=rec.model,
                price_version=rec.price_version,
                status="error",
                error_code=rec.error_code,
                http_status=rec.http_status,
                user_api_key_used=rec.byok,
                is_stream=rec.is_stream,
                latency_ms=rec.latency_ms,
                attempts=rec.attempts,
                created_at=rec.created_at,
            )
        )
