"""Initial schema: every table of the SynapScale design, money as BIGINT nano-USD and NUMERIC rates.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 22:01:24.901763
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations import frozen_types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "llms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("upstream_model", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=False),
        sa.Column("cached_input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("cache_write_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("output_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=False),
        sa.Column("long_context_threshold", sa.Integer(), nullable=True),
        sa.Column("long_input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("long_cached_input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("long_cache_write_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("long_output_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("context_window", sa.Integer(), nullable=False),
        sa.Column("max_output_tokens", sa.Integer(), nullable=False),
        sa.Column("supports_vision", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("supports_tools", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("supports_streaming", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("price_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llms")),
        sa.UniqueConstraint("name", name=op.f("uq_llms_name")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f("ck_users_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column(
            "allowed_models",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("spend_limit_nano", sa.BigInteger(), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("revoked_at", frozen_types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('active', 'revoked')", name=op.f("ck_api_keys_status")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_api_keys_workspace_id_workspaces"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_api_keys_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "credit_accounts",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("balance_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("held_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_accounts_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_credit_accounts")),
    )
    op.create_table(
        "credit_reservations",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("amount_nano", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_reservations_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_credit_reservations")),
    )
    with op.batch_alter_table("credit_reservations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_reservations_user_id_expires_at"), ["user_id", "expires_at"], unique=False
        )

    op.create_table(
        "invoices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("total_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="issued", nullable=False),
        sa.Column(
            "lines",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('open', 'issued', 'void')", name=op.f("ck_invoices_status")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_invoices_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoices_user_id_period_end"), ["user_id", "period_end"], unique=False
        )

    op.create_table(
        "llm_price_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("llm_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=False),
        sa.Column("cached_input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("cache_write_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("output_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=False),
        sa.Column("long_context_threshold", sa.Integer(), nullable=True),
        sa.Column("long_input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("long_cached_input_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("long_cache_write_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column("long_output_price", frozen_types.ExactDecimal(precision=18, scale=9), nullable=True),
        sa.Column(
            "effective_from",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["llm_id"], ["llms.id"], name=op.f("fk_llm_price_versions_llm_id_llms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_price_versions")),
        sa.UniqueConstraint("llm_id", "version", name=op.f("uq_llm_price_versions_llm_id_version")),
    )
    op.create_table(
        "provider_credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("encrypted_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_last4", sa.String(length=4), nullable=False),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_provider_credentials_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_credentials")),
        sa.UniqueConstraint("user_id", "provider", name=op.f("uq_provider_credentials_user_id_provider")),
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("target_type", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("is_auto", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("confidence", frozen_types.ExactDecimal(precision=6, scale=5), nullable=True),
        sa.Column("author_user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "target_type IN ('conversation', 'message', 'user', 'workspace')",
            name=op.f("ck_tags_target_type"),
        ),
        sa.CheckConstraint(
            "confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name=op.f("ck_tags_confidence")
        ),
        sa.ForeignKeyConstraint(
            ["author_user_id"], ["users.id"], name=op.f("fk_tags_author_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint(
            "target_type", "target_id", "name", name=op.f("uq_tags_target_type_target_id_name")
        ),
    )
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tags_name"), ["name"], unique=False)

    op.create_table(
        "workspace_members",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), server_default="member", nullable=False),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("role IN ('owner', 'admin', 'member')", name=op.f("ck_workspace_members_role")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_workspace_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_members_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "user_id", name=op.f("pk_workspace_members")),
    )
    with op.batch_alter_table("workspace_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workspace_members_user_id"), ["user_id"], unique=False)

    op.create_table(
        "billing_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("amount_nano", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="completed", nullable=False),
        sa.Column("invoice_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'failed')", name=op.f("ck_billing_events_status")
        ),
        sa.CheckConstraint(
            "type IN ('usage', 'credit', 'refund', 'adjustment', 'fee', 'subscription')",
            name=op.f("ck_billing_events_type"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_billing_events_invoice_id_invoices"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_billing_events_user_id_users"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_billing_events_workspace_id_workspaces"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_events")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_billing_events_idempotency_key")),
    )
    with op.batch_alter_table("billing_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_billing_events_invoice_id"), ["invoice_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_billing_events_request_id"), ["request_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_billing_events_user_id_created_at"), ["user_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_billing_events_workspace_id_created_at"),
            ["workspace_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_conversations_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_conversations_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_conversations_workspace_id_workspaces"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversations_user_id_updated_at"), ["user_id", "updated_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_conversations_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "conversation_llms",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("llm_id", sa.Integer(), nullable=False),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("latency_ms_sum", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "first_used_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "last_used_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_llms_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["llm_id"], ["llms.id"], name=op.f("fk_conversation_llms_llm_id_llms"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("conversation_id", "llm_id", name=op.f("pk_conversation_llms")),
    )
    with op.batch_alter_table("conversation_llms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversation_llms_llm_id_last_used_at"), ["llm_id", "last_used_at"], unique=False
        )

    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("llm_id", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), server_default="assistant", nullable=False),
        sa.Column(
            "prompt",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["llm_id"], ["llms.id"], name=op.f("fk_messages_llm_id_llms"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_messages_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("request_id", name=op.f("uq_messages_request_id")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_messages_conversation_id_created_at"),
            ["conversation_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_messages_user_id"), ["user_id"], unique=False)

    op.create_table(
        "message_feedback",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("scale", sa.String(length=8), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "categories",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(scale = 'thumbs' AND rating IN (-1, 1)) OR (scale = 'stars' AND rating BETWEEN 1 AND 5)",
            name=op.f("ck_message_feedback_rating_range"),
        ),
        sa.CheckConstraint("scale IN ('thumbs', 'stars')", name=op.f("ck_message_feedback_scale")),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_feedback_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_message_feedback_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_feedback")),
    )
    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_feedback_message_id"), ["message_id"], unique=False)

    op.create_table(
        "usage_logs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("llm_id", sa.Integer(), nullable=True),
        sa.Column("conversation_id", sa.Uuid(), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("price_version", sa.Integer(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cached_input_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cache_write_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reasoning_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("charged_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("latency_ms", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("upstream_latency_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="success", nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("http_status", sa.SmallInteger(), nullable=True),
        sa.Column("user_api_key_used", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("usage_source", sa.String(length=16), server_default="provider", nullable=False),
        sa.Column("usage_estimator", sa.String(length=32), nullable=True),
        sa.Column("is_stream", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            frozen_types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('success', 'error', 'cancelled')", name=op.f("ck_usage_logs_status")),
        sa.CheckConstraint(
            "usage_source IN ('provider', 'estimated')", name=op.f("ck_usage_logs_usage_source")
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_usage_logs_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_usage_logs_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["llm_id"], ["llms.id"], name=op.f("fk_usage_logs_llm_id_llms"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_usage_logs_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_usage_logs_user_id_users"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_usage_logs_workspace_id_workspaces"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_logs")),
        sa.UniqueConstraint("request_id", name=op.f("uq_usage_logs_request_id")),
    )
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_logs_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_usage_logs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_usage_logs_llm_id_created_at"), ["llm_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_usage_logs_user_id_created_at"), ["user_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_usage_logs_workspace_id_created_at"), ["workspace_id", "created_at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_logs_workspace_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_usage_logs_user_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_usage_logs_llm_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_usage_logs_created_at"))
        batch_op.drop_index(batch_op.f("ix_usage_logs_conversation_id"))

    op.drop_table("usage_logs")
    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_feedback_message_id"))

    op.drop_table("message_feedback")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_user_id"))
        batch_op.drop_index(batch_op.f("ix_messages_conversation_id_created_at"))

    op.drop_table("messages")
    with op.batch_alter_table("conversation_llms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversation_llms_llm_id_last_used_at"))

    op.drop_table("conversation_llms")
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversations_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_conversations_user_id_updated_at"))

    op.drop_table("conversations")
    with op.batch_alter_table("billing_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_events_workspace_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_billing_events_user_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_billing_events_request_id"))
        batch_op.drop_index(batch_op.f("ix_billing_events_invoice_id"))

    op.drop_table("billing_events")
    with op.batch_alter_table("workspace_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_members_user_id"))

    op.drop_table("workspace_members")
    with op.batch_alter_table("tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tags_name"))

    op.drop_table("tags")
    op.drop_table("provider_credentials")
    op.drop_table("llm_price_versions")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoices_user_id_period_end"))

    op.drop_table("invoices")
    with op.batch_alter_table("credit_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_reservations_user_id_expires_at"))

    op.drop_table("credit_reservations")
    op.drop_table("credit_accounts")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_api_keys_user_id"))

    op.drop_table("api_keys")
    op.drop_table("workspaces")
    op.drop_table("users")
    op.drop_table("llms")
