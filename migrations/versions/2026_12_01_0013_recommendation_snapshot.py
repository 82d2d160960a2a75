"""Model recommendations as a stored snapshot, so the dashboard reads one small table.

- `model_recommendations`: one row per (tag, current model) recommendation of a scope in the latest
  `insights.daily` run (`platform`, or `user` with the user's id; `workspace` is allowed for later;
  `scope_id` is the nil UUID for the platform: a key part cannot be NULL): requests, exact nano-USD
  costs (current, projected at the candidate's prices, savings), the savings percent (2 places) and the
  evidence of both arms (sample sizes, rates, p50) as JSON.
- `recommendation_runs`: when the snapshot was computed (the platform's row; over which window, how many
  found), so "computed, nothing to recommend" differs from "never computed".
The job replaces every row of both tables in one transaction.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations import frozen_types

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "recommendation_runs",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Uuid(), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("recommendations", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "scope IN ('platform', 'workspace', 'user')", name=op.f("ck_recommendation_runs_scope")
        ),
        sa.PrimaryKeyConstraint("scope", "scope_id", name=op.f("pk_recommendation_runs")),
    )
    op.create_table(
        "model_recommendations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Uuid(), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("current_model", sa.String(length=100), nullable=False),
        sa.Column("recommended_model", sa.String(length=100), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("current_cost_nano", sa.BigInteger(), nullable=False),
        sa.Column("projected_cost_nano", sa.BigInteger(), nullable=False),
        sa.Column("savings_nano", sa.BigInteger(), nullable=False),
        sa.Column("savings_pct", frozen_types.ExactDecimal(precision=7, scale=2), nullable=False),
        sa.Column("evidence", JSON, nullable=False),
        sa.CheckConstraint(
            "scope IN ('platform', 'workspace', 'user')", name=op.f("ck_model_recommendations_scope")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_recommendations")),
    )
    op.create_index(
        op.f("ix_model_recommendations_scope_scope_id"),
        "model_recommendations",
        ["scope", "scope_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_model_recommendations_scope_scope_id"), table_name="model_recommendations")
    op.drop_table("model_recommendations")
    op.drop_table("recommendation_runs")
