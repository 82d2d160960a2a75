"""Outages of the backing services (PostgreSQL, Redis): telling them from bugs, and watching them end.

`is_outage` says whether an exception means "the service cannot be reached right now" (connection refused,
reset or closed, the server shutting down or starting up, a pool or socket timeout) rather than a bug or a
refused statement: an outage is answered 503 + Retry-After and logged once, a bug keeps its traceback.

`OutageWatch` is the up/down state of one service: the first failure marks it down (one log line), a probe
polls it while down, and its first success marks it up again (one log line) — so an outage of any length
costs two log lines, not a traceback per request, and callers can refuse fast while it lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import asyncpg.exceptions as pg_errors
import redis.exceptions as redis_errors
import sqlalchemy.exc as sa_errors

log = logging.getLogger("synapgate.outage")

# Exception types that mean "not reachable now" wherever they appear in an exception's chain.
_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    socket.gaierror,  # the host name does not resolve (DNS down)
    TimeoutError,  # asyncio.TimeoutError is TimeoutError on 3.11
    redis_errors.ConnectionError,  # includes BusyLoadingError (Redis loading its data after a restart)
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a replica promoted or demoted under us
    redis_errors.ClusterDownError,  # and MasterDownError: a cluster without a primary for some slot
    redis_errors.SlotNotCoveredError,  # a cluster whose slots are being moved or lost a node
    pg_errors.PostgresConnectionError,  # SQLSTATE class 08: connection does not exist, failure, refused
    pg_errors.OperatorInterventionError,  # class 57: admin shutdown, crash shutdown, cannot connect now
    pg_errors.TooManyConnectionsError,
    pg_errors.InterfaceError,  # "connection is closed" (asyncpg's own, raised before any SQL is sent)
    # "cannot switch to state …; another operation is in progress": a connection whose earlier call an outage
    # cut mid-protocol (seen on the one-round-trip record's raw asyncpg connection while PostgreSQL stopped)
    pg_errors.InternalClientError,
    sa_errors.DisconnectionError,
    sa_errors.TimeoutError,  # the engine's pool had no connection to give within its timeout
)


# Other OSErrors that a socket raises when the network, not the program, is at fault.
_NETWORK_ERRNOS = {
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EHOSTUNREACH,
    errno.EHOSTDOWN,
    errno.ETIMEDOUT,
    errno.EADDRNOTAVAIL,
}


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and a DBAPI error's `orig` (each once, bounded)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]
    return seen


# uvloop's error for a write on a transport the peer has closed (redis-py sends its connect-time command on a
# socket the server killed right after accepting it: seen as a 500 under `CLIENT KILL` in the fault suite).
# redis-py turns OSErrors there into ConnectionError, but not this RuntimeError.
CLOSED_TRANSPORT = "the handler is closed"


def is_outage(exc: BaseException) -> bool:
    """True when `exc` means a backing service is unreachable (not a bug, not a refused statement)."""
    for link in _chain(exc):
        if isinstance(link, sa_errors.DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, _OUTAGE_TYPES):
            return True
        if isinstance(link, OSError) and link.errno in _NETWORK_ERRNOS:
            return True
        if type(link) is RuntimeError and str(link).endswith(CLOSED_TRANSPORT):
            return True
    return False


def describe(exc: BaseException) -> str:
    """A one-line description of an outage error for the log (its innermost cause, bounded)."""
    innermost = _chain(exc)[-1]
    text = str(innermost).splitlines()[0] if str(innermost) else ""
    return f"{type(innermost).__name__}: {text}"[:300]


class OutageWatch:
    """The up/down state of one backing service, with a probe that runs only while it is down.

    `failed(exc)` marks it down (logging once); the probe (`probe()` every `interval` seconds) or any
    caller's `succeeded()` marks it up again (logging once, with how long it lasted).

    `calls_prove_up=False` is for a service each call reaches only part of — a Redis Cluster, where a call
    that worked proves only its own node up: then only the probe, which asks every part, marks it up. Without
    it, one node down and users on the others made the state flap (a "down" and an "up" line per pair of
    requests) for as long as the node stayed down.
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[object]],
        *,
        interval: float = 0.25,
        probe_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        calls_prove_up: bool = True,
    ) -> None:
        self.name = name
        self._calls_prove_up = calls_prove_up
        self._probe = probe
        self._interval = interval
        self._probe_timeout = probe_timeout
        self._clock = clock
        self._down_since: float | None = None
        self._prober: asyncio.Task[None] | None = None
        self.outages = 0  # how many times it went down (for tests and /ready)

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException) -> None:
        """A call to the service failed for an outage: mark it down and start probing (logs once)."""
        if self._down_since is not None:
            return
        self._down_since = self._clock()
        self.outages += 1
        log.warning(
            "%s unreachable: requests that need it are refused with 503 until it answers again",
            self.name,
            extra={"service": self.name, "state": "down", "error": describe(exc)},
        )
        self._start_probe()

    def succeeded(self) -> None:
        """A call to the service worked: if it was down, it is back (logs once) — unless a call proves only
        part of the service up (`calls_prove_up=False`): then the probe decides."""
        if self._calls_prove_up or self._prober is None:  # no probe running (no loop): a call must say it
            self._mark_up()

    def _mark_up(self) -> None:
        since, self._down_since = self._down_since, None
        if since is None:
            return
        log.warning(
            "%s reachable again after %.1f s",
            self.name,
            self._clock() - since,
            extra={"service": self.name, "state": "up", "down_seconds": round(self._clock() - since, 3)},
        )

    def _start_probe(self) -> None:
        if self._prober is not None and not self._prober.done():
            return
        try:
            self._prober = asyncio.get_running_loop().create_task(
                self._probe_until_up(), name=f"synapgate-probe-{self.name}"
            )
        except RuntimeError:  # no running loop (a synchronous caller): the next success marks it up
            self._prober = None

    async def _probe_until_up(self) -> None:
        while self._down_since is not None:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.wait_for(self._probe(), self._probe_timeout)
            except Exception:  # still down: the one "down" line was logged already
                continue
            self._mark_up()

    async def close(self) -> None:
        """Stop probing (at shutdown)."""
        prober, self._prober = self._prober, None
        if prober is not None and not prober.done():
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await prober
