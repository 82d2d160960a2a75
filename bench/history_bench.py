"""History at scale (issue 15): 20,000,000 usage_logs rows over 24 months, partitioned by month (PostgreSQL).

    python bench/history_bench.py                          # build sgpart_bench, time everything, drop it
    python bench/history_bench.py --rows 2000000 --keep    # smaller; keep the database
    python bench/history_bench.py --reuse --keep           # time again against a kept database
    python bench/history_bench.py --database sgX_bench --port 58110 --redis-db 5   # on a shared machine

What it does:
1. Creates the database, migrates it (0015: usage_logs partitioned by month), and writes the history with
   SQL (`generate_series`, no Python row by row): 1,000 users in 100 workspaces (user k's share of the
   traffic ∝ skewed, the heaviest ~4 %), 12 models, rows evenly spread in time over `--months` months
   ending now, 2.5 % errors, 0.5 % cancelled, 5 % BYOK, 60 % streams. Each month is written into a
   standalone table and then attached (PostgreSQL builds its indexes and checks its keys on attach), as
   `storage/usage/partitions.py` attaches; the request-id gate is filled from the rows; the rollups are
   rebuilt by `storage.usage.rollups.rebuild_usage_rollups` (the one definition), so every analytics
   answer reads real rollup sizes. The heaviest user gets a usage debit per request in billing_events and a
   top-up (the billing page pages a real ledger), and one conversation with messages for its last requests.
   No message_feedback is seeded (the models page's ratings read an empty table).
2. Serves the real app under uvicorn and times every analytics route of the admin API and every dashboard
   page (bench/analytics_bench.py's and bench/dashboard_bench.py's lists, plus two-year ranges): 2 warm-up
   calls, then the median and max of `--runs`. For every answer over 300 ms it prints the statements behind
   one answer and EXPLAIN (ANALYZE, BUFFERS) of the slowest one.
3. Times the record path (`record_batch`: the one-round-trip function with the Redis ledger, batches of
   `--batch`) on an empty database and on the 20M-row one.
4. Prints the history's size: rows and bytes per partition, the gate, the rollups.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from analytics_bench import (
    ADMIN_KEY,
    MODEL_MIX,
    Seeded,
    Server,
    StatementLog,
    cases,
    dsn,
    explain,
    sa_url,
    time_case,
)
from dashboard_bench import pages, sign_in, time_page

from config import Settings
from gateway.dashboard.context import MAX_DAYS
from migrations.runner import upgrade
from pricing.cost import Usage
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.factory import build_ledger
from storage.db import create_engine
from storage.usage.partitions import add_months, list_partitions, month_start, partition_name
from storage.usage.recorder import CompletionRecord, record_batch
from storage.usage.rollups import LATENCY_BOUNDS, rebuild_usage_rollups

BUDGET_MS = 300.0
N_USERS, N_WORKSPACES = 1_000, 100
USAGE_COLUMNS = (
    "request_id, user_id, workspace_id, llm_id, provider, model, price_version, input_tokens, "
    "cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano, charged_nano, "
    "latency_ms, ttft_ms, upstream_latency_ms, status, error_code, http_status, user_api_key_used, "
    "usage_source, is_stream, attempts, created_at, endpoint"
)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(dsn("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# -- building the history -------------------------------------------------------------------------------


async def seed_accounts(conn: asyncpg.Connection, t0: datetime) -> None:
    """Users (with their skew index), workspaces, memberships, and the models' traffic slots."""
    await conn.execute(
        "CREATE TABLE bench_users AS SELECT g AS idx, gen_random_uuid() AS id, NULL::uuid AS ws "
        "FROM generate_series(0, $1 - 1) g",
        N_USERS,
    )
    await conn.execute(
        "CREATE TABLE bench_workspaces AS SELECT g AS idx, gen_random_uuid() AS id "
        "FROM generate_series(0, $1 - 1) g",
        N_WORKSPACES,
    )
    await conn.execute(
        "UPDATE bench_users u SET ws = w.id FROM bench_workspaces w WHERE w.idx = u.idx % $1", N_WORKSPACES
    )
    await conn.execute(
        "INSERT INTO users (id, email, name, status, created_at) "
        "SELECT id, 'user' || idx || '@bench.example', 'User ' || idx, 'active', $1 FROM bench_users",
        t0,
    )
    await conn.execute(
        "INSERT INTO workspaces (id, name, created_at) SELECT id, 'Team ' || idx, $1 FROM bench_workspaces",
        t0,
    )
    await conn.execute(
        "INSERT INTO workspace_members (workspace_id, user_id, role, created_at) "
        "SELECT ws, id, CASE WHEN idx < $2 THEN 'owner' ELSE 'member' END, $1 FROM bench_users",
        t0,
        N_WORKSPACES,
    )
    # 100 slots, each a model by its traffic weight; prices in nano-USD per token ×1000; a latency bucket
    models = await conn.fetch("SELECT id, name, provider, input_price, output_price FROM llms ORDER BY id")
    slots: list[tuple[int, int, str, str, int, int, int]] = []
    known = [m for m in models if m["name"] in MODEL_MIX]
    total = sum(MODEL_MIX[m["name"]][0] for m in known)
    for m in known:
        weight, median_ms = MODEL_MIX[m["name"]]
        bucket = max(i for i, b in enumerate(LATENCY_BOUNDS) if b <= median_ms)
        for _ in range(max(1, round(100 * weight / total))):
            slots.append((len(slots), m["id"], m["name"], m["provider"], int(m["input_price"] * 1000),
                          int(m["output_price"] * 1000), bucket))  # fmt: skip
    await conn.execute(
        "CREATE TABLE bench_models (slot int, llm_id int, name text, provider text, in_milli bigint, "
        "out_milli bigint, bucket int)"
    )
    await conn.executemany("INSERT INTO bench_models VALUES ($1, $2, $3, $4, $5, $6, $7)", slots)
    await conn.execute("CREATE TABLE bench_bounds AS SELECT b AS ms, i - 1 AS idx FROM unnest($1::int[]) "
                       "WITH ORDINALITY AS t(b, i)", list(LATENCY_BOUNDS))  # fmt: skip


MONTH_ROWS_SQL = f"""
INSERT INTO {{table}} ({USAGE_COLUMNS})
SELECT 'req_hist_' || lpad(g::text, 10, '0'), u.id, u.ws, m.llm_id, m.provider, m.name, 1,
       t.tin, t.cached, 0, t.tout, t.reasoning,
       (t.tin * m.in_milli + t.tout * m.out_milli) / 1000,
       CASE WHEN t.byok THEN 0 ELSE (t.tin * m.in_milli + t.tout * m.out_milli) / 1000 END,
       lat.ms, CASE WHEN t.stream AND t.status <> 'error' THEN greatest(1, lat.ms / 5) END,
       greatest(1, lat.ms - 5), t.status, CASE WHEN t.status = 'error' THEN 'upstream_error' END,
       CASE WHEN t.status = 'error' THEN 502 ELSE 200 END, t.byok, 'provider', t.stream, 1,
       $3::timestamptz + (g - $1) * $4::interval, 'chat'
FROM generate_series($1::bigint, $2::bigint) AS g
CROSS JOIN LATERAL (
    SELECT floor(power(random(), 2.2) * {N_USERS})::int AS uidx, floor(random() * $5)::int AS slot,
           random() AS roll, random() < 0.6 AS stream, random() < 0.05 AS byok,
           (random() * 8 - 4 + g * 0)::int AS spread
) AS r
JOIN bench_users u ON u.idx = r.uidx
JOIN bench_models m ON m.slot = r.slot
JOIN bench_bounds lat ON lat.idx = greatest(1, m.bucket + r.spread)
CROSS JOIN LATERAL (
    SELECT CASE WHEN r.roll < 0.025 THEN 'error' WHEN r.roll < 0.03 THEN 'cancelled' ELSE 'success' END
               AS status,
           r.stream, r.byok,
           CASE WHEN r.roll < 0.025 THEN 0 ELSE 50 + (random() * 1200)::int END AS tin,
           CASE WHEN r.roll < 0.025 THEN 0 ELSE 10 + (random() * 500)::int END AS tout,
           0 AS cached, 0 AS reasoning
) AS t
"""


async def write_history(conn: asyncpg.Connection, rows: int, months: int, now: datetime) -> datetime:
    """`rows` rows evenly spread from `months` months before now to now, month by month: each written into
    a standalone table, then attached. Returns the first row's time."""
    t0 = now - timedelta(days=round(months * 30.44))
    step = (now - t0) / rows
    slots = await conn.fetchval("SELECT count(*) FROM bench_models")
    await conn.execute("SET maintenance_work_mem = '512MB'")
    await conn.execute("SET synchronous_commit = off")
    month = month_start(t0)
    while month <= now:
        end = add_months(month, 1)
        first = max(0, int(-(-(month - t0) // step))) if month > t0 else 0
        last = min(rows - 1, int(-(-(end - t0) // step)) - 1)
        name = partition_name(month)
        attached = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhrelid = to_regclass($1)", name
        )
        if attached:  # made by the migration (the current month): replaced by a filled one
            await conn.execute(f"ALTER TABLE usage_logs DETACH PARTITION {name}")
            await conn.execute(f"DROP TABLE {name}")
        started = time.perf_counter()
        await conn.execute(f"CREATE TABLE {name} (LIKE usage_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        if last >= first:
            await conn.execute(MONTH_ROWS_SQL.format(table=name), first, last, t0 + first * step, step, slots)
        filled = time.perf_counter()
        await conn.execute(
            f"ALTER TABLE usage_logs ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
        )
        log(f"  {name}: {max(0, last - first + 1):>10,} rows  write {filled - started:6.1f} s  "
            f"attach (indexes, keys) {time.perf_counter() - filled:6.1f} s")  # fmt: skip
        month = end
    await conn.execute("SELECT setval('usage_logs_id_seq', (SELECT max(id) FROM usage_logs))")
    return t0


async def fill_gate(conn: asyncpg.Connection) -> None:
    """The request-id gate holds every row's request id (the trigger fills it for rows inserted later)."""
    await conn.execute("ALTER TABLE usage_request_ids DROP CONSTRAINT pk_usage_request_ids")
    await conn.execute("INSERT INTO usage_request_ids SELECT request_id, created_at FROM usage_logs")
    await conn.execute(
        "ALTER TABLE usage_request_ids ADD CONSTRAINT pk_usage_request_ids PRIMARY KEY (request_id)"
    )


async def ledger_and_conversation(conn: asyncpg.Connection, user: uuid.UUID, t0: datetime) -> tuple[str, str]:
    """The heaviest user's debits and a top-up; one conversation with messages for its last 20 requests."""
    await conn.execute(
        "INSERT INTO billing_events (user_id, workspace_id, type, amount_nano, status, request_id, "
        "idempotency_key, created_at) SELECT user_id, workspace_id, 'usage', -charged_nano, 'completed', "
        "request_id, 'usage:' || request_id, created_at FROM usage_logs WHERE user_id = $1 "
        "AND status = 'success' AND NOT user_api_key_used",
        user,
    )
    await conn.execute(
        "INSERT INTO billing_events (user_id, type, amount_nano, status, idempotency_key, description, "
        "created_at) VALUES ($1, 'credit', 10000000000000000, 'completed', 'credit:bench', 'bench top-up', "
        "$2)",
        user,
        t0 - timedelta(days=1),
    )
    await conn.execute(
        "INSERT INTO credit_accounts (user_id, balance_nano, held_nano, version, updated_at) "
        "SELECT $1, COALESCE(SUM(amount_nano), 0), 0, 1, now() FROM billing_events WHERE user_id = $1",
        user,
    )
    conversation = uuid.uuid4()
    await conn.execute(
        "INSERT INTO conversations (id, user_id, workspace_id, created_at, updated_at) "
        "SELECT $2, $1, ws, now(), now() FROM bench_users WHERE id = $1",
        user,
        conversation,
    )
    last = await conn.fetch(
        "SELECT id, created_at, request_id, llm_id FROM usage_logs WHERE user_id = $1 "
        "ORDER BY created_at DESC LIMIT 20",
        user,
    )
    for row in last:
        message = uuid.uuid4()
        await conn.execute(
            "INSERT INTO messages (id, conversation_id, user_id, llm_id, request_id, role, finish_reason, "
            "created_at) VALUES ($1, $2, $3, $4, $5, 'assistant', 'stop', $6)",
            message, conversation, user, row["llm_id"], row["request_id"], row["created_at"],
        )  # fmt: skip
        await conn.execute(
            "UPDATE usage_logs SET conversation_id = $1, message_id = $2 WHERE id = $3 AND created_at = $4",
            conversation, message, row["id"], row["created_at"],
        )  # fmt: skip
    return str(last[0]["request_id"]), str(conversation)


async def build(database: str, rows: int, months: int) -> dict[str, float]:
    phases: dict[str, float] = {}
    started = time.perf_counter()
    await asyncio.to_thread(upgrade, sa_url(database))
    phases["migrate"] = time.perf_counter() - started
    now = datetime.now(UTC).replace(microsecond=0)
    conn = await asyncpg.connect(dsn(database), command_timeout=None)
    try:
        started = time.perf_counter()
        await seed_accounts(conn, now - timedelta(days=round(months * 30.44) + 1))
        t0 = await write_history(conn, rows, months, now)
        phases["usage_logs (generate_series, attach)"] = time.perf_counter() - started
        started = time.perf_counter()
        await fill_gate(conn)
        phases["request-id gate"] = time.perf_counter() - started
    finally:
        await conn.close()
    engine = create_engine(sa_url(database), pool_size=2)
    try:
        started = time.perf_counter()
        async with engine.begin() as sa_conn:
            # consistent by construction: no per-row foreign-key triggers on the rollups' inserts
            await sa_conn.execute(text("SET LOCAL session_replication_role = replica"))
            await sa_conn.execute(text("SET LOCAL work_mem = '256MB'"))
            await sa_conn.run_sync(rebuild_usage_rollups)
        phases["rollups (rebuild_usage_rollups)"] = time.perf_counter() - started
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(dsn(database), command_timeout=None)
    try:
        started = time.perf_counter()
        heavy = await heaviest_user(conn)
        await ledger_and_conversation(conn, heavy, t0)
        phases["ledger and conversation"] = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("ANALYZE usage_logs")  # the parent's own statistics (autovacuum never makes them)
        phases["VACUUM ANALYZE"] = time.perf_counter() - started
    finally:
        await conn.close()
    return phases


async def heaviest_user(conn: asyncpg.Connection) -> uuid.UUID:
    found = await conn.fetchval(
        "SELECT user_id FROM usage_user_daily GROUP BY user_id ORDER BY sum(requests) DESC LIMIT 1"
    )
    return uuid.UUID(str(found))


async def seeded_of(database: str) -> tuple[Seeded, str, str, str, str]:
    """What the route lists need: users and workspaces by traffic, two keys, a request, a conversation."""
    conn = await asyncpg.connect(dsn(database))
    try:
        users = await conn.fetch(
            "SELECT user_id, sum(requests)::bigint AS n FROM usage_user_daily GROUP BY 1 ORDER BY 2 DESC"
        )
        spaces = await conn.fetch(
            "SELECT workspace_id, sum(requests)::bigint AS n FROM usage_workspace_daily GROUP BY 1 "
            "ORDER BY 2 DESC"
        )
        conversation = await conn.fetchval("SELECT id FROM conversations LIMIT 1")
        request_id = await conn.fetchval(
            "SELECT request_id FROM messages WHERE conversation_id = $1 ORDER BY created_at DESC LIMIT 1",
            conversation,
        )
        now = await conn.fetchval("SELECT max(created_at) FROM usage_logs")
    finally:
        await conn.close()
    rows_by_user = {uuid.UUID(str(r["user_id"])): int(r["n"]) for r in users}
    rows_by_ws = {uuid.UUID(str(r["workspace_id"])): int(r["n"]) for r in spaces}
    ranked = list(rows_by_user)
    heavy_ws = next(iter(rows_by_ws))
    seeded = Seeded(
        now=now,
        users=ranked,
        workspaces=list(rows_by_ws),
        heaviest_user=ranked[0],
        median_user=ranked[len(ranked) // 2],
        heaviest_workspace=heavy_ws,
        rows_by_user=rows_by_user,
        rows_by_workspace=rows_by_ws,
    )
    engine = create_engine(sa_url(database), pool_size=1)
    try:
        async with engine.begin() as conn2:
            _id, user_key = await create_key(conn2, seeded.heaviest_user, workspace_id=None, name="bench")
            owner = await conn2.execute(
                text(
                    "SELECT user_id FROM workspace_members WHERE workspace_id = :w AND role = 'owner' LIMIT 1"
                ),
                {"w": heavy_ws},
            )
            owner_id = owner.scalar_one()
            _id, owner_key = await create_key(conn2, owner_id, workspace_id=heavy_ws, name="bench")
    finally:
        await engine.dispose()
    return seeded, user_key, owner_key, str(request_id), str(conversation)


# -- timing the routes ----------------------------------------------------------------------------------


@dataclass
class Row:
    route: str
    p50: float
    max: float
    explained: str = ""


def longest_range_pages(seeded: Seeded) -> list[tuple[str, str]]:
    """The dashboard's longest range (MAX_DAYS, 400 days) on the pages that take one."""
    today = seeded.now.date()
    span = f"start={today - timedelta(days=MAX_DAYS - 1)}&end={today}"
    return [
        (f"overview, {MAX_DAYS} days", f"/dashboard?{span}"),
        (f"costs, {MAX_DAYS} days", f"/dashboard/costs?{span}"),
        (f"models, {MAX_DAYS} days", f"/dashboard/models?{span}"),
        (f"requests, {MAX_DAYS} days, page 1", f"/dashboard/requests?{span}"),
        (f"users, {MAX_DAYS} days", f"/dashboard/users?{span}"),
        (f"one user (the heaviest), {MAX_DAYS} days", f"/dashboard/users/{seeded.heaviest_user}?{span}"),
    ]


async def explain_slowest(database: str, seen: list[tuple[float, str, Any]]) -> str:
    seen = [s for s in seen if "FROM api_keys" not in s[1] and "dashboard_sessions" not in s[1]]
    if not seen:
        return ""
    lines = [f"- {ms:6.1f} ms  `{' '.join(sql.split())[:160]}…`" for ms, sql, _ in seen]
    elapsed, statement, parameters = max(seen, key=lambda s: s[0])
    plan = await explain(database, statement, parameters)
    return "\n".join(
        [*lines, "", f"slowest statement ({elapsed:.1f} ms):", "```sql", statement, "```",
         f"parameters: {list(parameters)}", "```", plan, "```"]
    )  # fmt: skip


def time_routes(database: str, settings: Settings, port: int, runs: int, months: int) -> list[Row]:
    import analytics_bench
    import dashboard_bench

    analytics_bench.RUNS = runs
    dashboard_bench.WARMUP = 2
    seeded, user_key, owner_key, request_id, conversation = asyncio.run(seeded_of(database))
    out: list[Row] = []
    statements = StatementLog()
    with Server(settings, free_port_from(port)) as server:
        with httpx.Client(base_url=server.url, timeout=300) as http:
            for case in cases(seeded, ADMIN_KEY, user_key, owner_key):
                t = time_case(http, case)
                out.append(Row(f"API {case.label}", t.median_ms, t.max_ms))
                log(f"  {t.median_ms:8.1f} ms  {out[-1].route}")
                if t.median_ms > BUDGET_MS:
                    out[-1].explained = capture(database, http, statements, case.path, case.params, case.key)
        as_admin, as_user = pages(seeded, request_id, conversation)
        as_admin += longest_range_pages(seeded)
        for key, listed in ((ADMIN_KEY, as_admin), (user_key, as_user)):
            with httpx.Client(base_url=server.url, timeout=300) as http:
                sign_in(http, key)
                for label, path in listed:
                    t = time_page(http, label, path, runs)
                    out.append(Row(f"page {label}", t.median_ms, t.max_ms))
                    log(f"  {t.median_ms:8.1f} ms  {out[-1].route}")
                    if t.median_ms > BUDGET_MS:
                        out[-1].explained = capture(database, http, statements, path, {}, None)
    return out


def free_port_from(first: int) -> int:
    """The first port from `first` on (within its hundred) that binds now (a just-closed one lingers)."""
    import socket

    for port in range(first, first - first % 100 + 100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port from {first}")


def capture(
    database: str,
    http: httpx.Client,
    statements: StatementLog,
    path: str,
    params: dict[str, str],
    key: str | None,
) -> str:
    statements.seen.clear()
    statements.recording = True
    try:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        http.get(path, params=params or None, headers=headers)  # {} would drop the path's own query
    finally:
        statements.recording = False
    return asyncio.run(explain_slowest(database, list(statements.seen)))


# -- the record path ------------------------------------------------------------------------------------


async def record_throughput(database: str, redis_url: str, batches: int, batch: int) -> tuple[float, float]:
    """Records per second and the median batch time (ms) of `record_batch` (one round trip per batch)."""
    from redis.asyncio import Redis

    url = sa_url(database)
    redis = Redis.from_url(redis_url)
    engine = create_engine(url, pool_size=2)
    ledger: Any = build_ledger(Settings(database_url=url), engine, redis)
    try:
        async with engine.begin() as conn:
            user = (await create_user(conn, f"record-{uuid.uuid4().hex[:8]}@bench.example")).user_id
        await add_credits(engine, ledger, user, 10**16, f"seed-{user}")
        conversation = uuid.uuid4()
        model = await (await asyncpg.connect(dsn(database))).fetchrow(
            "SELECT id, name, provider FROM llms WHERE name = 'gpt-4o-mini'"
        )
        samples = []
        for i in range(batches + 3):
            items = []
            for _ in range(batch):
                rec = CompletionRecord(
                    request_id=f"req_{uuid.uuid4().hex}", user_id=user, workspace_id=None, api_key_id=None,
                    conversation_id=conversation, message_id=uuid.uuid4(), llm_id=model["id"],
                    model=model["name"], provider=model["provider"], price_version=1,
                    usage=Usage(prompt_tokens=120, completion_tokens=80), cost_nano=66_000,
                    charged_nano=66_000,
                    byok=False, is_stream=False, status="success", latency_ms=300,
                    created_at=datetime.now(UTC),
                )  # fmt: skip
                items.append((rec, await ledger.reserve(user, rec.request_id, 100_000)))
            started = time.perf_counter()
            await record_batch(engine, ledger, items)
            if i >= 3:
                samples.append(time.perf_counter() - started)
        keys = [k async for k in redis.scan_iter(match=f"sg:{{{user}}}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await ledger.close()
        await engine.dispose()
        await redis.aclose()
    return batch * len(samples) / sum(samples), statistics.median(samples) * 1000


# -- the history's size ---------------------------------------------------------------------------------


async def history_size(database: str) -> list[str]:
    engine = create_engine(sa_url(database), pool_size=1)
    try:
        found = await list_partitions(engine)
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(dsn(database))
    try:
        other = await conn.fetch(
            "SELECT relname, reltuples::bigint AS n, pg_total_relation_size(oid) AS bytes FROM pg_class "
            "WHERE relname IN ('usage_request_ids', 'usage_hourly', 'usage_daily', 'usage_model_daily', "
            "'usage_user_daily', 'usage_workspace_daily', 'usage_key_daily', 'latency_daily', "
            "'billing_events') ORDER BY relname"
        )
    finally:
        await conn.close()
    attached = [p for p in found if p.attached and p.rows_estimate]
    lines = ["| partition | rows | MiB (heap + indexes) |", "|---|---:|---:|"]
    shown: list[Any] = [*attached[:2], None, *attached[-3:]] if len(attached) > 6 else list(attached)
    for p in shown:
        lines.append(
            "| … | | |" if p is None else f"| {p.name} | {p.rows_estimate:,} | {p.bytes / 2**20:,.0f} |"
        )
    total_rows, total_bytes = (
        sum(p.rows_estimate for p in found if p.attached),
        sum(p.bytes for p in found if p.attached),
    )
    count = len([p for p in found if p.attached])
    lines.append(
        f"| **usage_logs: {count} partitions** | **{total_rows:,}** | **{total_bytes / 2**20:,.0f}** |"
    )
    if attached:
        sizes = sorted(p.bytes for p in attached)
        lines.append(f"| a month (median of the {len(attached)} filled) | "
                     f"{int(statistics.median(p.rows_estimate for p in attached)):,} | "
                     f"{statistics.median(sizes) / 2**20:,.0f} |")  # fmt: skip
    lines += ["", "| other table | rows | MiB |", "|---|---:|---:|"]
    lines += [f"| {r['relname']} | {r['n']:,} | {r['bytes'] / 2**20:,.0f} |" for r in other]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--runs", type=int, default=7, help="timed calls per route (after 2 warm-up calls)")
    parser.add_argument("--database", default="sgpart_bench")
    parser.add_argument("--port", type=int, default=58110)
    parser.add_argument("--redis-db", type=int, default=5)
    parser.add_argument("--batches", type=int, default=60, help="record batches timed per database")
    parser.add_argument("--batch", type=int, default=50, help="records per batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating empty/full record-path runs")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="time against the kept database (no build)")
    args = parser.parse_args()
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    empty = f"{args.database}_empty"
    phases: dict[str, float] = {}
    try:
        if not args.reuse:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
            asyncio.run(admin(f'CREATE DATABASE "{args.database}"'))
            log(f"database {args.database}: building {args.rows:,} rows over {args.months} months")
            phases = asyncio.run(build(args.database, args.rows, args.months))
            log("set-up: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
        size = asyncio.run(history_size(args.database))
        settings = Settings(database_url=sa_url(args.database), admin_key=ADMIN_KEY, log_level="warning")
        timings = time_routes(args.database, settings, args.port, args.runs, args.months)
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)'))
        asyncio.run(admin(f'CREATE DATABASE "{empty}"'))
        upgrade(sa_url(empty))
        zero_runs, full_runs = [], []
        for _ in range(args.rounds):  # alternating, so a change of the machine's load hits both sides
            zero_runs.append(asyncio.run(record_throughput(empty, redis_url, args.batches, args.batch)))
            full_runs.append(
                asyncio.run(record_throughput(args.database, redis_url, args.batches, args.batch))
            )
        at_zero = (statistics.median(r[0] for r in zero_runs), statistics.median(r[1] for r in zero_runs))
        at_full = (statistics.median(r[0] for r in full_runs), statistics.median(r[1] for r in full_runs))
        log(f"record path, each round (records/s): empty {[round(r[0]) for r in zero_runs]}, "
            f"full {[round(r[0]) for r in full_runs]}")  # fmt: skip
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)'))
        if not args.keep:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))

    print(
        f"\n{args.rows:,} usage_logs rows over {args.months} months; median and max of {args.runs} warm "
        "calls\n"
    )
    if phases:
        print("set-up: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()) + "\n")
    print("| route | p50 ms | max ms |")
    print("|---|---:|---:|")
    for t in timings:
        flag = " **over 300 ms**" if t.p50 > BUDGET_MS else ""
        print(f"| {t.route}{flag} | {t.p50:.1f} | {t.max:.1f} |")
    slowest = max(timings, key=lambda t: t.p50)
    over = [t for t in timings if t.p50 > BUDGET_MS]
    print(
        f"\nslowest: {slowest.route} — {slowest.p50:.1f} ms; {len(over)} of {len(timings)} over "
        f"{BUDGET_MS:.0f} ms"
    )
    print(
        f"\nRecord path (record_batch, one round trip, batches of {args.batch}, {args.batches} batches a "
        f"run; median of {args.rounds} runs alternating between the two databases):\n"
    )
    print("| usage_logs rows | records/s | batch p50 ms |")
    print("|---|---:|---:|")
    print(f"| 0 | {at_zero[0]:,.0f} | {at_zero[1]:.1f} |")
    print(f"| {args.rows:,} | {at_full[0]:,.0f} | {at_full[1]:.1f} |")
    print("\nHistory size (rows: the planner's count after ANALYZE):\n")
    print("\n".join(size))
    for t in over:
        print(f"\n### {t.route}: the statements of one answer\n\n{t.explained}")


if __name__ == "__main__":
    main()
