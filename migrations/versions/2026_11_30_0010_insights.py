"""Insights: churn predictions per user, spend anomalies per entity and hour, and feedback sentiment.

- `churn_predictions`: the latest prediction of each user (probability, risk, factors as JSON, the model
  version that made it and the day it is as of); the daily insights job replaces it.
- `spend_anomalies`: an anomalous hour of a user's, key's or workspace's spend or requests (observed,
  expected, robust score); unique per (entity, metric, hour) so a rerun of the hourly job finds it again
  instead of raising its webhook twice.
- `message_feedback.sentiment` / `sentiment_score`: the comment's sentiment, set when feedback is saved.
  (Tags already carry `is_auto` and `confidence`.)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations import frozen_types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _created(name: str = "created_at") -> sa.Column[object]:
    return sa.Column(name, TS, server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "churn_predictions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("churn_probability", frozen_types.ExactDecimal(precision=6, scale=5), nullable=False),
        sa.Column("risk", sa.String(length=8), nullable=False),
        sa.Column("factors", JSON, nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("as_of", TS, nullable=False),
        _created(),
        sa.CheckConstraint("risk IN ('low', 'medium', 'high')", name=op.f("ck_churn_predictions_risk")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_churn_predictions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_churn_predictions")),
    )
    op.create_index(
        op.f("ix_churn_predictions_risk_churn_probability"),
        "churn_predictions",
        ["risk", "churn_probability"],
        unique=False,
    )
    op.create_table(
        "spend_anomalies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("hour", TS, nullable=False),
        sa.Column("observed", sa.BigInteger(), nullable=False),
        sa.Column("expected", sa.BigInteger(), nullable=False),
        sa.Column("score", frozen_types.ExactDecimal(precision=12, scale=2), nullable=False),
        _created(),
        sa.CheckConstraint(
            "entity_type IN ('user', 'key', 'workspace')", name=op.f("ck_spend_anomalies_entity_type")
        ),
        sa.CheckConstraint("metric IN ('spend_nano', 'requests')", name=op.f("ck_spend_anomalies_metric")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spend_anomalies")),
        sa.UniqueConstraint(
            "entity_type",
            "entity_id",
            "metric",
            "hour",
            name=op.f("uq_spend_anomalies_entity_type_entity_id_metric_hour"),
        ),
    )
    op.create_index(op.f("ix_spend_anomalies_hour"), "spend_anomalies", ["hour"], unique=False)
    op.create_index(
        op.f("ix_spend_anomalies_user_id_hour"), "spend_anomalies", ["user_id", "hour"], unique=False
    )
    with op.batch_alter_table("message_feedback") as batch:
        batch.add_column(sa.Column("sentiment", sa.String(length=8), nullable=True))
        batch.add_column(
            sa.Column("sentiment_score", frozen_types.ExactDecimal(precision=6, scale=5), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("message_feedback") as batch:
        batch.drop_column("sentiment_score")
        batch.drop_column("sentiment")
    op.drop_index(op.f("ix_spend_anomalies_user_id_hour"), table_name="spend_anomalies")
    op.drop_index(op.f("ix_spend_anomalies_hour"), table_name="spend_anomalies")
    op.drop_table("spend_anomalies")
    op.drop_index(op.f("ix_churn_predictions_risk_churn_probability"), table_name="churn_predictions")
    op.drop_table("churn_predictions")
