"""Analytics: usage rollups (hourly, daily), daily latency histograms, feedback copies, covering index.

- `usage_hourly`, `usage_daily`, `latency_daily`: kept current by the recorder (storage/rollups.py) and
  filled here from the existing usage_logs (`rebuild_usage_rollups`, one UTC day at a time).
- `message_feedback` gets copies of the rated message's model, owner and time (filled here from
  messages), indexes to read them by period, and one rating per (message, user).
- `ix_usage_logs_user_id_latency` covers a user's latency percentiles (an index-only scan on PostgreSQL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sum_columns() -> list[sa.Column[int]]:
    names = (
        "requests",
        "errors",
        "cancelled",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_nano",
        "charged_nano",
        "success_output_tokens",
        "success_latency_ms_sum",
    )
    return [sa.Column(name, sa.BigInteger(), server_default="0", nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("hour", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("user_api_key_used", sa.Boolean(), nullable=False),
        *_sum_columns(),
        sa.PrimaryKeyConstraint("hour", "model", "user_api_key_used", name=op.f("pk_usage_hourly")),
    )
    op.create_table(
        "usage_daily",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("day", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("user_api_key_used", sa.Boolean(), nullable=False),
        *_sum_columns(),
        sa.PrimaryKeyConstraint(
            "user_id", "day", "workspace_id", "model", "user_api_key_used", name=op.f("pk_usage_daily")
        ),
    )
    with op.batch_alter_table("usage_daily", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_daily_workspace_id_day"), ["workspace_id", "day"], unique=False
        )

    op.create_table(
        "latency_daily",
        sa.Column("day", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("metric", sa.String(length=8), nullable=False),
        sa.Column("bucket_ms", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("metric IN ('latency', 'ttft')", name=op.f("ck_latency_daily_metric")),
        sa.PrimaryKeyConstraint("day", "model", "metric", "bucket_ms", name=op.f("pk_latency_daily")),
    )

    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("llm_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("message_user_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("message_created_at", storage.types.UTCDateTime(timezone=True), nullable=True)
        )
    for column in ("llm_id", "user_id", "created_at"):
        target = column if column == "llm_id" else f"message_{column}"
        op.execute(
            f"UPDATE message_feedback SET {target} = "
            f"(SELECT messages.{column} FROM messages WHERE messages.id = message_feedback.message_id)"
        )
    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_message_feedback_message_id_user_id"), ["message_id", "user_id"], unique=True
        )
        batch_op.create_index(
            batch_op.f("ix_message_feedback_message_created_at"), ["message_created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_message_feedback_message_user_id_message_created_at"),
            ["message_user_id", "message_created_at"],
            unique=False,
        )

    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_logs_user_id_latency",
            ["user_id", "created_at", "model", "status", "latency_ms", "ttft_ms"],
            unique=False,
        )

    # The rollups start out holding what usage_logs already holds. (Imported here, not at the top: the
    # rebuild is the application's own definition of hours, days and buckets.)
    from storage.usage.rollups import rebuild_usage_rollups

    rebuild_usage_rollups(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("usage_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_logs_user_id_latency")

    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_feedback_message_user_id_message_created_at"))
        batch_op.drop_index(batch_op.f("ix_message_feedback_message_created_at"))
        batch_op.drop_index(batch_op.f("ix_message_feedback_message_id_user_id"))
    with op.batch_alter_table("message_feedback", schema=None) as batch_op:
        batch_op.drop_column("message_created_at")
        batch_op.drop_column("message_user_id")
        batch_op.drop_column("llm_id")

    op.drop_table("latency_daily")
    with op.batch_alter_table("usage_daily", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_daily_workspace_id_day"))
    op.drop_table("usage_daily")
    op.drop_table("usage_hourly")
