"""Spend anomalies: hourly spend and requests per entity (user, key, workspace) against a seasonal,
outlier-robust baseline. Pure.

Baseline of an hour h: the same hour-of-week in each of the trailing `weeks` weeks, ± `neighbour_hours`
(so 4 weeks give 12 samples), missing hours counting as 0. expected = median; spread = 1.4826 × MAD, floored
at `relative_floor` × median and at an absolute floor per metric (a sparse entity's MAD is often 0, and a
jump from 0 to a few cents is not an incident). score = (observed − expected) ÷ spread; an hour is flagged
when score ≥ `min_score`. Only rises are flagged: a drop in spend is not an incident to page anyone about.
An entity needs `min_history_weeks` of data before the window to be judged at all.

Plain Python (the median of a dozen samples needs no NumPy): the hourly job runs in the serving worker on
SQLite, which must not load the model libraries (issue 15: RSS per worker).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import Literal

EntityType = Literal["user", "key", "workspace"]
Metric = Literal["spend_nano", "requests"]
HOURS_PER_WEEK = 168


@dataclass(frozen=True, slots=True)
class HourlyPoint:
    """One entity's totals in one hour (`hour` at the start of the hour)."""

    entity_type: EntityType
    entity_id: str
    hour: datetime
    spend_nano: int
    requests: int


@dataclass(frozen=True, slots=True)
class Anomaly:
    entity_type: EntityType
    entity_id: str
    metric: Metric
    hour: datetime
    observed: int
    expected: int
    score: float


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    weeks: int = 4
    neighbour_hours: int = 1
    min_score: float = 6.0
    relative_floor: float = 0.25
    spend_floor_nano: int = 20_000_000  # 2 US cents an hour
    requests_floor: int = 5
    min_history_weeks: int = 2


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _baseline(series: list[float], idx: int, rule: AnomalyRule) -> tuple[float, float]:
    lags = [
        idx - k * HOURS_PER_WEEK + d
        for k in range(1, rule.weeks + 1)
        for d in range(-rule.neighbour_hours, rule.neighbour_hours + 1)
    ]
    samples = [series[i] for i in lags if 0 <= i < idx]
    if not samples:
        return 0.0, 0.0
    med = float(median(samples))
    mad = float(median([abs(x - med) for x in samples]))
    return med, 1.4826 * mad


def detect_anomalies(
    points: Iterable[HourlyPoint], start: datetime, end: datetime, rule: AnomalyRule | None = None
) -> list[Anomaly]:
    """Anomalous hours in [start, end), judged against the trailing weeks before each hour."""
    rule = rule or AnomalyRule()
    start, end = _floor_hour(start), _floor_hour(end)
    origin = start - timedelta(hours=rule.weeks * HOURS_PER_WEEK + rule.neighbour_hours)
    n_hours = int((end - origin).total_seconds() // 3600)
    first_idx = int((start - origin).total_seconds() // 3600)
    series: dict[tuple[EntityType, str], tuple[list[float], list[float]]] = {}
    first_seen: dict[tuple[EntityType, str], datetime] = {}
    for p in points:
        key = (p.entity_type, p.entity_id)
        h = _floor_hour(p.hour)
        if key not in first_seen or h < first_seen[key]:
            first_seen[key] = h
        i = int((h - origin).total_seconds() // 3600)
        if not 0 <= i < n_hours:
            continue
        if key not in series:
            series[key] = ([0.0] * n_hours, [0.0] * n_hours)
        series[key][0][i] += p.spend_nano
        series[key][1][i] += p.requests
    out: list[Anomaly] = []
    needed = timedelta(hours=rule.min_history_weeks * HOURS_PER_WEEK)
    for key in sorted(series):
        if start - first_seen[key] < needed:
            continue  # too new to have a baseline
        spend, reqs = series[key]
        metrics: tuple[tuple[Metric, list[float], float], ...] = (
            ("spend_nano", spend, float(rule.spend_floor_nano)),
            ("requests", reqs, float(rule.requests_floor)),
        )
        for metric, values, abs_floor in metrics:
            for idx in range(first_idx, n_hours):
                observed = float(values[idx])
                if observed <= abs_floor:
                    continue
                med, spread = _baseline(values, idx, rule)
                scale = max(spread, rule.relative_floor * med, abs_floor)
                score = (observed - med) / scale
                if score >= rule.min_score:
                    out.append(
                        Anomaly(
                            key[0],
                            key[1],
                            metric,
                            origin + timedelta(hours=idx),
                            int(observed),
                            round(med),
                            round(score, 2),
                        )
                    )
    return out
