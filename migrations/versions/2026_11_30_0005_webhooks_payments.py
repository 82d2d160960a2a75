"""Webhooks and payments: alert endpoints, their durable delivery outbox, and paid Stripe Checkout sessions.

- `webhook_endpoints`: URL, event types, optional user/workspace scope, the signing secret.
- `webhook_deliveries`: the outbox, written in the transaction of the record that triggered the event;
  the worker's attempts, next attempt time, last status and error live on each row.
- `stripe_payments`: which user a Checkout Session credited and how much has been refunded since (BIGINT
  nano-USD), so `charge.refunded` (which names only the payment intent) finds its user and is capped.

The job runner's own tables (procrastinate, PostgreSQL only) live in their own schema and are installed by
the worker (`storage.jobs.runner.ensure_job_schema`), not here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain SQLAlchemy types only: a migration never imports application code. The models' UTCDateTime is
# DateTime(timezone=True) underneath, which is what the database sees.
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _created(name: str = "created_at") -> sa.Column[object]:
    return sa.Column(name, TS, server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("format", sa.String(length=16), server_default="json", nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        _created(),
        sa.CheckConstraint("format IN ('json', 'slack')", name=op.f("ck_webhook_endpoints_format")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_webhook_endpoints_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_webhook_endpoints_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_endpoints_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_webhook_endpoints_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("last_status", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        _created(),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')", name=op.f("ck_webhook_deliveries_status")
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_status_next_attempt_at"), ["status", "next_attempt_at"]
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_endpoint_id_created_at"), ["endpoint_id", "created_at"]
        )

    op.create_table(
        "stripe_payments",
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("credited_nano", sa.BigInteger(), nullable=False),
        sa.Column("refunded_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unrecovered_nano", sa.BigInteger(), server_default="0", nullable=False),
        _created(),
        _created("updated_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_stripe_payments_user_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_stripe_payments")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_stripe_payments_payment_intent_id")),
    )
    with op.batch_alter_table("stripe_payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_payments_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_table("stripe_payments")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
