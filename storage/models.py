"""The SynapGate schema as SQLAlchemy 2 typed models.

Money: every amount is integer nano-USD in a BIGINT (`*_nano`); rates are exact NUMERIC USD per 1M
tokens. No float column holds money. Timestamps are time zone-aware. The ledger (`billing_events`) is
append-only and keeps its users: deleting a user with ledger history is refused (RESTRICT).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import ExactDecimal, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT everywhere, but SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON().with_variant(JSONB(), "postgresql")

RATE = ExactDecimal(18, 9)  # USD per 1M tokens

# issue 11 (endpoints): the APIs a request can come in on, and the kinds of catalog model.
ENDPOINTS = ("chat", "messages", "responses", "embeddings")
MODEL_KINDS = ("chat", "embedding")
BILLING_EVENT_TYPES = ("usage", "credit", "refund", "adjustment", "fee", "subscription")
BILLING_EVENT_STATUSES = ("pending", "completed", "failed")
TAG_TARGET_TYPES = ("conversation", "message", "user", "workspace")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, server_default=text("CURRENT_TIMESTAMP"))


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("status", ("active", "disabled")), name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    created_at: Mapped[datetime] = _created()
    # limits (0006): enforced with the credit reservation
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    budget_nano: Mapped[int | None] = mapped_column(BigInteger)
    budget_period: Mapped[str | None] = mapped_column(String(8))
    # Alerts (migration 0007): `credits.low` is raised when a debit takes the balance under this.
    low_balance_threshold_nano: Mapped[int | None] = mapped_column(BigInteger)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    # limits (0006): enforced with the credit reservation
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    budget_nano: Mapped[int | None] = mapped_column(BigInteger)
    budget_period: Mapped[str | None] = mapped_column(String(8))


class WorkspaceMember(Base):
    """A user belongs to one or more workspaces."""

    __tablename__ = "workspace_members"
    __table_args__ = (CheckConstraint(_in("role", ("owner", "admin", "member")), name="role"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="member", server_default="member")
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    """A gateway key: only its SHA-256 is stored, with a short visible prefix to tell keys apart."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(_in("status", ("active", "revoked")), name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONType)
    budget_nano: Mapped[int | None] = mapped_column(BigInteger)  # was spend_limit_nano (renamed in 0006)
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    budget_period: Mapped[str | None] = mapped_column(String(8))  # 0006
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # 0006


class ProviderCredential(Base):
    """A user's own provider key (BYOK), encrypted with SYNAPGATE_SECRET_KEY; only its last 4 chars shown."""

    __tablename__ = "provider_credentials"
    __table_args__ = (UniqueConstraint("user_id", "provider"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    encrypted_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Llm(Base):
    """The catalog: one row per model name, holding its current prices (USD per 1M tokens)."""

    __tablename__ = "llms"
    __table_args__ = (CheckConstraint(_in("kind", MODEL_KINDS), name="kind"),)  # issue 11 (0008)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    upstream_model: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str] = mapped_column(String(200))
    input_price: Mapped[Decimal] = mapped_column(RATE)
    cached_input_price: Mapped[Decimal | None] = mapped_column(RATE)
    cache_write_price: Mapped[Decimal | None] = mapped_column(RATE)
    output_price: Mapped[Decimal] = mapped_column(RATE)
    long_context_threshold: Mapped[int | None] = mapped_column(Integer)
    long_input_price: Mapped[Decimal | None] = mapped_column(RATE)
    long_cached_input_price: Mapped[Decimal | None] = mapped_column(RATE)
    long_cache_write_price: Mapped[Decimal | None] = mapped_column(RATE)
    long_output_price: Mapped[Decimal | None] = mapped_column(RATE)
    context_window: Mapped[int] = mapped_column(Integer)
    max_output_tokens: Mapped[int] = mapped_column(Integer)
    supports_vision: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    supports_tools: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    supports_streaming: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    price_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    # issue 11 (endpoints): chat | embedding; a chat route refuses an embedding model and vice versa (0008)
    kind: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")


class LlmPriceVersion(Base):
    """Every price a model has ever had; usage rows name the version they were charged at."""

    __tablename__ = "llm_price_versions"
    __table_args__ = (UniqueConstraint("llm_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    llm_id: Mapped[int] = mapped_column(ForeignKey("llms.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    input_price: Mapped[Decimal] = mapped_column(RATE)
    cached_input_price: Mapped[Decimal | None] = mapped_column(RATE)
    cache_write_price: Mapped[Decimal | None] = mapped_column(RATE)
    output_price: Mapped[Decimal] = mapped_column(RATE)
    long_context_threshold: Mapped[int | None] = mapped_column(Integer)
    long_input_price: Mapped[Decimal | None] = mapped_column(RATE)
    long_cached_input_price: Mapped[Decimal | None] = mapped_column(RATE)
    long_cache_write_price: Mapped[Decimal | None] = mapped_column(RATE)
    long_output_price: Mapped[Decimal | None] = mapped_column(RATE)
    effective_from: Mapped[datetime] = _created()


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index(None, "user_id", "updated_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="SET NULL"), index=True
    )
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    title: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Message(Base):
    """One completion in a conversation. Its content is kept only when the operator turns that on."""

    __tablename__ = "messages"
    __table_args__ = (Index(None, "conversation_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    llm_id: Mapped[int | None] = mapped_column(ForeignKey("llms.id", ondelete="SET NULL"))
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="assistant", server_default="assistant")
    prompt: Mapped[Any | None] = mapped_column(JSONType)
    content: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = _created()


_LATENCY_COVER = ("model", "status", "latency_ms", "ttft_ms")


class UsageLog(Base):
    """One row per request that reached the metering step: tokens, cost, latency, outcome.

    Token columns: `input_tokens` counts all prompt tokens (cached and cache writes included);
    `output_tokens` counts all billable output (reasoning included); the others are parts of those.
    """

    __tablename__ = "usage_logs"
    __table_args__ = (
        CheckConstraint(_in("usage_source", ("provider", "estimated")), name="usage_source"),
        CheckConstraint(_in("status", ("success", "error", "cancelled")), name="status"),
        Index(None, "workspace_id", "created_at"),
        Index(None, "llm_id", "created_at"),
        Index(None, "created_at"),
        # One user's rows by time (its (user_id, created_at) prefix: no separate index since 0017), and a
        # user's latency percentiles (llm-performance for a user key) with an index-only scan.
        Index("ix_usage_logs_user_id_latency", "user_id", "created_at", *_LATENCY_COVER),
        # issue 11 (endpoints, 0008)
        CheckConstraint(_in("endpoint", ENDPOINTS), name="endpoint"),
        # issue 13 (0011): one key's rows, for what no rollup holds (a key with a model, its percentiles)
        Index(None, "api_key_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("workspaces.id", ondelete="SET NULL"))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    llm_id: Mapped[int | None] = mapped_column(ForeignKey("llms.id", ondelete="RESTRICT"))
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(100))
    price_version: Mapped[int | None] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cached_input_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    charged_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    latency_ms: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    upstream_latency_ms: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="success", server_default="success")
    error_code: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(SmallInteger)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    usage_source: Mapped[str] = mapped_column(String(16), default="provider", server_default="provider")
    usage_estimator: Mapped[str | None] = mapped_column(String(32))
    is_stream: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")
    created_at: Mapped[datetime] = _created()
    # issue 11 (endpoints, 0008): the API the request came in on
    endpoint: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        CheckConstraint(_in("status", ("open", "issued", "void")), name="status"),
        Index(None, "user_id", "period_end"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    total_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(16), default="issued", server_default="issued")
    lines: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()


class BillingEvent(Base):
    """The ledger: append-only, signed nano-USD amounts (credits positive, debits negative).

    `idempotency_key` is unique: a usage debit is keyed `usage:<request_id>`, a top-up by the caller's key,
    so replaying either inserts nothing.
    """

    __tablename__ = "billing_events"
    __table_args__ = (
        CheckConstraint(_in("type", BILLING_EVENT_TYPES), name="type"),
        CheckConstraint(_in("status", BILLING_EVENT_STATUSES), name="status"),
        Index(None, "user_id", "created_at"),
        Index(None, "workspace_id", "created_at"),
        Index(None, "request_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("workspaces.id", ondelete="SET NULL"))
    type: Mapped[str] = mapped_column(String(16))
    amount_nano: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="completed", server_default="completed")
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("invoices.id", ondelete="SET NULL"), index=True
    )
    request_id: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = _created()


class CreditAccount(Base):
    """Each user's balance, kept in the same transaction as every ledger row that moves it.

    `balance_nano` always equals Σ completed billing_events of the user (the reconcile command proves it);
    `version` counts those moves, so the Redis hot copy can tell which moves a snapshot already holds.
    `held_nano` is the sum of open reservations when the SQL ledger is in use (no Redis).
    """

    __tablename__ = "credit_accounts"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True)
    balance_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    held_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = _created()


class CreditReservation(Base):
    """An open reservation of the SQL ledger; it stops counting at `expires_at`."""

    __tablename__ = "credit_reservations"
    __table_args__ = (Index(None, "user_id", "expires_at"),)

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    amount_nano: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # 0006: the lease (gateway instance) that holds it, and what it holds against the limits
    lease_id: Mapped[str | None] = mapped_column(String(64), index=True)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ConversationLlm(Base):
    """Per conversation × model totals, upserted with every completion (averages = sums / count)."""

    __tablename__ = "conversation_llms"
    __table_args__ = (Index(None, "llm_id", "last_used_at"),)

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    llm_id: Mapped[int] = mapped_column(ForeignKey("llms.id", ondelete="RESTRICT"), primary_key=True)
    message_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    latency_ms_sum: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    first_used_at: Mapped[datetime] = _created()
    last_used_at: Mapped[datetime] = _created()


class MessageFeedback(Base):
    __tablename__ = "message_feedback"
    __table_args__ = (
        CheckConstraint(_in("scale", ("thumbs", "stars")), name="scale"),
        CheckConstraint(
            "(scale = 'thumbs' AND rating IN (-1, 1)) OR (scale = 'stars' AND rating BETWEEN 1 AND 5)",
            name="rating_range",
        ),
        # One rating per user and message (a second one replaces it); the operator's (user_id NULL) are kept.
        Index(None, "message_id", "user_id", unique=True),
        Index(None, "message_created_at"),
        Index(None, "message_user_id", "message_created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    scale: Mapped[str] = mapped_column(String(8))
    rating: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    categories: Mapped[list[str] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()
    # Copies of the rated message's model, owner and time (a message never changes), so llm-performance
    # counts ratings per model and period from this table alone instead of joining every message.
    llm_id: Mapped[int | None] = mapped_column(Integer)
    message_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    message_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Insights (issue 14): the comment's sentiment, set when the feedback is saved (NULL without a comment).
    sentiment: Mapped[str | None] = mapped_column(String(8))
    sentiment_score: Mapped[Decimal | None] = mapped_column(ExactDecimal(6, 5))  # −1 … 1


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (
        CheckConstraint(_in("target_type", TAG_TARGET_TYPES), name="target_type"),
        CheckConstraint("confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name="confidence"),
        UniqueConstraint("target_type", "target_id", "name"),
        Index(None, "name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    name: Mapped[str] = mapped_column(String(100))
    is_auto: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    confidence: Mapped[Decimal | None] = mapped_column(ExactDecimal(6, 5))
    author_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created()


# -- analytics rollups, kept current by the recorder in the transaction of each usage_logs row ------------

NO_WORKSPACE = uuid.UUID(int=0)  # usage_daily.workspace_id of requests made without a workspace


class _UsageSums:
    """Additive totals of usage_logs rows (sums only, so partial periods add up exactly)."""

    requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    errors: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cancelled: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    charged_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    success_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    success_latency_ms_sum: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageHourly(_UsageSums, Base):
    """All users' usage per UTC hour, model and BYOK flag: the global analytics (top LLMs, performance)."""

    __tablename__ = "usage_hourly"

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class UsageDaily(_UsageSums, Base):
    """Usage per UTC day, user, workspace, model and BYOK flag: a user's usage and a workspace's costs.

    `workspace_id` is NO_WORKSPACE for requests made without one (a key part cannot be NULL).
    """

    __tablename__ = "usage_daily"
    __table_args__ = (Index(None, "workspace_id", "day"),)

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class LatencyDaily(Base):
    """Latency and TTFT histograms of successful requests per UTC day and model (percentiles at scale).

    `bucket_ms` is the lower bound of a bucket at most 10 % wide (storage.usage.rollups.LATENCY_BOUNDS).
    """

    __tablename__ = "latency_daily"
    __table_args__ = (CheckConstraint(_in("metric", ("latency", "ttft")), name="metric"),)

    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    metric: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


# -- dashboard-scale rollups (issue 13): one dimension each, so "top users/workspaces/keys/models over a
# range" reads a few rows per day, not every (user, workspace, model) row; kept and filled like the above.

NO_KEY = uuid.UUID(int=0)  # usage_key_daily.api_key_id of requests made without a gateway key


class UsageModelDaily(_UsageSums, Base):
    """All users' usage per UTC day, model and BYOK flag (usage_hourly, coarser: long day-aligned ranges)."""

    __tablename__ = "usage_model_daily"

    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class UsageUserDaily(_UsageSums, Base):
    """Usage per UTC day, user and BYOK flag: spend per user over a range, top users."""

    __tablename__ = "usage_user_daily"
    __table_args__ = (Index(None, "day"),)

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class UsageWorkspaceDaily(_UsageSums, Base):
    """Usage per UTC day, workspace (NO_WORKSPACE for none) and BYOK flag: spend per workspace."""

    __tablename__ = "usage_workspace_daily"
    __table_args__ = (Index(None, "day"),)

    workspace_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class UsageKeyDaily(_UsageSums, Base):
    """Usage per UTC day, gateway key (NO_KEY for none), its user and BYOK flag: spend per key.

    A key belongs to one user, so `user_id` adds no rows; it lets a user's view read its keys' rows.
    """

    __tablename__ = "usage_key_daily"
    __table_args__ = (Index(None, "day"), Index(None, "user_id", "day"))

    api_key_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


# -- the monthly tier (issue 15): closed months compacted from the daily rollups by a background job
# (storage/usage/monthly.py), read for the whole months a watermark covers.


class UsageUserMonthly(_UsageSums, Base):
    """usage_user_daily summed per UTC month (closed months only: see UsageMonthlyWatermark)."""

    __tablename__ = "usage_user_monthly"
    __table_args__ = (Index(None, "month"),)

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    month: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class UsageKeyMonthly(_UsageSums, Base):
    """usage_key_daily summed per UTC month (closed months only: see UsageMonthlyWatermark)."""

    __tablename__ = "usage_key_monthly"
    __table_args__ = (Index(None, "month"), Index(None, "user_id", "month"))

    api_key_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    month: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    user_api_key_used: Mapped[bool] = mapped_column(Boolean, primary_key=True)


class LatencyUserMonthly(Base):
    """Latency and TTFT histograms of one user's successful requests per UTC month and model (a user's own
    percentiles over more requests than is cheap to sort); buckets as latency_daily's."""

    __tablename__ = "latency_user_monthly"
    __table_args__ = (CheckConstraint(_in("metric", ("latency", "ttft")), name="metric"),)

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    month: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    metric: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageMonthlyWatermark(Base):
    """How far the monthly tier goes: every UTC month before `months_before` is compacted (NULL: none).

    One row (id 1). A usage_logs row written later into a compacted month lowers it to that month, in the
    writing transaction (storage/usage/monthly.py), so readers never use a stale month.
    """

    __tablename__ = "usage_monthly_watermark"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    months_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


def table_of(model: type[Base]) -> Table:
    """The Core Table of a model, typed as such (for the Core statements of the hot path)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


# -- webhooks and payments -------------------------------------------------------------------------

WEBHOOK_FORMATS = ("json", "slack")
WEBHOOK_DELIVERY_STATUSES = ("pending", "delivered", "failed")


class WebhookEndpoint(Base):
    """Where alerts go: a URL, the event types it wants, and an optional user or workspace scope.

    Neither `user_id` nor `workspace_id`: the operator's endpoint, which receives every matching event.
    `secret` (`whsec_…`) signs every delivery; it is shown once at creation and never returned again.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (CheckConstraint(_in("format", WEBHOOK_FORMATS), name="format"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    url: Mapped[str] = mapped_column(String(2000))
    format: Mapped[str] = mapped_column(String(16), default="json", server_default="json")
    events: Mapped[list[str]] = mapped_column(JSONType)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    secret: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = _created()


class WebhookDelivery(Base):
    """The durable outbox: one row per (event, endpoint), written in the transaction of the event's cause.

    `body` holds the exact bytes sent on every attempt (so each retry carries the same signature input);
    the worker claims due rows, posts them, and records each attempt's outcome and the next attempt's time.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", WEBHOOK_DELIVERY_STATUSES), name="status"),
        Index(None, "status", "next_attempt_at"),
        Index(None, "endpoint_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created()


class StripePayment(Base):
    """A paid Stripe Checkout Session and what the ledger has moved for it (credit, refunds).

    The ledger postings are keyed `credit:stripe:<event id>` / `stripe:<event id>`; this row ties a later
    `charge.refunded` (which names only the payment intent) to its user and caps refunds at the credit.
    """

    __tablename__ = "stripe_payments"

    session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    credited_nano: Mapped[int] = mapped_column(BigInteger)
    refunded_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    unrecovered_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class DashboardSession(Base):
    """A signed-in dashboard browser (used when there is no Redis): the caller's scope, never a key.

    `id_hash` is the SHA-256 of the random session id held in the cookie, so a leaked table cannot be
    replayed as cookies. `user_id` NULL is the operator (signed in with the admin key); a user's session
    names the gateway key it was opened with, so revoking that key ends the session.
    """

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


# -- insights (issue 14): churn predictions and spend anomalies -----------------------------------------

SENTIMENTS = ("positive", "neutral", "negative")
CHURN_RISKS = ("low", "medium", "high")
ANOMALY_ENTITY_TYPES = ("user", "key", "workspace")
ANOMALY_METRICS = ("spend_nano", "requests")


class ChurnPrediction(Base):
    """The latest churn prediction of a user (replaced by each daily run); factors as JSON."""

    __tablename__ = "churn_predictions"
    __table_args__ = (
        CheckConstraint(_in("risk", CHURN_RISKS), name="risk"),
        Index(None, "risk", "churn_probability"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    churn_probability: Mapped[Decimal] = mapped_column(ExactDecimal(6, 5))  # exact text on SQLite, no FLOAT
    risk: Mapped[str] = mapped_column(String(8))
    factors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    model_version: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created()


class SpendAnomaly(Base):
    """One anomalous hour of one entity's spend or requests (unique: a rerun finds it again, not anew)."""

    __tablename__ = "spend_anomalies"
    __table_args__ = (
        CheckConstraint(_in("entity_type", ANOMALY_ENTITY_TYPES), name="entity_type"),
        CheckConstraint(_in("metric", ANOMALY_METRICS), name="metric"),
        UniqueConstraint("entity_type", "entity_id", "metric", "hour"),
        Index(None, "hour"),
        Index(None, "user_id", "hour"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    entity_type: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid())  # the owner (a user, a key's user), for scoping
    metric: Mapped[str] = mapped_column(String(16))
    hour: Mapped[datetime] = mapped_column(UTCDateTime())
    observed: Mapped[int] = mapped_column(BigInteger)
    expected: Mapped[int] = mapped_column(BigInteger)
    score: Mapped[Decimal] = mapped_column(ExactDecimal(12, 2))
    created_at: Mapped[datetime] = _created()


# -- catalog: model aliases (migration 0009) -------------------------------------------------------


class LlmAlias(Base):
    """Another name a catalog model answers to (e.g. the dated id `claude-sonnet-4-5-20250929`)."""

    __tablename__ = "llm_aliases"

    alias: Mapped[str] = mapped_column(String(200), primary_key=True)
    llm_id: Mapped[int] = mapped_column(ForeignKey("llms.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = _created()


# -- limits (0006): request and token counters of the SQL ledger, per scope and minute window ---------


class LimitWindow(Base):
    """Requests and tokens (reserved worst case, settled to actual) of one scope in one minute window.

    `scope` is `k:<key id>`, `u:<user id>` or `w:<workspace id>`. Only the SQL ledger uses it; the Redis
    ledger keeps the same counters in Redis.
    """

    __tablename__ = "limit_windows"

    scope: Mapped[str] = mapped_column(String(48), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


# -- alerts (migration 0007) -----------------------------------------------------------------------


class KeyExpiryAlert(Base):
    """A key whose expiry has been announced (`key.expired`): the row claims it, so it is sent once."""

    __tablename__ = "key_expiry_alerts"

    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    expired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    notified_at: Mapped[datetime] = mapped_column(UTCDateTime())


# -- budget alerts (migration 0012) ----------------------------------------------------------------


class BudgetSpend(Base):
    """A budget's spend in one calendar period, moved in the recording transaction (for `budget.threshold`).

    The row is created from Σ usage_logs.charged_nano of the period (the truth) and then moved by each
    debit; its row lock orders concurrent debits of one budget, so each sees the exact spend before and
    after it. `scope` is `k:<key id>`, `u:<user id>` or `w:<workspace id>`, as in limit_windows.
    """

    __tablename__ = "budget_spend"

    scope: Mapped[str] = mapped_column(String(48), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    spent_nano: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class BudgetAlert(Base):
    """A `budget.threshold` event that was queued: one row per (budget, period, level) claims it, once."""

    __tablename__ = "budget_alerts"

    scope: Mapped[str] = mapped_column(String(48), primary_key=True)
    period: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    threshold_pct: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    budget_nano: Mapped[int] = mapped_column(BigInteger)
    spent_nano: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# -- insights: model recommendations as a stored snapshot (migration 0013) ----------------------------

RECOMMENDATION_SCOPES = ("platform", "workspace", "user")


class RecommendationRun(Base):
    """When a scope's recommendations were last computed (`scope_id`: the nil UUID for the platform)."""

    __tablename__ = "recommendation_runs"
    __table_args__ = (CheckConstraint(_in("scope", RECOMMENDATION_SCOPES), name="scope"),)

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    since: Mapped[datetime] = mapped_column(UTCDateTime())  # the traffic window's start
    recommendations: Mapped[int] = mapped_column(Integer)


class ModelRecommendation(Base):
    """One stored recommendation of a scope's latest run: exact nano-USD costs; evidence as JSON."""

    __tablename__ = "model_recommendations"
    __table_args__ = (
        CheckConstraint(_in("scope", RECOMMENDATION_SCOPES), name="scope"),
        Index(None, "scope", "scope_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[uuid.UUID] = mapped_column(Uuid())
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    tag: Mapped[str] = mapped_column(String(100))
    current_model: Mapped[str] = mapped_column(String(100))
    recommended_model: Mapped[str] = mapped_column(String(100))
    requests: Mapped[int] = mapped_column(BigInteger)
    current_cost_nano: Mapped[int] = mapped_column(BigInteger)
    projected_cost_nano: Mapped[int] = mapped_column(BigInteger)
    savings_nano: Mapped[int] = mapped_column(BigInteger)
    savings_pct: Mapped[Decimal] = mapped_column(ExactDecimal(7, 2))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType)


# PostgreSQL only (migration 0015): every request id ever written to the partitioned usage_logs, filled by its
# insert trigger — the request id's unique key there (a partitioned table's keys must hold created_at), and
# kept when the retention detaches a month. Not in `Base.metadata`: SQLite has no such table (its
# usage_logs.request_id is UNIQUE itself).
usage_request_ids = Table(
    "usage_request_ids",
    MetaData(),
    Column("request_id", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)


def recorded_request_ids(dialect: str) -> Column[str]:
    """The column listing every recorded request id: the gate on PostgreSQL, usage_logs itself on SQLite."""
    if dialect == "postgresql":
        return usage_request_ids.c.request_id
    return table_of(UsageLog).c.request_id
