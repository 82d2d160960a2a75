"""Limits and leases: RPM, TPM and period budgets on keys, users, workspaces; key expiry; reservation leases.

- `api_keys.spend_limit_nano` (read by nothing until now) becomes `budget_nano`, with `budget_period`
  (day|week|month|total, calendar periods in UTC) and `expires_at`; users and workspaces gain the four limits.
- `credit_reservations` carries the lease (gateway instance) that holds it, so a dead instance's reservations
  are found and released, and the key, workspace and tokens it holds against their limits.
- `limit_windows`: the SQL ledger's per-minute request and token counters (Redis keeps its own).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _limits() -> list[sa.Column[object]]:
    return [
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("budget_nano", sa.BigInteger(), nullable=True),
        sa.Column("budget_period", sa.String(8), nullable=True),
    ]


def upgrade() -> None:
    # Plain ALTER TABLE (no batch copy): PostgreSQL and SQLite ≥ 3.25 both rename and add columns in place,
    # which keeps the tables' other constraints exactly as they were.
    op.execute("ALTER TABLE api_keys RENAME COLUMN spend_limit_nano TO budget_nano")
    op.add_column("api_keys", sa.Column("budget_period", sa.String(8), nullable=True))
    op.add_column("api_keys", sa.Column("expires_at", TS, nullable=True))
    for table in ("users", "workspaces"):
        for column in _limits():
            op.add_column(table, column)
    op.add_column("credit_reservations", sa.Column("lease_id", sa.String(64), nullable=True))
    op.add_column("credit_reservations", sa.Column("api_key_id", sa.Uuid(), nullable=True))
    op.add_column("credit_reservations", sa.Column("workspace_id", sa.Uuid(), nullable=True))
    op.add_column(
        "credit_reservations", sa.Column("tokens", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.create_index(
        op.f("ix_credit_reservations_lease_id"), "credit_reservations", ["lease_id"], unique=False
    )
    op.create_table(
        "limit_windows",
        sa.Column("scope", sa.String(48), nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("requests", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("tokens", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("scope", "window_start", name=op.f("pk_limit_windows")),
    )


def downgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (PostgreSQL; SQLite ≥ 3.35): a batch copy of users or api_keys would
    # drop tables that rows elsewhere reference.
    op.drop_table("limit_windows")
    op.drop_index(op.f("ix_credit_reservations_lease_id"), table_name="credit_reservations")
    drops = {
        "credit_reservations": ("tokens", "workspace_id", "api_key_id", "lease_id"),
        "workspaces": ("budget_period", "budget_nano", "tpm_limit", "rpm_limit"),
        "users": ("budget_period", "budget_nano", "tpm_limit", "rpm_limit"),
        "api_keys": ("expires_at", "budget_period"),
    }
    for table, names in drops.items():
        for name in names:
            op.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
    op.execute("ALTER TABLE api_keys RENAME COLUMN budget_nano TO spend_limit_nano")
