"""Retry back-off and the circuit breaker, with a fake clock and fixed randomness."""

from __future__ import annotations

from gateway.chat.resilience import CircuitBreaker, backoff_seconds, is_fallback_worthy, is_retryable
from gateway.providers.base import ProviderError


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    assert backoff_seconds(1, 0.5, 10, rand=lambda: 1.0) == 0.5
    assert backoff_seconds(2, 0.5, 10, rand=lambda: 1.0) == 1.0
    assert backoff_seconds(4, 0.5, 10, rand=lambda: 1.0) == 4.0
    assert backoff_seconds(9, 0.5, 10, rand=lambda: 1.0) == 10.0  # capped
    assert backoff_seconds(3, 0.5, 10, rand=lambda: 0.25) == 0.5  # jitter scales the window
    assert backoff_seconds(3, 0.5, 10, rand=lambda: 0.0) == 0.0


def test_backoff_honours_retry_after_and_gives_up_when_it_is_too_long() -> None:
    assert backoff_seconds(1, 0.1, 10, retry_after=4.0, rand=lambda: 1.0) == 4.0
    assert backoff_seconds(1, 0.1, 10, retry_after=0.0, rand=lambda: 1.0) == 0.1
    assert backoff_seconds(1, 0.1, 10, retry_after=30.0) is None


def test_which_errors_are_retried_and_which_fall_back() -> None:
    for status in (408, 409, 429, 500, 502, 503, 504, 529):
        assert is_retryable(ProviderError(status, "x"))
        assert is_fallback_worthy(ProviderError(status, "x"))
    for status in (400, 404, 413, 422):
        assert not is_retryable(ProviderError(status, "x"))
        assert not is_fallback_worthy(ProviderError(status, "x"))
    assert not is_retryable(ProviderError(401, "bad key")) and is_fallback_worthy(
        ProviderError(401, "bad key")
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_consecutive_failures_and_half_opens_after_the_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=30, clock=clock)
    for _ in range(2):
        breaker.record_failure("openai")
    assert breaker.allow("openai") and not breaker.is_open("openai")
    breaker.record_failure("openai")
    assert breaker.is_open("openai") and not breaker.allow("openai")
    assert breaker.allow("anthropic")  # circuits are per provider
    clock.now += 29.9
    assert not breaker.allow("openai")
    clock.now += 0.2
    assert breaker.allow("openai")  # the half-open trial
    assert not breaker.allow("openai")  # only one trial at a time
    breaker.record_failure("openai")  # the trial failed: open for another cool-down
    assert not breaker.allow("openai")
    clock.now += 30.1
    assert breaker.allow("openai")
    breaker.record_success("openai")  # the trial worked: closed
    assert breaker.allow("openai") and breaker.allow("openai")


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=30, clock=FakeClock())
    breaker.record_failure("xai")
    breaker.record_success("xai")
    breaker.record_failure("xai")
    assert breaker.allow("xai")
