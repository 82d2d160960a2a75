"""The dashboard's pure parts: money and number formatting, the SVG chart, and reading a view's URL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.dashboard import charts
from gateway.dashboard import format as fmt
from gateway.dashboard.accounts import RUNWAY_DAYS, limits_of, runway
from gateway.dashboard.context import DashboardError, parse_view
from gateway.dashboard.sessions import Session


@pytest.mark.parametrize(
    ("nano", "shown"),
    [
        (0, "$0.00"),
        (6_600, "$0.0000066"),
        (1_710_000, "$0.00171"),
        (189_400_000, "$0.1894"),
        (1_000_000_000, "$1.00"),
        (1_234_567_890_123, "$1,234.57"),
        (-5, "-$0.000000005"),
    ],
)
def test_money_is_shown_as_currency_and_kept_exact(nano: int, shown: str) -> None:
    assert fmt.usd_display(nano) == shown
    assert fmt.usd_exact(1_234_567_890_123) == "1234.567890123"


def test_compact_counts_and_ratios() -> None:
    assert [fmt.compact(v) for v in (950, 3_564, 49_610, 123_456, 1_234_567)] == [
        "950",
        "3.56k",
        "49.6k",
        "123k",
        "1.23M",
    ]
    assert fmt.ratio(1, 3) == 0.333333 and fmt.ratio(1, 0) is None


def test_chart_scales_bars_and_escapes_labels() -> None:
    points = [charts.Point("a", 1.0, "one <b>"), charts.Point("b", 4.0, "four")]
    svg = str(charts.column_chart(points, label="Spend & more", axis_format=str))
    assert svg.count("<rect") == 2 and "one &lt;b&gt;" in svg and "Spend &amp; more" in svg
    assert charts.nice_ceiling(4.0) == 5.0 and charts.nice_ceiling(0.0031) == 0.005
    assert 'height="129.6"' in svg  # 4 on an axis topped at 5: four fifths of the 162 px plot
    empty = str(charts.column_chart([], label="x", axis_format=str))
    assert "<rect" not in empty


ADMIN = Session(None, None, None, "t", datetime(2030, 1, 1, tzinfo=UTC))


def test_a_view_is_read_from_its_url() -> None:
    now = datetime(2026, 11, 30, 15, tzinfo=UTC)
    view = parse_view({"start": "2026-11-01", "end": "2026-11-30", "model": "gpt-4o"}, ADMIN, now)
    assert view.window.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert view.window.end == datetime(2026, 12, 1, tzinfo=UTC)  # the end date counts whole
    assert view.filters.model == "gpt-4o" and view.filters.user_id is None
    default = parse_view({}, ADMIN, now)
    assert default.window.end == datetime(2026, 12, 1, tzinfo=UTC) and default.days == 7
    exact = parse_view({"start": "2026-11-30T10:00:00Z", "end": "2026-11-30T12:00:00+00:00"}, ADMIN, now)
    assert exact.days == pytest.approx(2 / 24)
    for bad in (
        {"start": "yesterday"},
        {"start": "2026-11-30T10:00:00"},
        {"start": "2026-12-01", "end": "2026-11-01"},
    ):
        with pytest.raises(DashboardError) as raised:
            parse_view(bad, ADMIN, now)
        assert raised.value.status == 400


def test_a_user_view_is_narrowed_to_that_user() -> None:
    me, other = uuid.uuid4(), uuid.uuid4()
    mine = Session(me, None, uuid.uuid4(), "t", datetime(2030, 1, 1, tzinfo=UTC))
    assert parse_view({}, mine).filters.user_id == me
    assert parse_view({"user_id": str(me)}, mine).filters.user_id == me
    with pytest.raises(DashboardError) as raised:
        parse_view({"user_id": str(other)}, mine)
    assert raised.value.status == 404


def test_runway_is_balance_over_the_recent_daily_charge() -> None:
    # $7 charged over the last 7 days is $1 a day: a $25 balance lasts 25 days
    found = runway(25_000_000_000, 7_000_000_000)
    assert RUNWAY_DAYS == 7 and found.daily_nano == 1_000_000_000 and found.days == 25.0
    assert runway(25_000_000_000, 0).days is None  # no recent spend: no end in sight, not "infinity"
    assert runway(-5, 7_000_000_000).days == 0.0  # overdrawn by the in-flight bound: nothing left


def test_limits_are_read_from_whatever_the_key_read_carries() -> None:
    @dataclass
    class Plain:
        id: int
        name: str

    @dataclass
    class Limited:
        id: int
        rpm_limit: int | None
        monthly_budget_nano: int | None
        spend_limit_nano: int | None

    assert limits_of(Plain(1, "k")) == []
    assert limits_of(Limited(1, 60, None, 5)) == [
        ("rpm_limit", 60),
        ("monthly_budget_nano", None),
        ("spend_limit_nano", 5),
    ]


def test_a_catalog_rate_is_written_as_the_api_writes_it() -> None:
    assert fmt.rate(Decimal("2.500000000")) == "2.5"
    assert fmt.rate(Decimal("10.000000000")) == "10"
    assert fmt.rate(Decimal("0.000000001")) == "0.000000001"
    assert fmt.rate(None) == ""
