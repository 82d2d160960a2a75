#!/usr/bin/env python3
"""The memory of a request-serving worker (issue 15: "RSS per worker ≤ 150 MB"), measured on the real gateway.

    .venv/bin/python bench/rss.py [--requests 300] [--workers 1] [--models gpt-4o-mini,gpt-4-turbo]
        [--soak-seconds 300] [--source CHECKOUT] [--redis-db 7] [--db-prefix sgrss_] [--ports 28400-28499]

What it does (every process it starts is stopped at the end, its database dropped):
  1. starts the mock upstream, creates a fresh PostgreSQL database (migrated) with a user, credit and a key,
     and starts `synapgate serve --workers N` on it with the Redis ledger and automatic tagging on;
  2. sends `--requests` chat requests (8 at a time): most open a conversation of their own (a first exchange,
     which is queued for automatic tagging), every fourth continues one (two user turns: not tagged), cycling
     over `--models`; then rates five answers with a comment (feedback sentiment);
  3. waits until the automatic tags stop changing, and prints, for every process of the gateway's tree, its
     VmRSS and VmHWM (peak) at start and after the traffic, whether scikit-learn, SciPy or NumPy is mapped in
     it (/proc/<pid>/maps), and the tags and sentiments written;
  4. with `--soak-seconds N`: N seconds of constant load (8 at a time, each request a new conversation), the
     serving workers' RSS sampled every tenth of it;
  5. prints the RSS by import in a fresh interpreter (the app; each tiktoken encoding; the offline models).

`--source` measures another checkout (e.g. `git archive main | tar -x -C /tmp/main`) with this venv.
Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness

TASKS = (
    "Write a Python function that parses a CSV file and raises a ValueError on a bad row",
    "Translate this paragraph into Portuguese: the meeting moved to Thursday afternoon",
    "Summarize the main points of this quarterly report in three bullet points",
    "Solve for x: 3x + 7 = 22, and show each step",
    "Write a short poem about the sea at night",
    "My order arrived damaged, how do I get a refund from your store?",
    "What are the symptoms of iron deficiency and when should I see a doctor?",
    "Draft a polite email to a client asking them to pay an overdue invoice",
    "Explain how photosynthesis works to a ten-year-old student",
    "Compute the average and median of these sales figures and plot a trend",
    "Is a verbal agreement legally binding for renting an apartment?",
    "Escreva uma função em JavaScript que ordena uma lista de objetos por data",
)
COMMENTS = (
    "Terrible answer, completely wrong and useless. Very disappointed.",
    "Excelente resposta, muito obrigado! Perfeito.",
    "It was ok, nothing special.",
    "Great, exactly what I needed, thanks!",
    "Não ajudou em nada, resposta errada.",
)
HEAVY = ("sklearn", "scipy", "numpy")


def status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def mapped_heavy(pid: int) -> list[str]:
    """Which of scikit-learn, SciPy, NumPy have a file mapped in the process (their compiled modules)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ["?"]
    return [name for name in HEAVY if f"/{name}/" in maps or f"/{name}.libs/" in maps]


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"
    return raw.replace(sys.executable, "python")[:90]


def describe(proc: harness.Proc, port: int) -> list[dict[str, Any]]:
    """Every process of the gateway's tree: pid, role, command, memory, heavy libraries mapped."""
    serving = set(harness._pids_holding(harness._listen_inodes(port), harness._tree(proc.pid)))
    workers = {harness.listener_pid(proc, port)} | {
        p for p in serving if not any(c in serving for c in harness._children(p))
    }
    rows = []
    for pid in harness._tree(proc.pid):
        role = "serving worker" if pid in workers else ("supervisor" if pid in serving else "other")
        rows.append(
            {"pid": pid, "role": role, "cmd": cmdline(pid), **status(pid), "heavy": mapped_heavy(pid)}
        )
    return rows


def print_tree(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"  {'pid':>7}  {'role':<15} {'VmRSS MB':>9} {'VmHWM MB':>9}  heavy libs mapped  command")
    for r in rows:
        heavy = ",".join(r["heavy"]) or "none"
        print(
            f"  {r['pid']:>7}  {r['role']:<15} {r.get('VmRSS', 0):>9.1f} {r.get('VmHWM', 0):>9.1f}  "
            f"{heavy:<17}  {r['cmd']}"
        )


async def drive(url: str, key: str, n: int, models: list[str], run_id: str) -> tuple[int, list[str], int]:
    """Send n chat requests, 8 at a time; (errors, message ids, first exchanges sent)."""
    import httpx

    errors, messages, firsts = 0, [], 0
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(i: int) -> None:
            nonlocal errors, firsts
            text = f"{TASKS[i % len(TASKS)]} (run {run_id}, request {i}) [mock completion_tokens=8]"
            turns: list[dict[str, str]] = [{"role": "user", "content": text}]
            if i % 4 == 3:  # a continued conversation: not a first exchange, so not tagged
                turns += [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "More."}]
            else:
                firsts += 1
            async with sem:
                r = await client.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"model": models[i % len(models)], "messages": turns, "max_tokens": 16},
                )
            if r.status_code != 200:
                errors += 1
            else:
                messages.append(r.headers["x-synapgate-message-id"])

        await asyncio.gather(*(one(i) for i in range(n)))
    return errors, messages, firsts


async def soak(url: str, key: str, seconds: float, models: list[str], pids: list[int]) -> list[str]:
    """Constant load (8 at a time, every request a new conversation, so tagging keeps working) for `seconds`;
    the serving workers' RSS every tenth of it."""
    import httpx

    samples: list[str] = []
    stop = time.monotonic() + seconds
    sent = errors = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def loop(worker: int) -> None:
            nonlocal sent, errors
            while time.monotonic() < stop:
                text = f"{TASKS[sent % len(TASKS)]} (soak {worker}-{sent}) [mock completion_tokens=8]"
                sent += 1
                r = await client.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "model": models[sent % len(models)],
                        "messages": [{"role": "user", "content": text}],
                    },
                )
                errors += r.status_code != 200

        async def sample() -> None:
            for i in range(11):
                rss = " / ".join(f"{status(p).get('VmRSS', 0):.1f}" for p in pids)
                samples.append(
                    f"  t={i * seconds / 10:6.0f} s  sent {sent:6d}  errors {errors}  RSS MB {rss}"
                )
                if i < 10:
                    await asyncio.sleep(seconds / 10)

        await asyncio.gather(sample(), *(loop(w) for w in range(8)))
    return samples


async def rate(url: str, key: str, messages: list[str]) -> list[tuple[int, str | None]]:
    import httpx

    out = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for message, comment in zip(messages, COMMENTS, strict=False):
            r = await client.post(
                f"/api/v1/messages/{message}/feedback",
                headers={"Authorization": f"Bearer {key}"},
                json={"rating": "up", "comment": comment},
            )
            out.append((r.status_code, r.json().get("sentiment") if r.status_code < 300 else r.text[:120]))
    return out


def wait_for_tags(db: str, limit: float = 180.0, quiet: float = 6.0) -> int:
    """The number of automatic tags once it has not changed for `quiet` seconds (or after `limit`)."""
    last, since, start = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit:
        n = int(harness.sql(db, "SELECT count(*) FROM tags WHERE is_auto"))
        if n != last:
            last, since = n, time.monotonic()
        elif n > 0 and time.monotonic() - since >= quiet:
            break
        time.sleep(1)
    return last


BREAKDOWN = r"""
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
steps = []
def step(name):
    steps.append((name, rss()))
step("interpreter")
import gateway.app
step("import gateway.app (the app and its dependencies)")
from pricing.tokens import counter_for_encoding
counter_for_encoding("o200k_base").count("hello world")
step("tiktoken o200k_base (gpt-4o family)")
counter_for_encoding("cl100k_base").count("hello world")
step("tiktoken cl100k_base (other models)")
print("serving-side modules: " + ",".join(m for m in ("sklearn", "scipy", "numpy") if m in sys.modules))
from insights.tagging import default_tagger
from insights.sentiment import sentiment
default_tagger().tag(["write a python function"]); sentiment("great, thanks")
step("offline tagging + sentiment models (scikit-learn)")
prev = 0.0
for name, value in steps:
    print(f"  {value:8.1f} MB  {value - prev:+8.1f}  {name}")
    prev = value
"""


def breakdown(env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", BREAKDOWN],
        env={**env, "PYTHONPATH": str(harness.SOURCE)},
        cwd=harness.SOURCE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.stdout + (proc.stderr[-2000:] if proc.returncode else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/rss.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300, help="chat requests to send (default 300)")
    p.add_argument("--workers", type=int, default=1, help="`serve --workers N` (default 1)")
    p.add_argument("--models", default="gpt-4o-mini", help="comma-separated catalog models, used in turn")
    p.add_argument("--source", type=Path, default=None, help="the checkout to measure (default: this one)")
    p.add_argument("--redis-db", type=int, default=7)
    p.add_argument("--db-prefix", default="sgrss_")
    p.add_argument("--ports", default="28400-28499", metavar="LO-HI")
    p.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--no-breakdown", action="store_true", help="skip the by-import breakdown")
    p.add_argument("--soak-seconds", type=float, default=0, help="then constant load this long, RSS sampled")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.SOURCE = (args.source or harness.REPO).resolve()
    harness.REDIS_DB = args.redis_db
    harness.REDIS_URL = f"redis://127.0.0.1:6379/{args.redis_db}"
    lo, hi = (int(x) for x in args.ports.split("-"))
    harness.PORTS[:] = list(range(lo, hi + 1))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    run_id = f"{os.getpid()}-{int(time.time())}"
    logs = Path(tempfile.mkdtemp(prefix="sgrss-bench-"))
    procs: list[harness.Proc] = []
    db = f"{args.db_prefix}bench_{os.getpid()}"
    print(f"source {harness.SOURCE} ({harness.source_fingerprint()}); logs in {logs}")
    try:
        mock_port = harness.free_port()
        mock = harness.Proc(
            "mock",
            [
                sys.executable,
                "-m",
                "devtools.mock_upstream",
                "--host",
                harness.HOST,
                "--port",
                str(mock_port),
            ],
            harness.clean_env(),
            logs / "mock.log",
        )
        procs.append(mock)
        harness.wait_http(f"http://{harness.HOST}:{mock_port}/health", mock, 60)
        harness.sql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', fetch="exec")
        harness.sql("postgres", f'CREATE DATABASE "{db}"', fetch="exec")
        harness.redis_flush()  # our own Redis db only
        env = harness.clean_env(
            SYNAPGATE_DATABASE_URL=harness.pg_dsn(db),
            SYNAPGATE_REDIS_URL=harness.REDIS_URL,
            SYNAPGATE_OPENAI_BASE_URL=f"http://{harness.HOST}:{mock_port}/v1",
            SYNAPGATE_OPENAI_API_KEY="sk-bench-upstream",
            SYNAPGATE_LOG_LEVEL="warning",
            SYNAPGATE_AUTO_TAGS="true",
            SYNAPGATE_STORE_MESSAGE_CONTENT="false",
            TIKTOKEN_CACHE_DIR=harness.tiktoken_dir(),
        )
        env.update(dict(kv.split("=", 1) for kv in args.gateway_env))
        harness.cli_json(["migrate"], env)
        user = harness.cli_json(
            ["users", "create", "--email", f"rss-{run_id}@example.com", "--credits-usd", "1000"], env
        )
        key = harness.cli_json(["keys", "create", "--user", user["user_id"], "--name", "rss"], env)["key"]
        port = harness.free_port()
        gw = harness.Proc(
            "gateway",
            [
                *harness.SYNAPGATE,
                "serve",
                "--host",
                harness.HOST,
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            env,
            logs / "gateway.log",
        )
        procs.append(gw)
        url = f"http://{harness.HOST}:{port}"
        harness.wait_http(f"{url}/ready", gw, 120)
        time.sleep(2)  # let the workers finish starting (and a tagger process load its models)
        print_tree("at start (ready, no request yet):", describe(gw, port))

        t0 = time.monotonic()
        errors, messages, firsts = asyncio.run(drive(url, key, args.requests, models, run_id))
        sent_s = time.monotonic() - t0
        ratings = asyncio.run(rate(url, key, messages))
        tags = wait_for_tags(db)
        conversations = int(harness.sql(db, "SELECT count(DISTINCT conversation_id) FROM messages"))
        tagged = int(harness.sql(db, "SELECT count(DISTINCT target_id) FROM tags WHERE is_auto"))
        with_sentiment = int(
            harness.sql(db, "SELECT count(*) FROM message_feedback WHERE sentiment IS NOT NULL")
        )
        print(
            f"\ntraffic: {args.requests} chat requests ({firsts} first exchanges) in {sent_s:.1f} s over "
            f"{', '.join(models)}, {errors} errors; {conversations} conversations, {tagged} tagged "
            f"automatically ({tags} tags); feedback {[r[0] for r in ratings]} sentiments "
            f"{[r[1] for r in ratings]} ({with_sentiment} stored with a sentiment)"
        )
        print_tree("after the traffic and the tagging:", describe(gw, port))
        if args.soak_seconds > 0:
            workers = [r["pid"] for r in describe(gw, port) if r["role"] == "serving worker"]
            print(f"\nsoak: {args.soak_seconds:.0f} s of constant load, serving workers {workers}:")
            print("\n".join(asyncio.run(soak(url, key, args.soak_seconds, models, workers))))
            print_tree("after the soak:", describe(gw, port))
        log_tail = [
            ln for ln in (logs / "gateway.log").read_text(errors="replace").splitlines() if ln.strip()
        ]
        print(f"\ngateway log: {len(log_tail)} lines" + ("; last: " + log_tail[-1][:300] if log_tail else ""))
        if not args.no_breakdown:
            print("\nRSS by import (a fresh interpreter, this checkout):")
            print(breakdown(env))
        print(json.dumps({"errors": errors, "tagged": tagged, "sentiments": with_sentiment}))
        return 0 if errors == 0 else 1
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                proc.stop()
        with contextlib.suppress(Exception):
            harness.sql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', fetch="exec")
        with contextlib.suppress(Exception):
            harness.redis_flush()


if __name__ == "__main__":
    sys.exit(main())
