"""The fault harness: throwaway PostgreSQL and Redis servers, the gateway as a real process, a bounded load
driver and the checks that every answer agrees with the ledger.

Everything here owns what it starts and can stop it at any time (tests register `close()` as a finalizer),
and every port comes from this suite's private ranges. Nothing here touches the shared PostgreSQL cluster
`15/main` or the shared Redis on 6379.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis as redis_sync

# The mock upstream, imported in this ONE place: when it moves to devtools/mock_upstream/, change this line.
from devtools.mock_upstream import MockConfig, MockServerThread
from tests.environment import child_pids

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # this checkout's .venv/bin
SYNAPGATE = BIN / "synapgate"

PG_VERSION = "15"
# Below Linux's ephemeral range (32768–60999 by default): a port the kernel hands to an outgoing connection
# between our check and a server's bind — or between a gateway's stop and its restart — failed a run once
# (57002, when these ranges sat inside it).
# Each fault module may run on its own xdist worker, beside the others: a worker takes only its own slice of
# each range (`worker_slice`), so two workers never race to bind one port, nor name two clusters alike.
MAX_WORKERS = 8


def worker_slice(ports: range) -> range:
    """This test process's part of `ports`: the whole range without xdist, else one of MAX_WORKERS slices."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if index >= MAX_WORKERS:
        raise RuntimeError(f"the fault suite has port slices for {MAX_WORKERS} workers, not {index + 1}")
    size = len(ports) // MAX_WORKERS
    return range(ports.start + index * size, ports.start + (index + 1) * size)


PG_PORTS = worker_slice(range(24400, 24480))
REDIS_PORTS = worker_slice(range(26300, 26460))
GATEWAY_PORTS = worker_slice(range(27000, 27800))
MOCK_PORT = 27800 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)

NANO = Decimal(10) ** 9
# Bounds of every load a test may drive, whatever it asks for.
MAX_REQUESTS = 2_000
MAX_SECONDS = 30.0


class HarnessError(RuntimeError):
    """A throwaway server did not do what it was told within its deadline."""


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until it holds; raise HarnessError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class PortPool:
    """Hands out free ports of one private range, never the same one twice in a session."""

    def __init__(self, ports: range) -> None:
        self._ports = ports
        self._taken: set[int] = set()

    def take(self) -> int:
        for port in self._ports:
            if port not in self._taken and port_is_free(port):
                self._taken.add(port)
                return port
        raise HarnessError(f"no free port left in {self._ports.start}-{self._ports.stop - 1}")

    def give_back(self, port: int) -> None:
        self._taken.discard(port)


def _run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    with contextlib.suppress(OSError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    return True


# -- PostgreSQL ----------------------------------------------------------------------------------------------


@dataclass
class PgCluster:
    """A throwaway PostgreSQL 15 cluster `15/sgfault_<port>` with trust auth on 127.0.0.1.

    `stop()` is a fast shutdown, `kill()` SIGKILLs the postmaster (and reaps its orphaned backends, as a
    machine reboot would), `start()` brings it back; `drop()` stops and removes it.
    """

    port: int
    created: bool = False

    @property
    def name(self) -> str:
        return f"sgfault_{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(f"/var/lib/postgresql/{PG_VERSION}/{self.name}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _exists(self) -> bool:
        return Path(f"/etc/postgresql/{PG_VERSION}/{self.name}").exists() or self.data_dir.exists()

    def create(self) -> None:
        assert self.name != "main" and self.port != 5432, "never the shared cluster"
        if self._exists():  # left over by a run that was killed before its teardown
            subprocess.run(
                ["pg_dropcluster", PG_VERSION, self.name, "--stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        _run(
            "pg_createcluster",
            PG_VERSION,
            self.name,
            "--port",
            str(self.port),
            "-o",
            "fsync=off",  # a throwaway cluster: speed over durability of the OS cache
            "-o",
            "max_connections=200",
            "--",
            "--auth=trust",
        )
        self.created = True
        self.start()

    def start(self) -> None:
        _run("pg_ctlcluster", PG_VERSION, self.name, "start", timeout=60)
        wait_until(self.accepts_connections, 30, f"PostgreSQL on {self.port}")

    def stop(self) -> None:
        _run("pg_ctlcluster", PG_VERSION, self.name, "stop", "--mode", "fast", timeout=60)

    def postmaster_pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pid_file.read_text().splitlines()[0])
        return None

    def kill(self) -> None:
        pid = self.postmaster_pid()
        if pid is None or not _pid_alive(pid):
            raise HarnessError(f"PostgreSQL on {self.port} is not running")
        backends = child_pids(pid)
        os.kill(pid, signal.SIGKILL)
        for child in backends:  # orphans of the cluster we started, each by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        wait_until(
            lambda: not any(_pid_alive(p) for p in [pid, *backends]), 20, "the killed PostgreSQL to exit"
        )
        # The dead postmaster may linger as a zombie (no init reaps it in a container), and PostgreSQL refuses
        # to start while a lock file names a PID that kill(0) still finds: remove this cluster's stale locks,
        # as an operator does after a crash.
        for stale in (
            self.data_dir / "postmaster.pid",
            Path(f"/var/run/postgresql/.s.PGSQL.{self.port}.lock"),
        ):
            stale.unlink(missing_ok=True)

    def accepts_connections(self) -> bool:
        done = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def drop(self) -> None:
        if self.created or self._exists():
            subprocess.run(
                ["pg_dropcluster", PG_VERSION, self.name, "--stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            self.created = False

    async def execute(self, sql: str, database: str = "postgres") -> None:
        conn = await asyncpg.connect(self.dsn(database), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


# -- Redis ---------------------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A throwaway `redis-server` (no persistence): stop, kill, start again (empty), kill its clients."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise HarnessError(f"Redis on {self.port} is already running")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, f"Redis on {self.port}")

    def ping(self) -> bool:
        client = redis_sync.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def client(self, db: int = 0) -> redis_sync.Redis:
        return redis_sync.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise HarnessError(f"Redis on {self.port} is not running")
        self.process.send_signal(sig)
        self.process.wait(10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM); with no persistence configured, the data is gone."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def client_kill(self) -> int:
        """CLIENT KILL TYPE normal: drop every client connection (but this one); the number dropped."""
        client = self.client()
        try:
            return int(client.execute_command("CLIENT", "KILL", "TYPE", "normal"))
        finally:
            client.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


# -- the mock upstream ---------------------------------------------------------------------------------------


def start_mock(config: MockConfig | None = None) -> MockServerThread:
    """The mock provider in a thread of this process, as the integration tests run it.

    MockServerThread picks its own port today; if it learns a `port=` parameter, it gets this suite's.
    """
    if "port" in inspect.signature(MockServerThread).parameters:
        mock = MockServerThread(config or MockConfig(), port=MOCK_PORT)  # type: ignore[call-arg]
    else:
        mock = MockServerThread(config or MockConfig())
    mock.start()
    return mock


# -- the gateway ---------------------------------------------------------------------------------------------


PROVIDERS = ("openai", "xai", "deepseek", "together", "anthropic")
_PROVIDER_KEY_VARIABLES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "XAI_API_KEY",
    "DEEPSEEK_API_KEY",
    "TOGETHER_API_KEY",
)


def gateway_env(database_url: str, redis_url: str | None, mock_url: str, **settings: str) -> dict[str, str]:
    """The environment of a gateway process: ours only, no stray SYNAPGATE_* or provider key of the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYNAPGATE_") and k not in _PROVIDER_KEY_VARIABLES
    }
    env.update(
        {
            "SYNAPGATE_DATABASE_URL": database_url,
            "SYNAPGATE_LOG_FORMAT": "json",
            "SYNAPGATE_LOG_LEVEL": "info",
            "SYNAPGATE_SECRET_KEY": "fault-suite-secret",
            "SYNAPGATE_KEY_CACHE_SECONDS": "0.5",
            "SYNAPGATE_UPSTREAM_RETRY_BACKOFF_SECONDS": "0.01",
            "SYNAPGATE_CIRCUIT_FAILURE_THRESHOLD": "1000",
            # Automatic tags load scikit-learn and classify each first exchange: ~2 s of CPU per gateway
            # process, a fifth of the whole suite's; no fault scenario is about them (tests/integration is).
            "SYNAPGATE_AUTO_TAGS": "false",
        }
    )
    if redis_url:
        env["SYNAPGATE_REDIS_URL"] = redis_url
    for provider in PROVIDERS:
        env[f"SYNAPGATE_{provider.upper()}_BASE_URL"] = f"{mock_url}/v1"
        env[f"SYNAPGATE_{provider.upper()}_API_KEY"] = f"sk-platform-{provider}"
    env["SYNAPGATE_GEMINI_BASE_URL"] = f"{mock_url}/v1beta"
    env["SYNAPGATE_GEMINI_API_KEY"] = "platform-gemini"
    env.update({f"SYNAPGATE_{k.upper()}": v for k, v in settings.items()})
    return env


@dataclass
class GatewayProcess:
    """`synapgate serve --port P` as a real process (its own session), its output in a log file."""

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 45) -> None:
        if self.running:
            raise HarnessError(f"the gateway on {self.port} is already running")
        wait_until(lambda: port_is_free(self.port), 10, f"port {self.port} to be free")
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1} ---\n".encode())
            self.process = subprocess.Popen(
                [str(SYNAPGATE), "serve", "--port", str(self.port)],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() reaches anything it spawned
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"the gateway on {self.port} exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError(
                    f"the gateway on {self.port} did not start in {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def sigterm(self, timeout: float = 20) -> int:
        """A graceful shutdown: SIGTERM, then wait for the exit code (in-flight requests finish first)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise HarnessError(f"the gateway on {self.port} ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        """SIGKILL the gateway's whole process group: a crash, nothing runs after it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def restart(self) -> None:
        if self.running:
            self.sigterm()
        self.start()

    def close(self) -> None:
        if self.running:
            self.kill()

    def log_lines(self) -> list[str]:
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(errors="replace").splitlines()

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines (the gateway logs JSON when not on a terminal); other lines are skipped."""
        records = []
        for line in self.log_lines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        return records

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_lines()[-lines:])


# -- load ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request of a load: the HTTP answer, or the transport error that took its place."""

    index: int
    status: int | None
    headers: dict[str, str]
    body: bytes
    error: str | None
    sent: bool  # False when the connection was refused: the gateway never saw the request
    started: float
    ended: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    @property
    def charged_nano(self) -> int | None:
        charged = self.headers.get("x-synapgate-charged-usd")
        return None if charged is None else int(Decimal(charged) * NANO)

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        if self.status is None:
            return f"#{self.index}: {self.error}"
        return f"#{self.index}: {self.status} {self.body[:300]!r}"


def chat_body(index: int, directive: str = "") -> dict[str, Any]:
    """A small chat request; `directive` steers the mock (e.g. `[mock latency_ms=200]`)."""
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"request {index} {directive}".strip()}],
        "max_tokens": 16,
    }


async def drive_load(
    base_url: str,
    key: str,
    *,
    concurrency: int,
    seconds: float | None = None,
    requests: int | None = None,
    body: Callable[[int], dict[str, Any]] = chat_body,
    request_timeout: float = 15,
    path: str = "/v1/chat/completions",
) -> list[Answer]:
    """POST `concurrency` requests at a time until `seconds` pass or `requests` were started (both bounded);
    every answer is recorded, transport errors included."""
    if seconds is None and requests is None:
        raise ValueError("a load needs a time or a request bound")
    limit = min(requests or MAX_REQUESTS, MAX_REQUESTS)
    deadline = time.monotonic() + min(seconds or MAX_SECONDS, MAX_SECONDS)
    answers: list[Answer] = []
    counter = iter(range(limit))
    headers = {"authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(
        base_url=base_url, timeout=request_timeout, limits=limits, headers=headers
    ) as client:

        async def worker() -> None:
            for index in counter:
                if time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    response = await client.post(path, json=body(index))
                except httpx.ConnectError as exc:
                    answers.append(Answer(index, None, {}, b"", repr(exc), False, started, time.monotonic()))
                    await asyncio.sleep(0.05)  # the gateway is down: do not spin
                except httpx.HTTPError as exc:
                    answers.append(Answer(index, None, {}, b"", repr(exc), True, started, time.monotonic()))
                    await asyncio.sleep(0.05)
                else:
                    answers.append(
                        Answer(
                            index,
                            response.status_code,
                            dict(response.headers),
                            response.content,
                            None,
                            True,
                            started,
                            time.monotonic(),
                        )
                    )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(answers, key=lambda a: a.index)


def statuses(answers: Iterable[Answer]) -> dict[str, int]:
    """How many answers of each status ("error" for a transport error): a readable summary for asserts."""
    summary: dict[str, int] = {}
    for answer in answers:
        label = str(answer.status) if answer.status is not None else "error"
        summary[label] = summary.get(label, 0) + 1
    return dict(sorted(summary.items()))


# -- the ledger ----------------------------------------------------------------------------------------------


@dataclass
class LedgerFacts:
    """What the database holds about usage: success rows, other rows, usage debits, accounts vs events."""

    success_charged: dict[str, int] = field(default_factory=dict)  # request_id → charged_nano
    other_rows: dict[str, str] = field(default_factory=dict)  # request_id → status (error, cancelled)
    debits: dict[str, list[int]] = field(default_factory=dict)  # request_id → amounts (negative)
    balances: dict[str, int] = field(default_factory=dict)  # user_id → credit_accounts.balance_nano
    event_sums: dict[str, int] = field(default_factory=dict)  # user_id → Σ completed billing_events

    @property
    def total_charged(self) -> int:
        return sum(self.success_charged.values())

    @property
    def total_debited(self) -> int:
        return -sum(sum(amounts) for amounts in self.debits.values())


async def read_ledger(dsn: str) -> LedgerFacts:
    facts = LedgerFacts()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for row in await conn.fetch("SELECT request_id, status, charged_nano FROM usage_logs"):
            if row["status"] == "success":
                facts.success_charged[row["request_id"]] = int(row["charged_nano"])
            else:
                facts.other_rows[row["request_id"]] = row["status"]
        for row in await conn.fetch(
            "SELECT request_id, amount_nano FROM billing_events"
            " WHERE type IN ('usage', 'fee') AND status = 'completed'"
        ):
            facts.debits.setdefault(row["request_id"], []).append(int(row["amount_nano"]))
        for row in await conn.fetch("SELECT user_id, balance_nano FROM credit_accounts"):
            facts.balances[str(row["user_id"])] = int(row["balance_nano"])
        for row in await conn.fetch(
            "SELECT user_id, SUM(amount_nano) AS total FROM billing_events"
            " WHERE status = 'completed' GROUP BY user_id"
        ):
            facts.event_sums[str(row["user_id"])] = int(row["total"])
    finally:
        await conn.close()
    return facts


def book_problems(facts: LedgerFacts) -> list[str]:
    """Disagreements inside the books: one debit per call, Σ charged = Σ debits, balance = Σ ledger."""
    problems: list[str] = []
    for rid, amounts in facts.debits.items():
        if len(amounts) != 1:
            problems.append(f"{rid}: {len(amounts)} debits {amounts}")
        if rid not in facts.success_charged:
            problems.append(f"{rid}: debited {amounts} without a success row")
    for rid, charged in facts.success_charged.items():
        if charged and facts.debits.get(rid) != [-charged]:
            problems.append(f"{rid}: charged {charged} but debited {facts.debits.get(rid)}")
    if facts.total_charged != facts.total_debited:
        problems.append(f"Σ charged {facts.total_charged} != Σ debits {facts.total_debited}")
    for user, balance in facts.balances.items():
        if facts.event_sums.get(user, 0) != balance:
            problems.append(f"user {user}: balance {balance} != Σ ledger {facts.event_sums.get(user, 0)}")
    return problems


def answer_problems(answers: Iterable[Answer], facts: LedgerFacts, *, every_row_answered: bool) -> list[str]:
    """Answers that disagree with the ledger: a 2xx must have its success row and debit, equal to the charge
    it announced; a non-2xx must have neither. With `every_row_answered`, a success row that no 2xx accounts
    for is a problem too (a graceful shutdown must not record a call and drop its answer; a crash may)."""
    problems: list[str] = []
    answered: set[str] = set()
    for answer in answers:
        rid = answer.request_id
        if answer.ok:
            if rid is None:
                problems.append(f"{answer.describe()}: a 2xx without x-request-id")
                continue
            answered.add(rid)
            if rid not in facts.success_charged:
                problems.append(f"{answer.describe()}: 2xx {rid} has no success usage_logs row")
            elif answer.charged_nano is not None and answer.charged_nano != facts.success_charged[rid]:
                problems.append(
                    f"2xx {rid}: announced {answer.charged_nano} nano, recorded {facts.success_charged[rid]}"
                )
        elif rid is not None:
            if rid in facts.success_charged:
                problems.append(f"{answer.describe()}: non-2xx {rid} has a success row")
            if facts.debits.get(rid):
                problems.append(f"{answer.describe()}: non-2xx {rid} was debited {facts.debits[rid]}")
    if every_row_answered:
        unanswered = sorted(set(facts.success_charged) - answered)
        if unanswered:
            problems.append(f"{len(unanswered)} success rows without a 2xx answer, e.g. {unanswered[:3]}")
    return problems


def ledger_problems(answers: Iterable[Answer], facts: LedgerFacts, *, every_row_answered: bool) -> list[str]:
    """Every disagreement between the answers and the ledger, and inside the ledger (empty when all agree)."""
    return answer_problems(answers, facts, every_row_answered=every_row_answered) + book_problems(facts)


@dataclass(frozen=True)
class Reconcile:
    """`synapgate ledger reconcile`, parsed."""

    exit_code: int
    report: dict[str, Any]

    @property
    def mismatches(self) -> list[dict[str, Any]]:
        return list(self.report.get("mismatches", []))


def reconcile(env: dict[str, str], *, fix: bool = False, timeout: float = 60) -> Reconcile:
    """Run the real `synapgate ledger reconcile` against a gateway's database and Redis."""
    argv = [str(SYNAPGATE), "ledger", "reconcile", *(["--fix"] if fix else [])]
    done = subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise HarnessError(
            f"reconcile printed no JSON ({done.returncode}): {done.stdout} {done.stderr}"
        ) from None
    return Reconcile(done.returncode, report)


@contextlib.contextmanager
def closing_all(*closers: Callable[[], Any]) -> Iterator[None]:
    """Run every closer on exit, even if one of them fails."""
    try:
        yield
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                close()
