"""The recommendations snapshot against the live computation, on a database that already holds traffic.

    SYNAPGATE_DATABASE_URL=sqlite+aiosqlite:////tmp/x/sg.db synapgate migrate
    SYNAPGATE_DATABASE_URL=... synapgate insights simulate          # 30 users, 91 days, ~28,500 requests
    SYNAPGATE_DATABASE_URL=... python bench/recommendations_snapshot_bench.py [--runs 7]

Runs the `insights.daily` recommendations step once (its wall time: the platform's and each user's),
then times the live computation (`service.recommendations`: what `GET /api/v1/analytics/recommendations`
does) and the snapshot read (`service.stored_recommendations`: what `/dashboard/insights` and
`?source=snapshot` do), the median of N each, and checks the two agree to the nano.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.db import create_engine
from storage.insights import service


async def main(runs: int) -> None:
    engine = create_engine(os.environ["SYNAPGATE_DATABASE_URL"], pool_size=1)
    try:
        started = time.perf_counter()
        run = await service.run_recommendations(engine)
        job = time.perf_counter() - started
        live: list[float] = []
        stored: list[float] = []
        for _ in range(runs):
            async with engine.connect() as conn:
                started = time.perf_counter()
                computed = await service.recommendations(conn, user_id=None, workspace_id=None)
                live.append(time.perf_counter() - started)
                started = time.perf_counter()
                snapshot = await service.stored_recommendations(conn, user_id=None, workspace_id=None)
                stored.append(time.perf_counter() - started)
            assert snapshot is not None
            assert [(r.tag, r.current_model, r.savings_nano) for r in computed] == [
                (r.tag, r.current_model, r.savings_nano) for r in snapshot.items
            ]
        print(
            f"recommendations={run.recommendations} users={run.users} "
            f"user_recommendations={run.user_recommendations} job_s={job:.2f} "
            f"live_median_ms={statistics.median(live) * 1000:.1f} "
            f"snapshot_median_ms={statistics.median(stored) * 1000:.2f}"
        )
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    asyncio.run(main(parser.parse_args().runs))
