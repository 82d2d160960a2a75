"""The retry schedule of webhook deliveries, as pure functions of the clock readings they are given.

The first retries come fast (5 s, then 30 s: a receiver that blinked is caught within a minute), then the
wait doubles (60 s, 120 s, …) up to 4 hours between attempts, for 24 hours from the first attempt in all.
The last retry lands exactly at the 24-hour mark, so "24 h" is what the receiver actually gets.
`scale` (SYNAPGATE_WEBHOOK_BACKOFF_SCALE, 1 in production) shrinks every wait and the 24 hours alike: a test
or a staging gateway can watch the whole schedule in seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

FIRST_DELAYS = (timedelta(seconds=5), timedelta(seconds=30))
MAX_DELAY = timedelta(hours=4)
GIVE_UP_AFTER = timedelta(hours=24)


def retry_delay(failures: int, scale: float = 1.0) -> timedelta:
    """How long to wait after the `failures`-th failed attempt (1-based) before the next one."""
    if failures < 1:
        raise ValueError("failures counts failed attempts and starts at 1")
    if failures <= len(FIRST_DELAYS):
        return FIRST_DELAYS[failures - 1] * scale
    doubled: timedelta = FIRST_DELAYS[-1] * (2 ** (failures - len(FIRST_DELAYS)))
    return min(doubled, MAX_DELAY) * scale


def next_attempt_at(
    first_attempt_at: datetime, attempted_at: datetime, failures: int, scale: float = 1.0
) -> datetime | None:
    """When to try again after a failed attempt at `attempted_at`; None once the 24 hours are used up."""
    deadline = first_attempt_at + GIVE_UP_AFTER * scale
    if attempted_at >= deadline:
        return None
    return min(attempted_at + retry_delay(failures, scale), deadline)


def schedule(first_attempt_at: datetime) -> list[datetime]:
    """Every attempt a receiver that never answers 2xx gets, each made on time (for docs and tests)."""
    times = [first_attempt_at]
    while (following := next_attempt_at(first_attempt_at, times[-1], len(times))) is not None:
        times.append(following)
    return times
