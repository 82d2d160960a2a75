"""The webhook retry schedule: fast first retries, doubling after, capped, and 24 hours in all."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from storage.webhooks.backoff import GIVE_UP_AFTER, MAX_DELAY, next_attempt_at, retry_delay, schedule
from storage.webhooks.payloads import is_slack_url, render_body, usd

T0 = datetime(2026, 5, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def test_first_retries_within_a_minute_then_doubling_up_to_the_cap() -> None:
    assert [retry_delay(n) for n in range(1, 8)] == [
        5 * S,
        30 * S,
        60 * S,
        120 * S,
        240 * S,
        480 * S,
        960 * S,
    ]
    assert retry_delay(2) + retry_delay(1) < 60 * S
    assert retry_delay(30) == MAX_DELAY == timedelta(hours=4)
    with pytest.raises(ValueError):
        retry_delay(0)


def test_the_schedule_spans_exactly_24_hours_and_never_more() -> None:
    times = schedule(T0)
    offsets = [(t - T0).total_seconds() for t in times]
    assert offsets[:6] == [0, 5, 35, 95, 215, 455]
    assert times[-1] == T0 + GIVE_UP_AFTER
    assert all(b > a for a, b in itertools.pairwise(times))
    assert all(b - a <= MAX_DELAY for a, b in itertools.pairwise(times))
    assert len(times) == 16


def test_a_late_attempt_is_still_bounded_by_the_deadline() -> None:
    # A worker that was down for 23 h 59 min tries once more at the deadline, then gives up.
    late = T0 + timedelta(hours=23, minutes=59)
    assert next_attempt_at(T0, late, 12) == T0 + GIVE_UP_AFTER
    assert next_attempt_at(T0, T0 + GIVE_UP_AFTER, 13) is None
    assert next_attempt_at(T0, T0 + timedelta(days=2), 1) is None
    assert next_attempt_at(T0, T0, 1) == T0 + 5 * S


def test_slack_detection_and_bodies() -> None:
    assert is_slack_url("https://hooks.slack.com/services/T/B/x")
    assert not is_slack_url("https://example.com/hooks.slack.com")
    assert not is_slack_url("https://hooks.slack.com.evil.example/x")
    data = {"user_id": "u1", "balance_nano": 1, "balance_usd": usd(1), "threshold_usd": usd(10**9)}
    assert render_body("slack", "credits.low", T0, data) == (
        '{"text":":warning: SynapGate: user u1 balance is $0.000000001 (under $1)"}'
    )
    assert render_body("json", "credits.low", T0, data).startswith(
        '{"type":"credits.low","timestamp":"2026-05-01T00:00:00Z","data":{'
    )
    assert usd(1_500_000_000) == "1.5" and usd(0) == "0" and usd(-20) == "-0.00000002"
