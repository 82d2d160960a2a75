"""usage_logs range-partitioned by month on PostgreSQL (issue 15: history that does not slow anything).

- `usage_logs` becomes `PARTITION BY RANGE (created_at)`: one partition per UTC month
  (`usage_logs_yYYYYmMM`, [first instant of the month, first instant of the next)) from the oldest row's
  month to three months ahead of today, plus `usage_logs_default` for a row whose month has no partition
  yet (`storage/usage/partitions.py` creates months ahead and moves such rows out). The rows are copied in;
  the id sequence (and its value) is kept; every index of 0014 is recreated on the parent (so on each
  partition). A partitioned table's primary and unique keys must hold the partition key: they are now
  `(id, created_at)` and `(request_id, created_at)`.
- Idempotency by request id therefore moves to `usage_request_ids` (request_id PRIMARY KEY, created_at): an
  unpartitioned gate table filled by a `BEFORE INSERT` row trigger on usage_logs. Every path that writes a
  usage_logs row (`sg_record_usage`, the statement path, failure records, bulk loads) passes through it, and
  a second row for a request id fails with a unique violation on `pk_usage_request_ids` — what the unique
  index on usage_logs.request_id did until 0014 — whatever its created_at.
- No foreign key points at usage_logs (checked at 0014), so nothing else changes.

SQLite is unchanged (one table, `request_id` UNIQUE).

The downgrade copies the attached partitions' rows back into one table with the keys of 0014 (partitions
detached by the retention job are not part of usage_logs any more and are left as they are).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONTHS_AHEAD = 3

# The secondary indexes of usage_logs at 0014 (name → columns).
INDEXES = {
    "ix_usage_logs_api_key_id_created_at": "api_key_id, created_at",
    "ix_usage_logs_conversation_id": "conversation_id",
    "ix_usage_logs_created_at": "created_at",
    "ix_usage_logs_llm_id_created_at": "llm_id, created_at",
    "ix_usage_logs_user_id_created_at": "user_id, created_at",
    "ix_usage_logs_user_id_latency": "user_id, created_at, model, status, latency_ms, ttft_ms",
    "ix_usage_logs_workspace_id_created_at": "workspace_id, created_at",
}
# Its foreign keys at 0014 (name → definition).
FOREIGN_KEYS = {
    "fk_usage_logs_api_key_id_api_keys": "(api_key_id) REFERENCES api_keys(id) ON DELETE SET NULL",
    "fk_usage_logs_conversation_id_conversations": (
        "(conversation_id) REFERENCES conversations(id) ON DELETE SET NULL"
    ),
    "fk_usage_logs_llm_id_llms": "(llm_id) REFERENCES llms(id) ON DELETE RESTRICT",
    "fk_usage_logs_message_id_messages": "(message_id) REFERENCES messages(id) ON DELETE SET NULL",
    "fk_usage_logs_user_id_users": "(user_id) REFERENCES users(id) ON DELETE RESTRICT",
    "fk_usage_logs_workspace_id_workspaces": "(workspace_id) REFERENCES workspaces(id) ON DELETE SET NULL",
}

GATE_FUNCTION = """
CREATE FUNCTION sg_usage_request_gate() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- one usage_logs row per request id, whatever its created_at (a unique violation otherwise)
    INSERT INTO usage_request_ids (request_id, created_at) VALUES (NEW.request_id, NEW.created_at);
    RETURN NEW;
END
$fn$
"""


def _month_index(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


def _month(index: int) -> datetime:
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _partition_sql(index: int) -> str:
    start, end = _month(index), _month(index + 1)
    return (
        f"CREATE TABLE usage_logs_y{start.year:04d}m{start.month:02d} PARTITION OF usage_logs "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def _drop_keys_and_indexes(table: str) -> None:
    """Free the index names (they are schema-wide) of the table being replaced."""
    op.execute(
        f"ALTER TABLE {table} DROP CONSTRAINT pk_usage_logs, DROP CONSTRAINT "
        + (
            "uq_usage_logs_request_id"
            if table == "usage_logs_0014"
            else "uq_usage_logs_request_id_created_at"
        )
    )
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")


def _add_foreign_keys_and_indexes() -> None:
    op.execute(
        "ALTER TABLE usage_logs "
        + ", ".join(f"ADD CONSTRAINT {name} FOREIGN KEY {spec}" for name, spec in FOREIGN_KEYS.items())
    )
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON usage_logs ({columns})")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite keeps one table: its request_id stays UNIQUE
    op.execute("ALTER TABLE usage_logs RENAME TO usage_logs_0014")
    _drop_keys_and_indexes("usage_logs_0014")
    op.execute(
        "CREATE TABLE usage_logs (LIKE usage_logs_0014 INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (created_at)"
    )
    oldest = bind.exec_driver_sql("SELECT min(created_at) FROM usage_logs_0014").scalar()
    now = datetime.now(UTC)
    first = _month_index(oldest.astimezone(UTC) if oldest is not None else now)
    first = min(first, _month_index(now))
    for index in range(first, _month_index(now) + MONTHS_AHEAD + 1):
        op.execute(_partition_sql(index))
    op.execute("CREATE TABLE usage_logs_default PARTITION OF usage_logs DEFAULT")
    op.execute("INSERT INTO usage_logs SELECT * FROM usage_logs_0014")
    op.execute(
        "ALTER TABLE usage_logs ADD CONSTRAINT pk_usage_logs PRIMARY KEY (id, created_at), "
        "ADD CONSTRAINT uq_usage_logs_request_id_created_at UNIQUE (request_id, created_at)"
    )
    _add_foreign_keys_and_indexes()

    op.execute(
        "CREATE TABLE usage_request_ids (request_id varchar(64) NOT NULL, created_at timestamptz NOT NULL, "
        "CONSTRAINT pk_usage_request_ids PRIMARY KEY (request_id))"
    )
    op.execute(
        "INSERT INTO usage_request_ids (request_id, created_at) SELECT request_id, created_at FROM usage_logs"
    )
    op.execute(GATE_FUNCTION)
    op.execute(
        "CREATE TRIGGER usage_logs_request_gate BEFORE INSERT ON usage_logs "
        "FOR EACH ROW EXECUTE FUNCTION sg_usage_request_gate()"
    )
    op.execute("ALTER SEQUENCE usage_logs_id_seq OWNED BY usage_logs.id")
    op.execute("DROP TABLE usage_logs_0014")
    op.execute("ANALYZE usage_logs")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER usage_logs_request_gate ON usage_logs")
    op.execute("DROP FUNCTION sg_usage_request_gate()")
    op.execute("ALTER TABLE usage_logs RENAME TO usage_logs_0015")
    _drop_keys_and_indexes("usage_logs_0015")
    op.execute("CREATE TABLE usage_logs (LIKE usage_logs_0015 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    op.execute("INSERT INTO usage_logs SELECT * FROM usage_logs_0015 ORDER BY id")
    op.execute(
        "ALTER TABLE usage_logs ADD CONSTRAINT pk_usage_logs PRIMARY KEY (id), "
        "ADD CONSTRAINT uq_usage_logs_request_id UNIQUE (request_id)"
    )
    _add_foreign_keys_and_indexes()
    op.execute("ALTER SEQUENCE usage_logs_id_seq OWNED BY usage_logs.id")
    op.execute("DROP TABLE usage_logs_0015")  # its partitions with it
    op.execute("DROP TABLE usage_request_ids")
