"""Dashboard at scale: one-dimension daily rollups (per model, per user, per workspace, per key).

- `usage_model_daily` (day, model, byok), `usage_user_daily` (user, day, byok),
  `usage_workspace_daily` (workspace, day, byok; the nil UUID for "no workspace") and `usage_key_daily`
  (key, day, user, byok; the nil UUID for "no key"): the same twelve sums as usage_daily, so a top-N over
  90 days reads ~90 rows per user/workspace/key instead of one per (user, workspace, model, day).
- `ix_usage_logs_api_key_id_created_at`: what no rollup holds (a key with a model, a key's percentiles and its
  request log) reads one key's rows, not the whole range.
- Filled here from the existing usage_logs with plain INSERT … SELECT (a frozen copy of
  storage/usage/rollups.py's rebuild of these four tables at this revision); the recorder keeps them
  current from now on, in the transaction that writes each usage_logs row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NIL = uuid.UUID(int=0)  # the stand-in for "no workspace" / "no key" (a key part cannot be NULL)
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

# table -> its key columns before user_api_key_used (primary key order)
_TABLES: dict[str, tuple[str, ...]] = {
    "usage_model_daily": ("day", "model"),
    "usage_user_daily": ("user_id", "day"),
    "usage_workspace_daily": ("workspace_id", "day"),
    "usage_key_daily": ("api_key_id", "day", "user_id"),
}


def _key_column(name: str) -> sa.Column[Any]:
    if name == "day":
        return sa.Column("day", frozen_types.UTCDateTime(timezone=True), nullable=False)
    if name == "model":
        return sa.Column("model", sa.String(length=100), nullable=False)
    return sa.Column(name, sa.Uuid(), nullable=False)


def upgrade() -> None:
    for table, keys in _TABLES.items():
        op.create_table(
            table,
            *(_key_column(k) for k in keys),
            sa.Column("user_api_key_used", sa.Boolean(), nullable=False),
            *(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False) for name in _SUMS),
            sa.PrimaryKeyConstraint(*keys, "user_api_key_used", name=op.f(f"pk_{table}")),
        )
        if table != "usage_model_daily":
            op.create_index(op.f(f"ix_{table}_day"), table, ["day"], unique=False)
    op.create_index(
        op.f("ix_usage_key_daily_user_id_day"), "usage_key_daily", ["user_id", "day"], unique=False
    )
    # What no rollup holds (a key with a model, its percentiles, its request log) reads one key's rows.
    op.create_index(
        op.f("ix_usage_logs_api_key_id_created_at"), "usage_logs", ["api_key_id", "created_at"], unique=False
    )
    _fill(op.get_bind())


def _fill(conn: Any) -> None:
    """The four rollups computed from usage_logs (exact integer sums, grouped in SQL)."""
    logs = sa.table(
        "usage_logs",
        *(
            sa.column(n)
            for n in (
                "user_id",
                "workspace_id",
                "api_key_id",
                "model",
                "user_api_key_used",
                "status",
                "input_tokens",
                "cached_input_tokens",
                "cache_write_tokens",
                "output_tokens",
                "reasoning_tokens",
                "cost_nano",
                "charged_nano",
                "latency_ms",
            )
        ),
        sa.column("created_at", frozen_types.UTCDateTime()),
    )
    c = logs.c
    success = c.status == "success"
    sums = [
        sa.func.count(),
        sa.func.sum(sa.case((c.status == "error", 1), else_=0)),
        sa.func.sum(sa.case((c.status == "cancelled", 1), else_=0)),
        sa.func.sum(c.input_tokens),
        sa.func.sum(c.cached_input_tokens),
        sa.func.sum(c.cache_write_tokens),
        sa.func.sum(c.output_tokens),
        sa.func.sum(c.reasoning_tokens),
        sa.func.sum(c.cost_nano),
        sa.func.sum(c.charged_nano),
        sa.func.sum(sa.case((success, c.output_tokens), else_=0)),
        sa.func.sum(sa.case((success, c.latency_ms), else_=0)),
    ]
    if conn.dialect.name == "postgresql":
        utc: Any = sa.literal_column("'UTC'")
        day: Any = sa.func.timezone(
            utc, sa.func.date_trunc(sa.literal_column("'day'"), sa.func.timezone(utc, c.created_at))
        )
    else:  # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text
        day = sa.func.strftime(sa.literal_column("'%Y-%m-%d 00:00:00.000000'"), c.created_at)
    columns: dict[str, Any] = {
        "day": day,
        "model": c.model,
        "user_id": c.user_id,
        "workspace_id": sa.func.coalesce(c.workspace_id, sa.literal(_NIL, sa.Uuid())),
        "api_key_id": sa.func.coalesce(c.api_key_id, sa.literal(_NIL, sa.Uuid())),
    }
    for name, keys in _TABLES.items():
        target = sa.table(name, *(sa.column(n) for n in (*keys, "user_api_key_used", *_SUMS)))
        selected = [columns[k] for k in keys]
        conn.execute(sa.delete(target))
        conn.execute(
            target.insert().from_select(
                [*keys, "user_api_key_used", *_SUMS],
                sa.select(*selected, c.user_api_key_used, *sums).group_by(*selected, c.user_api_key_used),
            )
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_usage_logs_api_key_id_created_at"), table_name="usage_logs")
    op.drop_index(op.f("ix_usage_key_daily_user_id_day"), table_name="usage_key_daily")
    for table in reversed(_TABLES):
        if table != "usage_model_daily":
            op.drop_index(op.f(f"ix_{table}_day"), table_name=table)
        op.drop_table(table)
