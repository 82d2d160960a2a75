"""Dashboard pages at scale: each page's time on 1,000,000 usage_logs rows on PostgreSQL.

    python bench/dashboard_bench.py                # the whole run: create, migrate, seed, time, drop
    python bench/dashboard_bench.py --rows 200000  # a smaller run
    python bench/dashboard_bench.py --keep         # keep the database afterwards (its name is printed)
    python bench/dashboard_bench.py --database-prefix sgA_ --port 58010   # on a shared machine

The data is bench/analytics_bench.py's (its `prepare`: the same skewed users, workspaces, 90 days of
requests, messages, feedback and rollups), plus a usage debit in billing_events for each request of the
heaviest user and a top-up, so the billing page pages through a real ledger. The real app runs under uvicorn;
the bench signs in through /dashboard/login (as the admin, and as the heaviest user's key) and times each
page over HTTP on the loopback: 2 warm-up loads, then the median (min/max) of N. The time is the page's
whole answer as a client on the same machine sees it (server time plus a loopback round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from analytics_bench import ADMIN_KEY, PG, Seeded, Server, admin, dsn, prepare, sa_url

from config import Settings
from migrations.runner import upgrade
from storage.db import create_engine
from storage.insights.service import run_anomalies, run_churn

WARMUP = 2
BUDGET_MS = 300.0


@dataclass
class Timing:
    label: str
    path: str
    median_ms: float
    min_ms: float
    max_ms: float
    bytes: int


async def ledger_and_ids(database: str, seeded: Seeded) -> tuple[str, str]:
    """A usage debit per request of the heaviest user (and one top-up); a request id and conversation id."""
    conn = await asyncpg.connect(dsn(database))
    try:
        user = seeded.heaviest_user
        await conn.execute(
            "INSERT INTO billing_events (user_id, workspace_id, type, amount_nano, status, request_id, "
            "idempotency_key, created_at) SELECT user_id, workspace_id, 'usage', -charged_nano, 'completed', "
            "request_id, 'usage:' || request_id, created_at FROM usage_logs WHERE user_id = $1 "
            "AND status = 'success'",
            user,
        )
        await conn.execute(
            "INSERT INTO billing_events (user_id, type, amount_nano, status, idempotency_key, description, "
            "created_at) VALUES ($1, 'credit', 100000000000000, 'completed', 'credit:bench', 'bench top-up', "
            "$2)",
            user,
            seeded.now - timedelta(days=91),
        )
        await conn.execute(
            "INSERT INTO credit_accounts (user_id, balance_nano, held_nano, version, updated_at) "
            "SELECT $1, COALESCE(SUM(amount_nano), 0), 0, 1, now() FROM billing_events WHERE user_id = $1 "
            "ON CONFLICT (user_id) DO UPDATE SET balance_nano = EXCLUDED.balance_nano",
            user,
        )
        row = await conn.fetchrow(
            "SELECT request_id, conversation_id FROM usage_logs WHERE user_id = $1 "
            "AND conversation_id IS NOT NULL ORDER BY created_at DESC LIMIT 1",
            user,
        )
        await conn.execute("VACUUM ANALYZE billing_events")
        await conn.execute("VACUUM ANALYZE credit_accounts")
    finally:
        await conn.close()
    assert row is not None
    return str(row["request_id"]), str(row["conversation_id"])


async def predict_churn(database: str) -> int:
    """The daily churn job, so the users and insights pages show stored predictions."""
    engine = create_engine(sa_url(database), pool_size=2)
    try:
        return (await run_churn(engine)).predictions
    finally:
        await engine.dispose()


async def find_anomalies(database: str) -> int:
    """The hourly anomaly job over the last day, so the insights page lists what it finds."""
    engine = create_engine(sa_url(database), pool_size=2)
    try:
        return (await run_anomalies(engine)).new
    finally:
        await engine.dispose()


def sign_in(http: httpx.Client, key: str) -> None:
    form = http.get("/dashboard/login")
    token = re.search(r'name="_csrf" value="([^"]+)"', form.text)
    assert token is not None, form.text[:300]
    answer = http.post("/dashboard/login", data={"_csrf": token.group(1), "key": key, "next": "/dashboard"})
    assert answer.status_code == 303 and "sg_session" in http.cookies, answer.status_code


def time_page(http: httpx.Client, label: str, path: str, runs: int) -> Timing:
    samples = []
    size = 0
    for i in range(WARMUP + runs):
        started = time.perf_counter()
        response = http.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{label}: {response.status_code} {response.text[:300]}")
        size = len(response.content)
        if i >= WARMUP:
            samples.append(elapsed)
    return Timing(label, path, statistics.median(samples), min(samples), max(samples), size)


def pages(
    seeded: Seeded, request_id: str, conversation_id: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(admin pages, the heaviest user's pages): every page, over 7 and 90 days where it has a range."""
    today = seeded.now.date()
    week = f"start={today - timedelta(days=6)}&end={today}"
    quarter = f"start={today - timedelta(days=89)}&end={today}"
    heavy = seeded.heaviest_user
    as_admin = [
        ("overview, 7 days", f"/dashboard?{week}"),
        ("overview, 90 days", f"/dashboard?{quarter}"),
        ("costs, 7 days", f"/dashboard/costs?{week}"),
        ("costs, 90 days", f"/dashboard/costs?{quarter}"),
        (
            "costs, 90 days, users by requests, page 20",
            f"/dashboard/costs?{quarter}&user_sort=requests&user_page=20",
        ),
        ("costs CSV, every user, 90 days", f"/dashboard/costs.csv?{quarter}&table=user"),
        ("costs CSV, every key, 90 days", f"/dashboard/costs.csv?{quarter}&table=key"),
        ("models, 7 days", f"/dashboard/models?{week}"),
        ("models, 90 days", f"/dashboard/models?{quarter}"),
        ("requests, 7 days, page 1", f"/dashboard/requests?{week}"),
        ("requests, 90 days, page 20", f"/dashboard/requests?{quarter}&page=20"),
        ("one request", f"/dashboard/requests/{request_id}"),
        ("users (first 50 of 1,000), 7 days", f"/dashboard/users?{week}"),
        ("users (first 50 of 1,000), 90 days", f"/dashboard/users?{quarter}"),
        ("one user (the heaviest), 90 days", f"/dashboard/users/{heavy}?{quarter}"),
        ("keys", "/dashboard/keys"),
        ("billing (the heaviest user), ledger page 1", f"/dashboard/billing?user_id={heavy}"),
        ("billing (the heaviest user), ledger page 100", f"/dashboard/billing?user_id={heavy}&page=100"),
        ("catalog", "/dashboard/catalog"),
        ("catalog, one model's history", "/dashboard/catalog?model=gpt-4o-mini"),
        ("conversation", f"/dashboard/conversations/{conversation_id}"),
        ("insights (churn list and anomalies, page 1 each)", "/dashboard/insights"),
    ]
    as_user = [
        ("user: overview, 90 days", f"/dashboard?{quarter}"),
        ("user: costs, 90 days", f"/dashboard/costs?{quarter}"),
        ("user: requests, 90 days", f"/dashboard/requests?{quarter}"),
        ("user: own account, 90 days", f"/dashboard/users/{heavy}?{quarter}"),
        ("user: billing", "/dashboard/billing"),
    ]
    return as_admin, as_user


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="usage_logs rows to seed")
    parser.add_argument("--seed", type=int, default=20261124, help="random seed of the data")
    parser.add_argument("--runs", type=int, default=7, help="timed loads per page (after 2 warm-up loads)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--database-prefix", default="sg_dashbench_", help="the throwaway database's name starts with this"
    )
    parser.add_argument("--port", type=int, default=0, help="the gateway's port (default: any free one)")
    args = parser.parse_args()

    database = f"{args.database_prefix}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    print(f"database {database} on {PG}", file=sys.stderr)
    timings: list[Timing] = []
    try:
        upgrade(sa_url(database))
        seeded, user_key, _owner_key, phases = asyncio.run(prepare(database, args.rows, args.seed))
        request_id, conversation_id = asyncio.run(ledger_and_ids(database, seeded))
        started = time.perf_counter()
        churned = asyncio.run(predict_churn(database))
        phases[f"churn predictions ({churned:,} users)"] = time.perf_counter() - started
        started = time.perf_counter()
        anomalies = asyncio.run(find_anomalies(database))
        phases[f"anomaly job ({anomalies:,} found)"] = time.perf_counter() - started
        settings = Settings(database_url=sa_url(database), admin_key=ADMIN_KEY, log_level="warning")
        as_admin, as_user = pages(seeded, request_id, conversation_id)
        with Server(settings, args.port) as server:
            for key, cases in ((ADMIN_KEY, as_admin), (user_key, as_user)):
                with httpx.Client(base_url=server.url, timeout=120) as http:
                    sign_in(http, key)
                    for label, path in cases:
                        timings.append(time_page(http, label, path, args.runs))
                        t = timings[-1]
                        print(f"  {t.median_ms:7.1f} ms  {label}", file=sys.stderr)
    finally:
        if not args.keep:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    print(
        f"\n{args.rows:,} usage_logs rows; heaviest user {seeded.rows_by_user[seeded.heaviest_user]:,} rows; "
        f"median of {args.runs} warm loads\n"
    )
    print("| page | median ms | min ms | max ms | HTML KiB |")
    print("|---|---:|---:|---:|---:|")
    for t in timings:
        print(f"| {t.label} | {t.median_ms:.1f} | {t.min_ms:.1f} | {t.max_ms:.1f} | {t.bytes / 1024:.0f} |")
    print("\nset-up: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items()))
    slowest = max(timings, key=lambda t: t.median_ms)
    print(f"slowest: {slowest.label} — {slowest.median_ms:.1f} ms (goal {BUDGET_MS:.0f} ms)")
    if args.keep:
        print(f"kept database {database}")


if __name__ == "__main__":
    main()
