"""Spend anomalies: a planted spike is found with its numbers; flat and sparse data raise no alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from insights.anomaly import AnomalyRule, HourlyPoint, detect_anomalies

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
WINDOW = (T0 + timedelta(weeks=4), T0 + timedelta(weeks=5))


def series(entity: str, values: list[tuple[int, int]], start: datetime = T0) -> list[HourlyPoint]:
    return [
        HourlyPoint("user", entity, start + timedelta(hours=i), spend, req)
        for i, (spend, req) in enumerate(values)
        if spend or req
    ]


def seasonal(weeks: int, seed: int = 1) -> list[tuple[int, int]]:
    """Busy working hours, quiet nights and weekends, with Poisson noise."""
    rng = np.random.default_rng(seed)
    out = []
    for h in range(weeks * 168):
        day, hour = divmod(h, 24)
        busy = 9 <= hour < 18 and day % 7 < 5
        req = int(rng.poisson(40 if busy else 4))
        out.append((req * 1_000_000, req))
    return out


def test_flat_data_raises_no_alarm() -> None:
    assert detect_anomalies(series("flat", [(50_000_000, 10)] * (5 * 168)), *WINDOW) == []


def test_seasonal_noise_raises_no_alarm() -> None:
    assert detect_anomalies(series("u", seasonal(5)), *WINDOW) == []


def test_a_planted_spike_is_found_with_its_numbers() -> None:
    values = seasonal(5)
    spike_at = 4 * 168 + 2 * 24 + 3  # Wednesday 03:00 of the last week: a quiet hour
    values[spike_at] = (400_000_000, 400)
    found = detect_anomalies(series("u", values), *WINDOW)
    assert {(a.metric, a.hour) for a in found} == {
        ("spend_nano", T0 + timedelta(hours=spike_at)),
        ("requests", T0 + timedelta(hours=spike_at)),
    }
    spend = next(a for a in found if a.metric == "spend_nano")
    assert spend.observed == 400_000_000
    assert 2_000_000 <= spend.expected <= 6_000_000  # the night-time median, about 4 requests
    assert spend.score >= AnomalyRule().min_score


def test_sparse_entity_small_jump_is_under_the_floor() -> None:
    values = [(0, 0)] * (5 * 168)
    for h in range(0, 5 * 168, 37):
        values[h] = (1_000_000, 1)
    values[4 * 168 + 10] = (15_000_000, 4)  # 4 requests and 1.5 cents: not an incident
    assert detect_anomalies(series("sparse", values), *WINDOW) == []


def test_new_entity_is_not_judged() -> None:
    only_last_week = series("new", [(0, 0)] * 0 + [(5_000_000, 5)] * 168 + [(900_000_000, 900)], WINDOW[0])
    assert detect_anomalies(only_last_week, *WINDOW) == []


def test_drops_are_not_flagged() -> None:
    values = seasonal(5)
    for h in range(4 * 168, 5 * 168):
        values[h] = (0, 0)
    assert detect_anomalies(series("u", values), *WINDOW) == []
