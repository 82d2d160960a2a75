"""Limits reserved like credit, the pure part: scopes, windows, calendar periods, what a reservation holds.

A request is counted against up to three scopes (its key `k:`, user `u:`, workspace `w:`). Each may have an
RPM and a TPM limit (fixed one-minute windows, UTC) and a budget per calendar period (day, ISO week, month,
or total). The ledgers (Redis Lua, SQL) check and reserve every limit in the same atomic step as the credit:
requests count 1, tokens and budget the worst case, and both are settled to the actual figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PERIODS = ("day", "week", "month", "total")
WINDOW_SECONDS = 60
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScopeLimits:
    """The limits of one scope (`k:<id>`, `u:<id>` or `w:<id>`); None: no such limit."""

    scope: str
    rpm: int | None = None
    tpm: int | None = None
    budget_nano: int | None = None
    budget_period: str | None = None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.budget_nano is not None


@dataclass(frozen=True, slots=True)
class LimitRequest:
    """What one request asks of its scopes' limits: one request, `tokens` (worst case) and the amount."""

    scopes: tuple[ScopeLimits, ...]
    tokens: int

    @property
    def active(self) -> tuple[ScopeLimits, ...]:
        return tuple(s for s in self.scopes if s.limited)


@dataclass(frozen=True, slots=True)
class RateStatus:
    """The key's window after admission, for OpenAI's `x-ratelimit-*` headers (None: no such limit)."""

    limit_requests: int | None
    remaining_requests: int
    limit_tokens: int | None
    remaining_tokens: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class LimitHold:
    """What a reservation holds against limits: the window and periods it counted in, to settle later."""

    scopes: tuple[ScopeLimits, ...]
    window_start: datetime
    tokens: int
    amount_nano: int
    status: RateStatus | None


class LimitExceeded(Exception):
    """A limit refused the request (nothing was held): `kind` is requests, tokens or budget."""

    def __init__(self, kind: str, scope: str, limit: int, retry_after: int | None, status: RateStatus | None):
        super().__init__(f"{kind} limit of {scope} reached ({limit})")
        self.kind = kind
        self.scope = scope
        self.limit = limit
        self.retry_after = retry_after
        self.status = status


def window_start(now: datetime) -> datetime:
    """The start of the one-minute window `now` falls in."""
    return now.replace(second=0, microsecond=0)


def window_reset_seconds(now: datetime) -> float:
    """Seconds until the current window ends."""
    return (window_start(now) + timedelta(seconds=WINDOW_SECONDS) - now).total_seconds()


def period_bounds(period: str | None, now: datetime) -> tuple[datetime, datetime | None]:
    """(start, reset instant) of the calendar period (UTC) that `now` falls in; `total` never resets."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":  # ISO weeks: Monday to Monday
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        following = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return start, following
    return EPOCH, None


def retry_after_seconds(reset: datetime | None, now: datetime) -> int | None:
    """Whole seconds (at least 1) until `reset`; None when there is no reset."""
    if reset is None:
        return None
    return max(1, int((reset - now).total_seconds() + 0.999))


def period_tag(period: str | None, now: datetime) -> int:
    """A number naming the current period of a budget (its start, epoch seconds): part of its Redis key."""
    return int(period_bounds(period, now)[0].timestamp())
