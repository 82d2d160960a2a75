"""The recording step alone: one record through `record_completion`, the one-round-trip path against the
statement path, on the same PostgreSQL database and Redis (the Redis ledger), alternating, sequential.

Reports per record: wall time p50/p99, the recorder process's CPU time (user + system: what the worker pays
in Python, and far less sensitive than wall time to other load on a shared machine), and the statements sent
to PostgreSQL (asyncpg's query logger, which sees BEGIN, COMMIT and direct calls, plus SQLAlchemy's
`before_cursor_execute` for the statements it runs as prepared statements: each one round trip).

    .venv/bin/python bench/record_bench.py [--records 400] [--redis-db 6] [--db-prefix sgE_bench_]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379; creates and drops its
own database, and deletes only its own user's keys in the Redis db.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from redis.asyncio import Redis  # noqa: E402
from sqlalchemy import event  # noqa: E402

import storage.usage.recorder as recorder  # noqa: E402
from config import Settings  # noqa: E402
from pricing.cost import Usage  # noqa: E402
from storage.accounts.users import create_user  # noqa: E402
from storage.billing.credits import add_credits  # noqa: E402
from storage.billing.ledger.factory import build_ledger  # noqa: E402
from storage.db import create_engine  # noqa: E402
from storage.types import utcnow  # noqa: E402
from storage.usage.recorder import CompletionRecord, record_completion  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    db = f"{args.db_prefix}record_{os.getpid()}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await admin.execute(f'CREATE DATABASE "{db}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
    redis = Redis.from_url(f"redis://127.0.0.1:6379/{args.redis_db}")
    try:
        env = {**os.environ, "SYNAPGATE_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
        migrate = [sys.executable, "-m", "gateway.cli", "migrate"]
        await asyncio.to_thread(subprocess.run, migrate, env=env, check=True, capture_output=True)
        engine = create_engine(url, pool_size=5)
        ledger: Any = build_ledger(Settings(database_url=url), engine, redis)
        sent: list[str] = []

        def log_queries(_dbapi_connection: Any, pool_entry: Any) -> None:
            pool_entry.driver_connection.add_query_logger(lambda q: sent.append(q.query))

        def count_statement(*_args: Any) -> None:  # statements SQLAlchemy runs as prepared statements
            sent.append("sqlalchemy")

        event.listen(engine.sync_engine, "connect", log_queries)
        event.listen(engine.sync_engine, "before_cursor_execute", count_statement)
        async with engine.begin() as conn:
            user = (await create_user(conn, f"record-bench-{os.getpid()}@example.com")).user_id
        await add_credits(engine, ledger, user, 10**15, f"seed-{user}")
        conversation = uuid.uuid4()
        real = recorder._one_trip_applies
        paths = {"one-trip": real, "statements": lambda _engine, _ledger: False}
        results: dict[str, dict[str, list[float]]] = {
            p: {"wall": [], "cpu": [], "statements": []} for p in paths
        }
        for i in range(args.warmup + args.records):
            for name, applies in paths.items():
                recorder._one_trip_applies = applies  # type: ignore[assignment]
                rec = CompletionRecord(
                    request_id=f"req_{uuid.uuid4().hex}",
                    user_id=user,
                    workspace_id=None,
                    api_key_id=None,
                    conversation_id=conversation,
                    message_id=uuid.uuid4(),
                    llm_id=1,
                    model="gpt-4o-mini",
                    provider="openai",
                    price_version=1,
                    usage=Usage(prompt_tokens=12, completion_tokens=8),
                    cost_nano=6_600,
                    charged_nano=6_600,
                    byok=False,
                    is_stream=False,
                    status="success",
                    latency_ms=3,
                    created_at=utcnow(),
                )
                reservation = await ledger.reserve(user, rec.request_id, 100_000)
                sent.clear()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await record_completion(engine, ledger, rec, reservation)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                if i >= args.warmup:
                    results[name]["wall"].append(wall * 1000)
                    results[name]["cpu"].append(cpu * 1000)
                    results[name]["statements"].append(len(sent))
        recorder._one_trip_applies = real  # type: ignore[assignment]
        print(
            f"{args.records} records per path, alternating, sequential (after {args.warmup} warm-up each)\n"
        )
        print(
            "| path | wall p50 ms | wall p99 ms | CPU per record ms (mean) | PostgreSQL statements/record |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, r in results.items():
            print(
                f"| {name} | {pct(r['wall'], 50):.3f} | {pct(r['wall'], 99):.3f} | "
                f"{statistics.fmean(r['cpu']):.3f} | {statistics.median(r['statements']):.0f} |"
            )
        await ledger.close()
        await engine.dispose()
        keys = [k async for k in redis.scan_iter(match=f"sg:{{{user}}}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=400)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--redis-db", type=int, default=12)
    p.add_argument("--db-prefix", default="synapgate_bench_")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
