"""Everything the dashboard reads or writes in the database, in one module (the only storage import site).

The figures come from the same storage functions and rollups as the admin API (storage/usage/analytics.py):
every grouped total is `analytics.usage_totals`, the reader behind the API's usage, costs and top-LLMs
reports, so a page and `/api/v1/analytics/...` agree to the nano-USD for the same scope and range; it
picks the smallest exact rollup for each question (per model, user, workspace or key per day). Only the
request log (a page of rows), percentiles of narrowed scopes and a key filtered by model read usage_logs
row by row.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, delete, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.accounts import service as accounts_service
from storage.accounts.keys import CreatedKey, KeyInfo, get_key
from storage.accounts.users import UserDetail, UserInfo, get_user, user_emails
from storage.annotations.repository import (
    ConversationInfo,
    ConversationLlmInfo,
    FeedbackInfo,
    MessageInfo,
    TagInfo,
    conversation_llm_rows,
    feedback_for_messages,
    get_conversation,
    list_messages,
    list_tags,
)
from storage.billing import service as billing_service
from storage.billing.credits import EventInfo
from storage.billing.invoices import InvoiceRecord
from storage.billing.ledger.base import CreditLedger
from storage.billing.service import Balance, TopUp
from storage.catalog import repository as catalog_repository
from storage.catalog import service as catalog_service
from storage.catalog.repository import LlmInfo, PriceVersionInfo
from storage.catalog.service import KEEP, PriceChange
from storage.errors import DomainError, NotFound
from storage.insights import repository as insights_repository
from storage.insights import service as insights_service
from storage.insights.repository import AnomalyInfo, ChurnInfo, RecommendationSnapshot
from storage.models import ApiKey, DashboardSession, Llm, Message, Workspace, table_of
from storage.paging import Page, PageRequest
from storage.usage import analytics
from storage.usage.analytics import (
    DIMENSIONS,
    EXACT_PERCENTILE_MAX_ROWS,
    CatalogEntry,
    PerformanceReport,
    Sums,
    Window,
    choose_rollup,
    histogram_percentile,
    percentile_cont,
)
from storage.usage.analytics import UsageFilters as Filters
from storage.usage.rollups import DAY, HOUR, SUM_FIELDS, floor_to, usage_logs

__all__ = [
    "DAY",
    "DIMENSIONS",
    "HOUR",
    "KEEP",
    "AnomalyInfo",
    "CatalogEntry",
    "ChurnInfo",
    "DomainError",
    "FeedbackInfo",
    "Filters",
    "MessageInfo",
    "NotFound",
    "PageRequest",
    "PerformanceReport",
    "PriceChange",
    "Sums",
    "Window",
    "floor_to",
    "user_emails",
]

api_keys = table_of(ApiKey)
workspaces = table_of(Workspace)
llms = table_of(Llm)
messages = table_of(Message)
sessions = table_of(DashboardSession)


def _raw_filters(filters: Filters) -> list[Any]:
    return [usage_logs.c[k] == v for k, v in filters.columns().items()]


async def grouped(
    conn: AsyncConnection,
    window: Window,
    filters: Filters,
    keys: Sequence[str],
    *,
    among_users: Sequence[uuid.UUID] | None = None,
    fields: Sequence[str] = SUM_FIELDS,
) -> dict[tuple[Any, ...], Sums]:
    """Exact totals per group of `keys` (a subset of DIMENSIONS): the API's reader, `usage_totals`."""
    return await analytics.usage_totals(conn, window, filters, keys, among_users=among_users, fields=fields)


async def totals(conn: AsyncConnection, window: Window, filters: Filters) -> Sums:
    return Sums.total((await grouped(conn, window, filters, [])).values())


async def series(
    conn: AsyncConnection, window: Window, filters: Filters, unit: timedelta
) -> dict[datetime, Sums] | None:
    """Totals per UTC hour or day (only periods with requests); None when no rollup holds the filters at
    that unit (hours of anything but a model; a key with a model)."""
    if choose_rollup(window, filters.columns(), unit) is None:
        return None
    found = await analytics.usage_totals(conn, window, filters, [], per=unit)
    return {key[0]: sums for key, sums in found.items()}


# -- the admin API's own reports ---------------------------------------------------------------------------


async def llm_performance(
    conn: AsyncConnection, window: Window, user_id: uuid.UUID | None
) -> PerformanceReport:
    """The report behind /api/v1/analytics/llm-performance (all requests, or one user's)."""
    return await analytics.llm_performance(conn, window, user_id)


async def catalog(conn: AsyncConnection) -> dict[str, CatalogEntry]:
    return await analytics.catalog_entries(conn)


async def model_names(conn: AsyncConnection) -> list[str]:
    """Every catalog model name, for the model filter."""
    return sorted(await analytics.catalog_entries(conn))


# -- latency over a whole range ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None
    p95: float | None
    method: str  # exact | histogram (as storage/analytics.py decides for llm-performance)


async def latency(conn: AsyncConnection, window: Window, filters: Filters, successes: int) -> Latency:
    """p50/p95 latency of the successful requests in range, across models.

    Exact (`percentile_cont`, as the API computes per model) whenever the API would be exact — a
    narrowed scope, or at most EXACT_PERCENTILE_MAX_ROWS successes; above that, the daily histograms
    of every model merged (only unfiltered or per-model scopes are that large and they have histograms).
    """
    c = usage_logs.c
    narrowed = filters.user_id is not None or filters.workspace_id is not None or filters.key_id is not None
    if narrowed or successes <= EXACT_PERCENTILE_MAX_ROWS:
        where = [c.status == "success", *_raw_filters(filters), *window.filters(c.created_at)]
        if conn.dialect.name == "postgresql":

            def pct(fraction: float) -> Any:
                return type_coerce(func.percentile_cont(fraction).within_group(c.latency_ms), Float())

            row = (await conn.execute(select(pct(0.5), pct(0.95)).where(*where))).one()
            p50, p95 = (None if v is None else float(v) for v in row)
            return Latency(p50, p95, "exact")
        values = sorted(int(v) for v in (await conn.execute(select(c.latency_ms).where(*where))).scalars())
        return Latency(percentile_cont(values, 0.5), percentile_cont(values, 0.95), "exact")
    merged: dict[int, int] = defaultdict(int)
    for (model, metric), histogram in (await analytics.latency_histograms(conn, window)).items():
        if metric == "latency" and (filters.model is None or model == filters.model):
            for bucket, count in histogram.items():
                merged[bucket] += count
    return Latency(histogram_percentile(merged, 0.5), histogram_percentile(merged, 0.95), "histogram")


# -- names -------------------------------------------------------------------------------------------------


async def workspace_names(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not ids:
        return {}
    stmt = select(workspaces.c.id, workspaces.c.name).where(workspaces.c.id.in_(list(ids)))
    return {wid: name for wid, name in (await conn.execute(stmt)).all()}


@dataclass(frozen=True, slots=True)
class KeyLabel:
    id: uuid.UUID
    prefix: str
    name: str | None
    user_id: uuid.UUID
    status: str


async def key_labels(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, KeyLabel]:
    """Visible prefixes and names of keys (never hashes)."""
    if not ids:
        return {}
    k = api_keys.c
    stmt = select(k.id, k.key_prefix, k.name, k.user_id, k.status).where(k.id.in_(list(ids)))
    return {row[0]: KeyLabel(*row) for row in (await conn.execute(stmt)).all()}


async def key_is_active(conn: AsyncConnection, key_id: uuid.UUID) -> bool:
    info = await get_key(conn, key_id)
    return info is not None and info.status == "active"


async def user_exists(conn: AsyncConnection, user_id: uuid.UUID) -> bool:
    return await get_user(conn, user_id) is not None


# -- the request log ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One usage_logs row as the request log shows it."""

    request_id: str
    created_at: datetime
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    provider: str
    model: str
    status: str
    http_status: int | None
    error_code: str | None
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nano: int
    charged_nano: int
    latency_ms: int
    ttft_ms: int | None
    upstream_latency_ms: int | None
    attempts: int
    byok: bool
    is_stream: bool
    usage_source: str
    price_version: int | None


_ROW_COLUMNS = [
    usage_logs.c[name]
    for name in (
        "request_id",
        "created_at",
        "user_id",
        "workspace_id",
        "api_key_id",
        "conversation_id",
        "message_id",
        "provider",
        "model",
        "status",
        "http_status",
        "error_code",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_nano",
        "charged_nano",
        "latency_ms",
        "ttft_ms",
        "upstream_latency_ms",
        "attempts",
        "user_api_key_used",
        "is_stream",
        "usage_source",
        "price_version",
    )
]


def _request_row(row: Any) -> RequestRow:
    values = list(row)
    values[23], values[24] = bool(values[23]), bool(values[24])
    return RequestRow(*values)


@dataclass(frozen=True, slots=True)
class RequestPage:
    rows: list[RequestRow]
    total: int


async def request_log(
    conn: AsyncConnection,
    window: Window,
    filters: Filters,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> RequestPage:
    """Newest first (ties by id): one page of usage_logs rows and how many match.

    How many match is read like every other total (`totals`: the rollups for whole periods, usage_logs for
    the edges), exact, instead of counting the window's rows one by one: a year of a busy platform is
    millions of index entries (bench/RESULTS.md, "History at 20M rows")."""
    c = usage_logs.c
    where = [*_raw_filters(filters), *window.filters(c.created_at)]
    if status is not None:
        where.append(c.status == status)
    sums = await totals(conn, window, filters)
    total = {
        None: sums.requests,
        "success": sums.requests - sums.errors - sums.cancelled,
        "error": sums.errors,
        "cancelled": sums.cancelled,
    }[status]
    stmt = select(*_ROW_COLUMNS).where(*where).order_by(c.created_at.desc(), c.id.desc())
    rows = (await conn.execute(stmt.limit(limit).offset(offset))).all()
    return RequestPage([_request_row(r) for r in rows], int(total))


@dataclass(frozen=True, slots=True)
class RequestDetail:
    request: RequestRow
    message_id: uuid.UUID | None
    conversation_title: str | None
    conversation_messages: list[MessageInfo] = field(default_factory=list)
    conversation_total: int = 0
    feedback: dict[uuid.UUID, list[FeedbackInfo]] = field(default_factory=dict)


async def request_detail(
    conn: AsyncConnection, request_id: str, *, max_messages: int = 100
) -> RequestDetail | None:
    """One request with its conversation (its messages, oldest first) and the feedback they got."""
    row = (await conn.execute(select(*_ROW_COLUMNS).where(usage_logs.c.request_id == request_id))).first()
    if row is None:
        return None
    request = _request_row(row)
    message_id = request.message_id
    if message_id is None:
        found = await conn.execute(select(messages.c.id).where(messages.c.request_id == request_id))
        message_id = found.scalar_one_or_none()
    if request.conversation_id is None:
        return RequestDetail(request, message_id, None)
    conversation = await get_conversation(conn, request.conversation_id)
    page = await list_messages(conn, request.conversation_id, limit=max_messages, offset=0)
    ratings = await feedback_for_messages(conn, [m.id for m in page.items])
    return RequestDetail(
        request,
        message_id,
        conversation.title if conversation else None,
        page.items,
        page.total,
        ratings,
    )


# -- sessions (database store, used when there is no Redis) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRecord:
    user_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    api_key_id: uuid.UUID | None
    csrf_token: str
    expires_at: datetime


async def session_insert(conn: AsyncConnection, id_hash: str, record: SessionRecord, now: datetime) -> None:
    """Store a session, sweeping expired ones in the same step (sign-ins are rare; the sweep is cheap)."""
    await conn.execute(delete(sessions).where(sessions.c.expires_at < now))
    await conn.execute(
        sessions.insert().values(
            id_hash=id_hash,
            user_id=record.user_id,
            workspace_id=record.workspace_id,
            api_key_id=record.api_key_id,
            csrf_token=record.csrf_token,
            created_at=now,
            expires_at=record.expires_at,
        )
    )


async def session_get(conn: AsyncConnection, id_hash: str, now: datetime) -> SessionRecord | None:
    s = sessions.c
    stmt = select(s.user_id, s.workspace_id, s.api_key_id, s.csrf_token, s.expires_at).where(
        s.id_hash == id_hash, s.expires_at > now
    )
    row = (await conn.execute(stmt)).first()
    return None if row is None else SessionRecord(*row)


async def session_delete(conn: AsyncConnection, id_hash: str) -> None:
    await conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))


# -- accounts, billing, catalog, conversations: the admin API's own service functions ----------------------
#
# These pages read and write through storage/<domain>/service.py exactly as /api/v1 does, so a balance, a
# key or a price on a page is the API's. Domain errors (storage.errors.DomainError) are the services'.


async def list_users(
    conn: AsyncConnection, page: PageRequest, *, only_user: uuid.UUID | None
) -> Page[UserInfo]:
    return await accounts_service.list_users(conn, page, only_user=only_user)


async def user_detail(conn: AsyncConnection, user_id: uuid.UUID) -> UserDetail:
    return await accounts_service.user_detail(conn, user_id)


async def settled_balances(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    return await billing_service.settled_balances(conn, user_ids)


async def balance(engine: AsyncEngine, ledger: CreditLedger, user_id: uuid.UUID) -> Balance:
    return await billing_service.balance(engine, ledger, user_id)


async def list_keys(
    conn: AsyncConnection, page: PageRequest, *, user_id: uuid.UUID | None, status: str | None = None
) -> Page[KeyInfo]:
    return await accounts_service.list_keys(conn, page, user_id=user_id, status=status)


async def create_key(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    *,
    name: str | None,
    allowed_models: Sequence[str] | None,
) -> CreatedKey:
    return await accounts_service.create_key(conn, user_id, name=name, allowed_models=allowed_models)


async def get_key_of(conn: AsyncConnection, key_id: uuid.UUID, owner: uuid.UUID | None) -> KeyInfo:
    return await accounts_service.get_key(conn, key_id, owner=owner)


async def revoke_key(conn: AsyncConnection, key_id: uuid.UUID) -> KeyInfo:
    return await accounts_service.revoke_key(conn, key_id)


async def add_credits(
    engine: AsyncEngine,
    ledger: CreditLedger,
    user_id: uuid.UUID,
    amount_usd: str,
    idempotency_key: str,
    description: str | None,
) -> TopUp:
    return await billing_service.add_credits(
        engine, ledger, user_id, amount_usd, idempotency_key, description=description
    )


async def list_events(
    conn: AsyncConnection, user_id: uuid.UUID, page: PageRequest, *, types: Sequence[str] = ()
) -> Page[EventInfo]:
    """A user's ledger events, newest first (the API's `order=desc`)."""
    return await billing_service.list_events(conn, user_id, page, types=types, newest_first=True)


async def list_invoices(
    conn: AsyncConnection, page: PageRequest, *, user_id: uuid.UUID | None
) -> Page[InvoiceRecord]:
    return await billing_service.list_invoices(conn, page, user_id=user_id)


async def list_llms(conn: AsyncConnection, page: PageRequest) -> Page[LlmInfo]:
    """The catalog as /api/v1/llms lists it (by id, active and inactive)."""
    return await catalog_repository.list_llms(conn, page)


async def model_with_history(conn: AsyncConnection, name: str) -> tuple[LlmInfo, list[PriceVersionInfo]]:
    return await catalog_service.model_with_history(conn, name)


async def set_price(conn: AsyncConnection, name: str, change: PriceChange) -> int:
    return await catalog_service.set_price(conn, name, change)


def parse_rate(value: str, param: str) -> Decimal:
    return catalog_service.parse_rate(value, param)


# -- insights: the API's own reads (GET /api/v1/analytics/churn-prediction[/{user_id}]) ----------------------


async def churn_of(conn: AsyncConnection, user_id: uuid.UUID) -> ChurnInfo | None:
    """A user's stored churn prediction, as the API's churn-prediction/{user_id} returns it (None: 404)."""
    try:
        return await insights_service.churn_of(conn, user_id)
    except insights_service.PredictionNotFound:
        return None


async def churn_of_users(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ChurnInfo]:
    return await insights_repository.churn_of_users(conn, user_ids)


async def list_churn(
    conn: AsyncConnection, page: PageRequest, *, risk: str | None, user_id: uuid.UUID | None
) -> Page[ChurnInfo]:
    """Stored predictions, most likely to churn first: the API's churn-prediction list (a user: its own)."""
    return await insights_repository.list_churn(
        conn, risk=risk, user_id=user_id, limit=page.limit, offset=page.offset
    )


async def list_anomalies(
    conn: AsyncConnection, window: Window, page: PageRequest, *, user_id: uuid.UUID | None
) -> Page[AnomalyInfo]:
    """Anomalous hours in the range, newest first: the API's anomalies list (a user: its user and keys)."""
    return await insights_repository.list_anomalies(
        conn, user_id=user_id, since=window.start, until=window.end, limit=page.limit, offset=page.offset
    )


async def stored_recommendations(
    conn: AsyncConnection, *, user_id: uuid.UUID | None
) -> RecommendationSnapshot | None:
    """The recommendations snapshot the API's `?source=snapshot` returns (the operator: the platform's; a
    user: their own). One small table: the page never recomputes them."""
    return await insights_service.stored_recommendations(conn, user_id=user_id, workspace_id=None)


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation as /api/v1/conversations/{id} returns it: tags, per-model rows, a page of messages."""

    conversation: ConversationInfo
    llms: list[ConversationLlmInfo]
    messages: Page[MessageInfo]
    feedback: dict[uuid.UUID, list[FeedbackInfo]]
    tags: list[TagInfo]


async def conversation_view(
    conn: AsyncConnection, conversation_id: uuid.UUID, *, limit: int, offset: int, max_tags: int = 100
) -> ConversationView | None:
    conversation = await get_conversation(conn, conversation_id)
    if conversation is None:
        return None
    rows = await conversation_llm_rows(conn, conversation_id)
    found = await list_messages(conn, conversation_id, limit=limit, offset=offset)
    ratings = await feedback_for_messages(conn, [m.id for m in found.items])
    tags = await list_tags(conn, "conversation", conversation_id, limit=max_tags, offset=0)
    return ConversationView(conversation, rows, found, ratings, tags.items)
