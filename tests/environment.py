"""Where the suite's tests put their data on the shared PostgreSQL and Redis, one place for every conftest.

Each pytest process (each xdist worker) gets its own Redis db: the base db is the one in
SYNAPGATE_TEST_REDIS_URL when set (for two checkouts running at once), else 11; xdist worker gwN adds N
(at most db 15).
PostgreSQL databases are named per process already (`sg_tmpl_<pid>_…`, `sg_t_…`).
"""

from __future__ import annotations

import os

FIRST_DB = 11
LAST_DB = 15


def redis_url_for_this_process() -> str:
    """The Redis URL this test process may flush."""
    base_url, first = "redis://127.0.0.1:6379", FIRST_DB
    explicit = os.environ.get("SYNAPGATE_TEST_REDIS_URL")
    if explicit:
        head, _, db = explicit.rstrip("/").rpartition("/")
        base_url, first = (head, int(db)) if db.isdigit() and "://" in head else (explicit.rstrip("/"), 0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if first + number > LAST_DB:
        raise RuntimeError(f"xdist worker {worker} has no Redis db left (from db {first}, at most {LAST_DB})")
    return f"{base_url}/{first + number}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a local fake started later in a test)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tiktoken_encodings_missing() -> str | None:
    """Why tiktoken cannot count here (None: it can): it cannot download its encodings, so a clone without
    ../shared/tiktoken (and no TIKTOKEN_CACHE_DIR) falls back to estimating by bytes."""
    from pathlib import Path

    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if cache and Path(cache).is_dir() and any(Path(cache).iterdir()):
        return None
    shared = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
    if shared.is_dir():
        return None
    return f"tiktoken's encodings are not here (no TIKTOKEN_CACHE_DIR, no {shared}); it cannot download them"


def child_pids(pid: int) -> list[int]:
    """The pids whose parent is `pid` (read from /proc: Linux)."""
    import contextlib
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def in_a_fresh_interpreter(code: str, timeout: float = 180) -> str:
    """What `code` prints when run by this venv's Python in a new process (nothing imported yet: a test of
    what a process loads); a failure fails the test with the child's stderr."""
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert found.returncode == 0, found.stderr
    return found.stdout
