"""Outages without servers: what counts as one, the up/down watch (one log line per change), the hot copy's
retry queue, and key authentication from the cache while the database is down."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg.exceptions as pg_errors
import pytest
import redis.exceptions as redis_errors
import sqlalchemy.exc as sa_errors

from gateway.auth import KeyAuthenticator
from gateway.errors import GatewayError
from migrations.runner import upgrade
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.ledger.base import HotMove, Reservation
from storage.billing.ledger.retry import HotMoveRetryQueue
from storage.db import create_engine
from storage.outage import OutageWatch, is_outage


def _wrapped(inner: BaseException) -> BaseException:
    """`inner` as SQLAlchemy raises it: a DBAPIError whose cause is the driver's exception."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise sa_errors.DBAPIError("SELECT 1", {}, exc) from exc
    except sa_errors.DBAPIError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
        redis_errors.TimeoutError("Timeout reading from socket"),
        _wrapped(pg_errors.CannotConnectNowError("the database system is shutting down")),
        _wrapped(pg_errors.AdminShutdownError("terminating connection due to administrator command")),
        _wrapped(pg_errors.ConnectionDoesNotExistError("connection was closed in the middle of operation")),
        pg_errors.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
        sa_errors.TimeoutError("QueuePool limit of size 5 overflow 0 reached"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unreachable_services_are_outages(exc: BaseException) -> None:
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        RuntimeError("a bug"),
        KeyError("user_id"),
        FileNotFoundError(2, "no such file"),
        redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        _wrapped(pg_errors.UniqueViolationError("duplicate key value violates unique constraint")),
        sa_errors.IntegrityError("INSERT", {}, Exception("duplicate key")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_and_refused_statements_are_not_outages(exc: BaseException) -> None:
    assert not is_outage(exc)


def test_a_write_on_a_transport_the_server_closed_is_an_outage() -> None:
    """uvloop raises RuntimeError (not an OSError, which redis-py would wrap) when redis-py writes its
    connect-time command on a socket the server has just killed: produced here for real, on a closed
    transport."""
    uvloop = pytest.importorskip("uvloop")

    async def closed_write() -> BaseException:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.close()
        await asyncio.sleep(0)
        try:
            writer.writelines([b"PING\r\n"])
        except RuntimeError as exc:
            return exc
        finally:
            server.close()
        raise AssertionError("uvloop accepted a write on a closed transport")

    exc = uvloop.run(closed_write())
    assert is_outage(exc), exc


async def test_the_watch_logs_one_line_per_state_change_and_probes_until_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = [ConnectionRefusedError(111, "refused"), ConnectionRefusedError(111, "refused"), None]

    async def probe() -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    watch = OutageWatch("database", probe, interval=0.01)
    caplog.set_level(logging.INFO, logger="synapgate.outage")
    for _ in range(50):  # fifty failed requests during one outage
        watch.failed(ConnectionRefusedError(111, "refused"))
    assert watch.down
    for _ in range(200):
        if not watch.down:
            break
        await asyncio.sleep(0.01)
    assert not watch.down and answers == []  # the third probe succeeded
    watch.succeeded()  # a success while up says nothing
    lines = [(r.getMessage(), getattr(r, "state", None)) for r in caplog.records]
    assert [state for _, state in lines] == ["down", "up"], lines
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert watch.outages == 1
    await watch.close()


async def test_a_watch_whose_calls_reach_one_part_is_marked_up_by_its_probe_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis Cluster with one node down: requests of users on the other nodes keep working. Their successes
    must not mark the service up (it flapped: a "down" and an "up" line per pair of requests); the probe,
    which pings every primary, does once the node is back."""
    node_back = asyncio.Event()

    async def probe() -> None:
        if not node_back.is_set():
            raise ConnectionRefusedError(111, "refused")

    watch = OutageWatch("redis", probe, interval=0.01, calls_prove_up=False)
    caplog.set_level(logging.INFO, logger="synapgate.outage")
    for _ in range(50):  # users on the dead node refused, users on the live ones served, in turn
        watch.failed(ConnectionRefusedError(111, "refused"))
        watch.succeeded()
    await asyncio.sleep(0.05)  # a few probes, all refused
    assert watch.down
    node_back.set()
    for _ in range(200):
        if not watch.down:
            break
        await asyncio.sleep(0.01)
    assert not watch.down
    lines = [getattr(r, "state", None) for r in caplog.records]
    assert lines == ["down", "up"], lines
    assert watch.outages == 1
    await watch.close()


async def test_the_retry_queue_reapplies_moves_once_redis_answers_again() -> None:
    applied: list[HotMove] = []
    failures = 3

    async def apply(moves: Sequence[HotMove]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise redis_errors.ConnectionError("Connection refused")
        applied.extend(moves)

    user = uuid.uuid4()
    queue = HotMoveRetryQueue(apply, first_delay=0.01, max_delay=0.02)
    moves = [HotMove(user, Reservation(user, f"req_{i}", 100), -90, i + 1) for i in range(3)]
    queue.put(moves[:2], redis_errors.ConnectionError("Connection closed by server."))
    queue.put(moves[2:], redis_errors.ConnectionError("Connection closed by server."))
    for _ in range(200):
        if not len(queue):
            break
        await asyncio.sleep(0.01)
    assert applied == moves  # in order, each once
    await queue.close()


async def test_the_retry_queue_is_bounded_and_marks_the_dropped_users_stale(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reachable = False
    applied: list[HotMove] = []
    forgotten: list[uuid.UUID] = []

    async def apply(moves: Sequence[HotMove]) -> None:
        if not reachable:
            raise redis_errors.ConnectionError("Connection refused")
        applied.extend(moves)

    async def forget(user_id: uuid.UUID) -> None:
        if not reachable:
            raise redis_errors.ConnectionError("Connection refused")
        forgotten.append(user_id)

    users = [uuid.uuid4() for _ in range(8)]
    queue = HotMoveRetryQueue(apply, forget, max_moves=5, first_delay=0.01, max_delay=0.02)
    for i, user in enumerate(users):
        queue.put([HotMove(user, None, -1, i + 1)], redis_errors.ConnectionError("down"))
    assert len(queue) == 5 and queue.dropped == 3 and queue.stale_users == 3
    assert any("queue full" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0.05)
    assert applied == [] and forgotten == []  # Redis is still down: nothing lost from the queue
    reachable = True
    for _ in range(200):
        if not len(queue) and not queue.stale_users:
            break
        await asyncio.sleep(0.01)
    assert [m.user_id for m in applied] == users[3:]  # the newest five, re-applied
    assert sorted(forgotten, key=str) == sorted(users[:3], key=str)  # the dropped ones: reloaded on next use
    await queue.close()


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    path = tmp_path / "auth.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def test_keys_seen_recently_authenticate_from_the_cache_while_the_database_is_down(
    migrated: Path,
) -> None:
    path = migrated
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        user = await create_user(conn, "outage@example.com")
        _id, seen_key = await create_key(conn, user.user_id, workspace_id=user.workspace_id)
        _id, unseen_key = await create_key(conn, user.user_id, workspace_id=user.workspace_id)

    async def probe() -> None:
        raise ConnectionRefusedError(111, "refused")

    watch = OutageWatch("database", probe, interval=10)  # it stays down for this test
    auth = KeyAuthenticator(engine, cache_seconds=0, database=watch, outage_grace_seconds=60)
    principal = await auth.authenticate(f"Bearer {seen_key}")  # looked up while the database answers
    assert principal.user_id == user.user_id
    await engine.dispose()

    class Unreachable:
        """An engine whose every connection is refused, as while PostgreSQL is stopped."""

        def connect(self) -> Unreachable:
            return self

        async def __aenter__(self) -> None:
            raise ConnectionRefusedError(111, "Connection refused")

        async def __aexit__(self, *exc: object) -> None:
            return None

    auth._engine = Unreachable()  # type: ignore[assignment]
    # the cache entry is stale (cache_seconds=0): the lookup fails, the watch goes down, the cache answers
    assert (await auth.authenticate(f"Bearer {seen_key}")).user_id == user.user_id
    assert watch.down
    with pytest.raises(GatewayError) as refused:
        await auth.authenticate(f"Bearer {unseen_key}")  # never seen: 503, not 401, not 500
    assert refused.value.status == 503 and refused.value.headers["retry-after"] == "1"
    assert refused.value.code == "database_unavailable"
    # past the grace period even a seen key waits for the database
    auth._grace = 0
    with pytest.raises(GatewayError) as late:
        await auth.authenticate(f"Bearer {seen_key}")
    assert late.value.status == 503
    await watch.close()
