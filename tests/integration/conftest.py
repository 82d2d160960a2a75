"""Integration fixtures: real PostgreSQL, real Redis, real HTTP.

Each test starts on a just-migrated database: by default one PostgreSQL database (`sg_t_*`) per module,
cloned from a template (`sg_tmpl_*`) migrated once per session and emptied back to its migrated state
between tests, or one SQLite file per module, overwritten with the migrated template before each test; a
module can ask for a fresh clone per test (`gateway_database` = "clone"). Because the database URL then
stays the same across a module, the gateway app for the same settings is built once and reused (each test
runs its own lifespan). The Redis database of SYNAPGATE_TEST_REDIS_URL (default db 11) is flushed per test.
The gateway runs under uvicorn in a thread on a free port, or — for modules that set `gateway_transport` to
"asgi" — in-process behind an ASGI test client (its lifespan run by the client); the mock upstream runs in
a thread.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
import redis as redis_sync
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from devtools.mock_upstream import MockConfig, MockServerThread
from gateway.app import create_app
from gateway.tagger_process import TaggerProcess
from pricing.money import parse_usd
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.factory import build_ledger, redis_for
from storage.db import create_engine
from tests.environment import redis_url_for_this_process

PG_HOST = os.environ.get("SYNAPGATE_TEST_PG_HOST", "127.0.0.1")
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:5432/postgres"
# One Redis db per concurrent test run (xdist workers and parallel checkouts each set their own).
REDIS_URL = redis_url_for_this_process()
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
TEMPLATE_DB = f"sg_tmpl_{RUN_ID}"


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:5432/{database}"


def off_loop(fn: Any, *args: Any) -> Any:
    """Run blocking set-up (which may call asyncio.run) in a worker thread, safe inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


async def _admin_async(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    off_loop(asyncio.run, _admin_async(sql))


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test; dropped afterwards."""
    name = f"sg_t_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield pg_url(name)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ReusableDatabase:
    """One cloned database per module, emptied between tests instead of cloned again (~20× cheaper).

    Between tests every table is emptied (sequences set back) and the rows the migrations seeded (the
    catalog) are put back as they were; a test that changed the schema itself gets a fresh clone.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.name = ""
        self.seed: dict[str, tuple[list[str], list[Any]]] = {}
        self.schema: list[Any] = []
        self.tables: list[str] = []
        self.sequences_sql = ""

    def create(self) -> None:
        self.name = f"sg_t_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')
        off_loop(asyncio.run, self._snapshot())

    def drop(self) -> None:
        _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{PG_HOST}:5432/{self.name}"

    async def _schema(self, conn: asyncpg.Connection) -> list[Any]:
        return list(
            await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2"
            )
        ) + list(await conn.fetch("SELECT version_num FROM alembic_version"))

    async def _tables(self, conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        return sorted(r[0] for r in rows)

    async def _snapshot(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            self.schema = await self._schema(conn)
            self.seed = {}
            self.tables = await self._tables(conn)
            for table in self.tables:
                rows = await conn.fetch(f'SELECT * FROM "{table}"')
                if rows:
                    self.seed[table] = (list(rows[0].keys()), [tuple(r) for r in rows])
            # Every sequence as the migrations left it, put back by one statement on each reset.
            sequences = await conn.fetch(
                "SELECT schemaname, sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"
            )
            self.sequences_sql = "; ".join(
                f"SELECT setval('\"{name}\"', {last or 1}, {last is not None})"
                for name, last in ((r["sequencename"], r["last_value"]) for r in sequences)
            )
        finally:
            await conn.close()

    async def _reset(self) -> bool:
        """Empty the database back to its migrated state; False when its schema was changed.

        DELETE (not TRUNCATE: that makes new files for every table and index, ~100 ms a test) with the
        foreign-key triggers off, the seeded rows copied back, the sequences set back, in one transaction."""
        conn = await asyncpg.connect(self.dsn)
        try:
            if await self._schema(conn) != self.schema:
                return False
            async with conn.transaction():
                await conn.execute(
                    "SET LOCAL session_replication_role = replica; "  # no FK checks: any order
                    + "; ".join(f'DELETE FROM "{t}"' for t in self.tables)
                )
                for table, (columns, rows) in self.seed.items():
                    await conn.copy_records_to_table(table, records=rows, columns=columns)
                if self.sequences_sql:
                    await conn.execute(self.sequences_sql)
            return True
        finally:
            await conn.close()

    def reset(self) -> str:
        if not off_loop(asyncio.run, self._reset()):
            self.drop()
            self.create()
        return pg_url(self.name)


@pytest.fixture(scope="module")
def pg_module_database(pg_template: str) -> Iterator[ReusableDatabase]:
    database = ReusableDatabase(pg_template)
    database.create()
    yield database
    database.drop()


@pytest.fixture
def pg_reset_database(pg_module_database: ReusableDatabase) -> str:
    """A migrated PostgreSQL database in its just-migrated state, reused across one module's tests."""
    return pg_module_database.reset()


@pytest.fixture
def sqlite_database(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "synapgate.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="module")
def sqlite_module_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqlite_module") / "synapgate.db"


@pytest.fixture
def sqlite_reset_database(sqlite_template: Path, sqlite_module_path: Path) -> str:
    """The module's SQLite file, overwritten with the migrated template (one URL for all a module's tests)."""
    for suffix in ("-wal", "-shm", "-journal"):
        sqlite_module_path.with_name(sqlite_module_path.name + suffix).unlink(missing_ok=True)
    shutil.copy(sqlite_template, sqlite_module_path)
    return f"sqlite+aiosqlite:///{sqlite_module_path}"


@pytest.fixture
def redis_url() -> str:
    client = redis_sync.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis_sync.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); the test command starts it")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockServerThread]:
    server = MockServerThread(MockConfig())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mock(mock_upstream: MockServerThread) -> MockServerThread:
    mock_upstream.app.reset()
    return mock_upstream


class GatewayThread:
    """The real gateway app under uvicorn in a background thread, on a free port."""

    def __init__(self, settings: Settings, app: Any = None) -> None:
        """`app`: an app built earlier for the same settings, to serve again (its lifespan runs anew)."""
        self.app = app if app is not None else create_app(settings)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, log_config=None, lifespan="on", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="gateway", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(20)
        self._socket.close()


@dataclass
class Gateway:
    """A running gateway and handles on its database and ledger, for a test to drive and inspect."""

    url: str
    settings: Settings
    engine: AsyncEngine
    ledger: Any
    mock: MockServerThread
    redis_url: str | None
    client: httpx.AsyncClient | None = None  # the in-process ASGI client, when not over a socket

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request to the gateway (`path` from the root)."""
        if self.client is not None:
            return await self.client.request(method, path, **kwargs)
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            return await http.request(method, path, **kwargs)

    def openai(self, key: str) -> openai.AsyncOpenAI:
        """The real openai SDK (async) pointed at this gateway."""
        return openai.AsyncOpenAI(base_url=self.v1, api_key=key, max_retries=0, http_client=self.client)

    async def seed_user(
        self, credits_usd: str = "10", *, models: list[str] | None = None
    ) -> tuple[uuid.UUID, str]:
        """A user with a gateway key and a starting balance: (user id, key plaintext)."""
        async with self.engine.begin() as conn:
            user = await create_user(conn, f"{uuid.uuid4().hex[:10]}@example.com")
            _key_id, key = await create_key(
                conn, user.user_id, workspace_id=user.workspace_id, allowed_models=models
            )
        if parse_usd(credits_usd) > 0:
            await add_credits(
                self.engine, self.ledger, user.user_id, parse_usd(credits_usd), f"seed:{user.user_id}"
            )
        return user.user_id, key

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()


BACKENDS = ["sqlite", "postgres+redis"]

_SHARED_TAGGER: TaggerProcess | None = None


def shared_tagger_socket() -> str:
    """The socket of one tagger process per test process, started on first need, shared by every gateway
    the tests build (as `synapgate serve` shares one among its workers): each gateway starting its own
    would load scikit-learn and the models again, ~2 s of CPU, in every test that needs a comment judged.
    It exits with this process (it watches its parent); tests about the process itself start their own."""
    global _SHARED_TAGGER
    if _SHARED_TAGGER is None:
        _SHARED_TAGGER = TaggerProcess(warm=False)
        _SHARED_TAGGER.ensure_started()
        atexit.register(_SHARED_TAGGER.stop)
    return _SHARED_TAGGER.socket_path


def make_settings(database_url: str, redis_url: str | None, mock_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "log_level": "warning",
        "log_format": "json",
        "secret_key": "test-secret-key",
        "key_cache_seconds": 0.5,
        "upstream_retry_backoff_seconds": 0.01,
        "circuit_failure_threshold": 1000,
        # Automatic tags train a classifier in the background (CPU): on only where a test is about them.
        "auto_tags": False,
        "tagger_socket": shared_tagger_socket(),
    }
    for provider in ("openai", "xai", "deepseek", "together"):
        base[f"{provider}_base_url"] = f"{mock_url}/v1"
        base[f"{provider}_api_key"] = f"sk-platform-{provider}"
    base["anthropic_base_url"] = f"{mock_url}/v1"
    base["anthropic_api_key"] = "sk-platform-anthropic"
    base["gemini_base_url"] = f"{mock_url}/v1beta"
    base["gemini_api_key"] = "platform-gemini"
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway_settings_overrides() -> dict[str, Any]:
    """Tests override this fixture to run the gateway with other settings."""
    return {}


_APPS: dict[str, tuple[Any, Settings]] = {}  # the most recently used apps and their settings, by settings
_APPS_KEPT = 8


def _cached_app(settings: Settings) -> tuple[Any, Settings]:
    """The app for these settings, built once (~0.1 s of CPU, more than many tests), and the settings object
    it runs with (a test may change a field of that object mid-test; `_forget_if_changed` then drops the app).
    Each test still runs its own lifespan (a fresh engine, Redis client, caches and recorder)."""
    key = settings.model_dump_json()
    entry = _APPS.pop(key, None) or (create_app(settings), settings)
    _APPS[key] = entry  # most recent last
    while len(_APPS) > _APPS_KEPT:
        del _APPS[next(iter(_APPS))]
    return entry


def _forget_if_changed(settings: Settings) -> None:
    for key, (_app, kept) in list(_APPS.items()):
        if kept is settings and settings.model_dump_json() != key:
            del _APPS[key]


def _asgi_app(settings: Settings) -> Any:
    return _cached_app(settings)[0]


@pytest.fixture
def gateway_database() -> str:
    """ "reset": one database per module, brought back to its migrated state before each test (the default);
    "clone": a PostgreSQL database cloned and a SQLite file copied per test."""
    return "reset"


@pytest.fixture
def gateway_transport() -> str:
    """ "http": uvicorn in a thread (real sockets); "asgi": in-process. Test modules override this fixture."""
    return "http"


@pytest.fixture
async def gateway(
    backend: str,
    request: pytest.FixtureRequest,
    mock: MockServerThread,
    gateway_settings_overrides: dict[str, Any],
    gateway_transport: str,
    gateway_database: str,
) -> AsyncIterator[Gateway]:
    """The gateway on the embedded default (SQLite, SQL ledger) or on PostgreSQL with the Redis ledger."""
    if backend == "sqlite":
        database = "sqlite_reset_database" if gateway_database == "reset" else "sqlite_database"
        database_url, redis_url = request.getfixturevalue(database), None
    else:
        database = "pg_reset_database" if gateway_database == "reset" else "pg_database"
        database_url, redis_url = request.getfixturevalue(database), request.getfixturevalue("redis_url")
    wanted = make_settings(database_url, redis_url, mock.url, **gateway_settings_overrides)
    app, settings = _cached_app(wanted)
    engine = create_engine(database_url, pool_size=5)
    redis_client = redis_for(settings)  # a cluster client when the settings say so (test_redis_cluster.py)
    ledger: Any = build_ledger(settings, engine, redis_client)
    try:
        if gateway_transport == "asgi":
            from litestar.testing import AsyncTestClient

            async with AsyncTestClient(app, raise_server_exceptions=False, timeout=30) as client:
                yield Gateway(
                    str(client.base_url).rstrip("/"), settings, engine, ledger, mock, redis_url, client
                )
        else:
            server = GatewayThread(settings, app=app)
            server.start()
            try:
                yield Gateway(server.url, settings, engine, ledger, mock, redis_url)
            finally:
                server.stop()
    finally:
        _forget_if_changed(settings)
        if redis_client is not None:
            await redis_client.aclose()
        await engine.dispose()
