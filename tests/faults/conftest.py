"""Fixtures of the fault suite: one throwaway PostgreSQL cluster per session (a fresh database per stack), a
throwaway Redis per stack, the mock upstream, and gateways as real processes. Every one is stopped and removed
by a finalizer, whatever the test did to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from migrations.runner import upgrade
from pricing.money import parse_usd
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.redis import RedisLedger
from storage.billing.reconcile import reconcile
from storage.db import create_engine
from storage.usage.spool import spool_status
from tests.faults.harness import (
    GATEWAY_PORTS,
    PG_PORTS,
    REDIS_PORTS,
    Answer,
    GatewayProcess,
    LedgerFacts,
    MockServerThread,
    PgCluster,
    PortPool,
    RedisServer,
    chat_body,
    closing_all,
    drive_load,
    gateway_env,
    read_ledger,
    start_mock,
)

TEMPLATE = "sgfault_template"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


def _missing_tools() -> list[str]:
    return [t for t in ("pg_createcluster", "pg_ctlcluster", "redis-server") if shutil.which(t) is None]


def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Blocking set-up (alembic calls asyncio.run) in a worker thread, safe inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's throwaway cluster `15/sgfault_<port>`, with a migrated template database."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"the fault suite needs {', '.join(missing)}")
    cluster = PgCluster(PortPool(PG_PORTS).take())
    try:
        cluster.create()
        _off_loop(asyncio.run, cluster.execute(f'CREATE DATABASE "{TEMPLATE}"'))
        _off_loop(upgrade, cluster.sqlalchemy_url(TEMPLATE))
        yield cluster
    finally:
        cluster.drop()


@pytest.fixture
def pg(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The cluster, running again after the test whatever the test did to it."""
    yield pg_cluster
    if not pg_cluster.accepts_connections():
        pg_cluster.start()


@pytest.fixture(scope="session")
def redis_ports() -> PortPool:
    return PortPool(REDIS_PORTS)


@pytest.fixture(scope="session")
def gateway_ports() -> PortPool:
    return PortPool(GATEWAY_PORTS)


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockServerThread]:
    mock = start_mock()
    try:
        yield mock
    finally:
        mock.stop()


@pytest.fixture
def mock(mock_upstream: MockServerThread) -> MockServerThread:
    mock_upstream.app.reset()
    return mock_upstream


@dataclass
class FaultStack:
    """One scenario's world: a fresh database on the throwaway cluster, its own Redis, the mock, and the
    gateways started on them. `close()` stops and removes all of it."""

    pg: PgCluster
    database: str
    redis: RedisServer
    mock: MockServerThread
    tmp_path: Path
    ports: PortPool
    redis_ports: PortPool
    gateways: list[GatewayProcess]

    @property
    def dsn(self) -> str:
        return self.pg.dsn(self.database)

    def env(self, **settings: str) -> dict[str, str]:
        return gateway_env(self.pg.dsn(self.database), self.redis.url(), self.mock.url, **settings)

    def gateways_started(self, count: int, **settings: str) -> list[GatewayProcess]:
        """`count` gateways on this stack, started side by side (each start takes seconds)."""
        processes = [self.gateway(start=False, **settings) for _ in range(count)]
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(GatewayProcess.start, processes))
        return processes

    def gateway(self, *, start: bool = True, **settings: str) -> GatewayProcess:
        """A gateway process on this stack (`settings` are SYNAPGATE_* values by field name)."""
        index = len(self.gateways) + 1
        process = GatewayProcess(
            self.ports.take(), self.env(**settings), self.tmp_path / f"gateway{index}.log"
        )
        self.gateways.append(process)
        if start:
            process.start()
        return process

    async def seed_user(self, credits_usd: str = "10") -> tuple[uuid.UUID, str]:
        """A user with a gateway key and a starting balance (posted through the ledger): (user id, key)."""
        engine = create_engine(self.pg.sqlalchemy_url(self.database), pool_size=2)
        redis = Redis.from_url(self.redis.url())
        try:
            async with engine.begin() as conn:
                user = await create_user(conn, f"{uuid.uuid4().hex[:10]}@example.com")
                _key_id, key = await create_key(conn, user.user_id, workspace_id=user.workspace_id)
            if parse_usd(credits_usd) > 0:
                ledger = RedisLedger(redis, engine, 600)
                await add_credits(
                    engine, ledger, user.user_id, parse_usd(credits_usd), f"seed:{user.user_id}"
                )
            return user.user_id, key
        finally:
            await redis.aclose()
            await engine.dispose()

    async def reconcile_here(self, *, fix: bool = False, spool_dir: Path | None = None) -> dict[str, Any]:
        """The report of `synapgate ledger reconcile`, computed by the same function in this process (the CLI
        costs a second or two per run; `harness.reconcile` runs the real command). `spool_dir`: the gateway's
        SYNAPGATE_SPOOL_DIR, whose pending records and dead letters the report then includes."""
        engine = create_engine(self.pg.sqlalchemy_url(self.database), pool_size=2)
        redis = Redis.from_url(self.redis.url())
        spool = spool_status(spool_dir) if spool_dir is not None else None
        try:
            return (await reconcile(engine, RedisLedger(redis, engine, 600), fix=fix, spool=spool)).to_dict()
        finally:
            await redis.aclose()
            await engine.dispose()

    def close(self) -> None:
        """Stop every process of the stack and drop its database, whatever state the scenario left."""
        with closing_all(
            *(process.close for process in self.gateways),
            self.redis.close,
            lambda: None if self.pg.accepts_connections() else self.pg.start(),
            lambda: _off_loop(
                asyncio.run, self.pg.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            ),
        ):
            pass
        for process in self.gateways:
            self.ports.give_back(process.port)
        self.redis_ports.give_back(self.redis.port)


def open_stack(
    pg: PgCluster, mock: MockServerThread, ports: PortPool, redis_ports: PortPool, tmp_path: Path
) -> FaultStack:
    """A new stack; the caller registers `close()` as a finalizer before using it."""
    if not pg.accepts_connections():
        pg.start()
    database = f"sgf_{uuid.uuid4().hex[:10]}"
    _off_loop(asyncio.run, pg.execute(f'CREATE DATABASE "{database}" TEMPLATE "{TEMPLATE}"'))
    redis = RedisServer(redis_ports.take(), tmp_path / "redis.log")
    world = FaultStack(pg, database, redis, mock, tmp_path, ports, redis_ports, [])
    try:
        redis.start()
    except Exception:
        world.close()
        raise
    return world


@pytest.fixture
def stack(
    pg: PgCluster,
    mock: MockServerThread,
    gateway_ports: PortPool,
    redis_ports: PortPool,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> FaultStack:
    """A fresh stack for one test."""
    world = open_stack(pg, mock, gateway_ports, redis_ports, tmp_path)
    request.addfinalizer(world.close)
    return world


@pytest.fixture(scope="module")
def module_stack(
    pg_cluster: PgCluster,
    mock_upstream: MockServerThread,
    gateway_ports: PortPool,
    redis_ports: PortPool,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> FaultStack:
    """A stack shared by the tests of one module: a scenario run once, judged by several tests."""
    world = open_stack(
        pg_cluster, mock_upstream, gateway_ports, redis_ports, tmp_path_factory.mktemp("stack")
    )
    request.addfinalizer(world.close)
    return world


# -- the crash (tests/faults/test_crash.py) ------------------------------------------------------------------

# gpt-4o-mini output is $0.60 / 1M tokens: a request allowed 10,000 output tokens reserves ~$0.006.
BIG_MAX_TOKENS = 10_000
CREDIT_USD = "0.02"  # three big reservations hold $0.018 of it: a fourth cannot be reserved
HOLDERS = 3
# The crashed gateway holds its reservations under a 6 s lease (SYNAPGATE_RESERVATION_LEASE_SECONDS) instead
# of the default 30 s: the same mechanism, judged against the same bound — two leases (60 s by default) — in
# a fifth of the time.
LEASE_SECONDS = 6
FREED_WITHIN = 2 * LEASE_SECONDS


def big_body(index: int, latency_ms: int = 0) -> dict[str, Any]:
    body = chat_body(index, f"[mock latency_ms={latency_ms}]" if latency_ms else "")
    body["max_tokens"] = BIG_MAX_TOKENS
    return body


@dataclass
class Crash:
    stack: FaultStack
    gateway: GatewayProcess
    key: str
    killed_at: float
    answers: list[Answer]
    first_probe: Answer
    recovery: list[Answer]
    facts: LedgerFacts
    freed: FreedWatch


class FreedWatch:
    """Probes the restarted gateway four times a second from the crash on, in a thread, until a probe is
    served or FREED_WITHIN seconds have passed — so the verdict does not depend on when the test reads it."""

    def __init__(self, gateway: GatewayProcess, key: str, killed_at: float) -> None:
        self.gateway, self.key, self.killed_at = gateway, key, killed_at
        self.last: Answer | None = None
        self._thread = threading.Thread(target=self._run, name="freed-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while time.monotonic() < self.killed_at + FREED_WITHIN:
            with contextlib.suppress(httpx.HTTPError):
                self.last = probe(self.gateway, self.key)
                if self.last.ok:
                    return
            time.sleep(0.25)

    def result(self) -> Answer | None:
        """The served probe (or the last refused one) once the watch is over."""
        self._thread.join(max(0.0, self.killed_at + FREED_WITHIN + 15 - time.monotonic()))
        return self.last


def probe(crash_gateway: GatewayProcess, key: str) -> Answer:
    """One request that needs a big reservation: 402 while the dead instance's reservations are held."""
    started = time.monotonic()
    response = httpx.post(
        f"{crash_gateway.v1}/chat/completions",
        json=big_body(0),
        headers={"authorization": f"Bearer {key}"},
        timeout=15,
    )
    return Answer(
        0,
        response.status_code,
        dict(response.headers),
        response.content,
        None,
        True,
        started,
        time.monotonic(),
    )


@pytest.fixture(scope="module")
def crash(module_stack: FaultStack) -> Crash:
    """Big requests hang upstream, quick ones flow; kill -9; restart."""
    stack = module_stack

    async def scenario() -> Crash:
        _user, key = await stack.seed_user(CREDIT_USD)
        gateway = stack.gateway(reservation_lease_seconds=str(LEASE_SECONDS))
        warm = await drive_load(
            gateway.url, key, concurrency=1, requests=1
        )  # a cold process is slow at first
        assert warm[0].ok, warm[0].describe()

        async def kill_soon() -> float:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(gateway.kill)
            return time.monotonic()

        holders, quick, killed_at = await asyncio.gather(
            drive_load(
                gateway.url, key, concurrency=HOLDERS, requests=HOLDERS, body=lambda i: big_body(i, 5000)
            ),
            # 50 ms each upstream: requests in flight when the kill comes, and at most ~90 of them, whose
            # spend (~$0.0006) leaves the spare $0.002 for the recovery (unpaced, a fast machine spent it all)
            drive_load(
                gateway.url,
                key,
                concurrency=3,
                seconds=1.5,
                body=lambda i: chat_body(i + 100, "[mock latency_ms=50]"),
            ),
            kill_soon(),
        )
        await asyncio.to_thread(gateway.start)  # the restart after the crash
        first_probe = await asyncio.to_thread(probe, gateway, key)
        recovery = await drive_load(gateway.url, key, concurrency=4, requests=8)
        facts = await read_ledger(stack.dsn)
        freed = FreedWatch(gateway, key, killed_at)
        return Crash(stack, gateway, key, killed_at, holders + quick, first_probe, recovery, facts, freed)

    return _off_loop(asyncio.run, scenario())
