#!/usr/bin/env python3
"""The SynapGate overhead benchmark: one command, direct-to-mock vs gateway (vs LiteLLM), printed as a table.

    .venv/bin/python bench/run.py [--duration 10] [--litellm-venv PATH] [--quick]
                                  [--history-rows N] [--soak-seconds N] [--profile] [--limits]

What it does, in order (every process it starts is stopped at the end, the database dropped):
  1. starts the mock upstream (`python -m devtools.mock_upstream`, uvloop + httptools) and measures it
     alone with wrk: non-streaming and streaming, 1 and 32 connections, plus time-to-first-byte sampling;
  2. creates a fresh PostgreSQL database, migrates it, flushes Redis db 12, creates a user with
     plenty of credit and a key through the CLI, starts `synapgate serve --workers 1` on it and runs
     the same matrix through the gateway, checking after every run that each request left exactly its
     rows (usage_logs, billing_events of type usage, messages, conversation_llms) and that the ledger
     debits equal the charged amounts;
  3. optionally: history (N synthetic usage_logs rows, then the 32-connection run again), a py-spy
     profile, a constant-load soak with RSS samples, and the LiteLLM proxy from a separate venv;
  4. prints the tables (markdown) and saves them with the raw numbers under bench/results/.

Only 127.0.0.1 is ever targeted. See bench/README.md for the method and the meaning of each column.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WRK_SCRIPTS = {False: BENCH / "wrk" / "chat.lua", True: BENCH / "wrk" / "chat_stream.lua"}
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent  # run with the project's venv python
# The source tree whose gateway and mock are measured (--source): the repo itself by default. Processes run
# `python -m gateway.cli …` (what the `synapgate` script runs) with this tree first on sys.path.
SOURCE = REPO
SYNAPGATE = [sys.executable, "-m", "gateway.cli"]
VARY = False  # --distinct-conversations: every wrk request opens its own conversation
NICE: list[str] = []  # --nice N: ["nice", "-n", "N"] before every process the harness starts
HOST = "127.0.0.1"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
# Redis db and database prefix: `--redis-db` / `--db-prefix` (or SYNAPGATE_BENCH_REDIS_DB / _DB_PREFIX), so
# concurrent runs on one machine use their own db and databases; ports from `--ports LO-HI` when given.
REDIS_DB = int(os.environ.get("SYNAPGATE_BENCH_REDIS_DB", "12"))
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
DB_PREFIX = os.environ.get("SYNAPGATE_BENCH_DB_PREFIX", "synapgate_bench_")
PORTS: list[int] = []  # --ports LO-HI: free ports are taken from this range only
WRK_KEYS: dict[str, str] = {}  # --users N: the first key → every user's key, which wrk sends in turn
GATEWAY_ENV: dict[str, str] = {}  # --gateway-env NAME=VALUE: extra settings of every gateway started
MODEL = "gpt-4o-mini"
CHAT_PATH = "/v1/chat/completions"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# The request body the TTFB client sends: the same bytes as bench/wrk/common.lua builds.
BODY = (
    '{"model":"' + MODEL + '","messages":[{"role":"system","content":"You are a concise assistant."},'
    '{"role":"user","content":"Give me one short sentence about latency budgets in API gateways."}],'
    '"max_tokens":32'
)


def body_bytes(stream: bool) -> bytes:
    return (BODY + (',"stream":true' if stream else "") + "}").encode()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    if not PORTS:
        with socket.socket() as s:
            s.bind((HOST, 0))
            return int(s.getsockname()[1])
    while PORTS:
        port = PORTS.pop(0)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in --ports")


class Proc:
    """A child process in its own session (so stopping it stops its children, and nothing else)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        env = {**env, "PYTHONPATH": str(SOURCE)}
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [*NICE, *argv],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=SOURCE,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGINT)  # the group we created: this child and its children
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        else:  # the leader is gone; make sure no child of it is left in its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_http(
    url: str,
    proc: Proc,
    timeout: float,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Poll `url` until it answers 200; fail early (with the log tail) if the process dies."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited (code {proc.popen.returncode}):\n{proc.tail()}")
        try:
            req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return bytes(resp.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout:.0f}s ({last}):\n{proc.tail()}")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                kids.append(int(entry.name))
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _listen_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def _pids_holding(inodes: set[str], pids: list[int]) -> list[int]:
    targets = {f"socket:[{i}]" for i in inodes}
    found = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        found.append(pid)
                        break
    return found


def listener_pid(proc: Proc, port: int) -> int:
    """The process of `proc`'s tree that serves `port` (uvicorn may fork workers: the deepest one)."""
    inodes = _listen_inodes(port)
    tree = _tree(proc.pid)
    holders = _pids_holding(inodes, tree)
    if not holders:
        return proc.pid
    # With a supervisor and workers all hold the socket; the workers are the ones without children
    # holding it. With --workers 1 uvicorn serves in the process itself.
    leaves = [p for p in holders if not any(c in holders for c in _children(p))]
    return (leaves or holders)[-1]


def port_owner_pid(port: int) -> int | None:
    """Any process listening on `port` (used read-only, to account for Redis's CPU)."""
    inodes = _listen_inodes(port)
    pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    found = _pids_holding(inodes, pids)
    return found[0] if found else None


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError):
        return 0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat; busy leaves out idle, iowait, irq and softirq
    (interrupt time, mostly the loopback traffic of the benchmark itself, is charged to no process)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    not_busy = parts[3] + parts[4] + parts[5] + parts[6]  # idle, iowait, irq, softirq
    return sum(parts[:8]) - not_busy, sum(parts[:8])


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a background thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append((time.monotonic(), value))
            self._stop.wait(self.interval)

    def window(self, start: float, end: float) -> list[float]:
        return [v for t, v in self.samples if start <= t <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


# ---------------------------------------------------------------------------------------------------
# PostgreSQL and Redis (the harness's own bookkeeping; asyncpg, one short connection per step)


def pg_dsn(db: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


def sql(db: str, query: str, *args: Any, fetch: str = "val", timeout: float | None = None) -> Any:
    import asyncpg

    async def go() -> Any:
        conn = await asyncpg.connect(pg_dsn(db), timeout=10)
        try:
            if fetch == "val":
                return await conn.fetchval(query, *args, timeout=timeout)
            if fetch == "row":
                return await conn.fetchrow(query, *args, timeout=timeout)
            if fetch == "rows":
                return await conn.fetch(query, *args, timeout=timeout)
            return await conn.execute(query, *args, timeout=timeout)
        finally:
            await conn.close()

    return asyncio.run(go())


def redis_flush() -> None:
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


@dataclass
class RowMarks:
    usage_id: int
    billing_id: int
    messages: int
    conv_messages: int


class Recorder:
    """Counts the rows each run left, between watermarks taken while the gateway is idle."""

    def __init__(self, db: str) -> None:
        self.db = db

    def marks(self) -> RowMarks:
        row = sql(
            self.db,
            """SELECT (SELECT coalesce(max(id), 0) FROM usage_logs) AS u,
                      (SELECT coalesce(max(id), 0) FROM billing_events) AS b,
                      (SELECT count(*) FROM messages) AS m,
                      (SELECT coalesce(sum(message_count), 0) FROM conversation_llms) AS c""",
            fetch="row",
        )
        return RowMarks(int(row["u"]), int(row["b"]), int(row["m"]), int(row["c"]))

    def usage_since(self, marks: RowMarks) -> int:
        return int(sql(self.db, "SELECT count(*) FROM usage_logs WHERE id > $1", marks.usage_id))

    def settle(self, marks: RowMarks, expected: int, quiet_for: float = 1.5, limit: float = 60.0) -> int:
        """Wait until the rows since `marks` reach `expected` or stop changing (in-flight requests finish)."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = self.usage_since(marks)
            if n >= expected and n == last:
                return n
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet_for:
                return n
            time.sleep(0.1)
        return last

    def counts(self, marks: RowMarks) -> dict[str, Any]:
        row = sql(
            self.db,
            """SELECT
                 (SELECT count(*) FROM usage_logs WHERE id > $1) AS usage_logs,
                 (SELECT count(*) FROM usage_logs WHERE id > $1 AND status = 'success') AS ok,
                 (SELECT count(*) FROM usage_logs WHERE id > $1 AND status = 'cancelled') AS cancelled,
                 (SELECT count(*) FROM usage_logs WHERE id > $1 AND status = 'error') AS error,
                 (SELECT coalesce(sum(charged_nano), 0) FROM usage_logs WHERE id > $1) AS charged,
                 (SELECT count(*) FROM billing_events WHERE id > $2 AND type = 'usage') AS billing,
                 (SELECT coalesce(-sum(amount_nano), 0) FROM billing_events
                   WHERE id > $2 AND type = 'usage') AS debited,
                 (SELECT count(*) FROM messages) - $3 AS messages,
                 (SELECT coalesce(sum(message_count), 0) FROM conversation_llms) - $4 AS conv_llms,
                 (SELECT count(*) FROM usage_logs u WHERE u.id > $1
                    AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = u.message_id)) AS orphans""",
            marks.usage_id,
            marks.billing_id,
            marks.messages,
            marks.conv_messages,
            fetch="row",
        )
        out = {k: int(row[k]) for k in row.keys()}  # noqa: SIM118 - asyncpg Record
        out["ledger_ok"] = out["charged"] == out["debited"] and out["orphans"] == 0
        return out


class PgActivitySampler:
    """Samples the states of the gateway's PostgreSQL backends (pg_stat_activity) every `interval` s.

    What the backends of a run spend their time on shows where a recording transaction waits: running,
    on a row lock (Lock), on the WAL flush of a commit (IO/LWLock WAL*), or idle inside a transaction
    ("idle in transaction": waiting for the gateway's event loop to send the next statement).
    """

    def __init__(self, db: str, interval: float = 0.05) -> None:
        self.db = db
        self.interval = interval
        self.samples: list[tuple[float, Counter[str], frozenset[int]]] = []
        self.backend_pid: int | None = None  # its own PostgreSQL backend (its CPU is the harness's)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="pg-sampler", daemon=True
        )
        self._thread.start()

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(pg_dsn("postgres"), timeout=10)
        self.backend_pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    """SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity
                        WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()""",
                    self.db,
                )
                states = Counter(pg_state(r) for r in rows)
                self.samples.append((time.monotonic(), states, frozenset(r["pid"] for r in rows)))
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    def window(self, start: float, end: float) -> dict[str, float] | None:
        """Average number of backends per state over the samples in [start, end], and `backends seen`:
        how many distinct backends (pids) appeared — more than the pool holds means connection churn."""
        picked = [(c, pids) for t, c, pids in self.samples if start <= t <= end]
        if not picked:
            return None
        total: Counter[str] = Counter()
        seen: set[int] = set()
        for c, pids in picked:
            total.update(c)
            seen |= pids
        out = {k: round(v / len(picked), 2) for k, v in total.most_common()}
        out["backends seen"] = float(len(seen))
        out["backends max"] = float(max(len(pids) for _, pids in picked))
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def pg_state(row: Any) -> str:
    state, kind, event = row["state"] or "?", row["wait_event_type"], row["wait_event"]
    if state == "active":
        if kind is None:
            return "active: running"
        if kind == "Lock":
            return f"active: Lock {event}"
        if kind in ("IO", "LWLock") and event and event.startswith("WAL"):
            return f"active: WAL {event}"
        return f"active: {kind} {event}"
    if state == "idle in transaction":
        return "idle in transaction"
    return state


# ---------------------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    target: str
    mode: str  # "json" | "stream"
    conns: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    p99_9_ms: float
    mean_ms: float
    max_ms: float
    sent: int
    responses: int
    ok: int
    non2xx: int
    bad_body: int
    socket_errors: int
    statuses: dict[str, int]
    rows: dict[str, Any] | None = None
    rss_mb_max: float | None = None
    rss_mb_end: float | None = None
    server_cpu_pct: float | None = None
    machine_cpu_pct: float | None = None
    other_cpu_pct: float | None = None
    pg_states: dict[str, float] | None = None
    note: str = ""

    @property
    def errors(self) -> int:
        return self.non2xx + self.bad_body + self.socket_errors


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        print(
            "wrk is not installed; install it with: apt-get update && apt-get install -y wrk", file=sys.stderr
        )
        raise SystemExit(2)
    return path


def run_wrk(
    base_url: str, conns: int, duration: float, stream: bool, key: str, log_path: Path, threads: int = 1
) -> tuple[dict[str, Any], str, int]:
    """One wrk run; returns (the BENCH_RESULT json, wrk's text, wrk's pid)."""
    env = {**os.environ, "BENCH_KEY": WRK_KEYS.get(key, key), "BENCH_MODEL": MODEL, "BENCH_PATH": CHAT_PATH}
    env["BENCH_VARY"] = "1" if VARY else "0"
    argv = [
        *NICE,
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPTS[stream]),
        base_url,
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=duration + 60)
    with open(log_path, "a") as f:
        f.write(f"$ {' '.join(argv)}\n{out}\n")
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (code {proc.returncode}):\n{out}")
    result = json.loads(match.group(1))
    # Cross-check with wrk's own text.
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["text_non2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["text_socket_errors"] = sum(int(x) for x in sock.groups()) if sock else 0
    return result, out, proc.pid


class Bench:
    def __init__(self, args: argparse.Namespace, stamp: str) -> None:
        self.args = args
        self.stamp = stamp
        self.run_dir = RESULTS / stamp
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.wrk_log = self.run_dir / "wrk.log"
        self.procs: list[Proc] = []
        self.results: list[WrkResult] = []
        self.ttfb: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}
        self.db: str | None = None  # the main gateway's database
        self.dbs: list[str] = []  # every database created (dropped at the end)
        self.redis_pid = port_owner_pid(6379)
        self.duration = args.duration
        self.warmup = args.warmup
        self.pg_sampler: PgActivitySampler | None = None
        self.mock_pid: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, argv, env, self.run_dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs.clear()
        for db in self.dbs:
            try:
                sql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', fetch="exec")
                log(f"dropped database {db}")
            except Exception as exc:
                log(f"could not drop database {db}: {exc}")
        if self.dbs:
            with contextlib.suppress(Exception):
                redis_flush()
        self.dbs.clear()
        self.db = None

    # -- one measured point ------------------------------------------------------------------------

    def measure(
        self,
        target: str,
        base_url: str,
        conns: int,
        stream: bool,
        key: str,
        *,
        server_pid: int | None = None,
        recorder: Recorder | None = None,
        sampler: RssSampler | None = None,
        extra_pids: tuple[int, ...] = (),
        duration: float | None = None,
        warmup: float | None = None,
        note: str = "",
        keep: bool = True,
        pg_sampler: PgActivitySampler | None = None,
    ) -> WrkResult:
        duration = duration or self.duration
        warmup = self.warmup if warmup is None else warmup
        mode = "stream" if stream else "json"
        log(f"{target}: {mode}, {conns} conn: warm-up {warmup:.0f}s, measure {duration:.0f}s {note}")
        if warmup > 0:
            marks = recorder.marks() if recorder else None
            warm, _, _ = run_wrk(base_url, conns, warmup, stream, key, self.wrk_log)
            if recorder and marks:
                recorder.settle(marks, warm["sent"])
        marks = recorder.marks() if recorder else None
        pg_pids = self._pg_backends(recorder.db) if recorder else []
        pg_sampler = pg_sampler or self.pg_sampler
        # The harness itself (its sampler threads) and its sampler's backend count as the benchmark's too.
        own = [os.getpid(), *(s.backend_pid for s in (pg_sampler, self.pg_sampler) if s and s.backend_pid)]
        watched = list(
            dict.fromkeys(p for p in (server_pid, self.redis_pid, *extra_pids, *pg_pids, *own) if p)
        )
        ticks0 = {p: cpu_ticks(p) for p in watched}
        busy0, total0 = machine_ticks()
        self._reap_child_ticks()  # forget the warm-up's wrk: only the measured one counts below
        t0 = time.monotonic()
        res, _, _ = run_wrk(base_url, conns, duration, stream, key, self.wrk_log)
        t1 = time.monotonic()
        busy1, total1 = machine_ticks()
        ticks1 = {p: cpu_ticks(p) for p in watched}
        elapsed = max(t1 - t0, 1e-9)
        # wrk has exited, so its CPU time is no longer in /proc: take it from our reaped children's times.
        ours = sum(max(0, ticks1[p] - ticks0[p]) for p in watched)
        ours += self._reap_child_ticks()
        ncpu = os.cpu_count() or 1
        machine_pct = 100.0 * (busy1 - busy0) / max(1, total1 - total0) * ncpu
        other_pct = max(0.0, machine_pct - 100.0 * ours / CLK_TCK / elapsed)
        lat = res["latency_us"]
        statuses = {str(k): int(v) for k, v in res["statuses"].items()}
        ok = statuses.get("200", 0) - res["bad_body"]
        socket_errors = sum(v for k, v in res["errors"].items() if k != "status")
        result = WrkResult(
            target=target,
            mode=mode,
            conns=conns,
            duration_s=res["duration_us"] / 1e6,
            rps=res["wrk_requests"] / (res["duration_us"] / 1e6),
            p50_ms=lat["p50"] / 1000,
            p99_ms=lat["p99"] / 1000,
            p99_9_ms=lat["p99_9"] / 1000,
            mean_ms=lat["mean"] / 1000,
            max_ms=lat["max"] / 1000,
            sent=res["sent"],
            responses=res["responses"],
            ok=ok,
            non2xx=res["errors"]["status"],
            bad_body=res["bad_body"],
            socket_errors=socket_errors,
            statuses=statuses,
            machine_cpu_pct=round(machine_pct, 1),
            other_cpu_pct=round(other_pct, 1),
            note=note,
        )
        if server_pid:
            result.server_cpu_pct = round(
                100.0 * (ticks1[server_pid] - ticks0[server_pid]) / CLK_TCK / elapsed, 1
            )
        if sampler is not None:
            window = sampler.window(t0, t1)
            if window:
                result.rss_mb_max = round(max(window), 1)
                result.rss_mb_end = round(window[-1], 1)
        if recorder and pg_sampler is not None:
            result.pg_states = pg_sampler.window(t0, t1)
        if recorder and marks:
            recorder.settle(marks, res["sent"])
            result.rows = recorder.counts(marks)
        if keep:
            self.results.append(result)
        rows = result.rows
        log(
            f"  → {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
            f"errors {result.errors}, sent {result.sent}, 2xx {result.ok}"
            + (f", usage_logs {rows['usage_logs']}, billing {rows['billing']}" if rows else "")
            + (f", RSS max {result.rss_mb_max} MB" if result.rss_mb_max else "")
        )
        return result

    def _reap_child_ticks(self) -> int:
        # os.times() children_* covers waited-for children (wrk runs are the only ones that exit mid-run).
        t = os.times()
        total = int((t.children_user + t.children_system) * CLK_TCK)
        prev = getattr(self, "_child_ticks", 0)
        self._child_ticks = total
        return max(0, total - prev)

    def _pg_backends(self, db: str) -> list[int]:
        rows = sql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            db,
            fetch="rows",
        )
        return [int(r["pid"]) for r in rows]

    # -- time to first byte ------------------------------------------------------------------------

    def measure_ttfb(self, target: str, port: int, key: str) -> dict[str, float]:
        n = self.args.ttfb_samples
        log(f"{target}: streaming time-to-first-byte, {n} sequential requests (+{n // 10} warm-up)")
        samples = asyncio.run(ttfb_samples(port, key, n, max(5, n // 10)))
        fb = sorted(s[0] for s in samples)
        ev = sorted(s[1] for s in samples)
        total = sorted(s[2] for s in samples)
        out = {
            "n": len(samples),
            "first_byte_p50_ms": pct(fb, 50),
            "first_byte_p99_ms": pct(fb, 99),
            "first_event_p50_ms": pct(ev, 50),
            "first_event_p99_ms": pct(ev, 99),
            "total_p50_ms": pct(total, 50),
            "total_p99_ms": pct(total, 99),
            "incomplete": sum(1 for s in samples if not s[3]),
        }
        self.ttfb[target] = out
        log(
            f"  → first byte p50 {out['first_byte_p50_ms']:.3f} ms, "
            f"first event p50 {out['first_event_p50_ms']:.3f} ms"
        )
        return out


def pct(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile of already sorted values (ms, rounded to µs)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return round(sorted_values[rank - 1], 3)


async def ttfb_samples(port: int, key: str, n: int, warmup: int) -> list[tuple[float, float, float, bool]]:
    """Sequential streaming requests on one keep-alive connection.

    Per request: ms until the first byte of the response, until the first SSE `data:` event, until the
    end of the body, and whether it ended with `data: [DONE]`.
    """
    body = body_bytes(stream=True)
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nAuthorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    reader, writer = await asyncio.open_connection(HOST, port)
    out: list[tuple[float, float, float, bool]] = []
    try:
        for i in range(n + warmup):
            t0 = time.perf_counter()
            writer.write(request)
            first = await reader.readexactly(1)
            t_fb = time.perf_counter()
            rest = await reader.readuntil(b"\r\n\r\n")
            header_text = (first + rest).decode("latin-1")
            status = int(header_text.split(" ", 2)[1])
            headers = {}
            for line in header_text.split("\r\n")[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            t_ev = None
            payload = bytearray()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")  # the empty trailer
                        break
                    chunk = await reader.readexactly(size + 2)
                    payload += chunk[:-2]
                    if t_ev is None and b"data:" in payload:
                        t_ev = time.perf_counter()
            else:
                length = int(headers.get("content-length", "0"))
                payload += await reader.readexactly(length)
                t_ev = time.perf_counter()
            t_end = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"TTFB request answered {status}: {bytes(payload)[:300]!r}")
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
            if i >= warmup:
                out.append(
                    (
                        (t_fb - t0) * 1000,
                        ((t_ev or t_end) - t0) * 1000,
                        (t_end - t0) * 1000,
                        b"data: [DONE]" in payload,
                    )
                )
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return out


# ---------------------------------------------------------------------------------------------------
# The phases


def clean_env(**extra: str) -> dict[str, str]:
    """The harness's environment without any SynapGate or provider settings, plus `extra`."""
    drop = ("SYNAPGATE_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_API", "XAI_", "DEEPSEEK_", "TOGETHER_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env.update(extra)
    return env


def phase_mock(b: Bench) -> tuple[Proc, int]:
    port = free_port()
    proc = b.start(
        "mock",
        [sys.executable, "-m", "devtools.mock_upstream", "--host", HOST, "--port", str(port)],
        clean_env(),
    )
    wait_http(f"http://{HOST}:{port}/health", proc, 30)
    return proc, port


def phase_matrix(b: Bench, target: str, port: int, key: str, **kw: Any) -> None:
    url = f"http://{HOST}:{port}"
    for stream in (False, True):
        for conns in (1, 32):
            b.measure(target, url, conns, stream, key, **kw)
    b.measure_ttfb(target, port, key)


def cli_json(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [*SYNAPGATE, *argv],
        env={**env, "PYTHONPATH": str(SOURCE)},
        capture_output=True,
        text=True,
        cwd=SOURCE,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"synapgate {' '.join(argv)} failed: {proc.stderr.strip()}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def source_fingerprint() -> str:
    """A short hash of the measured code (gateway, storage, pricing, config, migrations) and its newest mtime,
    so a result can be matched to the code it measured."""
    import hashlib

    digest = hashlib.sha256()
    newest = 0.0
    for top in ("gateway", "storage", "pricing", "config", "migrations"):
        for path in sorted((SOURCE / top).rglob("*.py")):
            digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
            newest = max(newest, path.stat().st_mtime)
    stamp = dt.datetime.fromtimestamp(newest).strftime("%Y-%m-%d %H:%M:%S")
    return f"{digest.hexdigest()[:12]} (newest file {stamp})"


def tiktoken_dir() -> str:
    return os.environ.get("TIKTOKEN_CACHE_DIR") or "/work/shared/tiktoken"


def phase_gateway_setup(b: Bench, mock_port: int, suffix: str = "") -> tuple[dict[str, str], str, str]:
    """A fresh database (migrated) with a user holding plenty of credit and a key; the gateway's env."""
    db = f"{DB_PREFIX}{os.getpid()}{suffix}"
    sql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', fetch="exec")
    sql("postgres", f'CREATE DATABASE "{db}"', fetch="exec")
    b.dbs.append(db)
    if not suffix:
        b.db = db
        redis_flush()  # each user has its own Redis keys, so a second database shares db 12
    env = clean_env(
        SYNAPGATE_DATABASE_URL=pg_dsn(db),
        SYNAPGATE_REDIS_URL=REDIS_URL,
        SYNAPGATE_OPENAI_BASE_URL=f"http://{HOST}:{mock_port}/v1",
        SYNAPGATE_OPENAI_API_KEY="sk-bench-upstream",
        SYNAPGATE_LOG_LEVEL="warning",
        TIKTOKEN_CACHE_DIR=tiktoken_dir(),
    )
    env.update(GATEWAY_ENV)
    log(f"database {db}: migrate, user, key")
    cli_json(["migrate"], env)
    user = cli_json(
        [
            "users",
            "create",
            "--email",
            f"bench-{os.getpid()}{suffix}@example.com",
            "--credits-usd",
            "1000000",
        ],
        env,
    )
    key = cli_json(["keys", "create", "--user", user["user_id"], "--name", "bench"], env)
    if not suffix and b.args.users > 1:  # more users, each with a key: wrk sends their keys in turn
        keys = [key["key"]]
        for i in range(1, b.args.users):
            more = cli_json(
                [
                    "users",
                    "create",
                    "--email",
                    f"bench-{os.getpid()}-{i}@example.com",
                    "--credits-usd",
                    "1000000",
                ],
                env,
            )
            keys.append(
                cli_json(["keys", "create", "--user", more["user_id"], "--name", "bench"], env)["key"]
            )
        WRK_KEYS[key["key"]] = ",".join(keys)
    return env, user["user_id"], key["key"]


def phase_floors(b: Bench) -> None:
    """What one round trip and one durable commit cost here: the floor under any recorded answer."""
    import asyncpg
    from redis import Redis

    assert b.db is not None
    db = b.db
    n = 200

    async def pg() -> dict[str, float]:
        conn = await asyncpg.connect(pg_dsn(db), timeout=10)
        try:
            await conn.execute("CREATE TABLE bench_commit_probe (id bigserial PRIMARY KEY, v int)")
            out: dict[str, list[float]] = {"select1": [], "commit_sync": [], "commit_async": []}
            for _ in range(n):
                t = time.perf_counter()
                await conn.fetchval("SELECT 1")
                out["select1"].append((time.perf_counter() - t) * 1000)
            for name, setting in (("commit_sync", "on"), ("commit_async", "off")):
                await conn.execute(f"SET synchronous_commit = {setting}")
                for i in range(n):
                    t = time.perf_counter()
                    await conn.execute("INSERT INTO bench_commit_probe (v) VALUES ($1)", i)  # autocommit
                    out[name].append((time.perf_counter() - t) * 1000)
            await conn.execute("DROP TABLE bench_commit_probe")
        finally:
            await conn.close()
        return {f"{k}_{p}": pct(sorted(v), p) for k, v in out.items() for p in (50, 99)}

    floors = asyncio.run(pg())
    client = Redis.from_url(REDIS_URL)
    try:
        pings = []
        for _ in range(n):
            t = time.perf_counter()
            client.ping()
            pings.append((time.perf_counter() - t) * 1000)
    finally:
        client.close()
    floors |= {"redis_ping_50": pct(sorted(pings), 50), "redis_ping_99": pct(sorted(pings), 99)}
    b.extra["floors"] = floors
    log(
        f"floors: PG SELECT 1 {floors['select1_50']:.3f} ms, "
        f"durable commit {floors['commit_sync_50']:.3f} ms, "
        f"Redis PING {floors['redis_ping_50']:.3f} ms (p50)"
    )


def start_gateway(
    b: Bench, env: dict[str, str], name: str = "gateway", workers: int = 1
) -> tuple[Proc, int, int]:
    port = free_port()
    proc = b.start(
        name,
        [*SYNAPGATE, "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)],
        env,
    )
    wait_http(f"http://{HOST}:{port}/ready", proc, 60)
    worker = listener_pid(proc, port)
    log(f"gateway on :{port}, worker pid {worker}, RSS {rss_mb(worker):.0f} MB at start")
    return proc, port, worker


def insert_history(db: str, user_id: str, n: int, env: dict[str, str]) -> tuple[float, str]:
    """N usage_logs rows as the gateway writes them (same user, key, model, price), one a second back from
    now, in batches of 500,000, into the monthly partitions they need (`synapgate partitions ensure
    --months-back`, made first); then ANALYZE and CHECKPOINT. Returns (seconds, the history's size: rows,
    partitions and bytes with indexes, from `synapgate partitions list`)."""
    try:
        cli_json(["partitions", "ensure", "--months-back", str(n // (28 * 86400) + 1)], env)
        partitioned = True
    except RuntimeError:  # a --source from before migration 0015: one table
        partitioned = False
    ids = sql(
        db,
        """SELECT k.workspace_id, k.id AS key_id, (SELECT id FROM llms WHERE name = $2) AS llm_id
             FROM api_keys k WHERE k.user_id = $1 LIMIT 1""",
        uuid.UUID(user_id),
        MODEL,
        fetch="row",
    )
    t0 = time.monotonic()
    batch = 500_000
    done = 0
    while done < n:
        size = min(batch, n - done)
        sql(
            db,
            """INSERT INTO usage_logs (request_id, user_id, workspace_id, api_key_id, llm_id, provider, model,
                   price_version, input_tokens, output_tokens, cost_nano, charged_nano, latency_ms,
                   upstream_latency_ms, status, http_status, usage_source, is_stream, attempts, created_at)
               SELECT 'hist_' || g, $1::uuid, $2::uuid, $3::uuid, $4::int, 'openai', $5::text, 1,
                      30 + g % 500, 8 + g % 300, 4500 + g % 1000, 4500 + g % 1000, 5 + g % 50, 4 + g % 40,
                      'success', 200, 'provider', g % 3 = 0, 1,
                      now() - make_interval(secs => ($7::bigint - g)::float8)
                 FROM generate_series($6::bigint + 1, $6::bigint + $8::bigint) AS g""",
            uuid.UUID(user_id),
            ids["workspace_id"],
            ids["key_id"],
            ids["llm_id"],
            MODEL,
            done,
            n,
            size,
            fetch="exec",
            timeout=3600,
        )
        done += size
        log(f"  {done:,}/{n:,} rows ({time.monotonic() - t0:.0f}s)")
    sql(db, "ANALYZE usage_logs", fetch="exec", timeout=3600)
    sql(db, "CHECKPOINT", fetch="exec", timeout=3600)
    elapsed = time.monotonic() - t0
    if not partitioned:
        return elapsed, str(sql(db, "SELECT pg_size_pretty(pg_total_relation_size('usage_logs'))"))
    total = cli_json(["partitions", "list"], env)["total"]
    size = (
        f"{total['rows_estimate']:,} rows in {total['partitions']} partitions, "
        f"{total['bytes'] / 2**20:,.0f} MiB"
    )
    return elapsed, size


def phase_history(b: Bench, mock_port: int, gw_url: str, key: str, worker: int, rec: Recorder) -> None:
    """Throughput at 32 connections with N history rows vs without, measured alternately.

    A second database gets the same schema, its own user and key, and the N rows; a second gateway serves
    it. Then `rounds` pairs of runs alternate between the two gateways (empty, history, empty, …), so a
    change in the machine's load during the comparison hits both sides alike; the ratio is of the medians.
    """
    n = b.args.history_rows
    rounds = b.args.history_rounds
    env2, user2, key2 = phase_gateway_setup(b, mock_port, suffix="_hist")
    db2 = b.dbs[-1]
    log(f"inserting {n:,} synthetic usage_logs rows into {db2}")
    insert_s, size = insert_history(db2, user2, n, env2)
    log(f"history inserted in {insert_s:.0f}s (+ANALYZE, CHECKPOINT); usage_logs is {size} with indexes")
    gw2, gw2_port, worker2 = start_gateway(b, env2, name="gateway-hist")
    rec2 = Recorder(db2)
    sampler2 = PgActivitySampler(db2)
    pairs: list[tuple[WrkResult, WrkResult]] = []
    try:
        for i in range(1, rounds + 1):
            empty = b.measure("gateway", gw_url, 32, False, key, server_pid=worker, recorder=rec,
                              note=f"history round {i}: empty", keep=False)  # fmt: skip
            full = b.measure("gateway", f"http://{HOST}:{gw2_port}", 32, False, key2, server_pid=worker2,
                             recorder=rec2, pg_sampler=sampler2, note=f"history round {i}: {n:,} rows",
                             keep=False)  # fmt: skip
            pairs.append((empty, full))
    finally:
        sampler2.stop()
        b.stop(gw2)
    empty_rps = statistics.median(e.rps for e, _ in pairs)
    full_rps = statistics.median(f.rps for _, f in pairs)
    b.extra["history"] = {
        "rows": n,
        "insert_seconds": round(insert_s, 1),
        "table_size": size,
        "rounds": [
            {"empty": asdict(e) | {"errors": e.errors, "rows_ok": _rows_ok(e)},
             "history": asdict(f) | {"errors": f.errors, "rows_ok": _rows_ok(f)}}
            for e, f in pairs
        ],
        "empty_rps_median": round(empty_rps, 1),
        "history_rps_median": round(full_rps, 1),
        "ratio": round(full_rps / empty_rps, 3) if empty_rps else None,
    }  # fmt: skip


def phase_limits(
    b: Bench, env: dict[str, str], user_id: str, gw_url: str, key: str, worker: int, rec: Recorder
) -> None:
    """Throughput at 32 connections, non-streaming: a key with limits vs the same user's key without.

    The limited key has an RPM, a TPM and a monthly budget, each set far above what the run can use (so
    nothing is refused, but every request runs the limited path: the limits script on Redis, the budget's
    hold and settlement, the budget-spend row of `budget.threshold` in the recording transaction). Runs
    alternate between the two keys on the same gateway (`--limits-rounds` pairs, in ABBA order), so a
    change in the machine's load hits both sides alike; the ratio is of the medians.
    """
    rounds = b.args.limits_rounds
    limited = cli_json(["keys", "create", "--user", user_id, "--name", "bench-limits",
                        "--rpm", "1000000000", "--tpm", "1000000000",
                        "--budget-usd", "1000000", "--budget-period", "month"], env)["key"]  # fmt: skip
    pairs: list[tuple[WrkResult, WrkResult]] = []
    for i in range(1, rounds + 1):
        runs: dict[str, WrkResult] = {}
        # ABBA order (off-on, on-off, …): what one run leaves behind (the auto-tag queue, autovacuum, a
        # neighbour's burst) falls on each side alike instead of always on the second.
        for side in ("off", "on") if i % 2 else ("on", "off"):
            note = f"limits round {i}: " + ("on (rpm, tpm, budget)" if side == "on" else "off")
            runs[side] = b.measure("gateway", gw_url, 32, False, key if side == "off" else limited,
                                   server_pid=worker, recorder=rec, note=note, keep=False)  # fmt: skip
        pairs.append((runs["off"], runs["on"]))
    off_rps = statistics.median(o.rps for o, _ in pairs)
    on_rps = statistics.median(n.rps for _, n in pairs)
    # Side by side as well: both keys at once (16 connections each, two wrk processes), so every moment of
    # the machine's load falls on both; on a busy machine this is the steadier comparison.
    both: dict[str, dict[str, Any]] = {}  # side → rps, p50/p99, non-2xx

    def side_by_side(side: str, k: str) -> None:
        res, _, _ = run_wrk(gw_url, 16, b.duration, False, k, b.wrk_log)
        both[side] = {
            "rps": res["wrk_requests"] / (res["duration_us"] / 1e6),
            "errors": res["errors"]["status"],
            "p50_ms": res["latency_us"]["p50"] / 1000,
            "p99_ms": res["latency_us"]["p99"] / 1000,
        }

    log(f"gateway: json, 16 + 16 conn side by side (off | on): measure {b.duration:.0f}s")
    threads = [threading.Thread(target=side_by_side, args=a) for a in (("off", key), ("on", limited))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log(f"  → off {both['off']['rps']:,.0f} req/s, on {both['on']['rps']:,.0f} req/s")
    b.extra["limits"] = {
        "limits": {"rpm_limit": 1_000_000_000, "tpm_limit": 1_000_000_000, "budget_usd": "1000000",
                   "budget_period": "month"},
        "rounds": [
            {"off": asdict(o) | {"errors": o.errors, "rows_ok": _rows_ok(o)},
             "on": asdict(n) | {"errors": n.errors, "rows_ok": _rows_ok(n)}}
            for o, n in pairs
        ],
        "off_rps_median": round(off_rps, 1),
        "on_rps_median": round(on_rps, 1),
        "ratio": round(on_rps / off_rps, 3) if off_rps else None,
        "side_by_side": both,
        "side_by_side_ratio": round(both["on"]["rps"] / both["off"]["rps"], 3) if both["off"]["rps"] else 0,
    }  # fmt: skip


def _pyspy(pyspy: str, worker: int, seconds: int, fmt: str, out: Path, native: bool) -> subprocess.Popen[str]:
    argv = [pyspy, "record", "--pid", str(worker), "--duration", str(seconds), "--rate", "200"]
    argv += ["--format", fmt, "-o", str(out)] + (["--native"] if native else [])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def phase_profile(b: Bench, gw_port: int, key: str, worker: int, rec: Recorder) -> None:
    """py-spy on the gateway worker: stacks (raw, summarised) at 32 and 1 connection, and an SVG.

    Python stacks only: py-spy's --native unwinding is slow here (it falls behind and over-samples threads
    sitting in write()), so its shares were not trustworthy. Without it, time that uvloop spends waiting in
    epoll_pwait or running C code (uvloop, asyncpg's protocol, httptools) shows up as `Runner.run`
    itself: that leaf is reported apart, and the server's CPU% (from /proc) says how busy the loop was.
    """
    pyspy = shutil.which("py-spy") or (str(BIN / "py-spy") if (BIN / "py-spy").exists() else None)
    if pyspy is None:
        log("--profile: py-spy not found (pip install py-spy into the venv); skipped")
        return
    url = f"http://{HOST}:{gw_port}"
    seconds = int(b.duration)
    plan = [
        (32, "raw", RESULTS / f"{b.stamp}-profile-32.txt", False),
        (1, "raw", RESULTS / f"{b.stamp}-profile-1.txt", False),
        (32, "flamegraph", RESULTS / f"{b.stamp}-profile-32.svg", False),
    ]
    profiles: dict[str, Any] = {}
    for conns, fmt, out, native in plan:
        log(
            f"py-spy ({fmt}{', native' if native else ''}) on worker {worker} during a {conns}-connection run"
        )
        spy = _pyspy(pyspy, worker, seconds, fmt, out, native)
        time.sleep(1.0)
        if spy.poll() is not None and native:  # --native unsupported here: plain Python stacks
            spy = _pyspy(pyspy, worker, seconds, fmt, out, native=False)
            time.sleep(1.0)
        run = b.measure("gateway", url, conns, False, key, server_pid=worker, recorder=rec, warmup=0,
                        duration=seconds + 1, note=f"under py-spy ({fmt})", keep=False)  # fmt: skip
        spy_out, _ = spy.communicate(timeout=60)
        if spy.returncode != 0 or not out.exists():
            log(f"py-spy failed: {spy_out.strip()[-500:]}")
            continue
        if fmt == "raw":
            profiles[str(conns)] = summarise_profile(out) | {
                "raw": str(out),
                "server_cpu_pct": run.server_cpu_pct,
                "rps": round(run.rps, 1),
            }
        else:
            profiles["svg"] = str(out)
    b.extra["profile"] = profiles


# Inclusive-time buckets: a sample counts for the first bucket one of whose markers appears in its stack.
PROFILE_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("recording: storage/recorder.py (SQLAlchemy + asyncpg under it)", ("recorder.py",)),
    # SQLAlchemy's async API runs its sync core in a greenlet whose stack does not show the caller: statement
    # building, cache keys, compilation and result handling of every query land here (mostly the recording).
    (
        "SQLAlchemy in its greenlet (caller not on the stack; mostly the recording)",
        ("sqlalchemy/", "greenlet"),
    ),
    ("asyncpg outside the above", ("asyncpg/",)),
    ("upstream HTTP: httpx / httpcore", ("httpx/", "httpcore/")),
    ("credit reserve / settle: Redis", ("ledger/redis.py", "redis/")),
    ("token estimate: tiktoken", ("tiktoken", "pricing/tokens.py")),
    ("auth, catalog, credentials", ("gateway/auth.py", "catalog_cache.py", "gateway/credentials.py")),
    ("pricing: cost, money", ("pricing/cost.py", "pricing/money.py")),
    ("request parsing, provider adapters", ("parse_chat_request", "providers/")),
    ("rest of the chat handler (gateway/)", ("gateway/",)),
    ("server: uvicorn, httptools, litestar", ("uvicorn/", "litestar/", "httptools")),
    ("event loop (uvloop, asyncio) and C code under it", ("loop.c", "uvloop", "asyncio/", "Runner.run")),
]
IDLE_THREAD = ("Condition.wait (threading.py", "Queue.get (queue.py", "Event.wait (threading.py")
# The event loop's own leaf: waiting in epoll_pwait (py-spy does not count that syscall as idle), or C code
# under it (uvloop, asyncpg's protocol, httptools); native stacks name epoll_pwait itself.
LOOP_LEAVES = ("Runner.run (asyncio/runners.py", "epoll_pwait (", "epoll_wait (", "epoll_pwait2 (")
_PY_FRAME = re.compile(r"\((?:[^()]*\.py|<string>|<frozen [^>]+>)(?::\d+)?\)$")


def _frame(name: str) -> str:
    return re.sub(r":\d+\)$", ")", name)


def summarise_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks → busy share, top self frames, top Python frames, inclusive buckets.

    Left out: the logging thread blocked on its queue (py-spy cannot tell it is idle), and samples whose
    leaf is the event loop itself (see LOOP_LEAVES). `top_python` charges each sample to its deepest
    Python frame (with --native, time in C code goes to the Python function that called it).
    """
    self_time: Counter[str] = Counter()
    python_time: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    busy = idle_loop = idle_thread = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        leaf = frames[-1]
        if "Thread._bootstrap" in stack and any(i in stack for i in IDLE_THREAD):
            idle_thread += n
            continue
        if leaf.startswith(LOOP_LEAVES):
            idle_loop += n
            continue
        busy += n
        self_time[_frame(leaf)] += n
        python = next((f for f in reversed(frames) if _PY_FRAME.search(f)), leaf)
        python_time[_frame(python)] += n
        for name, markers in PROFILE_BUCKETS:
            if any(m in stack for m in markers):
                buckets[name] += n
                break
        else:
            buckets["other"] += n

    def share(counter: Counter[str], k: int | None = None) -> list[tuple[str, int, float]]:
        return [(f, n, round(100 * n / max(1, busy), 1)) for f, n in counter.most_common(k)]

    return {
        "busy": busy,
        "idle_loop": idle_loop,
        "idle_thread": idle_thread,
        "busy_pct": round(100 * busy / max(1, busy + idle_loop), 1),
        "top_self": share(self_time, top),
        "top_python": share(python_time, top),
        "buckets": share(buckets),
    }


def phase_soak(b: Bench, gw_port: int, key: str, worker: int, rec: Recorder, sampler: RssSampler) -> None:
    secs = b.args.soak_seconds
    url = f"http://{HOST}:{gw_port}"
    t0 = time.monotonic()
    res = b.measure(
        "gateway",
        url,
        32,
        False,
        key,
        server_pid=worker,
        recorder=rec,
        sampler=sampler,
        duration=secs,
        warmup=0,
        note=f"soak {secs}s",
        keep=False,
    )
    window = [(t - t0, v) for t, v in sampler.samples if t0 <= t <= t0 + res.duration_s + 1]

    def at(frac: float) -> float:
        target = frac * res.duration_s
        return round(min(window, key=lambda s: abs(s[0] - target))[1], 1) if window else float("nan")

    b.extra["soak"] = {
        "seconds": secs,
        "rps": round(res.rps, 1),
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "errors": res.errors,
        "sent": res.sent,
        "ok": res.ok,
        "rows": res.rows,
        "rss_start_mb": at(0.02),
        "rss_middle_mb": at(0.5),
        "rss_end_mb": at(1.0),
        "rss_max_mb": round(max(v for _, v in window), 1) if window else None,
        "rss_series_mb": [at(i / 10) for i in range(11)],  # every tenth of the soak
    }


def worker_pids(proc: Proc, port: int) -> list[int]:
    """The processes of `proc`'s tree that serve `port`: its workers (the supervisor holds the socket too)."""
    holders = _pids_holding(_listen_inodes(port), _tree(proc.pid))
    leaves = [p for p in holders if not any(c in holders for c in _children(p))]
    return leaves or holders or [proc.pid]


def phase_workers(b: Bench, env: dict[str, str], key: str, rec: Recorder) -> None:
    """`--workers 1` against `--workers 2` at the same connections (non-streaming), same database and Redis:
    the throughput ratio, and the RSS of each worker."""
    conns = b.args.workers_conns
    out: dict[str, Any] = {"conns": conns, "runs": []}
    for workers in (1, 2):
        gw, port, _worker = start_gateway(b, env, f"gateway-{workers}w", workers=workers)
        try:
            time.sleep(1.0)  # every worker up and listening
            pids = worker_pids(gw, port)
            samplers = [RssSampler(pid) for pid in pids]
            activity = PgActivitySampler(rec.db)  # do the workers' commits queue on row locks?
            try:
                res = b.measure(
                    f"gateway ×{workers} worker{'s' if workers > 1 else ''}",
                    f"http://{HOST}:{port}",
                    conns,
                    False,
                    key,
                    recorder=rec,
                    extra_pids=tuple(pids),
                    note=f"--workers {workers}",
                    keep=False,
                    pg_sampler=activity,
                )
            finally:
                activity.stop()
                for sampler in samplers:
                    sampler.stop()
            rss = [round(max(s.samples, key=lambda x: x[1])[1], 1) if s.samples else None for s in samplers]
            out["runs"].append(
                {
                    "workers": workers,
                    "pids": pids,
                    "rps": round(res.rps, 1),
                    "p50_ms": res.p50_ms,
                    "p99_ms": res.p99_ms,
                    "errors": res.errors,
                    "sent": res.sent,
                    "ok": res.ok,
                    "rows_ok": _rows_ok(res),
                    "rows": res.rows,
                    "rss_max_mb_per_worker": rss,
                    "other_cpu_pct": res.other_cpu_pct,
                    "pg_lock_waits": sum(v for k, v in (res.pg_states or {}).items() if "Lock" in k),
                    "pg_wal_waits": sum(v for k, v in (res.pg_states or {}).items() if "WAL" in k),
                }
            )
        finally:
            b.stop(gw)
    one, two = out["runs"][0]["rps"], out["runs"][1]["rps"]
    out["ratio"] = round(two / one, 2) if one else None
    b.extra["workers"] = out


def phase_instances(b: Bench, env: dict[str, str], key: str, rec: Recorder) -> None:
    """N gateway processes on N ports sharing the database and Redis, loaded at once (one wrk each, JSON);
    then the records (every request recorded, Σ charged = Σ debited) and `synapgate ledger reconcile`."""
    n, per = b.args.instances, b.args.instances_conns
    gateways = [start_gateway(b, env, f"gateway-instance-{i + 1}") for i in range(n)]
    try:
        marks = rec.marks()
        results: list[tuple[dict[str, Any], str, int] | BaseException] = [RuntimeError("not run")] * n

        def load(i: int, port: int, seconds: float) -> None:
            try:
                results[i] = run_wrk(f"http://{HOST}:{port}", per, seconds, False, key, b.wrk_log)
            except BaseException as exc:  # reported below
                results[i] = exc

        def load_all(seconds: float) -> None:
            threads = [
                threading.Thread(target=load, args=(i, port, seconds))
                for i, (_p, port, _w) in enumerate(gateways)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        log(f"{n} instances: json, {per} conn each: warm-up {b.warmup:.0f}s, measure {b.duration:.0f}s")
        if b.warmup > 0:  # each process loads its tokenizers and models on its first requests
            load_all(b.warmup)
            rec.settle(marks, sum(r[0]["sent"] for r in results if not isinstance(r, BaseException)))
            marks = rec.marks()
        busy0, total0 = machine_ticks()
        load_all(b.duration)
        busy1, total1 = machine_ticks()
        runs = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            runs.append(r[0])
        sent = sum(r["sent"] for r in runs)
        ok = sum(int(r["statuses"].get("200", 0)) - r["bad_body"] for r in runs)
        errors = sum(r["errors"]["status"] + r["bad_body"] for r in runs) + sum(
            v for r in runs for k, v in r["errors"].items() if k != "status"
        )
        rec.settle(marks, sent)
        rows = rec.counts(marks)
        rss = [rss_mb(w) for _p, _port, w in gateways]
        time.sleep(2.0)  # the requests wrk dropped at its stop finish and close their reservations
        checked = subprocess.run(
            [*SYNAPGATE, "ledger", "reconcile"],
            env={**env, "PYTHONPATH": str(SOURCE)},
            capture_output=True,
            text=True,
            cwd=SOURCE,
            timeout=120,
        )  # exit 1 when it finds a mismatch: the report is printed either way
        lines = checked.stdout.strip().splitlines()
        reconcile: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": checked.stderr[-300:]}
        per_rps = [round(r["wrk_requests"] / (r["duration_us"] / 1e6), 1) for r in runs]
        b.extra["instances"] = {
            "instances": n,
            "conns_each": per,
            "rps_each": per_rps,
            "rps_total": round(sum(per_rps), 1),
            "p50_ms_each": [r["latency_us"]["p50"] / 1000 for r in runs],
            "p99_ms_each": [r["latency_us"]["p99"] / 1000 for r in runs],
            "sent": sent,
            "ok": ok,
            "errors": errors,
            "rows": rows,
            "recorded_ok": bool(
                rows["usage_logs"] == rows["billing"] == rows["messages"] == rows["conv_llms"]
                and rows["ledger_ok"]
                and ok <= rows["usage_logs"] <= sent
            ),
            "reconcile_mismatches": len(reconcile.get("mismatches", [])) if "users" in reconcile else -1,
            "reconcile": {k: v for k, v in reconcile.items() if k != "mismatches"},
            "rss_mb_each": rss,
            "machine_cpu_pct": round(
                100.0 * (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1), 1
            ),
        }
        log(
            f"  → {sum(per_rps):,.0f} req/s over {n} instances, errors {errors}, sent {sent}, 2xx {ok}, "
            f"usage_logs {rows['usage_logs']}, charged = debited: {rows['ledger_ok']}, "
            f"reconcile mismatches {b.extra['instances']['reconcile_mismatches']}"
        )
    finally:
        for gw, _port, _w in gateways:
            b.stop(gw)


def phase_litellm(b: Bench, venv: Path, mock_port: int) -> None:
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        raise SystemExit(f"--litellm-venv: {exe} does not exist")
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    config = b.run_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://{HOST}:{mock_port}/v1\n"
        "      api_key: dummy\n"
    )
    port = free_port()
    env = clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True")  # no internet: use the bundled price map
    proc = b.start(
        "litellm",
        [str(exe), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1"],
        env,
    )
    log(f"litellm {version} starting on :{port}")
    wait_http(f"http://{HOST}:{port}/health/liveliness", proc, 180)
    wait_http(
        f"http://{HOST}:{port}{CHAT_PATH}",
        proc,
        60,
        "POST",
        body_bytes(False),
        {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
    )
    worker = listener_pid(proc, port)
    sampler = RssSampler(worker)
    try:
        phase_matrix(
            b,
            "litellm",
            port,
            "sk-bench",
            server_pid=worker,
            sampler=sampler,
            extra_pids=tuple(_tree(b.mock_pid)) if b.mock_pid else (),
        )
    finally:
        sampler.stop()
        b.stop(proc)
    b.extra["litellm"] = {"version": version, "venv": str(venv), "config": config.read_text()}


# ---------------------------------------------------------------------------------------------------
# Report


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:,.{digits}f}"


def find(results: list[WrkResult], target: str, mode: str, conns: int) -> WrkResult | None:
    for r in results:
        if r.target == target and r.mode == mode and r.conns == conns:
            return r
    return None


def md_table(headers: list[str], rows: list[list[Any]], align: str = "") -> list[str]:
    """A markdown table; `align` has one letter per column (l or r), default: first l, rest r."""
    align = align or "l" + "r" * (len(headers) - 1)
    out = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def report(b: Bench, header: str) -> str:
    R = b.results
    lines = [
        header,
        "",
        "### Throughput and latency (wrk: time to the whole response; streams: to `data: [DONE]`)",
        "",
    ]
    rows = []
    for mode in ("json", "stream"):
        for conns in (1, 32):
            direct = find(R, "direct", mode, conns)
            for target in ("direct", "gateway", "litellm"):
                r = find(R, target, mode, conns)
                if r is None:
                    continue
                vs = direct if direct and target != "direct" else None
                recorded = f"{r.rows['usage_logs']:,} {'✓' if _rows_ok(r) else '✗'}" if r.rows else "—"
                rows.append([
                    mode, conns, target, fmt(r.rps, 0),
                    fmt(r.p50_ms, 3), fmt(r.p99_ms, 3), fmt(r.p99_9_ms, 3),
                    fmt(r.p50_ms - vs.p50_ms, 3) if vs else "—", fmt(r.p99_ms - vs.p99_ms, 3) if vs else "—",
                    r.errors, f"{r.sent:,}", f"{r.ok:,}", recorded, fmt(r.server_cpu_pct, 0),
                    fmt(r.other_cpu_pct, 0), fmt(r.rss_mb_max, 0),
                ])  # fmt: skip
    lines += md_table(
        ["mode", "conns", "target", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "added p50 ms", "added p99 ms",
         "errors", "sent", "2xx", "rows recorded", "server CPU %", "other CPU %", "RSS max MB"],
        rows, "lrlrrrrrrrrrlrrr",
    )  # fmt: skip
    lines += [
        "",
        "`added` = the gateway's (or LiteLLM's) percentile minus the direct-to-mock percentile, same mode "
        "and connections. `rows recorded` = usage_logs rows the run left: ✓ when usage_logs = "
        "billing_events (usage) "
        "= messages = Δ conversation_llms.message_count, Σ charged = Σ debited, and 2xx ≤ rows ≤ sent. "
        "`server CPU %` = the server process (100 = one core); `other CPU %` = machine CPU not used by the "
        "benchmark's processes (wrk, mock, server, its PostgreSQL backends, Redis): disturbance.",
        "",
        "### Records per gateway run (exact: wrk's Lua counts every request sent and every answer)",
        "",
    ]
    rows = []
    for r in R:
        if r.rows is None:
            continue
        rw = r.rows
        rows.append([
            r.mode, r.conns, f"{r.sent:,}", f"{r.responses:,}", f"{r.ok:,}", f"{rw['usage_logs']:,}",
            f"{rw['ok']:,} / {rw['cancelled']:,} / {rw['error']:,}",
            f"{rw['billing']:,}", f"{rw['messages']:,}", f"{rw['conv_llms']:,}",
            f"{'yes' if rw['ledger_ok'] else 'NO'} ({rw['charged']:,})", r.sent - r.responses,
        ])  # fmt: skip
    lines += md_table(
        ["mode", "conns", "sent", "answered", "2xx complete", "usage_logs", "success / cancelled / error",
         "billing_events (usage)", "messages", "conv_llms Δcount", "Σ charged = Σ debited (nano-USD)",
         "unanswered at wrk stop"],
        rows, "lrrrrrlrrrlr",
    )  # fmt: skip
    pg_rows = []
    for r in R:
        if not r.pg_states:
            continue
        st = r.pg_states
        lock = sum(v for k, v in st.items() if k.startswith("active: Lock"))
        wal = sum(v for k, v in st.items() if k.startswith("active: WAL"))
        other = (
            sum(v for k, v in st.items() if k.startswith("active: ") and k != "active: running") - lock - wal
        )
        locks = ", ".join(k.removeprefix("active: Lock ") for k in st if k.startswith("active: Lock")) or "—"
        pg_rows.append([
            r.mode, r.conns, fmt(st.get("active: running", 0.0)), fmt(lock), locks, fmt(wal),
            fmt(other), fmt(st.get("idle in transaction", 0.0)), fmt(st.get("idle", 0.0)),
            f"{st.get('backends max', 0):.0f} / {st.get('backends seen', 0):.0f}",
        ])  # fmt: skip
    if pg_rows:
        lines += [
            "",
            "### PostgreSQL backends of the gateway during each run "
            "(average number in each state, 20 samples/s)",
            "",
        ]
        lines += md_table(
            ["mode", "conns", "running", "waiting on a lock", "lock kinds", "waiting on WAL flush",
             "other waits",
             "idle in transaction", "idle", "backends at once (max) / distinct seen"],
            pg_rows, "lrrrlrrrrr",
        )  # fmt: skip
        lines += [
            "",
            "`idle in transaction` = a backend inside an open transaction waiting for the gateway to send "
            "the next "
            "statement (event-loop latency while it holds its row locks). More distinct backends seen than "
            "at once means connections were closed and opened during the run (pool churn).",
        ]
    f = b.extra.get("floors")
    if f:
        lines += ["", "### Floors on this machine (200 sequential operations from Python, p50 / p99 ms)", ""]
        lines += md_table(
            ["PostgreSQL `SELECT 1`", "PostgreSQL INSERT + durable commit", "same, synchronous_commit=off",
             "Redis PING"],
            [[f"{f['select1_50']} / {f['select1_99']}", f"{f['commit_sync_50']} / {f['commit_sync_99']}",
              f"{f['commit_async_50']} / {f['commit_async_99']}",
              f"{f['redis_ping_50']} / {f['redis_ping_99']}"]],
            "rrrr",
        )  # fmt: skip
    lines += ["", "### Streaming: time to first byte (sequential requests, one keep-alive connection)", ""]
    d_ttfb = b.ttfb.get("direct")
    rows = []
    for target, t in b.ttfb.items():
        base = d_ttfb if d_ttfb and target != "direct" else None
        rows.append([
            target, t["n"], fmt(t["first_byte_p50_ms"], 3), fmt(t["first_byte_p99_ms"], 3),
            fmt(t["first_event_p50_ms"], 3), fmt(t["first_event_p99_ms"], 3),
            fmt(t["first_event_p50_ms"] - base["first_event_p50_ms"], 3) if base else "—",
            fmt(t["first_event_p99_ms"] - base["first_event_p99_ms"], 3) if base else "—",
            fmt(t["total_p50_ms"], 3), t["incomplete"],
        ])  # fmt: skip
    lines += md_table(
        ["target", "n", "first byte p50 ms", "p99 ms", "first `data:` event p50 ms", "p99 ms",
         "added first event p50 ms", "added p99 ms", "whole stream p50 ms", "incomplete"],
        rows,
    )  # fmt: skip
    if find(R, "litellm", "json", 32):
        lines += ["", "### Gateway vs LiteLLM (same run, same mock, same wrk)", ""]
        rows = []
        for mode in ("json", "stream"):
            for conns in (1, 32):
                g, lt = find(R, "gateway", mode, conns), find(R, "litellm", mode, conns)
                if g and lt:
                    rows.append([
                        mode, conns, fmt(g.rps, 0), fmt(lt.rps, 0), f"{fmt(g.rps / lt.rps, 1)}×",
                        fmt(g.p50_ms, 3), fmt(lt.p50_ms, 3), fmt(g.p99_ms, 3), fmt(lt.p99_ms, 3),
                    ])  # fmt: skip
        lines += md_table(
            ["mode", "conns", "gateway req/s", "LiteLLM req/s", "ratio", "gateway p50 ms", "LiteLLM p50 ms",
             "gateway p99 ms", "LiteLLM p99 ms"],
            rows,
        )  # fmt: skip
        if "litellm" in b.extra:
            lines += ["", f"LiteLLM {b.extra['litellm']['version']} from {b.extra['litellm']['venv']}."]
    h = b.extra.get("history")
    if h:
        lines += [
            "",
            f"### History: 32 connections, non-streaming, empty usage_logs vs {h['rows']:,} rows "
            f"(history size: {h['table_size']} with indexes), runs alternating",
            "",
        ]
        rows = []
        for i, rnd in enumerate(h["rounds"], 1):
            for label, x in (("empty", rnd["empty"]), (f"{h['rows']:,} rows", rnd["history"])):
                ok = "yes" if x["rows_ok"] else "NO"
                lat = [fmt(x["p50_ms"], 3), fmt(x["p99_ms"], 3)]
                rows.append([i, label, fmt(x["rps"], 0), *lat, x["errors"], ok, fmt(x["other_cpu_pct"], 0)])
        lines += md_table(
            ["round", "usage_logs", "req/s", "p50 ms", "p99 ms", "errors", "rows ok", "other CPU %"],
            rows,
            "rlrrrrlr",
        )
        lines += [
            "",
            f"Median req/s: empty {fmt(h['empty_rps_median'], 0)}, "
            f"with history {fmt(h['history_rps_median'], 0)}: ratio **{h['ratio']}**. "
            f"The {h['rows']:,} rows were inserted in {h['insert_seconds']} s "
            "(INSERT … SELECT generate_series in batches of 500,000, then ANALYZE and CHECKPOINT) into a "
            "second "
            'database served by a second gateway; the "empty" side holds only the rows of the runs above.',
        ]
    lim = b.extra.get("limits")
    if lim:
        lines += [
            "",
            "### Limits on vs off: 32 connections, non-streaming, one gateway, runs alternating keys",
            "",
        ]
        rows = []
        for i, rnd in enumerate(lim["rounds"], 1):
            for label, x in (("off (no limits)", rnd["off"]), ("on (rpm, tpm, budget)", rnd["on"])):
                ok = "yes" if x["rows_ok"] else "NO"
                lat = [fmt(x["p50_ms"], 3), fmt(x["p99_ms"], 3)]
                rows.append([i, label, fmt(x["rps"], 0), *lat, x["errors"], ok, fmt(x["other_cpu_pct"], 0)])
        lines += md_table(
            ["round", "key", "req/s", "p50 ms", "p99 ms", "errors", "rows ok", "other CPU %"],
            rows,
            "rlrrrrlr",
        )
        lines += [
            "",
            f"Median req/s: without limits {fmt(lim['off_rps_median'], 0)}, with limits "
            f"{fmt(lim['on_rps_median'], 0)}: ratio **{lim['ratio']}**. The limited key (same user) has "
            "rpm_limit = tpm_limit = 1,000,000,000 and a monthly budget of $1,000,000: never refused, but "
            "each request takes the limited path (limits script, budget hold and settlement, budget-spend "
            "row).",
        ]
        both = lim["side_by_side"]
        lines += [
            "",
            f"Side by side (both keys at once, 16 connections each): without limits "
            f"{fmt(both['off']['rps'], 0)} req/s (p50 {fmt(both['off']['p50_ms'], 3)} ms), with limits "
            f"{fmt(both['on']['rps'], 0)} req/s (p50 {fmt(both['on']['p50_ms'], 3)} ms): ratio "
            f"**{lim['side_by_side_ratio']}**; non-2xx {both['off']['errors']} / {both['on']['errors']}.",
        ]
    s = b.extra.get("soak")
    if s:
        lines += ["", f"### Soak: {s['seconds']} s at 32 connections, non-streaming", ""]
        lines += md_table(
            ["req/s", "p50 ms", "p99 ms", "errors", "sent", "usage_logs", "RSS start MB", "RSS middle MB",
             "RSS end MB", "RSS max MB"],
            [[fmt(s["rps"], 0), fmt(s["p50_ms"], 3), fmt(s["p99_ms"], 3), s["errors"], f"{s['sent']:,}",
              f"{s['rows']['usage_logs']:,}" if s["rows"] else "—", s["rss_start_mb"], s["rss_middle_mb"],
              s["rss_end_mb"], s["rss_max_mb"]]],
            "r" * 10,
        )  # fmt: skip
    if s and s.get("rss_series_mb"):
        lines += ["", "RSS of the worker over the soak, every tenth of it (MB): "
                  + " → ".join(str(v) for v in s["rss_series_mb"])]  # fmt: skip
    w = b.extra.get("workers")
    if w:
        lines += [
            "",
            f"### Workers: `--workers 1` vs `--workers 2`, {w['conns']} connections, non-streaming",
            "",
        ]
        lines += md_table(
            ["workers", "req/s", "p50 ms", "p99 ms", "errors", "sent", "2xx", "rows recorded",
             "RSS max per worker MB", "PG backends waiting on a lock / WAL (avg)", "other CPU %"],
            [[r["workers"], fmt(r["rps"], 0), fmt(r["p50_ms"], 3), fmt(r["p99_ms"], 3), r["errors"],
              f"{r['sent']:,}", f"{r['ok']:,}",
              f"{r['rows']['usage_logs']:,} {'✓' if r['rows_ok'] else '✗'}" if r["rows"] else "—",
              ", ".join(str(x) for x in r["rss_max_mb_per_worker"]),
              f"{r.get('pg_lock_waits', 0):.2f} / {r.get('pg_wal_waits', 0):.2f}", fmt(r["other_cpu_pct"], 0)]
             for r in w["runs"]],
            "r" * 11,
        )  # fmt: skip
        lines += [
            "",
            f"Throughput ratio, 2 workers / 1 worker: **{w['ratio']}×** (same database, Redis and mock).",
        ]
    inst = b.extra.get("instances")
    if inst:
        rows_ = inst["rows"]
        lines += [
            "",
            f"### {inst['instances']} gateway instances on {inst['instances']} ports, one PostgreSQL + Redis "
            f"({inst['conns_each']} connections each, non-streaming, loaded at once)",
            "",
        ]
        lines += md_table(
            ["req/s total", "req/s each", "p50 ms each", "p99 ms each", "errors", "sent", "2xx", "usage_logs",
             "billing (usage)", "Σ charged = Σ debited (nano-USD)", "every request recorded",
             "reconcile mismatches", "RSS each MB"],
            [[fmt(inst["rps_total"], 0), ", ".join(fmt(x, 0) for x in inst["rps_each"]),
              ", ".join(fmt(x, 2) for x in inst["p50_ms_each"]),
              ", ".join(fmt(x, 2) for x in inst["p99_ms_each"]),
              inst["errors"], f"{inst['sent']:,}", f"{inst['ok']:,}", f"{rows_['usage_logs']:,}",
              f"{rows_['billing']:,}", f"{'yes' if rows_['ledger_ok'] else 'NO'} ({rows_['charged']:,})",
              "yes" if inst["recorded_ok"] else "NO", inst["reconcile_mismatches"],
              ", ".join(fmt(x, 0) for x in inst["rss_mb_each"])]],
            "r" * 13,
        )  # fmt: skip
        lines += ["", f"`synapgate ledger reconcile` after the run: {json.dumps(inst['reconcile'])}."]
    profiles = b.extra.get("profile") or {}
    for pconns in ("32", "1"):
        p = profiles.get(pconns)
        if not p:
            continue
        lines += [
            "",
            f"### Profile of the gateway worker, {pconns} connection{'s' if pconns != '1' else ''}, "
            f"non-streaming (py-spy, {p['rps']:,.0f} req/s, server CPU {p['server_cpu_pct']}% of a core)",
            "",
            f"{p['busy']} samples in Python code; {p['idle_loop']} more "
            f"({100 - p['busy_pct']:.0f}% of the main thread) had the "
            "event loop itself as leaf: waiting in epoll, or running C code (uvloop, asyncpg's protocol, "
            "httptools). Shares below are of the Python samples.",
            "",
            "Inclusive time by area (a sample counts for the first area found in its stack, in this order):",
            "",
        ]
        lines += md_table(["area", "samples", "% of busy"], [list(x) for x in p["buckets"]])
        lines += ["", "Top self-time frames (function and file; lines merged):", ""]
        lines += md_table(
            ["#", "frame", "samples", "% of busy"],
            [[i, f"`{f}`", n, pc] for i, (f, n, pc) in enumerate(p["top_self"], 1)],
            "rlrr",
        )
        lines += ["", "Top Python frames (each sample charged to its deepest Python frame):", ""]
        lines += md_table(
            ["#", "frame", "samples", "% of busy"],
            [[i, f"`{f}`", n, pc] for i, (f, n, pc) in enumerate(p["top_python"], 1)],
            "rlrr",
        )
    if profiles.get("svg"):
        lines += ["", f"Flame graph (32 connections, Python frames): `{profiles['svg']}`."]
    lines += ["", *goals(b)]
    others = [r.other_cpu_pct for r in R if r.other_cpu_pct is not None]
    if others and max(others) > 15:
        lines += [
            "",
            f"⚠ Other processes used up to {max(others):.0f}% CPU (100 = one core) during a run: "
            "numbers may be "
            "disturbed; rerun on a quiet machine (--wait-quiet).",
        ]
    return "\n".join(lines) + "\n"


def _rows_ok(r: WrkResult) -> bool:
    rw = r.rows
    if rw is None:
        return False
    same = rw["usage_logs"] == rw["billing"] == rw["messages"] == rw["conv_llms"]
    return bool(same and rw["ledger_ok"] and r.ok <= rw["usage_logs"] <= r.sent)


def goals(b: Bench) -> list[str]:
    R = b.results
    rows: list[tuple[str, str, str]] = []

    def add(goal: str, value: str, ok: bool | None) -> None:
        rows.append((goal, value, "—" if ok is None else ("pass" if ok else "FAIL")))

    d1, g1 = find(R, "direct", "json", 1), find(R, "gateway", "json", 1)
    if d1 and g1:
        add(
            "added latency p50 at 1 conn ≤ 1.0 ms",
            f"{g1.p50_ms - d1.p50_ms:.3f} ms",
            g1.p50_ms - d1.p50_ms <= 1.0,
        )
        add(
            "added latency p99 at 1 conn ≤ 3 ms",
            f"{g1.p99_ms - d1.p99_ms:.3f} ms",
            g1.p99_ms - d1.p99_ms <= 3.0,
        )
    g32, l32 = find(R, "gateway", "json", 32), find(R, "litellm", "json", 32)
    if g32:
        add("throughput at 32 conn ≥ 1,000 req/s (aim)", f"{g32.rps:,.1f} req/s", g32.rps >= 1000)
        if l32:
            add("throughput at 32 conn ≥ 8× LiteLLM", f"{g32.rps / l32.rps:.2f}×", g32.rps / l32.rps >= 8)
    gw = [r for r in R if r.target == "gateway"]
    if gw:
        errs = sum(r.errors for r in gw)
        add("no errors (gateway runs)", f"{errs}", errs == 0)
        add(
            "every request recorded",
            ", ".join("✓" if _rows_ok(r) else "✗" for r in gw),
            all(map(_rows_ok, gw)),
        )
    d, g = b.ttfb.get("direct"), b.ttfb.get("gateway")
    if d and g:
        added = g["first_event_p50_ms"] - d["first_event_p50_ms"]
        add("stream time to first event adds ≤ 0.5 ms (p50)", f"{added:.3f} ms", added <= 0.5)
    rss = [r.rss_mb_max for r in gw if r.rss_mb_max]
    s = b.extra.get("soak")
    if s and s.get("rss_max_mb"):
        rss.append(s["rss_max_mb"])
    if rss:
        add("RSS per worker ≤ 150 MB under load", f"max {max(rss):.0f} MB", max(rss) <= 150)
    if s:
        growth = s["rss_end_mb"] - s["rss_start_mb"]
        add(
            f"RSS flat over the soak ({s['seconds']} s)",
            f"{s['rss_start_mb']} → {s['rss_middle_mb']} → {s['rss_end_mb']} MB",
            abs(growth) <= 10,
        )
    w = b.extra.get("workers")
    if w and w["ratio"]:
        add(f"--workers 2 ≥ 1.6× --workers 1 at {w['conns']} conn", f"{w['ratio']:.2f}×", w["ratio"] >= 1.6)
        per_worker = [x for r in w["runs"] for x in r["rss_max_mb_per_worker"] if x]
        if per_worker:
            add(
                "RSS per worker ≤ 150 MB (workers runs)",
                f"max {max(per_worker):.0f} MB",
                max(per_worker) <= 150,
            )
    inst = b.extra.get("instances")
    if inst:
        exact = inst["recorded_ok"] and inst["reconcile_mismatches"] == 0 and inst["errors"] == 0
        add(
            f"{inst['instances']} instances: 0 errors, all recorded, Σ charged = Σ debited, reconcile clean",
            f"{inst['errors']} errors, {inst['rows']['usage_logs']:,} rows, "
            f"{inst['reconcile_mismatches']} mismatches",
            exact,
        )
    h = b.extra.get("history")
    if h and h["ratio"]:
        add(
            f"throughput with {h['rows']:,} history rows within 10% of empty",
            f"{h['ratio']:.3f}×",
            h["ratio"] >= 0.9,
        )
    lim = b.extra.get("limits")
    if lim and lim["ratio"]:
        add("throughput with limits on a key ≥ 90% of without", f"{lim['ratio']:.3f}×", lim["ratio"] >= 0.9)
    return [
        "### Goals of the issue",
        "",
        *md_table(["goal", "measured", "verdict"], [list(r) for r in rows], "lll"),
    ]


def machine_notes() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    pg = "?"
    with contextlib.suppress(Exception):
        row = sql(
            "postgres",
            "SELECT current_setting('server_version') AS v, current_setting('synchronous_commit') AS sc, "
            "current_setting('fsync') AS fs, current_setting('shared_buffers') AS sb",
            fetch="row",
        )
        pg = (
            f"PostgreSQL {row['v']} (synchronous_commit={row['sc']}, fsync={row['fs']}, "
            f"shared_buffers={row['sb']})"
        )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}; "
        f"{pg}; Redis db {REDIS_DB}; {wrk[0].strip() if wrk else 'wrk'}; load average at start "
        f"{Path('/proc/loadavg').read_text().split()[:3]}"
    )


def wait_quiet(limit: float, threshold: float = 15.0, needed: float = 5.0) -> float:
    """Wait (up to `limit` s) until the machine's CPU use stays under `threshold` % for `needed` s."""
    start = time.monotonic()
    quiet_since = None
    last = 0.0
    busy0, total0 = machine_ticks()
    while True:
        time.sleep(1.0)
        busy1, total1 = machine_ticks()
        last = 100.0 * (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
        busy0, total0 = busy1, total1
        if last < threshold:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= needed:
                return last
        else:
            quiet_since = None
        if time.monotonic() - start > limit:
            log(f"machine still busy ({last:.0f}% CPU) after {limit:.0f}s; measuring anyway")
            return last


# ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10, help="seconds per measured wrk run (default 10)")
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds of warm-up before each run (default 3)"
    )
    p.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up, 50 TTFB samples (smoke test)")
    p.add_argument(
        "--litellm-venv", type=Path, help="a venv with `litellm[proxy]` installed: also measure it"
    )
    p.add_argument(
        "--history-rows", type=int, default=0, help="insert N usage_logs rows, rerun 32 conn, compare"
    )
    p.add_argument(
        "--history-rounds", type=int, default=3, help="alternating empty/history run pairs (default 3)"
    )
    p.add_argument(
        "--soak-seconds", type=int, default=0, help="constant 32-connection load, RSS start/middle/end"
    )
    p.add_argument(
        "--limits", action="store_true", help="32 conn: a key with rpm/tpm/budget vs one without, alternating"
    )
    p.add_argument("--limits-rounds", type=int, default=3, help="alternating off/on run pairs (default 3)")
    p.add_argument("--profile", action="store_true", help="py-spy the gateway worker during a 32-conn run")
    p.add_argument(
        "--ttfb-samples", type=int, default=None, help="sequential streaming requests (default 200)"
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="start the mock, servers and wrk with `nice -n N` (e.g. -10 on a shared machine; needs root)",
    )
    p.add_argument(
        "--source",
        type=Path,
        default=REPO,
        help="measure the gateway of this source tree (default: this repo)",
    )
    p.add_argument(
        "--distinct-conversations",
        action="store_true",
        help="a distinct prompt per wrk request (own conversation rows; the credit row is still shared)",
    )
    p.add_argument("--skip-direct", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--workers-scaling",
        action="store_true",
        help="also measure `--workers 1` vs `--workers 2` at --workers-conns connections (non-streaming)",
    )
    p.add_argument(
        "--workers-conns", type=int, default=64, help="connections of the workers runs (default 64)"
    )
    p.add_argument(
        "--instances",
        type=int,
        default=0,
        metavar="N",
        help="N gateways on N ports sharing PG + Redis, loaded at once",
    )
    p.add_argument("--instances-conns", type=int, default=21, help="connections per instance (default 21)")
    p.add_argument(
        "--users",
        type=int,
        default=1,
        metavar="N",
        help="N users with a key each; wrk sends their keys in turn (default 1: one hot account row)",
    )
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for every gateway (e.g. SYNAPGATE_AUTO_TAGS=false); repeatable",
    )
    p.add_argument(
        "--redis-db", type=int, default=None, help=f"Redis db to use and flush (default {REDIS_DB})"
    )
    p.add_argument(
        "--db-prefix", default=None, help=f"prefix of the databases it creates (default {DB_PREFIX})"
    )
    p.add_argument("--ports", default=None, metavar="LO-HI", help="take server ports from this range only")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="first wait up to S seconds for other processes to leave the CPUs idle",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3)
        args.warmup = 1 if args.warmup is None else args.warmup
        args.ttfb_samples = args.ttfb_samples or 50
    args.warmup = 3 if args.warmup is None else args.warmup
    args.ttfb_samples = args.ttfb_samples or 200
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global SOURCE, VARY, NICE, REDIS_DB, REDIS_URL, DB_PREFIX
    SOURCE = args.source.resolve()
    if args.redis_db is not None:
        REDIS_DB = args.redis_db
        REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
    if args.db_prefix:
        DB_PREFIX = args.db_prefix
    for item in args.gateway_env:
        name, _, value = item.partition("=")
        GATEWAY_ENV[name] = value
    if args.ports:
        lo, _, hi = args.ports.partition("-")
        PORTS[:] = list(range(int(lo), int(hi) + 1))
    VARY = args.distinct_conversations
    NICE = ["nice", "-n", str(args.nice)] if args.nice else []
    require_wrk()
    if not Path(tiktoken_dir()).is_dir():
        log(f"warning: TIKTOKEN_CACHE_DIR {tiktoken_dir()} is missing; token counting may try the network")
    if args.wait_quiet:
        log(f"waiting up to {args.wait_quiet:.0f}s for a quiet machine")
        wait_quiet(args.wait_quiet)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    b = Bench(args, stamp)
    command = f"cd {Path.cwd()} && .venv/bin/python bench/run.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    notes = machine_notes()
    started = time.monotonic()
    interrupted = False
    try:
        mock, mock_port = phase_mock(b)
        b.mock_pid = mock.pid
        mock_pids = tuple(_tree(mock.pid))
        log(f"mock upstream on :{mock_port} (pid {mock.pid})")
        if not args.skip_direct:
            phase_matrix(b, "direct", mock_port, "sk-bench", server_pid=listener_pid(mock, mock_port))
        env, _user_id, key = phase_gateway_setup(b, mock_port)
        phase_floors(b)
        b.extra["source"] = source_fingerprint()
        gw, gw_port, worker = start_gateway(b, env)
        rec = Recorder(b.db)  # type: ignore[arg-type]
        sampler = RssSampler(worker)
        b.pg_sampler = PgActivitySampler(b.db)  # type: ignore[arg-type]
        try:
            phase_matrix(
                b,
                "gateway",
                gw_port,
                key,
                server_pid=worker,
                recorder=rec,
                sampler=sampler,
                extra_pids=mock_pids,
            )
            if args.history_rows:
                phase_history(b, mock_port, f"http://{HOST}:{gw_port}", key, worker, rec)
            if args.limits:
                phase_limits(b, env, _user_id, f"http://{HOST}:{gw_port}", key, worker, rec)
            if args.profile:
                phase_profile(b, gw_port, key, worker, rec)
            if args.soak_seconds:
                phase_soak(b, gw_port, key, worker, rec, sampler)
        finally:
            sampler.stop()
            b.pg_sampler.stop()
            b.pg_sampler = None
            b.extra["gateway_rss_mb_end"] = rss_mb(worker)
            b.stop(gw)
            if source_fingerprint() != b.extra["source"]:
                b.extra["source_changed"] = source_fingerprint()
                log("warning: the source changed while the gateway ran (it kept the code it had loaded)")
        if args.workers_scaling:
            phase_workers(b, env, key, Recorder(b.db))  # type: ignore[arg-type]
        if args.instances:
            phase_instances(b, env, key, Recorder(b.db))  # type: ignore[arg-type]
        if args.litellm_venv:
            phase_litellm(b, args.litellm_venv, mock_port)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; cleaning up")
    finally:
        b.cleanup()
    header = (
        f"## SynapGate benchmark {stamp}\n\n"
        f"Command: `{command}`  \n"
        f"Machine: {notes}  \n"
        f"Code measured: {SOURCE}, source fingerprint {b.extra.get('source', '—')}"
        + (
            f" (changed to {b.extra['source_changed']} while the gateway ran)"
            if b.extra.get("source_changed")
            else ""
        )
        + "  \n"
        f"Runs: wrk -t1, {args.duration:g} s measured after {args.warmup:g} s warm-up each; "
        "one gateway worker "
        "(`synapgate serve --workers 1`, i.e. `python -m gateway.cli serve`"
        + (f" from {SOURCE}" if SOURCE != REPO else "")
        + ") on PostgreSQL + Redis; mock upstream answers instantly (12 prompt / 8 completion tokens); "
        + (
            "a distinct prompt per request (one user, one key, a conversation each)"
            if VARY
            else "the same ~200-byte request every time (one user, one key, one conversation)"
            if args.users <= 1
            else f"the same ~200-byte request every time from {args.users} users in turn (a key and a "
            "conversation each)"
        )
        + (f"; mock, servers and wrk run under `{' '.join(NICE)}`" if NICE else "")
        + (
            f"; gateway settings {', '.join(f'{k}={v}' for k, v in GATEWAY_ENV.items())}"
            if GATEWAY_ENV
            else ""
        )
        + f". Total wall time {time.monotonic() - started:.0f} s."
    )
    text = report(b, header)
    print(text)
    out = RESULTS / f"{stamp}.md"
    out.write_text(text)
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": notes,
                "results": [asdict(r) | {"errors": r.errors} for r in b.results],
                "ttfb": b.ttfb,
                "extra": b.extra,
            },
            indent=2,
            default=str,
        )
    )
    log(f"saved {out} (and .json; logs in {b.run_dir})")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
