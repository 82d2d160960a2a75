"""Analytics: usage rollups (hourly, daily), daily latency histograms, feedback copies, covering index.

- `usage_hourly`, `usage_daily`, `latency_daily`: kept current by the recorder and filled here from the
  existing usage_logs (`_fill_rollups`: a frozen copy of the rebuild as it was at this revision, so this
  migration does the same whatever the application's rollup code becomes).
- `message_feedback` gets copies of the rated message's model, owner and time (filled here from
  messages), indexes to read them by period, and one rating per (message, user).
- `ix_usage_logs_user_id_latency` covers a user's latency percentiles (an index-only scan on PostgreSQL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import bisect
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from migrations import frozen_types

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
        sa.Column("hour", frozen_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("user_api_key_used", sa.Boolean(), nullable=False),
        *_sum_columns(),
        sa.PrimaryKeyConstraint("hour", "model", "user_api_key_used", name=op.f("pk_usage_hourly")),
    )
    op.create_table(
        "usage_daily",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("day", frozen_types.UTCDateTime(timezone=True), nullable=False),
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
        sa.Column("day", frozen_types.UTCDateTime(timezone=True), nullable=False),
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
            sa.Column("message_created_at", frozen_types.UTCDateTime(timezone=True), nullable=True)
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

    # The rollups start out holding what usage_logs already holds.
    _fill_rollups(op.get_bind())


# -- the rollup fill, frozen (a copy of storage/rollups.py's rebuild at this revision) ------------------

_NO_WORKSPACE = uuid.UUID(int=0)  # usage_daily.workspace_id of requests made without a workspace
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


def _latency_bounds(limit_ms: int = 3_600_000) -> tuple[int, ...]:
    """Bucket lower bounds: 0, 1, …, 10, then each about 10 % above the last (integer ms), up to an hour."""
    bounds = [0]
    while bounds[-1] < limit_ms:
        last = bounds[-1]
        bounds.append(max(last + 1, -(-last * 11 // 10)))  # ceil(last × 1.1), exact in integers
    return tuple(bounds)


_BOUNDS = _latency_bounds()


def _bucket(value_ms: int) -> int:
    return 0 if value_ms <= 0 else _BOUNDS[bisect.bisect_right(_BOUNDS, value_ms) - 1]


def _utc_start(dialect: str, column: Any, unit: str) -> Any:
    if dialect == "postgresql":
        utc: Any = sa.literal_column("'UTC'")
        return sa.func.timezone(
            utc, sa.func.date_trunc(sa.literal_column(f"'{unit}'"), sa.func.timezone(utc, column))
        )
    pattern = "%Y-%m-%d %H:00:00.000000" if unit == "hour" else "%Y-%m-%d 00:00:00.000000"
    return sa.func.strftime(sa.literal_column(f"'{pattern}'"), column)


def _table(name: str, *columns: sa.ColumnClause[Any]) -> sa.TableClause:
    return sa.table(name, *columns)


def _fill_rollups(conn: Any) -> None:
    """usage_hourly, usage_daily and latency_daily computed from usage_logs (SQL sums; buckets here)."""
    logs = _table(
        "usage_logs",
        *(
            sa.column(n)
            for n in (
                "user_id",
                "workspace_id",
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
                "ttft_ms",
            )
        ),
        sa.column("created_at", frozen_types.UTCDateTime()),
    )
    hourly = _table("usage_hourly", *(sa.column(n) for n in ("hour", "model", "user_api_key_used", *_SUMS)))
    daily = _table(
        "usage_daily",
        *(sa.column(n) for n in ("user_id", "day", "workspace_id", "model", "user_api_key_used", *_SUMS)),
    )
    latency = _table(
        "latency_daily",
        sa.column("day", frozen_types.UTCDateTime()),
        *(sa.column(n) for n in ("model", "metric", "bucket_ms", "count")),
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
    dialect = conn.dialect.name
    for table in (hourly, daily, latency):
        conn.execute(sa.delete(table))
    hour = _utc_start(dialect, c.created_at, "hour")
    conn.execute(
        hourly.insert().from_select(
            ["hour", "model", "user_api_key_used", *_SUMS],
            sa.select(hour, c.model, c.user_api_key_used, *sums).group_by(hour, c.model, c.user_api_key_used),
        )
    )
    day = _utc_start(dialect, c.created_at, "day")
    workspace = sa.func.coalesce(c.workspace_id, sa.literal(_NO_WORKSPACE, sa.Uuid()))
    conn.execute(
        daily.insert().from_select(
            ["user_id", "day", "workspace_id", "model", "user_api_key_used", *_SUMS],
            sa.select(c.user_id, day, workspace, c.model, c.user_api_key_used, *sums).group_by(
                c.user_id, day, c.workspace_id, c.model, c.user_api_key_used
            ),
        )
    )
    counts: dict[tuple[datetime, str, str, int], int] = defaultdict(int)
    typed_day = sa.type_coerce(day, frozen_types.UTCDateTime())
    for metric, column in (("latency", c.latency_ms), ("ttft", c.ttft_ms)):
        grouped = (
            sa.select(typed_day, c.model, column, sa.func.count())
            .where(success, column.is_not(None))
            .group_by(day, c.model, column)
        )
        for row in conn.execute(grouped, execution_options={"stream_results": True, "yield_per": 50_000}):
            counts[(row[0], row[1], metric, _bucket(int(row[2])))] += int(row[3])
    names = ("day", "model", "metric", "bucket_ms", "count")
    rows = [dict(zip(names, (*key, n), strict=True)) for key, n in counts.items()]
    for start in range(0, len(rows), 10_000):
        conn.execute(latency.insert(), rows[start : start + 10_000])


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
