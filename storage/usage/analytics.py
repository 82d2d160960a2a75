"""Analytics queries: usage, workspace costs, per-model performance and top models (SQLAlchemy Core).

Every total comes from the rollups for the whole hours/days inside a time range, plus usage_logs itself
for the partial periods at its edges, so answers are exact for any time-zone-aware range and cost
O(periods), not O(requests) (storage/rollups.py says how the rollups are kept). `usage_totals` is the one
reader of grouped totals: given the filters and group keys it picks the smallest rollup holding them (a
one-dimension daily rollup when it can), so the admin API and the dashboard ask it the same questions.

Percentiles follow PostgreSQL's `percentile_cont` (linear interpolation between the two nearest ranks):
- exact, from usage_logs, for any range holding at most EXACT_PERCENTILE_MAX_ROWS successful requests
  (everyone's, or one user's own): `percentile_cont` on PostgreSQL; on SQLite the latencies are fetched
  and the same formula runs in Python (`percentile_cont` below);
- from latency histograms (buckets ≤ 10 % wide, so within ~5 %) above that, where sorting every request
  would not answer in time: the daily ones for everyone's requests, the per-user monthly ones for one
  user's (usage_logs bucketed for the rest of the range). The report says which (`percentile_method`).

The per-user and per-key totals read the monthly tier (storage/usage/rollups.py) for the whole months its
watermark covers, the daily rollups for the days around them, usage_logs for the partial days.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, Table, case, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.models import (
    NO_KEY,
    NO_WORKSPACE,
    Llm,
    MessageFeedback,
    User,
    Workspace,
    WorkspaceMember,
    table_of,
)
from storage.usage.partitions import add_months, month_start
from storage.usage.rollups import (
    DAY,
    HOUR,
    SUM_FIELDS,
    bucket_value,
    ceil_to,
    floor_to,
    latency_bucket,
    latency_daily,
    latency_user_monthly,
    read_watermark,
    usage_daily,
    usage_hourly,
    usage_key_daily,
    usage_key_monthly,
    usage_log_sums,
    usage_logs,
    usage_model_daily,
    usage_user_daily,
    usage_user_monthly,
    usage_workspace_daily,
)

llms = table_of(Llm)
feedback = table_of(MessageFeedback)
users = table_of(User)
workspaces = table_of(Workspace)
members = table_of(WorkspaceMember)

#: Above this many successful requests in a range, global percentiles come from the histograms.
EXACT_PERCENTILE_MAX_ROWS = 50_000


# -- time ranges -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time range [start, end); None means unbounded on that side. Both ends are aware."""

    start: datetime | None = None
    end: datetime | None = None

    def filters(self, column: Any) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.start is not None:
            out.append(column >= self.start)
        if self.end is not None:
            out.append(column < self.end)
        return out


def split_window(window: Window, unit: timedelta) -> tuple[Window | None, list[Window]]:
    """The whole `unit` periods inside `window` (read from a rollup), and the partial ones at its edges.

    Each edge lies inside a single period, so its rows all belong to `floor_to(edge.start, unit)`.
    """
    start, end = window.start, window.end
    whole_start = ceil_to(start, unit) if start is not None else None
    whole_end = floor_to(end, unit) if end is not None else None
    if whole_start is not None and whole_end is not None and whole_start > whole_end:
        return None, [window]  # both ends inside one period
    edges: list[Window] = []
    if start is not None and whole_start is not None and start < whole_start:
        edges.append(Window(start, whole_start))
    if end is not None and whole_end is not None and whole_end < end:
        edges.append(Window(whole_end, end))
    whole = None if whole_start is not None and whole_start == whole_end else Window(whole_start, whole_end)
    return whole, edges


def _ceil_month(moment: datetime) -> datetime:
    floor = month_start(moment)
    return floor if floor == moment else add_months(floor, 1)


def split_months(window: Window, watermark: datetime | None) -> tuple[Window | None, list[Window]]:
    """The whole UTC months inside `window` that the monthly tier holds (every month before `watermark`),
    and the rest of `window` (at most two pieces, read from a finer tier)."""
    if watermark is None:
        return None, [window]
    start, end = window.start, window.end
    first = None if start is None else _ceil_month(start)
    last = watermark if end is None else min(watermark, month_start(end))
    if first is not None and first >= last:
        return None, [window]
    rest: list[Window] = []
    if start is not None and first is not None and start < first:
        rest.append(Window(start, first))
    if end is None or last < end:
        rest.append(Window(last, end))
    return Window(first, last), rest


# -- additive totals ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sums:
    """Totals of some usage_logs rows (field names are storage.rollups.SUM_FIELDS)."""

    requests: int = 0
    errors: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nano: int = 0
    charged_nano: int = 0
    success_output_tokens: int = 0
    success_latency_ms_sum: int = 0

    @property
    def successes(self) -> int:
        return self.requests - self.errors - self.cancelled

    def add(self, other: Sums) -> None:
        for name in SUM_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @classmethod
    def of_values(cls, values: Sequence[Any]) -> Sums:
        return cls(*(int(v or 0) for v in values))  # PostgreSQL's SUM(bigint) is a NUMERIC: exact ints

    @classmethod
    def total(cls, items: Iterable[Sums]) -> Sums:
        out = cls()
        for item in items:
            out.add(item)
        return out


assert tuple(f.name for f in fields(Sums)) == SUM_FIELDS


def _rollup_sums(table: Table, names: Sequence[str] = SUM_FIELDS) -> list[Any]:
    return [func.sum(table.c[name]) for name in names]


def _log_sums(names: Sequence[str] = SUM_FIELDS) -> list[Any]:
    everything = dict(zip(SUM_FIELDS, usage_log_sums(), strict=True))
    return [everything[name] for name in names]


def _merge(into: dict[tuple[Any, ...], Sums], key: tuple[Any, ...], sums: Sums) -> None:
    """Add `sums` under `key` (taking the object itself when the key is new: most keys are)."""
    existing = into.get(key)
    if existing is None:
        into[key] = sums
    else:
        existing.add(sums)


def _sums_of(names: Sequence[str], values: Sequence[Any]) -> Sums:
    """Sums of the named fields (the others 0); PostgreSQL's SUM(bigint) is a NUMERIC: exact ints."""
    return Sums(**{name: int(v or 0) for name, v in zip(names, values, strict=True)})


@dataclass(frozen=True, slots=True)
class RollupSource:
    """Where grouped totals come from: a rollup (its period column, filters, group keys) and the same
    selection over usage_logs for the edges."""

    rollup: Table
    unit: timedelta
    period: str  # the rollup's period column: hour | day
    rollup_filters: list[ColumnElement[bool]]
    rollup_keys: list[Any]
    raw_filters: list[ColumnElement[bool]]
    raw_keys: list[Any]
    fields: tuple[str, ...] = SUM_FIELDS  # which sums to read (fewer is faster; the others stay 0)


async def _rollup_sums_into(
    conn: AsyncConnection,
    source: RollupSource,
    piece: Window,
    out: dict[tuple[Any, ...], Sums],
    *,
    by_period: bool,
) -> None:
    period = source.rollup.c[source.period]
    keys = [period, *source.rollup_keys] if by_period else list(source.rollup_keys)
    stmt = select(*keys, *_rollup_sums(source.rollup, source.fields)).where(
        *source.rollup_filters, *piece.filters(period)
    )
    if keys:
        stmt = stmt.group_by(*keys)
    for row in (await conn.execute(stmt)).all():
        _merge(out, tuple(row[: len(keys)]), _sums_of(source.fields, row[len(keys) :]))


async def grouped_sums(
    conn: AsyncConnection,
    source: RollupSource,
    window: Window,
    *,
    by_period: bool = False,
    monthly: RollupSource | None = None,
) -> dict[tuple[Any, ...], Sums]:
    """Totals per group key (with the period first when `by_period`), exact over `window`.

    With `monthly` (the same selection over the rollup's monthly tier), the whole months the tier holds
    are read from it and only the days around them from `source`.
    """
    out: dict[tuple[Any, ...], Sums] = defaultdict(Sums)
    whole, edges = split_window(window, source.unit)
    pieces = [] if whole is None else [whole]
    if whole is not None and monthly is not None and not by_period:
        months, rest = split_months(whole, await read_watermark(conn))
        if months is not None:
            await _rollup_sums_into(conn, monthly, months, out, by_period=False)
            pieces = rest
    for piece in pieces:
        await _rollup_sums_into(conn, source, piece, out, by_period=by_period)
    for edge in edges:
        keys = list(source.raw_keys)
        stmt = select(*keys, *_log_sums(source.fields)).where(
            *source.raw_filters, *edge.filters(usage_logs.c.created_at)
        )
        if keys:
            stmt = stmt.group_by(*keys)
        prefix = (floor_to(edge.start, source.unit),) if by_period and edge.start is not None else ()
        for row in (await conn.execute(stmt)).all():
            sums = _sums_of(source.fields, row[len(keys) :])
            if sums.requests:
                out[prefix + tuple(row[: len(keys)])].add(sums)
    return {k: v for k, v in out.items() if v.requests}


# -- totals by any dimension: the one reader the API and the dashboard share ------------------------------

#: What totals may be grouped by (usage_logs columns; `api_key_id` is the gateway key).
DIMENSIONS = ("model", "user_api_key_used", "user_id", "workspace_id", "api_key_id")
#: Rollup stand-ins for NULL key parts, read back as None.
_STAND_INS: dict[str, uuid.UUID] = {"workspace_id": NO_WORKSPACE, "api_key_id": NO_KEY}


@dataclass(frozen=True, slots=True)
class UsageFilters:
    """What totals are narrowed to; None means no narrowing."""

    user_id: uuid.UUID | None = None
    workspace_id: uuid.UUID | None = None
    model: str | None = None
    key_id: uuid.UUID | None = None

    def columns(self) -> dict[str, Any]:
        """The narrowing as {usage_logs column: value}."""
        given = {
            "user_id": self.user_id,
            "workspace_id": self.workspace_id,
            "model": self.model,
            "api_key_id": self.key_id,
        }
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Rollup:
    table: Table
    unit: timedelta
    period: str
    dimensions: frozenset[str]  # besides user_api_key_used, which every rollup has
    monthly: Table | None = None  # its monthly tier (same keys, `month` for `day`), for whole months


HOURLY_ROLLUP = Rollup(usage_hourly, HOUR, "hour", frozenset({"model"}))
#: Daily rollups, smallest first: the first that holds a question's dimensions answers it.
DAILY_ROLLUPS = (
    Rollup(usage_model_daily, DAY, "day", frozenset({"model"})),
    Rollup(usage_workspace_daily, DAY, "day", frozenset({"workspace_id"})),
    Rollup(usage_user_daily, DAY, "day", frozenset({"user_id"}), usage_user_monthly),
    Rollup(usage_key_daily, DAY, "day", frozenset({"api_key_id", "user_id"}), usage_key_monthly),
    Rollup(usage_daily, DAY, "day", frozenset({"user_id", "workspace_id", "model"})),
)


def choose_rollup(window: Window, dimensions: Iterable[str], per: timedelta | None = None) -> Rollup | None:
    """The rollup that answers totals over these dimensions (filters and group keys) most cheaply; None when
    only usage_logs has them (e.g. a key with a model).

    A day-aligned range (every dashboard range) reads the smallest daily rollup. Otherwise the hourly one
    when it holds the dimensions (its edges are partial hours of usage_logs, not partial days).
    """
    needed = set(dimensions) - {"user_api_key_used"}
    hourly_fits = needed <= HOURLY_ROLLUP.dimensions
    if per == HOUR:
        return HOURLY_ROLLUP if hourly_fits else None
    daily = next((r for r in DAILY_ROLLUPS if needed <= r.dimensions), None)
    _whole, day_edges = split_window(window, DAY)
    if hourly_fits and (day_edges or daily is None):
        return HOURLY_ROLLUP
    return daily


def _read_back(name: str, value: Any) -> Any:
    if name in _STAND_INS and value == _STAND_INS[name]:
        return None
    if name == "user_api_key_used":
        return bool(value)
    return value


async def usage_totals(
    conn: AsyncConnection,
    window: Window,
    filters: UsageFilters,
    keys: Sequence[str],
    *,
    per: timedelta | None = None,
    among_users: Sequence[uuid.UUID] | None = None,
    fields: Sequence[str] = SUM_FIELDS,
) -> dict[tuple[Any, ...], Sums]:
    """Exact totals per group of `keys` (a subset of DIMENSIONS) over `window` and `filters`, with the UTC
    period (hour or day) first in each key when `per` is given; only `among_users`' rows when given.

    NULL workspaces and keys come back as None. Only groups with requests are returned. `fields` names the
    sums to read (it must hold `requests`; the others come back 0): a cost table needs four of twelve.
    """
    assert all(k in DIMENSIONS for k in keys), keys
    assert "requests" in fields and set(fields) <= set(SUM_FIELDS), fields
    fields = tuple(fields)
    narrowing = filters.columns()
    dimensions = {*keys, *narrowing}
    if among_users is not None:
        dimensions.add("user_id")
    rollup = choose_rollup(window, dimensions, per)
    raw_filters: list[ColumnElement[bool]] = [usage_logs.c[k] == v for k, v in narrowing.items()]
    if among_users is not None:
        raw_filters.append(usage_logs.c.user_id.in_(list(among_users)))
    found: dict[tuple[Any, ...], Sums]
    if rollup is not None:

        def source_of(t: Table, period: str) -> RollupSource:
            rollup_filters: list[ColumnElement[bool]] = [t.c[k] == v for k, v in narrowing.items()]
            if among_users is not None:
                rollup_filters.append(t.c.user_id.in_(list(among_users)))
            assert rollup is not None
            return RollupSource(
                rollup=t,
                unit=rollup.unit,
                period=period,
                rollup_filters=rollup_filters,
                rollup_keys=[t.c[k] for k in keys],
                raw_filters=raw_filters,
                raw_keys=[usage_logs.c[k] for k in keys],
                fields=fields,
            )

        monthly = None if rollup.monthly is None else source_of(rollup.monthly, "month")
        found = await grouped_sums(
            conn, source_of(rollup.table, rollup.period), window, by_period=per is not None, monthly=monthly
        )
    else:  # only usage_logs has these dimensions together
        if per is not None:
            raise ValueError("a series needs a rollup holding its dimensions")
        columns = [usage_logs.c[k] for k in keys]
        stmt = select(*columns, *_log_sums(fields)).where(
            *raw_filters, *window.filters(usage_logs.c.created_at)
        )
        if columns:
            stmt = stmt.group_by(*columns)
        found = {}
        for row in (await conn.execute(stmt)).all():
            sums = _sums_of(fields, row[len(keys) :])
            if sums.requests:
                found[tuple(row[: len(keys)])] = sums
    names = ["period", *keys] if per is not None else list(keys)
    converted = [(i, n) for i, n in enumerate(names) if n in _STAND_INS or n == "user_api_key_used"]
    floored = per is not None and rollup is not None and rollup.unit != per
    if not converted and not floored:
        return found
    out: dict[tuple[Any, ...], Sums] = {}
    for key, sums in found.items():
        values = list(key)
        for i, name in converted:
            values[i] = _read_back(name, values[i])
        if floored:
            assert per is not None
            values[0] = floor_to(values[0], per)
        _merge(out, tuple(values), sums)
    return out


async def user_usage_by_day(
    conn: AsyncConnection, user_id: uuid.UUID, window: Window
) -> dict[datetime, Sums]:
    """A user's totals per UTC day (the per-user rollup: one row per day and BYOK flag)."""
    found = await usage_totals(conn, window, UsageFilters(user_id=user_id), [], per=DAY)
    return {k[0]: v for k, v in found.items()}


async def user_usage_by_model(conn: AsyncConnection, user_id: uuid.UUID, window: Window) -> dict[str, Sums]:
    """A user's totals per model over the whole window (summed in SQL: one row per model).

    With `user_usage_by_day`, what the usage report needs: a (day × model) grid would be days × models rows
    to fetch and add up (8,784 for a busy user's two years) where days + models suffice.
    """
    found = await usage_totals(conn, window, UsageFilters(user_id=user_id), ["model"])
    return {k[0]: v for k, v in found.items()}


async def workspace_costs_by_user_and_model(
    conn: AsyncConnection, workspace_id: uuid.UUID, window: Window
) -> dict[tuple[uuid.UUID, str, bool], Sums]:
    """A workspace's totals per (user, model, BYOK)."""
    keys = ["user_id", "model", "user_api_key_used"]
    found = await usage_totals(conn, window, UsageFilters(workspace_id=workspace_id), keys)
    return {(k[0], k[1], bool(k[2])): v for k, v in found.items()}


async def totals_by_model(
    conn: AsyncConnection, window: Window, user_id: uuid.UUID | None = None
) -> dict[tuple[str, bool], Sums]:
    """Totals per (model, BYOK): over everyone's requests (per-model rollups), or one user's (usage_daily)."""
    found = await usage_totals(conn, window, UsageFilters(user_id=user_id), ["model", "user_api_key_used"])
    return {(k[0], bool(k[1])): v for k, v in found.items()}


# -- percentiles -------------------------------------------------------------------------------------------


def percentile_cont(ordered: Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont over sorted values: linear interpolation between adjacent ranks."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    low, high = float(ordered[lower]), float(ordered[upper])
    return low + (high - low) * (position - lower)


def histogram_percentile(histogram: Mapping[int, int], fraction: float) -> float | None:
    """percentile_cont over a histogram, each value standing for its bucket (storage.rollups.bucket_value)."""
    total = sum(histogram.values())
    if total == 0:
        return None
    position = fraction * (total - 1)
    lower = math.floor(position)
    upper = min(lower + 1, total - 1)

    def value_at(rank: int) -> float:
        seen = 0
        for bucket in sorted(histogram):
            seen += histogram[bucket]
            if rank < seen:
                return bucket_value(bucket)
        raise AssertionError("rank beyond the histogram")

    low, high = value_at(lower), value_at(upper)
    return low + (high - low) * (position - lower)


@dataclass(frozen=True, slots=True)
class Percentiles:
    latency_p50: float | None = None
    latency_p95: float | None = None
    ttft_p50: float | None = None


async def exact_percentiles(
    conn: AsyncConnection, window: Window, user_id: uuid.UUID | None = None
) -> dict[str, Percentiles]:
    """Latency p50/p95 and TTFT p50 of successful requests per model, from usage_logs."""
    c = usage_logs.c
    where = [c.status == "success", *window.filters(c.created_at)]
    if user_id is not None:
        where.append(c.user_id == user_id)
    if conn.dialect.name == "postgresql":

        def pct(fraction: float, column: Any) -> Any:
            return type_coerce(func.percentile_cont(fraction).within_group(column), Float())

        stmt = (
            select(c.model, pct(0.5, c.latency_ms), pct(0.95, c.latency_ms), pct(0.5, c.ttft_ms))
            .where(*where)
            .group_by(c.model)
        )
        return {
            row[0]: Percentiles(*(None if v is None else float(v) for v in row[1:]))
            for row in (await conn.execute(stmt)).all()
        }
    # SQLite has no percentile_cont: fetch the (covered, indexed) latencies and compute it here.
    latencies: dict[str, list[int]] = defaultdict(list)
    ttfts: dict[str, list[int]] = defaultdict(list)
    for model, latency, ttft in (
        await conn.execute(select(c.model, c.latency_ms, c.ttft_ms).where(*where))
    ).all():
        latencies[model].append(latency)
        if ttft is not None:
            ttfts[model].append(ttft)
    out = {}
    for model, values in latencies.items():
        values.sort()
        ttft_values = sorted(ttfts.get(model, []))
        out[model] = Percentiles(
            percentile_cont(values, 0.5), percentile_cont(values, 0.95), percentile_cont(ttft_values, 0.5)
        )
    return out


async def latency_histograms(conn: AsyncConnection, window: Window) -> dict[tuple[str, str], dict[int, int]]:
    """Histograms per (model, metric) of every successful request in `window`: the daily rollup for whole
    days, usage_logs (bucketed here) for the partial days at the edges."""
    out: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    whole, edges = split_window(window, DAY)
    if whole is not None:
        t = latency_daily.c
        stmt = (
            select(t.model, t.metric, t.bucket_ms, func.sum(t.count))
            .where(*whole.filters(t.day))
            .group_by(t.model, t.metric, t.bucket_ms)
        )
        for model, metric, bucket, count in (await conn.execute(stmt)).all():
            out[(model, metric)][bucket] += int(count)
    c = usage_logs.c
    for edge in edges:
        for metric, column in (("latency", c.latency_ms), ("ttft", c.ttft_ms)):
            stmt = (
                select(c.model, column, func.count())
                .where(c.status == "success", column.is_not(None), *edge.filters(c.created_at))
                .group_by(c.model, column)
            )
            for row in (await conn.execute(stmt)).all():
                out[(row[0], metric)][latency_bucket(int(row[1]))] += int(row[2])
    return out


async def user_latency_histograms(
    conn: AsyncConnection, window: Window, user_id: uuid.UUID
) -> dict[tuple[str, str], dict[int, int]]:
    """Histograms per (model, metric) of one user's successful requests in `window`: the monthly tier for
    the whole months it holds, usage_logs (bucketed here) for the rest — at most the months after the
    watermark (the current one) and the partial months at the window's edges."""
    out: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    months, rest = split_months(window, await read_watermark(conn))
    if months is not None:
        t = latency_user_monthly.c
        stmt = (
            select(t.model, t.metric, t.bucket_ms, func.sum(t.count))
            .where(t.user_id == user_id, *months.filters(t.month))
            .group_by(t.model, t.metric, t.bucket_ms)
        )
        for model, metric, bucket, count in (await conn.execute(stmt)).all():
            out[(model, metric)][bucket] += int(count)
    c = usage_logs.c
    for piece in rest:
        for metric, column in (("latency", c.latency_ms), ("ttft", c.ttft_ms)):
            stmt = (
                select(c.model, column, func.count())
                .where(
                    c.user_id == user_id,
                    c.status == "success",
                    column.is_not(None),
                    *piece.filters(c.created_at),
                )
                .group_by(c.model, column)
            )
            for row in (await conn.execute(stmt)).all():
                out[(row[0], metric)][latency_bucket(int(row[1]))] += int(row[2])
    return out


def histogram_percentiles(histograms: Mapping[tuple[str, str], Mapping[int, int]]) -> dict[str, Percentiles]:
    models = {model for model, _metric in histograms}
    out = {}
    for model in models:
        latency = histograms.get((model, "latency"), {})
        ttft = histograms.get((model, "ttft"), {})
        out[model] = Percentiles(
            histogram_percentile(latency, 0.5),
            histogram_percentile(latency, 0.95),
            histogram_percentile(ttft, 0.5),
        )
    return out


# -- feedback ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FeedbackSums:
    stars_count: int = 0
    stars_sum: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    # Insights (issue 14): the sentiment of the comments of these ratings (label -> count).
    sentiment: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.stars_count + self.thumbs_up + self.thumbs_down


async def feedback_by_model(
    conn: AsyncConnection, window: Window, user_id: uuid.UUID | None = None
) -> dict[int, FeedbackSums]:
    """Ratings per llm id of the messages answered in `window` (of one user's messages, when given)."""
    f = feedback.c
    where = [f.llm_id.is_not(None), *window.filters(f.message_created_at)]
    if user_id is not None:
        where.append(f.message_user_id == user_id)
    stmt = (
        select(
            f.llm_id,
            f.scale,
            func.count(),
            func.sum(f.rating),
            func.sum(case((f.rating > 0, 1), else_=0)),
        )
        .where(*where)
        .group_by(f.llm_id, f.scale)
    )
    out: dict[int, FeedbackSums] = defaultdict(FeedbackSums)
    for llm_id, scale, count, rating_sum, positive in (await conn.execute(stmt)).all():
        sums = out[int(llm_id)]
        if scale == "stars":
            sums.stars_count += int(count)
            sums.stars_sum += int(rating_sum)
        else:
            sums.thumbs_up += int(positive)
            sums.thumbs_down += int(count) - int(positive)
    moods = (
        select(f.llm_id, f.sentiment, func.count())
        .where(*where, f.sentiment.is_not(None))
        .group_by(f.llm_id, f.sentiment)
    )
    for llm_id, label, count in (await conn.execute(moods)).all():
        out[int(llm_id)].sentiment[str(label)] = int(count)
    return dict(out)


# -- reports -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    llm_id: int | None
    name: str
    provider: str | None


async def catalog_entries(conn: AsyncConnection) -> dict[str, CatalogEntry]:
    """Every model of the catalog by name (usage is grouped by model name; the catalog adds ids)."""
    rows = (await conn.execute(select(llms.c.id, llms.c.name, llms.c.provider))).all()
    return {name: CatalogEntry(llm_id, name, provider) for llm_id, name, provider in rows}


@dataclass(frozen=True, slots=True)
class ModelPerformance:
    model: CatalogEntry
    sums: Sums
    percentiles: Percentiles
    feedback: FeedbackSums


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    percentile_method: str  # exact | histogram
    models: list[ModelPerformance] = field(default_factory=list)


async def llm_performance(
    conn: AsyncConnection, window: Window, user_id: uuid.UUID | None = None
) -> PerformanceReport:
    """Per model: totals, latency/TTFT percentiles and feedback; ordered by requests, then name."""
    catalog = await catalog_entries(conn)
    by_id = {entry.llm_id: entry for entry in catalog.values()}
    per_model: dict[str, Sums] = defaultdict(Sums)
    for (model, _byok), sums in (await totals_by_model(conn, window, user_id)).items():
        per_model[model].add(sums)
    successes = sum(s.successes for s in per_model.values())
    if successes <= EXACT_PERCENTILE_MAX_ROWS:
        method, percentiles = "exact", await exact_percentiles(conn, window, user_id)
    elif user_id is None:
        method, percentiles = "histogram", histogram_percentiles(await latency_histograms(conn, window))
    else:
        histograms = await user_latency_histograms(conn, window, user_id)
        method, percentiles = "histogram", histogram_percentiles(histograms)
    ratings: dict[str, FeedbackSums] = {}
    for llm_id, rated in (await feedback_by_model(conn, window, user_id)).items():
        entry = by_id.get(llm_id)
        if entry is not None:
            ratings[entry.name] = rated
    names = set(per_model) | set(ratings)
    models = [
        ModelPerformance(
            model=catalog.get(name) or CatalogEntry(None, name, None),
            sums=per_model.get(name) or Sums(),
            percentiles=percentiles.get(name) or Percentiles(),
            feedback=ratings.get(name) or FeedbackSums(),
        )
        for name in names
    ]
    models.sort(key=lambda m: (-m.sums.requests, m.model.name))
    return PerformanceReport(method, models)
