"""A monthly tier of the per-user and per-key rollups, and per-user latency histograms (issue 15).

- `usage_user_monthly` (user, month, byok) and `usage_key_monthly` (key, month, user, byok): the twelve sums
  of `usage_user_daily` / `usage_key_daily` per UTC month, so "spend per user over 400 days" reads ~13 rows
  per user instead of ~400.
- `latency_user_monthly` (user, month, model, metric, bucket): one user's latency/TTFT histograms, so a
  user's own percentiles over more requests than is cheap to sort come from histograms (as everyone's do).
- `usage_monthly_watermark`: one row, `months_before` — every month before it is compacted. Created NULL
  (nothing compacted): the `usage.monthly` job fills closed months from the daily rollups (and usage_logs
  for the histograms), oldest first; until it has, the readers read the daily tier as before, so answers
  are exact from the first second. Nothing is filled here (the migration stays instant at any size).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUMS = (
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

_TABLES: dict[str, tuple[str, ...]] = {
    "usage_user_monthly": ("user_id", "month"),
    "usage_key_monthly": ("api_key_id", "month", "user_id"),
}


def _month() -> sa.Column[Any]:
    return sa.Column("month", frozen_types.UTCDateTime(timezone=True), nullable=False)


def upgrade() -> None:
    for table, keys in _TABLES.items():
        op.create_table(
            table,
            *(_month() if k == "month" else sa.Column(k, sa.Uuid(), nullable=False) for k in keys),
            sa.Column("user_api_key_used", sa.Boolean(), nullable=False),
            *(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False) for name in _SUMS),
            sa.PrimaryKeyConstraint(*keys, "user_api_key_used", name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_month"), table, ["month"], unique=False)
    op.create_index(
        op.f("ix_usage_key_monthly_user_id_month"), "usage_key_monthly", ["user_id", "month"], unique=False
    )
    op.create_table(
        "latency_user_monthly",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        _month(),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("metric", sa.String(length=8), nullable=False),
        sa.Column("bucket_ms", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("metric IN ('latency', 'ttft')", name=op.f("ck_latency_user_monthly_metric")),
        sa.PrimaryKeyConstraint(
            "user_id", "month", "model", "metric", "bucket_ms", name=op.f("pk_latency_user_monthly")
        ),
    )
    watermark = op.create_table(
        "usage_monthly_watermark",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("months_before", frozen_types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_monthly_watermark")),
    )
    op.bulk_insert(watermark, [{"id": 1, "months_before": None}])


def downgrade() -> None:
    op.drop_table("usage_monthly_watermark")
    op.drop_table("latency_user_monthly")
    op.drop_index(op.f("ix_usage_key_monthly_user_id_month"), table_name="usage_key_monthly")
    for table in reversed(list(_TABLES)):
        op.drop_index(op.f(f"ix_{table}_month"), table_name=table)
        op.drop_table(table)
