"""What the rollups add to the recorder's transaction, with every rollup and with only the first ones.

    python bench/rollup_upkeep.py --database-prefix sgA_       # a throwaway PostgreSQL database

Runs bench/analytics_bench.py's `rollup_upkeep` (median time of a write transaction: one insert, then the
same plus `apply_facts` for a batch of 1 and of 20 requests) twice on an empty migrated database: with the
rollups as the recorder keeps them now, and with only `usage_hourly`, `usage_daily` and `latency_daily` (the
rollups before the one-dimension daily ones of migration 0011), so the difference is what those cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
from analytics_bench import PG, admin, dsn, rollup_upkeep, sa_url

from migrations.runner import upgrade
from storage.usage import rollups


def only_the_first_rollups() -> None:
    """Make apply_facts keep only usage_hourly and usage_daily (and latency_daily), as before 0011."""
    kept = (rollups.usage_hourly, rollups.usage_daily)
    every_key = rollups.UsageFacts.rollup_keys

    def first_keys(self: rollups.UsageFacts) -> dict[str, dict[str, Any]]:
        return {t.name: k for t, k in zip(kept, every_key(self).values(), strict=False)}

    rollups.ROLLUP_ORDER = kept
    rollups.UsageFacts.rollup_keys = first_keys  # type: ignore[method-assign]


async def drop_scratch(database: str) -> None:
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute("DROP TABLE bench_scratch")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transactions", type=int, default=500, help="timed transactions per case")
    parser.add_argument(
        "--database-prefix", default="sg_upkeep_", help="the throwaway database's name prefix"
    )
    args = parser.parse_args()
    database = f"{args.database_prefix}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    print(f"database {database} on {PG}", file=sys.stderr)
    try:
        upgrade(sa_url(database))
        every = asyncio.run(rollup_upkeep(database, args.transactions))
        asyncio.run(drop_scratch(database))
        only_the_first_rollups()
        first = asyncio.run(rollup_upkeep(database, args.transactions))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    print("| rollups | requests per transaction | one insert ms | + apply_facts ms | added ms |")
    print("|---|---:|---:|---:|---:|")
    for label, lines in (("hourly, daily, latency (before 0011)", first), ("all seven (now)", every)):
        for line in lines:
            print(f"| {label} {line}")


if __name__ == "__main__":
    main()
