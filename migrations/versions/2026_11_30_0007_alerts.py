"""Alerts: a per-user low-balance threshold (`credits.low`) and the keys whose expiry was announced.

- `users.low_balance_threshold_nano` (BIGINT nano-USD, NULL: no alert).
- `key_expiry_alerts`: one row per key whose `key.expired` event was queued, so it is queued once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite supports it for a nullable column): a batch rebuild would DROP TABLE users,
    # which SQLite's foreign keys refuse once other tables reference its rows.
    op.add_column("users", sa.Column("low_balance_threshold_nano", sa.BigInteger(), nullable=True))
    op.create_table(
        "key_expiry_alerts",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("expired_at", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("notified_at", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_key_expiry_alerts_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_key_expiry_alerts")),
    )


def downgrade() -> None:
    op.drop_table("key_expiry_alerts")
    op.drop_column("users", "low_balance_threshold_nano")  # SQLite ≥ 3.35 drops a column in place too
