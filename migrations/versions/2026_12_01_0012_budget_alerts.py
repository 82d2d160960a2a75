"""Budget alerts: each budget's spend per period, and the `budget.threshold` levels already announced.

- `budget_spend`: (scope, period, period_start) → spent_nano, moved in the recording transaction; its row
  lock orders concurrent debits of one budget so each knows the exact spend before and after it.
- `budget_alerts`: one row per (scope, period, period_start, threshold_pct) whose event was queued; inserted
  with ON CONFLICT DO NOTHING in the same transaction, so each level is announced once per period.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "budget_spend",
        sa.Column("scope", sa.String(length=48), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("period_start", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("spent_nano", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("scope", "period", "period_start", name=op.f("pk_budget_spend")),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("scope", sa.String(length=48), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("period_start", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("threshold_pct", sa.SmallInteger(), nullable=False),
        sa.Column("budget_nano", sa.BigInteger(), nullable=False),
        sa.Column("spent_nano", sa.BigInteger(), nullable=False),
        sa.Column("created_at", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "scope", "period", "period_start", "threshold_pct", name=op.f("pk_budget_alerts")
        ),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("budget_spend")
