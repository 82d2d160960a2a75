"""Analytics rollups: usage totals per hour and per day, latency histograms per day, kept exact.

Three tables, written in the recorder's transaction together with the usage_logs row they count, so a
rollup never disagrees with the log it summarises. This module knows only `UsageFacts`; the recorder turns
its records into facts (so the recorder imports the rollups, never the other way round):

- `usage_hourly`  (hour, model, byok): every user's totals — top LLMs and llm-performance for the operator.
- `usage_daily`   (user, day, workspace, model, byok): one user's usage, one workspace's costs.
- `latency_daily` (day, model, metric, bucket): latency and TTFT histograms of successful requests, for
  percentiles over more rows than is cheap to sort (storage/analytics.py decides when).
- one dimension per day (the dashboard at scale, issue 13): `usage_model_daily` (day, model, byok),
  `usage_user_daily` (user, day, byok), `usage_workspace_daily` (workspace, day, byok) and `usage_key_daily`
  (key, day, user, byok). "Spend per user over 90 days" then reads ~90 rows per user, not one per
  (user, workspace, model, day); storage/usage/analytics.py picks the smallest rollup that holds a question.

The monthly tier (issue 15): `usage_user_monthly`, `usage_key_monthly` (usage_user_daily and
usage_key_daily summed per UTC month) and `latency_user_monthly` (one user's histograms per month and model)
are NOT written by the recorder: the `usage.monthly` job (`compact_closed_months`) computes each closed month
from the daily rollups (and usage_logs for the histograms) and moves `usage_monthly_watermark` past it;
readers use the tier only for months before the watermark. A row written later into such a month (a spool
replay keeps its original time) lowers the watermark in its own transaction (`apply_facts`; the recorder
sends such batches through the statement path), so readers go back to the daily tier for that month until
the job compacts it again. `rebuild_usage_rollups` rebuilds the tier and the watermark too.

Hours and days are UTC. Only sums are stored, so any set of whole periods adds up exactly; the queries
read the partial periods at the edges of a time range from usage_logs itself.

Lock order (no deadlocks): a batch's rows are summed per key, then upserted table by table
(ROLLUP_ORDER, then latency) in sorted key order, so every transaction takes rollup row locks in one global
order. An hourly row is shared by every request to its model in that hour: concurrent transactions queue
on it until they commit, so the hook belongs at the very end of the recorder's transaction (with group
commit, one wait per batch).
"""

from __future__ import annotations

import bisect
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, Uuid, case, delete, func, literal, literal_column, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.models import (
    NO_KEY,
    NO_WORKSPACE,
    LatencyDaily,
    LatencyUserMonthly,
    UsageDaily,
    UsageHourly,
    UsageKeyDaily,
    UsageKeyMonthly,
    UsageLog,
    UsageModelDaily,
    UsageMonthlyWatermark,
    UsageUserDaily,
    UsageUserMonthly,
    UsageWorkspaceDaily,
    table_of,
)
from storage.types import UTCDateTime, utcnow
from storage.usage.partitions import add_months, month_start

usage_hourly = table_of(UsageHourly)
usage_daily = table_of(UsageDaily)
latency_daily = table_of(LatencyDaily)
usage_logs = table_of(UsageLog)
usage_model_daily = table_of(UsageModelDaily)
usage_user_daily = table_of(UsageUserDaily)
usage_workspace_daily = table_of(UsageWorkspaceDaily)
usage_key_daily = table_of(UsageKeyDaily)
usage_user_monthly = table_of(UsageUserMonthly)
usage_key_monthly = table_of(UsageKeyMonthly)
latency_user_monthly = table_of(LatencyUserMonthly)
monthly_watermark = table_of(UsageMonthlyWatermark)

#: The monthly tier: each monthly table and the daily rollup it sums (same keys, `month` for `day`).
MONTHLY_OF: tuple[tuple[Table, Table], ...] = (
    (usage_user_monthly, usage_user_daily),
    (usage_key_monthly, usage_key_daily),
)

#: The sum rollups in lock order (every transaction upserts them in this order, then latency_daily).
ROLLUP_ORDER: tuple[Table, ...] = (
    usage_hourly,
    usage_daily,
    usage_model_daily,
    usage_user_daily,
    usage_workspace_daily,
    usage_key_daily,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SUM_FIELDS: tuple[str, ...] = (
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


LATENCY_BOUNDS = _latency_bounds()


def latency_bucket(value_ms: int) -> int:
    """The lower bound of the histogram bucket holding `value_ms` (the last bucket is open-ended)."""
    if value_ms <= 0:
        return 0
    return LATENCY_BOUNDS[bisect.bisect_right(LATENCY_BOUNDS, value_ms) - 1]


def bucket_value(lower_ms: int) -> float:
    """What a bucket stands for in a percentile: the middle of the integers it holds.

    Buckets below 11 ms hold one value each (exact); wider ones are off by at most ~5 %.
    """
    index = bisect.bisect_left(LATENCY_BOUNDS, lower_ms)
    if index + 1 >= len(LATENCY_BOUNDS):
        return float(lower_ms)
    upper = LATENCY_BOUNDS[index + 1] - 1
    return (lower_ms + upper) / 2


def floor_to(moment: datetime, unit: timedelta) -> datetime:
    """The start of the UTC hour or day (any unit dividing a day) holding `moment`."""
    return EPOCH + unit * ((moment.astimezone(UTC) - EPOCH) // unit)


def ceil_to(moment: datetime, unit: timedelta) -> datetime:
    floor = floor_to(moment, unit)
    return floor if floor == moment else floor + unit


@dataclass(frozen=True, slots=True)
class UsageFacts:
    """What the rollups need of one usage_logs row."""

    created_at: datetime
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None
    model: str
    byok: bool
    status: str
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nano: int = 0
    charged_nano: int = 0
    latency_ms: int = 0
    ttft_ms: int | None = None
    api_key_id: uuid.UUID | None = None

    def sums(self) -> dict[str, int]:
        success = self.status == "success"
        return {
            "requests": 1,
            "errors": int(self.status == "error"),
            "cancelled": int(self.status == "cancelled"),
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_nano": self.cost_nano,
            "charged_nano": self.charged_nano,
            "success_output_tokens": self.output_tokens if success else 0,
            "success_latency_ms_sum": self.latency_ms if success else 0,
        }

    def hourly_key(self) -> dict[str, Any]:
        return {"hour": floor_to(self.created_at, HOUR), "model": self.model, "user_api_key_used": self.byok}

    def daily_key(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "day": floor_to(self.created_at, DAY),
            "workspace_id": self.workspace_id or NO_WORKSPACE,
            "model": self.model,
            "user_api_key_used": self.byok,
        }

    def rollup_keys(self) -> dict[str, dict[str, Any]]:
        """This row's key in every sum rollup, by table name (column order = the table's primary key)."""
        day = floor_to(self.created_at, DAY)
        byok = self.byok
        return {
            usage_hourly.name: self.hourly_key(),
            usage_daily.name: self.daily_key(),
            usage_model_daily.name: {"day": day, "model": self.model, "user_api_key_used": byok},
            usage_user_daily.name: {"user_id": self.user_id, "day": day, "user_api_key_used": byok},
            usage_workspace_daily.name: {
                "workspace_id": self.workspace_id or NO_WORKSPACE,
                "day": day,
                "user_api_key_used": byok,
            },
            usage_key_daily.name: {
                "api_key_id": self.api_key_id or NO_KEY,
                "day": day,
                "user_id": self.user_id,
                "user_api_key_used": byok,
            },
        }

    def latency_keys(self) -> list[dict[str, Any]]:
        """The histogram rows this request counts in (successful requests only), in lock order."""
        if self.status != "success":
            return []
        day = floor_to(self.created_at, DAY)
        keys = [
            {
                "day": day,
                "model": self.model,
                "metric": "latency",
                "bucket_ms": latency_bucket(self.latency_ms),
            }
        ]
        if self.ttft_ms is not None:
            keys.append(
                {"day": day, "model": self.model, "metric": "ttft", "bucket_ms": latency_bucket(self.ttft_ms)}
            )
        return keys


_UPSERTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _upsert_many(dialect: str, table: Table, counters: Sequence[str]) -> Any:
    """INSERT rows, or add their counters to the existing rows (executemany, both dialects).

    Built once per dialect and table: the recorder calls this for every request.
    """
    key = (dialect, table.name, tuple(counters))
    cached = _UPSERTS.get(key)
    if cached is None:
        stmt = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        cached = stmt.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key.columns],
            set_={name: table.c[name] + stmt.excluded[name] for name in counters},
        )
        _UPSERTS[key] = cached
    return cached


def _sum_into(
    target: dict[tuple[Any, ...], list[int]], key: Mapping[str, Any], sums: Mapping[str, int]
) -> None:
    row = target.setdefault(tuple(key.values()), [0] * len(SUM_FIELDS))
    for i, name in enumerate(SUM_FIELDS):
        row[i] += sums[name]


async def apply_facts(conn: AsyncConnection, facts: Sequence[UsageFacts]) -> None:
    """Count usage_logs rows in every rollup, inside the caller's transaction.

    The rows are summed per rollup key first, then upserted table by table in sorted key order: every
    transaction takes its rollup row locks in the same global order, so concurrent batches cannot
    deadlock on them (and each key is written once per batch).
    """
    per_table: dict[str, dict[tuple[Any, ...], list[int]]] = {t.name: {} for t in ROLLUP_ORDER}
    latency: dict[tuple[Any, ...], int] = defaultdict(int)
    for f in facts:
        sums = f.sums()
        for name, key in f.rollup_keys().items():
            _sum_into(per_table[name], key, sums)
        for key in f.latency_keys():
            latency[tuple(key.values())] += 1
    dialect = conn.dialect.name
    for table in ROLLUP_ORDER:
        rows = per_table[table.name]
        if rows:
            names = [c.name for c in table.primary_key.columns] + list(SUM_FIELDS)
            params = [dict(zip(names, (*key, *rows[key]), strict=True)) for key in sorted(rows)]
            await conn.execute(_upsert_many(dialect, table, SUM_FIELDS), params)
    if latency:
        names = ["day", "model", "metric", "bucket_ms", "count"]
        params = [dict(zip(names, (*key, latency[key]), strict=True)) for key in sorted(latency)]
        await conn.execute(_upsert_many(dialect, latency_daily, ["count"]), params)
    late = late_month(facts, utcnow())
    if late is not None:  # last: the watermark row is locked until this transaction commits
        await conn.execute(lower_watermark(late))


# -- the monthly tier: closed months compacted by a job, behind a watermark ------------------------------

#: A month is compacted only this long after it ended: a record whose transaction computed "this month" just
#: before the month ended has committed long before (the recorder's statements time out far sooner).
MONTHLY_GRACE = timedelta(hours=1)


def compactable_until(now: datetime) -> datetime:
    """The first month not closed for the monthly tier at `now` (every month before it may be compacted)."""
    return month_start(now - MONTHLY_GRACE)


def late_month(facts: Sequence[UsageFacts], now: datetime) -> datetime | None:
    """The earliest month of the facts dated before the current month (a spool replay, a write across the
    month's end), or None: only such a write can touch a compacted month."""
    current = month_start(now)
    late = [f.created_at for f in facts if f.created_at < current]
    return month_start(min(late)) if late else None


def lower_watermark(month: datetime) -> Any:
    """UPDATE the watermark to `month` if it is above it (NULL, nothing compacted, stays NULL).

    The recorder runs it last in the transaction that writes a late row, so it also takes the watermark
    row's lock: a compaction running at the same time either committed first (and this lowers its mark) or
    waits for this commit (and then reads this row's rollups).
    """
    w = monthly_watermark.c.months_before
    return (
        update(monthly_watermark)
        .where(monthly_watermark.c.id == 1)
        .values(months_before=case((w > month, month), else_=w))
    )


async def read_watermark(conn: AsyncConnection) -> datetime | None:
    """Every month before this one is in the monthly tier (None: none is)."""
    found = (
        await conn.execute(select(monthly_watermark.c.months_before).where(monthly_watermark.c.id == 1))
    ).first()
    return None if found is None else found[0]


def _month_sql(dialect: str, column: Any) -> Any:
    """SQL for month_start(column), as the column type stores it."""
    if dialect == "postgresql":
        utc: Any = literal_column("'UTC'")
        return func.timezone(utc, func.date_trunc(literal_column("'month'"), func.timezone(utc, column)))
    return func.strftime(literal_column("'%Y-%m-01 00:00:00.000000'"), column)


def _monthly_from_daily(dialect: str, monthly: Table, daily: Table, where: list[Any]) -> Any:
    """INSERT the monthly rows summed from the daily rollup's rows matching `where`."""
    keys = [c.name for c in monthly.primary_key.columns]
    month = _month_sql(dialect, daily.c.day)
    columns = [month if k == "month" else daily.c[k] for k in keys]
    return monthly.insert().from_select(
        [*keys, *SUM_FIELDS],
        select(*columns, *(func.sum(daily.c[name]) for name in SUM_FIELDS)).where(*where).group_by(*columns),
    )


def _user_latency_select(dialect: str, metric_column: Any, where: list[Any]) -> Any:
    """(user, month, model, value, count) of successful requests (bucketed by the caller: latency_bucket
    is the one definition of a bucket)."""
    c = usage_logs.c
    month = type_coerce(_month_sql(dialect, c.created_at), UTCDateTime())
    return (
        select(c.user_id, month, c.model, metric_column, func.count())
        .where(c.status == "success", metric_column.is_not(None), *where)
        .group_by(c.user_id, month, c.model, metric_column)
    )


def _bucketed_user_latency(rows: Any, metric: str, into: dict[tuple[Any, ...], int]) -> None:
    for user, month, model, value, count in rows:
        into[(user, month, model, metric, latency_bucket(int(value)))] += int(count)


def _latency_rows(counts: Mapping[tuple[Any, ...], int]) -> list[dict[str, Any]]:
    names = ("user_id", "month", "model", "metric", "bucket_ms", "count")
    return [dict(zip(names, (*key, n), strict=True)) for key, n in sorted(counts.items())]


async def _compact_month(conn: AsyncConnection, month: datetime) -> None:
    """Recompute one month of the monthly tier from the daily rollups and usage_logs."""
    dialect = conn.dialect.name
    end = add_months(month, 1)
    for monthly, daily in MONTHLY_OF:
        await conn.execute(delete(monthly).where(monthly.c.month == month))
        await conn.execute(
            _monthly_from_daily(dialect, monthly, daily, [daily.c.day >= month, daily.c.day < end])
        )
    await conn.execute(delete(latency_user_monthly).where(latency_user_monthly.c.month == month))
    c = usage_logs.c
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    for metric, column in (("latency", c.latency_ms), ("ttft", c.ttft_ms)):
        stmt = _user_latency_select(dialect, column, [c.created_at >= month, c.created_at < end])
        _bucketed_user_latency((await conn.execute(stmt)).all(), metric, counts)
    rows = _latency_rows(counts)
    for start in range(0, len(rows), 10_000):
        await conn.execute(latency_user_monthly.insert(), rows[start : start + 10_000])


def _ensure_watermark_row(dialect: str) -> Any:
    stmt = (
        postgresql.insert(monthly_watermark) if dialect == "postgresql" else sqlite.insert(monthly_watermark)
    )
    return stmt.values(id=1, months_before=None).on_conflict_do_nothing(index_elements=["id"])


async def compact_closed_months(engine: AsyncEngine, now: datetime) -> list[datetime]:
    """Bring the monthly tier up to the last closed month: each month from the watermark on (from the oldest
    daily row when nothing is compacted yet) recomputed and the watermark moved past it, one transaction per
    month, holding the watermark row's lock (a late write waits for it, then lowers the mark). Returns the
    months compacted (the `usage.monthly` job)."""
    until = compactable_until(now)
    done: list[datetime] = []
    while True:
        async with engine.begin() as conn:
            await conn.execute(_ensure_watermark_row(conn.dialect.name))
            mark = (
                await conn.execute(
                    select(monthly_watermark.c.months_before)
                    .where(monthly_watermark.c.id == 1)
                    .with_for_update()
                )
            ).scalar_one()
            if mark is None:
                first = (await conn.execute(select(func.min(usage_user_daily.c.day)))).scalar_one()
                mark = until if first is None else min(until, month_start(first))
                if mark == until:  # nothing recorded before the last closed month: nothing to compact
                    await conn.execute(update(monthly_watermark).values(months_before=until))
                    return done
            if mark >= until:
                return done
            await _compact_month(conn, mark)
            await conn.execute(
                update(monthly_watermark)
                .where(monthly_watermark.c.id == 1)
                .values(months_before=add_months(mark, 1))
            )
        done.append(mark)


# -- rebuilding from usage_logs (the migration that adds the rollups, the benchmark, repairs) --------------


def usage_log_sums() -> list[Any]:
    """SUM expressions over usage_logs rows, in SUM_FIELDS order (UsageFacts.sums, in SQL)."""
    c = usage_logs.c
    success = c.status == "success"
    return [
        func.count(),
        func.sum(case((c.status == "error", 1), else_=0)),
        func.sum(case((c.status == "cancelled", 1), else_=0)),
        func.sum(c.input_tokens),
        func.sum(c.cached_input_tokens),
        func.sum(c.cache_write_tokens),
        func.sum(c.output_tokens),
        func.sum(c.reasoning_tokens),
        func.sum(c.cost_nano),
        func.sum(c.charged_nano),
        func.sum(case((success, c.output_tokens), else_=0)),
        func.sum(case((success, c.latency_ms), else_=0)),
    ]


def _utc_start(dialect: str, column: Any, unit: str) -> Any:
    """SQL for floor_to(column, HOUR or DAY), as the column type stores it (tests hold it to floor_to)."""
    if dialect == "postgresql":
        utc: Any = literal_column("'UTC'")
        return func.timezone(utc, func.date_trunc(literal_column(f"'{unit}'"), func.timezone(utc, column)))
    # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text
    pattern = "%Y-%m-%d %H:00:00.000000" if unit == "hour" else "%Y-%m-%d 00:00:00.000000"
    return func.strftime(literal_column(f"'{pattern}'"), column)


def rebuild_usage_rollups(conn: Connection) -> int:
    """Recompute every rollup from usage_logs (in the caller's transaction); returns the rows summarised.

    The sums are grouped in SQL; histogram buckets are assigned here (latency_bucket is the only
    definition of a bucket) from values already grouped per day and model. Run it with the recorder
    stopped — the migration that creates the rollups does.
    """
    dialect = conn.dialect.name
    for table in (*ROLLUP_ORDER, latency_daily):
        conn.execute(delete(table))
    c = usage_logs.c
    hour = _utc_start(dialect, c.created_at, "hour")
    conn.execute(
        usage_hourly.insert().from_select(
            ["hour", "model", "user_api_key_used", *SUM_FIELDS],
            select(hour, c.model, c.user_api_key_used, *usage_log_sums()).group_by(
                hour, c.model, c.user_api_key_used
            ),
        )
    )
    day = _utc_start(dialect, c.created_at, "day")
    workspace = func.coalesce(c.workspace_id, literal(NO_WORKSPACE, Uuid()))
    conn.execute(
        usage_daily.insert().from_select(
            ["user_id", "day", "workspace_id", "model", "user_api_key_used", *SUM_FIELDS],
            select(c.user_id, day, workspace, c.model, c.user_api_key_used, *usage_log_sums()).group_by(
                c.user_id, day, c.workspace_id, c.model, c.user_api_key_used
            ),
        )
    )
    key = func.coalesce(c.api_key_id, literal(NO_KEY, Uuid()))
    one_dimension: tuple[tuple[Table, list[str], list[Any]], ...] = (
        (usage_model_daily, ["day", "model"], [day, c.model]),
        (usage_user_daily, ["user_id", "day"], [c.user_id, day]),
        (usage_workspace_daily, ["workspace_id", "day"], [workspace, day]),
        (usage_key_daily, ["api_key_id", "day", "user_id"], [key, day, c.user_id]),
    )
    for table, key_names, columns in one_dimension:
        conn.execute(
            table.insert().from_select(
                [*key_names, "user_api_key_used", *SUM_FIELDS],
                select(*columns, c.user_api_key_used, *usage_log_sums()).group_by(
                    *columns, c.user_api_key_used
                ),
            )
        )
    counts: dict[tuple[datetime, str, str, int], int] = defaultdict(int)
    typed_day = type_coerce(day, UTCDateTime())
    for metric, column in (("latency", c.latency_ms), ("ttft", c.ttft_ms)):
        grouped = (
            select(typed_day, c.model, column, func.count())
            .where(c.status == "success", column.is_not(None))
            .group_by(day, c.model, column)
        )
        result = conn.execute(grouped, execution_options={"stream_results": True, "yield_per": 50_000})
        for row in result:
            counts[(row[0], row[1], metric, latency_bucket(int(row[2])))] += int(row[3])
    names = ("day", "model", "metric", "bucket_ms", "count")
    rows = [dict(zip(names, (*key, n), strict=True)) for key, n in counts.items()]
    for start in range(0, len(rows), 10_000):
        conn.execute(latency_daily.insert(), rows[start : start + 10_000])
    _rebuild_monthly(conn, compactable_until(utcnow()))
    total = conn.execute(select(func.count()).select_from(usage_logs)).scalar_one()
    return int(total)


def _rebuild_monthly(conn: Connection, until: datetime) -> None:
    """The monthly tier for every month before `until`, from the (just rebuilt) daily rollups and usage_logs;
    the watermark set to `until`."""
    dialect = conn.dialect.name
    for table in (usage_user_monthly, usage_key_monthly, latency_user_monthly):
        conn.execute(delete(table))
    for monthly, daily in MONTHLY_OF:
        conn.execute(_monthly_from_daily(dialect, monthly, daily, [daily.c.day < until]))
    c = usage_logs.c
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    for metric, column in (("latency", c.latency_ms), ("ttft", c.ttft_ms)):
        stmt = _user_latency_select(dialect, column, [c.created_at < until])
        result = conn.execute(stmt, execution_options={"stream_results": True, "yield_per": 50_000})
        _bucketed_user_latency(result, metric, counts)
    rows = _latency_rows(counts)
    for start in range(0, len(rows), 10_000):
        conn.execute(latency_user_monthly.insert(), rows[start : start + 10_000])
    conn.execute(_ensure_watermark_row(dialect))
    conn.execute(update(monthly_watermark).where(monthly_watermark.c.id == 1).values(months_before=until))


def rollup_rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup row in a comparable form (tests: incremental upkeep equals a rebuild)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in (*ROLLUP_ORDER, latency_daily):
        keys = list(table.primary_key.columns)
        out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*keys)).all()]
    return out
