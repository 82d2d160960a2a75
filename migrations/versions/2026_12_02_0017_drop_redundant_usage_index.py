"""Drop `ix_usage_logs_user_id_created_at`: a prefix of `ix_usage_logs_user_id_latency` (issue 15).

`ix_usage_logs_user_id_latency` is (user_id, created_at, model, status, latency_ms, ttft_ms): every scan the
two-column index served — one user's rows in a time range, in created_at order — the wider one serves the
same way. Keeping both cost every recorded request one more B-tree insertion and ~42 bytes of index a row
(622,592 bytes for 14,977 rows in the benchmark's database); the time it saves `sg_record_usage` was within
the machine's noise in five alternating rounds (medians 1.847 ms without, 1.868 ms with; bench/RESULTS.md,
"2026-12-02, fourth session").

On PostgreSQL `usage_logs` is partitioned (0015): dropping the parent's index drops every partition's (a
partitioned index cannot be dropped CONCURRENTLY; the drop takes the table's lock for the moment it runs).
The downgrade builds it again on every partition.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_usage_logs_user_id_created_at"


def upgrade() -> None:
    op.drop_index(INDEX, table_name="usage_logs")


def downgrade() -> None:
    op.create_index(INDEX, "usage_logs", ["user_id", "created_at"], unique=False)
