"""The typed runtime state of one app: the process-wide resources its lifespan creates and closes.

Handlers and guards reach what they need as fields of `Runtime` (the engine, the ledger, the key
authenticator, the credential resolver, the catalog cache) — never through the chat service.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from gateway.auth import KeyAuthenticator
from gateway.catalog_cache import CatalogCache
from gateway.chat import ChatService
from gateway.chat.llm_insights import LlmInsights
from gateway.chat.tagging import auto_tag_queue
from gateway.credentials import CredentialResolver
from gateway.providers.registry import build_adapters
from gateway.proxy import UpstreamClient
from gateway.tagger_process import TaggerClient, TaggerProcess
from storage.billing.ledger.base import CreditLedger
from storage.billing.ledger.factory import build_ledger, ping_redis, redis_for
from storage.billing.ledger.redis import RedisClient, RedisLedger
from storage.db import create_engine
from storage.jobs.runner import JobsHandle, start_jobs_in_process
from storage.outage import OutageWatch
from storage.usage.group_commit import GroupCommitRecorder
from storage.usage.spool import Recorder, SpoolFile, SpoolingRecorder, default_instance

log = logging.getLogger("synapgate.app")

if TYPE_CHECKING:
    RedisField = RedisClient
else:  # handlers take the Runtime as a dependency, and msgspec (Litestar's signatures) rejects a union of
    RedisField = Any  # two classes (Redis | RedisCluster) in its fields: the type is for mypy


@dataclass
class Runtime:
    """The process-wide resources of one app, created in its lifespan and closed at shutdown."""

    settings: Settings
    engine: AsyncEngine = field(init=False)
    redis: RedisField | None = field(init=False, default=None)  # a cluster's with SYNAPGATE_REDIS_CLUSTER
    ledger: CreditLedger = field(init=False)
    upstream: UpstreamClient = field(init=False)
    auth: KeyAuthenticator = field(init=False)
    credentials: CredentialResolver = field(init=False)
    catalog: CatalogCache = field(init=False)
    recorder: GroupCommitRecorder = field(init=False)
    spool: SpoolingRecorder | None = field(init=False, default=None)  # records while PostgreSQL is down
    chat: ChatService = field(init=False)
    # Up/down state of PostgreSQL and Redis: one log line per change, fast 503s while down (storage/outage.py)
    database_health: OutageWatch = field(init=False)
    redis_health: OutageWatch | None = field(init=False, default=None)
    jobs: JobsHandle | None = field(init=False, default=None)  # the in-process job runner, when it runs here
    # The offline tagging and sentiment models, in a process of their own (gateway/tagger_process.py):
    # `synapgate serve`'s, or one this app starts on first use (`tagger_process`) when none was given.
    tagger: TaggerClient = field(init=False)
    tagger_process: TaggerProcess | None = field(init=False, default=None)

    async def start(self) -> None:
        s = self.settings
        self.engine = create_engine(s.database_url)
        self.redis = redis_for(s)
        self.ledger = build_ledger(s, self.engine, self.redis)
        self.database_health = OutageWatch("database", self._probe_database)
        if self.redis is not None:
            redis = self.redis
            # On a cluster a request reaches one node: only the probe (every primary) says it is back.
            self.redis_health = OutageWatch(
                "redis", lambda: ping_redis(redis), calls_prove_up=not s.redis_cluster
            )
        self.upstream = UpstreamClient(
            s.upstream_connect_timeout, s.upstream_read_timeout, s.upstream_max_connections
        )
        self.auth = KeyAuthenticator(
            self.engine,
            s.key_cache_seconds,
            database=self.database_health,
            outage_grace_seconds=s.key_outage_grace_seconds,
        )
        secret = s.secret_key.get_secret_value() if s.secret_key else None
        # its cipher is built on the first stored key it opens
        self.credentials = CredentialResolver(s, self.engine, secret_key=secret)
        self.catalog = CatalogCache(self.engine)
        await self.catalog.refresh()
        self.recorder = GroupCommitRecorder(self.engine, self.ledger)
        self.recorder.start()
        recorder: Recorder = self.recorder
        self.spool = self._open_spool()
        if self.spool is not None:
            recorder = self.spool
            self.spool.start()  # replays at once what a previous run left (a crash with a non-empty spool)
        self.chat = ChatService(
            settings=s,
            engine=self.engine,
            ledger=self.ledger,
            auth=self.auth,
            credentials=self.credentials,
            catalog=self.catalog,
            upstream=self.upstream,
            adapters=build_adapters(),
            recorder=recorder,
            database=self.database_health,
            hot_ledger=self.redis_health,
        )
        if s.tagger_socket:
            self.tagger = TaggerClient(s.tagger_socket)
        else:
            self.tagger_process = TaggerProcess(warm=s.auto_tags)
            self.tagger = TaggerClient(self.tagger_process.socket_path, owner=self.tagger_process)
        tag_queue = auto_tag_queue(self.engine, s.auto_tag_queue_size)
        tag_queue.offline = self.tagger
        if s.tagger_model:  # tags and comment sentiment from that model, through self.chat (metered)
            tag_queue.llm = LlmInsights(s, self.chat)
        if s.is_sqlite or s.jobs_in_process:  # SQLite has no separate worker: its jobs always run here
            self.jobs = await start_jobs_in_process(s, self.engine)
        log.info("started", extra={"ledger": type(self.ledger).__name__, "sqlite": s.is_sqlite})

    def _open_spool(self) -> SpoolingRecorder | None:
        """The durable local spool, when configured and the ledger is Redis (the SQL ledger cannot settle
        without the database: there, a PostgreSQL outage is a fast 503)."""
        s = self.settings
        if s.spool_dir is None:
            return None
        if not isinstance(self.ledger, RedisLedger):
            log.warning(
                "SYNAPGATE_SPOOL_DIR is ignored: the spool needs the Redis ledger (SYNAPGATE_REDIS_URL)"
            )
            return None
        spool = SpoolFile(s.spool_dir, s.spool_instance or default_instance(), s.spool_max_bytes)
        try:
            spool.open()
        except OSError as exc:
            log.error("spool unavailable: %s; a PostgreSQL outage is answered 503", exc)
            return None
        log.info("spool ready", extra={"spool": str(spool.path)})
        return SpoolingRecorder(
            self.recorder,
            self.engine,
            self.ledger,
            spool,
            database=self.database_health,
            replay_interval=s.spool_replay_seconds,
        )

    async def _probe_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def stop(self) -> None:
        if self.jobs is not None:  # its jobs use the engine: they stop before it is disposed
            await self.jobs.stop()
            self.jobs = None
        await self.recorder.stop()  # every queued record is committed before the engine goes
        if self.spool is not None:  # after it: a queued record that meets an outage still has the spool
            await self.spool.stop()
        await auto_tag_queue(self.engine).close()  # the automatic-tagging task writes through the engine
        if self.tagger_process is not None:
            await asyncio.to_thread(self.tagger_process.stop)
        await self.database_health.close()
        if self.redis_health is not None:
            await self.redis_health.close()
        await self.upstream.aclose()
        await self.ledger.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def runtime_of(app: Any) -> Runtime:
    """The Runtime an app's lifespan stored in its state."""
    runtime: Runtime = app.state.runtime
    return runtime
