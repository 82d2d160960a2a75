"""Step 4, pricing and recording: usage × prices → exact cost, then the one record of the request.

`completion_record` is the only place a `CompletionRecord` is built: for an answer (success, a stream that
was cancelled or cut) and for a request that failed upstream (status `error`, no usage, no cost, no
conversation or message). Neither function here touches the reservation: the service settles it through
the recorder, or releases it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config import Settings
from pricing.cost import Usage, byok_fee_nano, price_usage
from pricing.tokens import count_completion_tokens
from storage.usage.recorder import CompletionRecord
from storage.usage.spool import Recorder

if TYPE_CHECKING:
    from gateway.chat.admit import Call

log = logging.getLogger("synapgate.chat")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the upstream call produced, ready to be priced and recorded."""

    usage: Usage
    content_text: str
    finish_reason: str | None
    status: str = "success"  # success | cancelled | error
    error_code: str | None = None
    http_status: int | None = 200
    ttft_ms: int | None = None
    upstream_ms: int | None = None
    answered: bool = True  # False: no answer at all (every attempt failed): no message, no charge


def failure_outcome(error_code: str | None, http_status: int) -> Outcome:
    """The outcome of a request that got no answer from any route."""
    return Outcome(
        usage=Usage(),
        content_text="",
        finish_reason=None,
        status="error",
        error_code=error_code,
        http_status=http_status,
        answered=False,
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    """A committed record's figures, in nano-USD: metered cost, what was charged, the balance after."""

    cost_nano: int
    charged_nano: int
    balance_nano: int


def estimated_usage(call: Call, text: str) -> Usage:
    """Usage counted by the gateway (tiktoken) when the provider reported none."""
    completion, estimator = count_completion_tokens(call.model.upstream_model, text)
    return Usage(
        prompt_tokens=call.prompt_estimate,
        completion_tokens=completion,
        source="estimated",
        estimator=estimator,
    )


def unfinished_usage(call: Call, partial: Usage | None, text: str) -> Usage:
    """Usage of a stream that did not finish: what was generated, counted.

    A provider may have reported part of it already (Anthropic's message_start has the exact input and a
    provisional output count): its input counts stand, and the output is the larger of its count and ours.
    """
    counted = estimated_usage(call, text)
    if partial is None:
        return counted
    return Usage(
        prompt_tokens=partial.prompt_tokens or counted.prompt_tokens,
        completion_tokens=max(partial.completion_tokens, counted.completion_tokens),
        cached_tokens=partial.cached_tokens,
        cache_write_tokens=partial.cache_write_tokens,
        reasoning_tokens=partial.reasoning_tokens,
        source="estimated",
        estimator=counted.estimator,
    )


def completion_record(
    call: Call, outcome: Outcome, *, cost_nano: int, charged_nano: int, keep_content: bool
) -> CompletionRecord:
    """The record of one request (the only place one is built)."""
    answered = outcome.answered
    return CompletionRecord(
        request_id=call.request_id,
        user_id=call.principal.user_id,
        workspace_id=call.principal.workspace_id,
        api_key_id=call.principal.key_id,
        conversation_id=call.conversation_id if answered else None,
        message_id=call.message_id if answered else None,
        llm_id=call.model.id,
        model=call.model.name,
        provider=call.model.provider,
        price_version=call.model.price_version,
        usage=outcome.usage,
        cost_nano=cost_nano,
        charged_nano=charged_nano,
        byok=call.credential.byok,
        is_stream=call.request.stream,
        status=outcome.status,
        latency_ms=int((time.perf_counter() - call.started) * 1000),
        created_at=call.created_at,
        ttft_ms=outcome.ttft_ms,
        upstream_latency_ms=outcome.upstream_ms,
        error_code=outcome.error_code,
        http_status=outcome.http_status,
        attempts=max(call.attempts, 1),
        finish_reason=outcome.finish_reason,
        prompt=call.request.messages if keep_content and answered else None,
        content=outcome.content_text if keep_content and answered else None,
        endpoint=call.endpoint,
    )


async def price_and_record(settings: Settings, recorder: Recorder, call: Call, outcome: Outcome) -> Recorded:
    """Price an answer and commit its record (settling `call.reservation` in the same transaction).

    Raises whatever the recorder raised (ConversationNotOwned, a database error): nothing was committed.
    """
    cost = price_usage(outcome.usage, call.model)
    charged = (
        byok_fee_nano(settings.byok_fee_usd_per_request, settings.byok_fee_rate, cost.total_usd)
        if call.credential.byok
        else cost.total_nano
    )
    rec = completion_record(
        call,
        outcome,
        cost_nano=cost.total_nano,
        charged_nano=charged,
        # the platform's own requests (the tagger model) carry a user's text: never kept under its account
        keep_content=settings.store_message_content and not call.internal,
    )
    result = await recorder.record(rec, call.reservation)
    log.info(
        "chat completion",
        extra={
            "request_id": call.request_id,
            "user_id": str(call.principal.user_id),
            "model": call.model.name,
            "status": outcome.status,
            "prompt_tokens": outcome.usage.prompt_tokens,
            "completion_tokens": outcome.usage.completion_tokens,
            "usage_source": outcome.usage.source,
            "cost_nano": cost.total_nano,
            "charged_nano": charged,
            "byok": call.credential.byok,
            "latency_ms": rec.latency_ms,
        },
    )
    return Recorded(cost.total_nano, charged, result.balance_nano)
