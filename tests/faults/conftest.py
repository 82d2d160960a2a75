"""Fixtures of the fault suite: one throwaway PostgreSQL cluster per session (a fresh database per test), a
throwaway Redis per test, the mock upstream, and gateways as real processes. Every one is stopped and removed by a
finalizer, whatever the test did to it.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from migrations.runner import upgrade
from pricing.money import parse_usd
from storage.credits import add_credits
from storage.db import create_engine
from storage.keys import create_key
from storage.ledger.redis import RedisLedger
from storage.users import create_user
from tests.faults.harness import (
    GATEWAY_PORTS,
    PG_PORTS,
    REDIS_PORTS,
    GatewayProcess,
    MockServerThread,
    PgCluster,
    PortPool,
    RedisServer,
    gateway_env,
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


@pytest.fixture
def database(pg: PgCluster) -> Iterator[str]:
    """A fresh migrated database on the throwaway cluster; its name."""
    name = f"sgf_{uuid.uuid4().hex[:10]}"
    _off_loop(asyncio.run, pg.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    yield name
    if not pg.accepts_connections():
        pg.start()
    _off_loop(asyncio.run, pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_ports() -> PortPool:
    return PortPool(REDIS_PORTS)


@pytest.fixture(scope="session")
def gateway_ports() -> PortPool:
    return PortPool(GATEWAY_PORTS)


@pytest.fixture
def redis_server(redis_ports: PortPool, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_ports.take(), tmp_path / "redis.log")
    try:
        server.start()
        yield server
    finally:
        server.close()
        redis_ports.give_back(server.port)


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
    """One test's world: the database, Redis, the mock, and the gateways started on them."""

    pg: PgCluster
    database: str
    redis: RedisServer
    mock: MockServerThread
    tmp_path: Path
    ports: PortPool
    gateways: list[GatewayProcess]

    @property
    def dsn(self) -> str:
        return self.pg.dsn(self.database)

    def env(self, **settings: str) -> dict[str, str]:
        return gateway_env(self.pg.dsn(self.database), self.redis.url(), self.mock.url, **settings)

    def gateway(self, *, start: bool = True, **settings: str) -> GatewayProcess:
        """A gateway process on this stack (`settings` are SYNAPGATE_* values by field name)."""
        index = len(self.gateways) + 1
        process = GatewayProcess(self.ports.take(), self.env(**settings), self.tmp_path / f"gateway{index}.log")
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
                await add_credits(engine, ledger, user.user_id, parse_usd(credits_usd), f"seed:{user.user_id}")
            return user.user_id, key
        finally:
            await redis.aclose()
            await engine.dispose()


@pytest.fixture
def stack(
    pg: PgCluster,
    database: str,
    redis_server: RedisServer,
    mock: MockServerThread,
    gateway_ports: PortPool,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> FaultStack:
    world = FaultStack(pg, database, redis_server, mock, tmp_path, gateway_ports, [])

    def close_gateways() -> None:
        for process in world.gateways:
            process.close()
            gateway_ports.give_back(process.port)

    request.addfinalizer(close_gateways)
    return world
