"""Step 2, the upstream call: each route in turn, each with retries, until one answers.

Retries (connection errors, 408/409/429/5xx/529) back off exponentially with full jitter and honour the
provider's Retry-After; a provider whose circuit is open is skipped; a request-shaped error (400, 404,
413, 422) goes to no fallback. The policy is pure (`gateway/chat/resilience.py`); this module runs it.
Everything here happens before a byte reaches the client, so retrying is always safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from config import Settings
from gateway.chat.admit import Call, Route
from gateway.chat.resilience import CircuitBreaker, backoff_seconds, is_fallback_worthy, is_retryable
from gateway.errors import credential_safe
from gateway.providers.base import ChatResult, ProviderError
from gateway.proxy import Upstream, UpstreamResponse, UpstreamStream

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one route: retries after the first attempt, backoff base and the longest wait."""

    max_retries: int
    backoff_seconds: float
    max_wait_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.upstream_max_retries,
            settings.upstream_retry_backoff_seconds,
            settings.upstream_retry_max_wait_seconds,
        )


async def try_routes(
    call: Call,
    attempt: Callable[[Route], Awaitable[T]],
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run `attempt` on the call's routes in order, with retries, until one succeeds; the call then uses
    that route. Counts every attempt in `call.attempts`. Raises the last ProviderError."""
    last: ProviderError | None = None
    for route in call.routes:
        provider = route.model.provider
        if not breaker.allow(provider):
            last = ProviderError(
                503, f"The provider '{provider}' keeps failing and is skipped for now.", code="circuit_open"
            )
            continue
        for number in range(1, policy.max_retries + 2):
            call.attempts += 1
            try:
                value = await attempt(route)
            except ProviderError as exc:
                last = credential_safe(exc, route.credential)  # what may reach the client
                if not is_retryable(exc):
                    breaker.record_success(provider)  # it answered: the request was the problem
                    break
                breaker.record_failure(provider)
                wait = backoff_seconds(
                    number, policy.backoff_seconds, policy.max_wait_seconds, exc.retry_after
                )
                if number > policy.max_retries or wait is None or breaker.is_open(provider):
                    break
                await sleep(wait)
                continue
            breaker.record_success(provider)
            call.use(route)
            return value
        if last is not None and not is_fallback_worthy(last):
            break
    assert last is not None
    raise last


async def complete_upstream(
    call: Call, upstream: Upstream, settings: Settings, policy: RetryPolicy, breaker: CircuitBreaker
) -> tuple[UpstreamResponse, ChatResult]:
    """A non-streamed completion from the first route that gives one."""

    async def attempt(route: Route) -> tuple[UpstreamResponse, ChatResult]:
        upstream_req = route.adapter.build_request(call.request, route.model.upstream_model, route.credential)
        response = await upstream.send(upstream_req, settings.timeouts(route.model.provider))
        return response, route.adapter.parse_response(response.status, response.headers, response.body)

    return await try_routes(call, attempt, policy, breaker)


async def open_upstream_stream(
    call: Call, upstream: Upstream, settings: Settings, policy: RetryPolicy, breaker: CircuitBreaker
) -> UpstreamStream:
    """An open 2xx stream from the first route that gives one (an error status is read and raised)."""

    async def attempt(route: Route) -> UpstreamStream:
        upstream_req = route.adapter.build_request(call.request, route.model.upstream_model, route.credential)
        stream = await upstream.open_stream(upstream_req, settings.timeouts(route.model.provider))
        if stream.status >= 300:
            body = await stream.read()
            await stream.close()
            route.adapter.parse_response(stream.status, stream.headers, body)  # raises ProviderError
            raise ProviderError(502, "The upstream provider answered with an unexpected status.")
        return stream

    return await try_routes(call, attempt, policy, breaker)
