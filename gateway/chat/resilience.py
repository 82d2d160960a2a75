"""Retry and circuit-breaker policy for upstream calls (pure: the clock and randomness are passed in).

Retries happen only before the first byte reaches the client. A provider that keeps failing is skipped
for a cool-down (its circuit is open), so requests go straight to a fallback instead of waiting on it.
State is per process: each worker learns on its own, which is enough to stop hammering a dead provider.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.providers.base import ProviderError

# Statuses worth another try: timeouts, conflicts, rate limits, provider-side failures (529 = overloaded).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 529})
# Failures a different provider may not share (its own outage, its own key): worth a fallback.
FALLBACK_STATUSES = RETRYABLE_STATUSES | {401, 403}


def is_retryable(error: ProviderError) -> bool:
    return error.status in RETRYABLE_STATUSES or error.status >= 500


def is_fallback_worthy(error: ProviderError) -> bool:
    """A request-shaped error (400, 404, 413, 422) would fail the same way elsewhere; the rest may not."""
    return error.status in FALLBACK_STATUSES or error.status >= 500 or error.code == "circuit_open"


def backoff_seconds(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """How long to wait before retry number `attempt` (1-based); None when the provider asks for too long.

    Exponential with full jitter (AWS's "full jitter": uniform in [0, base·2^(attempt-1)]), but never
    shorter than the provider's Retry-After / retryDelay, and never longer than `cap`.
    """
    if retry_after is not None and retry_after > cap:
        return None
    delay: float = rand() * min(cap, base * 2.0 ** (attempt - 1))
    return max(delay, retry_after or 0.0)


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False


@dataclass
class CircuitBreaker:
    """Opens a provider's circuit after `threshold` consecutive failures, for `cooldown` seconds.

    After the cool-down one trial request is let through (half-open): success closes the circuit,
    failure opens it again for another cool-down.
    """

    threshold: int
    cooldown: float
    clock: Callable[[], float] = time.monotonic
    _circuits: dict[str, _Circuit] = field(default_factory=dict)

    def allow(self, provider: str) -> bool:
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.failures < self.threshold:
            return True
        if self.clock() < circuit.open_until or circuit.trial_in_flight:
            return False
        circuit.trial_in_flight = True  # half-open: this request is the trial
        return True

    def record_success(self, provider: str) -> None:
        self._circuits.pop(provider, None)

    def record_failure(self, provider: str) -> None:
        circuit = self._circuits.setdefault(provider, _Circuit())
        circuit.failures += 1
        circuit.trial_in_flight = False
        if circuit.failures >= self.threshold:
            circuit.open_until = self.clock() + self.cooldown

    def is_open(self, provider: str) -> bool:
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.failures < self.threshold:
            return False
        return self.clock() < circuit.open_until
