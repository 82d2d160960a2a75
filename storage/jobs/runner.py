"""The job runner: a registry of periodic jobs, run by procrastinate on PostgreSQL, in-process on SQLite.

- `JobRegistry.periodic(name, every_seconds)` registers a job (`async def job(resources) -> None`); the
  insights and partition-maintenance jobs plug in the same way as webhook delivery (`default_registry`).
- `run_worker(settings)`: the `synapgate worker` command. PostgreSQL: a procrastinate worker (periodic
  defers are deduplicated across workers, each job runs under a lock, so N workers never run a job twice
  at once). SQLite: the in-process runner (SQLite has one writer; a second process would only contend).
- `start_jobs_in_process(settings, engine)`: the same, as a task inside `serve`; `await handle.stop()`.

procrastinate's tables live in their own PostgreSQL schema (`procrastinate`), installed on first start by
`ensure_job_schema` with its own driver (psycopg 3), so the application schema and its migrations stay
untouched and a `DROP SCHEMA procrastinate CASCADE` removes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from storage.db import create_engine
from storage.insights.service import run_anomalies, run_churn, run_recommendations
from storage.types import utcnow
from storage.usage.partitions import maintain_partitions
from storage.usage.rollups import compact_closed_months
from storage.webhooks.alerts import emit_key_expirations
from storage.webhooks.service import deliver_due

log = logging.getLogger("synapgate.jobs")

JOB_SCHEMA = "procrastinate"
DELIVERY_BATCH = 100


@dataclass(frozen=True, slots=True)
class JobResources:
    """What a job may use: the settings, the database engine and one shared HTTP client."""

    settings: Settings
    engine: AsyncEngine
    http: aiohttp.ClientSession


JobFunction = Callable[[JobResources], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PeriodicJob:
    name: str
    every_seconds: int
    run: JobFunction

    def cron(self) -> str:
        """The period as a procrastinate cron (6th field: seconds); it must divide a minute, hour or day."""
        s = self.every_seconds
        if s < 60 and 60 % s == 0:
            return f"* * * * * */{s}"
        if s % 60 == 0 and s < 3600 and 60 % (s // 60) == 0:
            return f"*/{s // 60} * * * *"
        if s % 3600 == 0 and s <= 86400 and 24 % (s // 3600) == 0:
            return f"0 */{s // 3600} * * *"
        raise ValueError(f"job {self.name}: {s} s does not divide a minute, an hour or a day")


@dataclass
class JobRegistry:
    """Every periodic job of the gateway, by name."""

    jobs: dict[str, PeriodicJob] = field(default_factory=dict)

    def add(self, job: PeriodicJob) -> None:
        if job.name in self.jobs:
            raise ValueError(f"job {job.name!r} is registered twice")
        job.cron()  # refuse an unschedulable period at registration, not at start
        self.jobs[job.name] = job

    def periodic(self, name: str, every_seconds: int) -> Callable[[JobFunction], JobFunction]:
        """Decorator: run `fn(resources)` every `every_seconds`, one run at a time across all workers."""

        def register(fn: JobFunction) -> JobFunction:
            self.add(PeriodicJob(name, every_seconds, fn))
            return fn

        return register


async def deliver_webhooks(resources: JobResources) -> None:
    """Drain the due part of the webhook outbox (batch after batch while batches come back full)."""
    while True:
        report = await deliver_due(
            resources.engine,
            resources.http,
            limit=DELIVERY_BATCH,
            http_timeout=resources.settings.webhook_timeout_seconds,
            backoff_scale=resources.settings.webhook_backoff_scale,
        )
        if report.attempted < DELIVERY_BATCH:
            return


async def insights_daily(resources: JobResources) -> None:
    """Train (when history allows) and predict every active user's churn; snapshot the platform's model
    recommendations (the dashboard's insights page reads them)."""
    await run_churn(resources.engine)
    await run_recommendations(resources.engine)


async def insights_hourly(resources: JobResources) -> None:
    """Judge the last hours' spend and requests; new anomalies raise `spend.anomaly` in their transaction."""
    await run_anomalies(resources.engine)


async def announce_expired_keys(resources: JobResources) -> None:
    """Queue `key.expired` for keys whose expiry passed since the last run (each key once)."""
    await emit_key_expirations(resources.engine)


async def maintain_usage_partitions(resources: JobResources) -> None:
    """usage_logs' monthly partitions: the months ahead made, the months past the retention detached
    (PostgreSQL; the embedded SQLite keeps one table, so nothing to do there)."""
    if resources.engine.dialect.name != "postgresql":
        return
    report = await maintain_partitions(resources.engine, resources.settings, utcnow())
    if report.ensured.created or report.ensured.blocked or (report.retired and report.retired.detached):
        log.info("usage_logs partitions maintained", extra={"report": report.to_dict()})


async def compact_usage_months(resources: JobResources) -> None:
    """The monthly tier of the per-user and per-key rollups: closed months compacted from the daily ones,
    the watermark moved past them (both dialects; readers use only the months it covers)."""
    months = await compact_closed_months(resources.engine, utcnow())
    if months:
        log.info("usage months compacted", extra={"months": [m.date().isoformat() for m in months]})


KEY_EXPIRY_SECONDS = 60
MONTHLY_SECONDS = 3600
PARTITION_SECONDS = 86400


def default_registry(settings: Settings) -> JobRegistry:
    """The gateway's jobs. Other domains add theirs here (invoices, insights, partition maintenance)."""
    registry = JobRegistry()
    registry.add(PeriodicJob("webhooks.deliver", settings.webhook_poll_seconds, deliver_webhooks))
    registry.add(PeriodicJob("insights.daily", 86400, insights_daily))
    registry.add(PeriodicJob("insights.hourly", 3600, insights_hourly))
    registry.add(PeriodicJob("keys.expired", KEY_EXPIRY_SECONDS, announce_expired_keys))
    registry.add(PeriodicJob("usage.partitions", PARTITION_SECONDS, maintain_usage_partitions))
    registry.add(PeriodicJob("usage.monthly", MONTHLY_SECONDS, compact_usage_months))
    return registry


class InProcessRunner:
    """Periodic jobs as asyncio tasks of this process: the runner of the embedded SQLite default."""

    def __init__(self, registry: JobRegistry, resources: JobResources) -> None:
        self.registry = registry
        self.resources = resources
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for job in self.registry.jobs.values():
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job:{job.name}"))

    async def _loop(self, job: PeriodicJob) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await job.run(self.resources)
            except Exception:  # one failed run must not stop the schedule
                log.exception("job failed", extra={"job": job.name})
            await asyncio.sleep(max(0.0, job.every_seconds - (loop.time() - started)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


def psycopg_conninfo(database_url: str) -> str:
    """The libpq URL of SynapGate's (asyncpg) database URL, for procrastinate's psycopg pool."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def ensure_job_schema(database_url: str) -> None:
    """Install procrastinate's tables in their own schema once (under a lock: workers may start together)."""
    import psycopg
    from procrastinate.schema import SchemaManager

    conn = await psycopg.AsyncConnection.connect(psycopg_conninfo(database_url))
    async with conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('synapgate.job_schema'))")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {JOB_SCHEMA}")
        cur = await conn.execute(f"SELECT to_regclass('{JOB_SCHEMA}.procrastinate_jobs')")
        row = await cur.fetchone()
        if row is not None and row[0] is not None:
            return
        await conn.execute(f"SET LOCAL search_path TO {JOB_SCHEMA}")
        await conn.execute(SchemaManager.get_schema())
    log.info("installed the job runner's schema", extra={"schema": JOB_SCHEMA})


def build_procrastinate_app(database_url: str, registry: JobRegistry) -> Any:
    """A procrastinate App whose tasks are the registry's jobs, each deferred periodically and locked."""
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=psycopg_conninfo(database_url),
        kwargs={"options": f"-c search_path={JOB_SCHEMA}"},
        min_size=1,
        max_size=4,
    )
    app = procrastinate.App(connector=connector)
    for job in registry.jobs.values():

        async def run(context: Any, timestamp: int, _job: PeriodicJob = job) -> None:
            await _job.run(context.additional_context["resources"])

        task = app.task(name=job.name, pass_context=True, queueing_lock=job.name, lock=job.name)(run)
        app.periodic(cron=job.cron(), periodic_id=job.name)(task)
    return app


@dataclass
class JobsHandle:
    """A running job runner inside another process (serve); `stop()` ends it and frees its resources."""

    resources: JobResources
    task: asyncio.Task[None] | None = None
    runner: InProcessRunner | None = None
    own_engine: bool = False

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.resources.http.close()
        if self.own_engine:
            await self.resources.engine.dispose()


async def _run_procrastinate(app: Any, resources: JobResources, *, install_signal_handlers: bool) -> None:
    async with app.open_async():
        await app.run_worker_async(
            additional_context={"resources": resources},
            delete_jobs="successful",
            concurrency=4,
            name="synapgate",
            install_signal_handlers=install_signal_handlers,
            fetch_job_polling_interval=1.0,
        )


async def start_jobs_in_process(
    settings: Settings, engine: AsyncEngine, registry: JobRegistry | None = None
) -> JobsHandle:
    """Start the job runner as tasks of this event loop (serve's lifespan); returns a handle to stop it."""
    registry = registry or default_registry(settings)
    resources = JobResources(settings, engine, aiohttp.ClientSession())
    handle = JobsHandle(resources)
    if settings.is_sqlite:
        handle.runner = InProcessRunner(registry, resources)
        handle.runner.start()
    else:
        await ensure_job_schema(settings.database_url)
        app = build_procrastinate_app(settings.database_url, registry)
        handle.task = asyncio.create_task(
            _run_procrastinate(app, resources, install_signal_handlers=False), name="jobs:procrastinate"
        )
    log.info(
        "job runner started in process", extra={"jobs": sorted(registry.jobs), "sqlite": settings.is_sqlite}
    )
    return handle


async def run_worker(settings: Settings, registry: JobRegistry | None = None) -> None:
    """`synapgate worker`: run the jobs until SIGINT/SIGTERM."""
    registry = registry or default_registry(settings)
    engine = create_engine(settings.database_url, pool_size=5)
    try:
        if settings.is_sqlite:
            handle = await start_jobs_in_process(settings, engine, registry)
            try:
                await _until_signalled()
            finally:
                await handle.stop()
            return
        await ensure_job_schema(settings.database_url)
        async with aiohttp.ClientSession() as http:
            resources = JobResources(settings, engine, http)
            await _run_procrastinate(
                build_procrastinate_app(settings.database_url, registry),
                resources,
                install_signal_handlers=True,
            )
    finally:
        await engine.dispose()


async def _until_signalled() -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
