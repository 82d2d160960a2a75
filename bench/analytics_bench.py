"""Analytics at scale: 1,000,000 usage_logs rows on PostgreSQL, each analytics endpoint timed over HTTP.

    python bench/analytics_bench.py                # the whole run: create, migrate, seed, time, drop
    python bench/analytics_bench.py --rows 200000  # a smaller run
    python bench/analytics_bench.py --keep         # keep the database afterwards (its name is printed)

It creates its own database on the PostgreSQL of SYNAPGATE_BENCH_PG (default postgres@127.0.0.1:5432),
migrates it with `alembic upgrade head`, seeds users, workspaces, conversations, one message and one
usage_logs row per request, and feedback on 2 % of the messages with COPY (asyncpg), fills the rollup
tables the way the recorder keeps them (`storage.usage.rollups.rebuild_usage_rollups`), runs VACUUM ANALYZE,
then serves the real app under uvicorn on a free port and times each analytics endpoint over HTTP:
2 warm-up calls, then the median (and min/max) of 7. See bench/ANALYTICS.md for the figures.

The data is skewed like real traffic: user k of 1,000 gets a share ∝ 1/(k+1)^0.8 (the heaviest ~6.5 %),
users are spread over 100 workspaces, requests are spread evenly over the last 90 days in time order,
2.5 % fail, 0.5 % are cancelled, 5 % are BYOK, 60 % stream (and so have a TTFT).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import uvicorn
from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import Settings
from gateway.app import create_app
from migrations.runner import upgrade
from storage.accounts.keys import create_key
from storage.db import create_engine
from storage.usage.rollups import rebuild_usage_rollups

PG = os.environ.get("SYNAPGATE_BENCH_PG", "postgres@127.0.0.1:5432")
ADMIN_KEY = "sk-bench-admin"
N_USERS = 1_000
N_WORKSPACES = 100
DAYS = 90
CHUNK = 100_000
WARMUP, RUNS = 2, 7

USAGE_COLUMNS = [
    "request_id", "message_id", "user_id", "workspace_id", "llm_id", "conversation_id", "provider", "model",
    "price_version", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_nano", "charged_nano", "latency_ms", "ttft_ms", "upstream_latency_ms", "status",
    "error_code", "http_status", "user_api_key_used", "usage_source", "is_stream", "attempts", "created_at",
]  # fmt: skip
MESSAGE_COLUMNS = [
    "id",
    "conversation_id",
    "user_id",
    "llm_id",
    "request_id",
    "role",
    "finish_reason",
    "created_at",
]
FEEDBACK_COLUMNS = [
    "id", "message_id", "user_id", "scale", "rating", "comment", "categories", "created_at",
    "llm_id", "message_user_id", "message_created_at",
]  # fmt: skip

# How often each catalog model is used, and its typical latency (ms) — made up, but shaped like traffic.
MODEL_MIX = {
    "gpt-4o-mini": (30, 700), "gpt-4o": (20, 1500), "claude-3-haiku": (10, 800), "claude-3-sonnet": (8, 2200),
    "gemini-1.5-flash": (8, 600), "deepseek-chat": (7, 1800), "gpt-3.5-turbo": (5, 500),
    "claude-3-opus": (4, 4500), "gemini-1.5-pro": (3, 2500), "gpt-4-turbo": (2, 3000), "grok-2": (2, 1700),
    "llama-3.1-405b": (1, 2800),
}  # fmt: skip


def dsn(database: str) -> str:
    return f"postgresql://{PG}/{database}"


def sa_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG}/{database}"


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(dsn("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Model:
    llm_id: int
    name: str
    provider: str
    in_milli_nano: int  # nano-USD per 1,000 tokens (catalog USD per 1M × 1e6): integer cost arithmetic
    out_milli_nano: int
    weight: int
    median_ms: int


@dataclass
class Seeded:
    now: datetime
    users: list[uuid.UUID]
    workspaces: list[uuid.UUID]
    heaviest_user: uuid.UUID
    median_user: uuid.UUID
    heaviest_workspace: uuid.UUID
    rows_by_user: dict[uuid.UUID, int]
    rows_by_workspace: dict[uuid.UUID, int]


async def load_models(conn: asyncpg.Connection) -> list[Model]:
    rows = await conn.fetch("SELECT id, name, provider, input_price, output_price FROM llms ORDER BY id")
    out = []
    for r in rows:
        if r["name"] not in MODEL_MIX:  # models added after this mix (embeddings, aliases) get no traffic
            continue
        weight, median = MODEL_MIX[r["name"]]
        scale = Decimal(1_000_000)
        out.append(
            Model(
                r["id"],
                r["name"],
                r["provider"],
                int(r["input_price"] * scale),
                int(r["output_price"] * scale),
                weight,
                median,
            )
        )
    return out


def lognormal_int(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, int(rng.lognormvariate(math.log(median), sigma))))


async def seed(database: str, rows: int, rng: random.Random) -> Seeded:
    """Users, workspaces, conversations, messages, usage_logs and feedback, written with COPY."""
    conn = await asyncpg.connect(dsn(database))
    try:
        # The rows are consistent by construction: skip the per-row foreign-key triggers while loading.
        await conn.execute("SET session_replication_role = replica")
        models = await load_models(conn)
        now = datetime.now(UTC).replace(microsecond=0)
        t0 = now - timedelta(days=DAYS)
        users = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(N_USERS)]
        workspaces = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(N_WORKSPACES)]
        await conn.copy_records_to_table(
            "users",
            records=[(u, f"user{i}@bench.example", f"User {i}", "active", t0) for i, u in enumerate(users)],
            columns=["id", "email", "name", "status", "created_at"],
        )
        await conn.copy_records_to_table(
            "workspaces",
            records=[(w, f"Team {i}", t0) for i, w in enumerate(workspaces)],
            columns=["id", "name", "created_at"],
        )
        # user i belongs to workspace i % 100; the first member of each workspace owns it
        await conn.copy_records_to_table(
            "workspace_members",
            records=[
                (workspaces[i % N_WORKSPACES], u, "owner" if i < N_WORKSPACES else "member", t0)
                for i, u in enumerate(users)
            ],
            columns=["workspace_id", "user_id", "role", "created_at"],
        )

        weights = [1 / (k + 1) ** 0.8 for k in range(N_USERS)]
        user_of_row = rng.choices(range(N_USERS), weights=weights, k=rows)
        per_user = [0] * N_USERS
        for u in user_of_row:
            per_user[u] += 1
        # about ten requests per conversation
        conversations: list[list[uuid.UUID]] = []
        conv_records = []
        for i, u in enumerate(users):
            ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(max(1, per_user[i] // 10))]
            conversations.append(ids)
            conv_records.extend((c, u, workspaces[i % N_WORKSPACES], t0, now) for c in ids)
        await conn.copy_records_to_table(
            "conversations",
            records=conv_records,
            columns=["id", "user_id", "workspace_id", "created_at", "updated_at"],
        )

        model_weights = [m.weight for m in models]
        span = (now - t0).total_seconds()
        offsets = sorted(rng.random() * span for _ in range(rows))  # rows arrive in time order
        for start in range(0, rows, CHUNK):
            usage, messages, feedback = [], [], []
            for n in range(start, min(rows, start + CHUNK)):
                ui = user_of_row[n]
                user, ws = users[ui], workspaces[ui % N_WORKSPACES]
                model = rng.choices(models, weights=model_weights)[0]
                created = t0 + timedelta(seconds=offsets[n])
                request_id = f"req_bench_{n:09d}"
                message_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                conv = rng.choice(conversations[ui])
                roll = rng.random()
                status = "error" if roll < 0.025 else "cancelled" if roll < 0.03 else "success"
                stream = rng.random() < 0.6
                byok = rng.random() < 0.05
                latency = lognormal_int(rng, model.median_ms, 0.6, 20, 120_000)
                if status == "error":
                    tokens_in = tokens_out = cached = reasoning = 0
                    latency = lognormal_int(rng, 300, 0.8, 5, 30_000)
                else:
                    tokens_in = lognormal_int(rng, 600, 1.0, 1, 120_000)
                    tokens_out = lognormal_int(rng, 250, 0.9, 1, 8_000)
                    cached = tokens_in // 2 if rng.random() < 0.2 else 0
                    reasoning = tokens_out // 3 if rng.random() < 0.05 else 0
                ttft = int(latency * rng.uniform(0.05, 0.4)) if stream and status != "error" else None
                cost = (tokens_in * model.in_milli_nano + tokens_out * model.out_milli_nano) // 1_000_000
                charged = 0 if byok else cost
                usage.append((
                    request_id, message_id, user, ws, model.llm_id, conv, model.provider, model.name, 1,
                    tokens_in, cached, 0, tokens_out, reasoning, cost, charged, latency, ttft,
                    max(1, latency - 5), status, "upstream_error" if status == "error" else None,
                    502 if status == "error" else 200, byok, "provider", stream, 1, created,
                ))  # fmt: skip
                messages.append(
                    (message_id, conv, user, model.llm_id, request_id, "assistant", "stop", created)
                )
                if status == "success" and rng.random() < 0.02:
                    stars = rng.random() < 0.6
                    rating = rng.randint(1, 5) if stars else rng.choice((-1, 1))
                    feedback.append((
                        uuid.UUID(int=rng.getrandbits(128), version=4), message_id, user,
                        "stars" if stars else "thumbs", rating, None, None, created + timedelta(minutes=2),
                        model.llm_id, user, created,
                    ))  # fmt: skip
            await conn.copy_records_to_table("messages", records=messages, columns=MESSAGE_COLUMNS)
            await conn.copy_records_to_table("usage_logs", records=usage, columns=USAGE_COLUMNS)
            await conn.copy_records_to_table("message_feedback", records=feedback, columns=FEEDBACK_COLUMNS)
            print(f"  seeded {min(rows, start + CHUNK):>9,} rows", file=sys.stderr)
    finally:
        await conn.close()
    rows_by_user = {users[i]: per_user[i] for i in range(N_USERS)}
    rows_by_workspace: dict[uuid.UUID, int] = {}
    for i, u in enumerate(users):
        ws = workspaces[i % N_WORKSPACES]
        rows_by_workspace[ws] = rows_by_workspace.get(ws, 0) + rows_by_user[u]
    ranked = sorted(users, key=lambda u: rows_by_user[u], reverse=True)
    return Seeded(
        now=now,
        users=users,
        workspaces=workspaces,
        heaviest_user=ranked[0],
        median_user=ranked[len(ranked) // 2],
        heaviest_workspace=max(workspaces, key=lambda w: rows_by_workspace[w]),
        rows_by_user=rows_by_user,
        rows_by_workspace=rows_by_workspace,
    )


# -- the app under uvicorn -----------------------------------------------------------------------------


class Server:
    """The real app under uvicorn in a background thread, on a free port."""

    def __init__(self, settings: Settings, port: int = 0) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", port))  # 0: any free port
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()


@dataclass
class Case:
    label: str
    path: str
    params: dict[str, str]
    key: str


@dataclass
class Timing:
    case: Case
    median_ms: float
    min_ms: float
    max_ms: float
    rows: int
    note: str


def covered_rows(body: dict[str, Any]) -> int:
    """How many usage_logs rows an answer summarises (from the answer itself)."""
    if "totals" in body:
        return int(body["totals"]["requests"])
    return sum(int(m["requests"]) for m in body["data"])


def time_case(http: httpx.Client, case: Case) -> Timing:
    url = case.path + ("?" + urlencode(case.params) if case.params else "")
    headers = {"Authorization": f"Bearer {case.key}"}
    samples = []
    body: dict[str, Any] = {}
    for i in range(WARMUP + RUNS):
        started = time.perf_counter()
        response = http.get(url, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{case.label}: {response.status_code} {response.text[:300]}")
        body = response.json()
        if i >= WARMUP:
            samples.append(elapsed)
    note = body.get("percentile_method", "")
    return Timing(case, statistics.median(samples), min(samples), max(samples), covered_rows(body), note)


def cases(seeded: Seeded, admin_key: str, user_key: str, owner_key: str) -> list[Case]:
    now = seeded.now
    week = {"start": (now - timedelta(days=7, minutes=23)).isoformat(), "end": now.isoformat()}
    day = {"start": (now - timedelta(hours=24, minutes=23)).isoformat()}
    heavy, median, ws = seeded.heaviest_user, seeded.median_user, seeded.heaviest_workspace
    a = "/api/v1/analytics"
    return [
        Case("usage: heaviest user, all time, by day", f"{a}/usage/{heavy}", {}, admin_key),
        Case("usage: heaviest user, last 7 days (unaligned), by week", f"{a}/usage/{heavy}",
             {**week, "granularity": "week"}, user_key),
        Case("usage: median user, all time, by month", f"{a}/usage/{median}", {"granularity": "month"},
             admin_key),
        Case("costs: heaviest workspace, all time", f"{a}/costs/{ws}", {}, owner_key),
        Case("costs: heaviest workspace, last 7 days (unaligned)", f"{a}/costs/{ws}", week, admin_key),
        Case("top-llms: everyone, all time", f"{a}/top-llms", {}, admin_key),
        Case("top-llms: everyone, last 7 days (unaligned)", f"{a}/top-llms", week, admin_key),
        Case("top-llms: heaviest user's key (own requests)", f"{a}/top-llms", {}, user_key),
        Case("llm-performance: everyone, all time", f"{a}/llm-performance", {}, admin_key),
        Case("llm-performance: everyone, last 7 days (unaligned)", f"{a}/llm-performance", week, admin_key),
        Case("llm-performance: everyone, last 24 h (unaligned)", f"{a}/llm-performance", day, admin_key),
        Case("llm-performance: heaviest user's key (own requests)", f"{a}/llm-performance", {}, user_key),
    ]  # fmt: skip


# -- EXPLAIN ANALYZE of the statements behind one answer ---------------------------------------------------


class StatementLog:
    """Every SQL statement the app runs while `recording`, with its duration (a listener on all engines)."""

    def __init__(self) -> None:
        self.recording = False
        self.seen: list[tuple[float, str, Any]] = []
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(
        self, _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        context._bench_started = time.perf_counter()

    def _after(
        self, _conn: Any, _cursor: Any, statement: str, params: Any, context: Any, _many: bool
    ) -> None:
        if self.recording:
            self.seen.append(((time.perf_counter() - context._bench_started) * 1000, statement, params))


async def explain(database: str, statement: str, parameters: Any) -> str:
    conn = await asyncpg.connect(dsn(database))
    try:
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *parameters)
    finally:
        await conn.close()
    return "\n".join(r[0] for r in plan)


def statements_of(http: httpx.Client, log: StatementLog, case: Case) -> list[tuple[float, str, Any]]:
    """The SQL statements behind one (warm) answer, with their durations."""
    url = case.path + ("?" + urlencode(case.params) if case.params else "")
    log.seen.clear()
    log.recording = True
    try:
        http.get(url, headers={"Authorization": f"Bearer {case.key}"}).raise_for_status()
    finally:
        log.recording = False
    return [s for s in log.seen if "FROM api_keys" not in s[1]]  # the key lookup is cached anyway


def explain_report(database: str, http: httpx.Client, log: StatementLog, timings: list[Timing]) -> str:
    """The statements of the slowest answer, and EXPLAIN ANALYZE of the slowest statement of any answer."""
    captured = {t.case.label: statements_of(http, log, t.case) for t in timings}
    slowest = max(timings, key=lambda t: t.median_ms)
    lines = [f"### The statements of one answer of the slowest endpoint: {slowest.case.label}", ""]
    lines += [
        f"- {ms:6.1f} ms  `{' '.join(sql.split())[:140]}…`" for ms, sql, _ in captured[slowest.case.label]
    ]
    label, (elapsed, statement, parameters) = max(
        ((label, s) for label, found in captured.items() for s in found), key=lambda item: item[1][0]
    )
    plan = asyncio.run(explain(database, statement, parameters))
    lines += ["", f"### The slowest statement of any answer ({elapsed:.1f} ms): {label}", ""]
    lines += ["```sql", statement, "```", f"parameters: {list(parameters)}", "", "```", plan, "```", ""]
    return "\n".join(lines)


# -- what the rollups cost the recorder -------------------------------------------------------------------


async def rollup_upkeep(database: str, transactions: int = 500) -> list[str]:
    """Median time of a write transaction with and without the rollup upserts (one request, and a
    group-commit batch of 20): what `apply_usage_rollups` adds to the recorder's transaction."""
    from sqlalchemy import text

    from storage.usage.rollups import UsageFacts, apply_facts

    engine = create_engine(sa_url(database), pool_size=2)
    users = [uuid.UUID(int=i + 1) for i in range(50)]
    base = datetime.now(UTC)

    def facts(i: int, n: int) -> list[UsageFacts]:
        return [
            UsageFacts(
                created_at=base + timedelta(seconds=i), user_id=users[(i + k) % 50], workspace_id=None,
                model=("gpt-4o", "gpt-4o-mini")[(i + k) % 2], byok=False, status="success", input_tokens=100,
                output_tokens=10, cost_nano=1000, charged_nano=1000, latency_ms=300 + i % 500, ttft_ms=50,
            )
            for k in range(n)
        ]  # fmt: skip

    out = []
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE bench_scratch (id serial PRIMARY KEY, v int)"))
        for batch in (1, 20):
            medians = []
            for with_rollups in (False, True):
                samples = []
                for i in range(transactions):
                    started = time.perf_counter()
                    async with engine.begin() as conn:
                        await conn.execute(text("INSERT INTO bench_scratch (v) VALUES (1)"))
                        if with_rollups:
                            await apply_facts(conn, facts(i, batch))
                    samples.append((time.perf_counter() - started) * 1000)
                medians.append(statistics.median(samples[50:]))
            out.append(f"| {batch} | {medians[0]:.2f} | {medians[1]:.2f} | {medians[1] - medians[0]:.2f} |")
    finally:
        await engine.dispose()
    return out


# -- the run -------------------------------------------------------------------------------------------


async def prepare(database: str, rows: int, seed_value: int) -> tuple[Seeded, str, str, dict[str, float]]:
    phases: dict[str, float] = {}
    started = time.perf_counter()
    seeded = await seed(database, rows, random.Random(seed_value))
    phases["seed (COPY)"] = time.perf_counter() - started
    engine = create_engine(sa_url(database), pool_size=2)
    try:
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.run_sync(rebuild_usage_rollups)
        phases["rollups (rebuild_usage_rollups)"] = time.perf_counter() - started
        ws_index = seeded.workspaces.index(seeded.heaviest_workspace)
        async with engine.begin() as conn:
            _id, user_key = await create_key(conn, seeded.heaviest_user, workspace_id=None, name="bench")
            owner = seeded.users[ws_index]  # user i < 100 owns workspace i
            _id, owner_key = await create_key(
                conn, owner, workspace_id=seeded.heaviest_workspace, name="bench"
            )
    finally:
        await engine.dispose()
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute("VACUUM ANALYZE")
        sizes = await conn.fetch(
            "SELECT relname, pg_total_relation_size(oid) AS bytes, reltuples::bigint AS rows FROM pg_class "
            "WHERE relname IN ('usage_logs', 'messages', 'message_feedback', 'usage_hourly', 'usage_daily', "
            "'latency_daily', 'usage_model_daily', 'usage_user_daily', 'usage_workspace_daily', "
            "'usage_key_daily') ORDER BY relname"
        )
    finally:
        await conn.close()
    phases["VACUUM ANALYZE"] = time.perf_counter() - started
    for r in sizes:
        print(f"  {r['relname']:<18} {r['rows']:>10,} rows  {r['bytes'] / 2**20:8.1f} MiB", file=sys.stderr)
    return seeded, user_key, owner_key, phases


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage_logs rows to seed")
    parser.add_argument("--seed", type=int, default=20261124, help="random seed of the data")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--no-explain", action="store_true", help="skip EXPLAIN ANALYZE of the slowest queries"
    )
    args = parser.parse_args()

    database = f"sg_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    print(f"database {database} on {PG}", file=sys.stderr)
    try:
        started = time.perf_counter()
        upgrade(sa_url(database))
        migrate_s = time.perf_counter() - started
        seeded, user_key, owner_key, phases = asyncio.run(prepare(database, args.rows, args.seed))
        phases = {"migrate": migrate_s, **phases}
        settings = Settings(database_url=sa_url(database), admin_key=ADMIN_KEY, log_level="warning")
        timings = []
        log = StatementLog()
        explained = ""
        with Server(settings) as server, httpx.Client(base_url=server.url, timeout=120) as http:
            for case in cases(seeded, ADMIN_KEY, user_key, owner_key):
                timings.append(time_case(http, case))
                t = timings[-1]
                print(f"  {t.median_ms:7.1f} ms  {case.label}", file=sys.stderr)
            if not args.no_explain:
                explained = explain_report(database, http, log, timings)
        upkeep = asyncio.run(rollup_upkeep(database))
    finally:
        if not args.keep:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    print(f"\n{args.rows:,} usage_logs rows, {N_USERS:,} users, {N_WORKSPACES} workspaces, {DAYS} days; "
          f"heaviest user {seeded.rows_by_user[seeded.heaviest_user]:,} rows, heaviest workspace "
          f"{seeded.rows_by_workspace[seeded.heaviest_workspace]:,} rows\n")  # fmt: skip
    print("| endpoint and scope | rows summarised | median ms | min ms | max ms | percentiles |")
    print("|---|---:|---:|---:|---:|---|")
    for t in timings:
        figures = f"{t.median_ms:.1f} | {t.min_ms:.1f} | {t.max_ms:.1f}"
        print(f"| {t.case.label} | {t.rows:,} | {figures} | {t.note} |")
    print("\nset-up: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items()))
    print("\nRollup upkeep in the recorder's transaction (median ms per transaction):\n")
    print("| requests per transaction | one insert | + apply_usage_rollups | added |")
    print("|---:|---:|---:|---:|")
    print("\n".join(upkeep))
    slowest = max(timings, key=lambda t: t.median_ms)
    print(f"slowest: {slowest.case.label} — {slowest.median_ms:.1f} ms (budget 300 ms)")
    if explained:
        print("\n" + explained)
    if args.keep:
        print(f"kept database {database}")
    if slowest.median_ms >= 300:
        sys.exit(1)


if __name__ == "__main__":
    main()
