"""Monthly partitions of usage_logs on PostgreSQL (migration 0015): made ahead, filled, retired.

- `ensure_partitions`: the current UTC month and `months_ahead` more each have a partition
  (`usage_logs_yYYYYmMM`, [month start, next month start)); a month whose rows landed in
  `usage_logs_default` (a created_at no partition covered) gets its partition and those rows are moved
  into it. PostgreSQL refuses to add a partition while the default holds rows of its range, so a partition
  is always made as a standalone table (`LIKE usage_logs`), the default's rows of its month moved into it
  (one `DELETE … RETURNING` into an `INSERT`), then attached — one transaction. Moving rows this way does
  not pass through the request-id gate trigger (the gate already holds them: `usage_request_ids`).
- `detach_old_partitions`: partitions whose month ended more than `retention_months` before the current
  month are detached (then kept as standalone tables, or dropped). What billing needs is not in them:
  the ledger (`billing_events`), the rollups the analytics read for whole days, issued invoices (their
  lines are stored) and the current budget periods all live elsewhere or in the kept months; the request
  id gate keeps its rows, so a late replay of a retired request still writes nothing.
- `maintain_partitions`: both, from the settings, then `ANALYZE usage_logs` (autovacuum never analyzes a
  partitioned parent) — the daily `usage.partitions` job; `synapgate partitions` runs each step alone.

Each call takes a transaction-scoped advisory lock (two runners never interleave) and a short lock
timeout: attaching takes a brief exclusive lock, and waiting behind a long analytics query would stall the
record path queued behind it; a run that times out changes nothing and the next run retries.
On SQLite every function refuses with `PartitioningUnsupported`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config import Settings
from storage.errors import InvalidInput, PartitioningUnsupported

PARENT = "usage_logs"
DEFAULT_PARTITION = "usage_logs_default"
GATE_TABLE = "usage_request_ids"
LOCK_KEY = "synapgate.usage_partitions"
LOCK_TIMEOUT = "5s"
_NAME = re.compile(r"^usage_logs_y(\d{4})m(\d{2})$")


# -- months (pure) ------------------------------------------------------------------------------------


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the month holding `moment`."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def add_months(month: datetime, months: int) -> datetime:
    """The start of the month `months` after (or before) the month starting at `month`."""
    index = month.year * 12 + month.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def is_partitioning_table(name: str) -> bool:
    """A table of migration 0015 the models do not map (PostgreSQL only): a monthly or the default partition
    of usage_logs (the parent is `UsageLog`), or the request-id gate `usage_request_ids`."""
    return name in (DEFAULT_PARTITION, GATE_TABLE) or month_of(name) is not None


def partition_name(month: datetime) -> str:
    return f"usage_logs_y{month.year:04d}m{month.month:02d}"


def month_of(name: str) -> datetime | None:
    """The month a partition's name stands for (None: not a monthly partition's name)."""
    found = _NAME.match(name)
    if found is None or not 1 <= int(found.group(2)) <= 12:
        return None
    return datetime(int(found.group(1)), int(found.group(2)), 1, tzinfo=UTC)


def months_wanted(now: datetime, months_ahead: int, months_back: int = 0) -> list[datetime]:
    """The current month, `months_ahead` more, and `months_back` before it."""
    current = month_start(now)
    return [add_months(current, n) for n in range(-months_back, months_ahead + 1)]


def retention_cutoff(now: datetime, retention_months: int) -> datetime:
    """Months that end at or before this instant are past the retention (kept: the current month and the
    `retention_months` before it)."""
    return add_months(month_start(now), -retention_months)


# -- reports --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One monthly (or the default) partition: attached to usage_logs, or detached by the retention."""

    name: str
    month: datetime | None  # None: the default partition
    attached: bool
    rows_estimate: int  # the planner's count (pg_class.reltuples); 0 before the first ANALYZE
    bytes: int  # heap, indexes and TOAST

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "month": self.month.strftime("%Y-%m") if self.month is not None else "default",
            "attached": self.attached,
            "rows_estimate": self.rows_estimate,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class EnsureReport:
    created: list[str] = field(default_factory=list)
    moved_rows: int = 0  # from the default partition into the months created for them
    # months whose rows sit in the default but whose name is taken by a detached partition: left there
    blocked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"created": self.created, "moved_rows": self.moved_rows, "blocked": self.blocked}


@dataclass(frozen=True, slots=True)
class DetachReport:
    detached: list[str] = field(default_factory=list)
    dropped: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"detached": self.detached, "dropped": self.dropped}


# -- service functions --------------------------------------------------------------------------------


def _require_postgres(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        raise PartitioningUnsupported(
            "usage_logs partitions exist on PostgreSQL only; the embedded SQLite database keeps one table "
            "(nothing to do)"
        )


async def _locked(conn: AsyncConnection) -> None:
    await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": LOCK_KEY})


async def list_partitions(engine: AsyncEngine) -> list[PartitionInfo]:
    """Every attached partition of usage_logs and every detached monthly table, oldest month first."""
    _require_postgres(engine)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT c.relname, i.inhrelid IS NOT NULL AS attached, "
                    "greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'usage_logs'::regclass "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                    "AND (c.relname ~ '^usage_logs_y[0-9]{4}m[0-9]{2}$' OR i.inhrelid IS NOT NULL)"
                )
            )
        ).all()
    found = [PartitionInfo(name, month_of(name), attached, rows, size) for name, attached, rows, size in rows]
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.month or far, p.name))


async def _attached_months(conn: AsyncConnection) -> set[datetime]:
    rows = await conn.execute(
        text("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'usage_logs'::regclass")
    )
    return {m for (name,) in rows if (m := month_of(name)) is not None}


async def _table_exists(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})
    return bool(found.scalar_one())


async def ensure_partitions(
    engine: AsyncEngine, now: datetime, months_ahead: int, *, months_back: int = 0
) -> EnsureReport:
    """Partitions for the current month, `months_ahead` more (and `months_back` before it: for a history
    about to be imported), and for every month with rows in the default partition (those rows moved in);
    idempotent: a second call creates nothing."""
    _require_postgres(engine)
    for name, value in (("months_ahead", months_ahead), ("months_back", months_back)):
        if not 0 <= value <= 1200:
            raise InvalidInput(f"a number of months from 0 to 1200, not {value}", param=name)
    created: list[str] = []
    blocked: list[str] = []
    moved = 0
    async with engine.begin() as conn:
        await _locked(conn)
        attached = await _attached_months(conn)
        stray = {
            m.astimezone(UTC)
            for (m,) in await conn.execute(
                text(f"SELECT DISTINCT date_trunc('month', created_at, 'UTC') FROM {DEFAULT_PARTITION}")
            )
        }
        for month in sorted((set(months_wanted(now, months_ahead, months_back)) | stray) - attached):
            name = partition_name(month)
            if await _table_exists(conn, name):  # a month the retention detached: its name is taken
                blocked.append(name)
                continue
            moved += await _create_partition(conn, month, move_from_default=month in stray)
            created.append(name)
    return EnsureReport(created, moved, blocked)


async def _create_partition(conn: AsyncConnection, month: datetime, *, move_from_default: bool) -> int:
    """Make `month`'s partition as a standalone table, move the default's rows of that month into it, attach
    it (the attach finds the default clean of its range). Returns the rows moved."""
    name, start, end = partition_name(month), month.isoformat(), add_months(month, 1).isoformat()
    await conn.execute(text(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    moved = 0
    if move_from_default:
        result = await conn.execute(
            text(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE created_at >= :start "
                f"AND created_at < :end RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            ),
            {"start": month, "end": add_months(month, 1)},
        )
        moved = result.rowcount
    await conn.execute(
        text(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')")
    )
    return moved


async def detach_old_partitions(
    engine: AsyncEngine, now: datetime, retention_months: int, *, drop: bool = False
) -> DetachReport:
    """Detach (or drop) the monthly partitions that ended before the retention's cutoff."""
    _require_postgres(engine)
    if retention_months < 1:
        raise InvalidInput(
            "the retention keeps every month (SYNAPGATE_USAGE_RETENTION_MONTHS is 0): nothing to detach; "
            "set it to 1 or more",
            param="usage_retention_months",
        )
    cutoff = retention_cutoff(now, retention_months)
    detached: list[str] = []
    async with engine.begin() as conn:
        await _locked(conn)
        for month in sorted(await _attached_months(conn)):
            if add_months(month, 1) > cutoff:
                continue
            name = partition_name(month)
            await conn.execute(text(f"ALTER TABLE {PARENT} DETACH PARTITION {name}"))
            if drop:
                await conn.execute(text(f"DROP TABLE {name}"))
            detached.append(name)
    return DetachReport(detached, drop)


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    ensured: EnsureReport
    retired: DetachReport | None  # None: the retention keeps every month

    def to_dict(self) -> dict[str, object]:
        return {
            "ensured": self.ensured.to_dict(),
            "retired": self.retired.to_dict() if self.retired is not None else None,
        }


async def analyze_parent(engine: AsyncEngine) -> None:
    """Statistics of usage_logs as a whole. Autovacuum analyzes each partition but never a partitioned parent,
    whose statistics the planner uses for questions over many months (groups, joins); without them it
    guesses. PostgreSQL 15 samples every partition for it (and refreshes theirs too), once a day."""
    _require_postgres(engine)
    async with engine.connect() as conn:
        await conn.execute(text(f"ANALYZE {PARENT}"))
        await conn.commit()


async def maintain_partitions(engine: AsyncEngine, settings: Settings, now: datetime) -> MaintenanceReport:
    """Ensure the months ahead, retire the months past the retention (when one is set), then refresh the
    parent's statistics."""
    ensured = await ensure_partitions(engine, now, settings.usage_partition_months_ahead)
    retired = None
    if settings.usage_retention_months:
        retired = await detach_old_partitions(
            engine, now, settings.usage_retention_months, drop=settings.usage_retention_drop
        )
    await analyze_parent(engine)
    return MaintenanceReport(ensured, retired)


def summarise(partitions: Sequence[PartitionInfo]) -> dict[str, object]:
    """Totals of a partition listing (the history size of `bench/run.py` and `synapgate partitions list`)."""
    attached = [p for p in partitions if p.attached]
    return {
        "partitions": len(attached),
        "detached": len(partitions) - len(attached),
        "rows_estimate": sum(p.rows_estimate for p in attached),
        "bytes": sum(p.bytes for p in attached),
    }
