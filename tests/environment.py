"""Where the suite's tests put their data on the shared PostgreSQL and Redis, one place for every conftest.

Each pytest process (each xdist worker) gets its own Redis db: SYNAPGATE_TEST_REDIS_URL when set (for two
checkouts running at once), else db 11 for a plain run and 11 + N for xdist worker gwN (at most db 15).
PostgreSQL databases are named per process already (`sg_tmpl_<pid>_…`, `sg_t_…`).
"""

from __future__ import annotations

import os

FIRST_DB = 11
LAST_DB = 15


def redis_url_for_this_process() -> str:
    """The Redis URL this test process may flush."""
    explicit = os.environ.get("SYNAPGATE_TEST_REDIS_URL")
    if explicit:
        return explicit
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if FIRST_DB + number > LAST_DB:
        raise RuntimeError(f"xdist worker {worker} has no Redis db left (dbs {FIRST_DB}–{LAST_DB})")
    return f"redis://127.0.0.1:6379/{FIRST_DB + number}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a local fake started later in a test)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
