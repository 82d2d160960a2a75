"""Serving through a PostgreSQL outage with the durable local spool (SYNAPGATE_SPOOL_DIR, Redis ledger).

A real throwaway PostgreSQL cluster is stopped under concurrent load: the gateway keeps answering 2xx (records
spooled, fsynced, settled in Redis), never 500; when PostgreSQL is back the spool replays by itself, and then
every 2xx has exactly one usage_log and its debit, Σ charged = Σ debited, and `ledger reconcile` is clean
without --fix. Then kill -9 of a gateway with a non-empty spool: its restart replays it, once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storage.usage.spool import spool_status
from tests.faults.conftest import FaultStack, _off_loop
from tests.faults.harness import (
    Answer,
    GatewayProcess,
    LedgerFacts,
    drive_load,
    ledger_problems,
    statuses,
    wait_until,
)
from tests.faults.scenario import Outcome, slow_body
from tests.faults.test_outages import _not_503_with_retry_after, finish_for_user, run_outage


def _spool_settings(directory: Path, instance: str) -> dict[str, str]:
    return {"spool_dir": str(directory), "spool_instance": instance, "spool_replay_seconds": "0.5"}


def _drained(directory: Path) -> bool:
    return spool_status(directory).pending_records == 0


def _every_third_streamed(index: int) -> dict[str, Any]:
    body = slow_body(20)(index)
    return {**body, "stream": True} if index % 3 == 0 else body


def _log_messages(gateway: GatewayProcess) -> list[str]:
    return [str(record.get("msg", "")) for record in gateway.log_records()]


# -- PostgreSQL stopped for ~6 s under 8-way load ----------------------------------------------------------


@dataclass
class Served:
    outcome: Outcome
    spool_dir: Path


@pytest.fixture(scope="module")
def served_through(module_stack: FaultStack) -> Served:
    directory = module_stack.tmp_path / "spool-outage"
    outcome = run_outage(
        module_stack,
        module_stack.pg.stop,
        module_stack.pg.start,
        begin_at=0.6,
        end_at=6.5,  # longer than the catalog's 5 s check: the cached catalog stands during the outage
        seconds=7.5,
        concurrency=8,
        gateway_settings=_spool_settings(directory, "outage"),
        drained=lambda: _drained(directory),
    )
    return Served(outcome, directory)


def test_postgres_outage_with_a_spool_is_served_not_refused(served_through: Served) -> None:
    outcome = served_through.outcome
    during = outcome.during_fault()
    assert [a.status for a in outcome.all_answers if a.status == 500] == []
    # nothing refused: the answers while PostgreSQL was down were served from the spool ...
    assert all(a.ok for a in outcome.all_answers), statuses(outcome.all_answers)
    assert _not_503_with_retry_after(outcome.all_answers) == []
    # ... and many of them (not only the few in flight when it stopped): the replays say how many
    replayed = [
        r.get("replayed", 0) for r in outcome.gateway.log_records() if r.get("msg", "").startswith("spool")
    ]
    assert sum(replayed) >= 20, (replayed, statuses(during))
    assert outcome.recovered_after is not None and outcome.gateway.running


def test_postgres_outage_with_a_spool_replays_and_the_ledger_is_exact(
    served_through: Served, module_stack: FaultStack
) -> None:
    outcome = served_through.outcome
    assert _drained(served_through.spool_dir), spool_status(served_through.spool_dir)
    # every 2xx: exactly one success row and its debit, as announced; every success row answered; Σ = Σ
    assert ledger_problems(outcome.all_answers, outcome.facts, every_row_answered=True) == []
    assert len(outcome.facts.success_charged) == sum(1 for a in outcome.all_answers if a.ok)
    report = _off_loop(asyncio.run, module_stack.reconcile_here(spool_dir=served_through.spool_dir))
    assert report["mismatches"] == [], report
    assert "spool_dead_letters" not in report and "spool_pending_records" not in report, report


def test_postgres_outage_with_a_spool_logs_state_changes_and_replays_not_tracebacks(
    served_through: Served,
) -> None:
    gateway = served_through.outcome.gateway
    lines = gateway.log_lines()
    offending = [line for line in lines if len(line) > 2000 or line.startswith("Traceback")]
    assert not offending, "\n".join(line[:4000] for line in offending)  # whole, to tell what raised
    messages = _log_messages(gateway)
    replays = [m for m in messages if m.startswith("spool replayed")]
    assert replays, messages[-20:]
    assert len([m for m in messages if m.startswith("database unreachable")]) <= 2, (
        messages
    )  # once per outage
    assert len(replays) <= 4, replays  # one line per replay, not per record


# -- PostgreSQL killed with SIGKILL under load: commits in flight have an unknown outcome ------------------


@pytest.fixture(scope="module")
def postgres_killed_with_spool(module_stack: FaultStack) -> Served:
    directory = module_stack.tmp_path / "spool-pg-killed"
    outcome = run_outage(
        module_stack,
        module_stack.pg.kill,
        module_stack.pg.start,
        begin_at=0.6,
        end_at=1.6,
        seconds=2.6,
        concurrency=8,
        latency_ms=10,
        gateway_settings=_spool_settings(directory, "pg-killed"),
        drained=lambda: _drained(directory),
    )
    return Served(outcome, directory)


def test_postgres_killed_with_a_spool_every_answer_is_recorded_exactly_once(
    postgres_killed_with_spool: Served, module_stack: FaultStack
) -> None:
    """A commit cut by the crash may or may not survive PostgreSQL's recovery: its answer was spooled (the
    database could not be asked), and the replay skips it if it survived: every 2xx has exactly one row."""
    outcome = postgres_killed_with_spool.outcome
    assert all(a.ok for a in outcome.all_answers), statuses(outcome.all_answers)
    assert ledger_problems(outcome.all_answers, outcome.facts, every_row_answered=True) == []
    report = _off_loop(
        asyncio.run, module_stack.reconcile_here(spool_dir=postgres_killed_with_spool.spool_dir)
    )
    assert report["mismatches"] == [], report
    assert "spool_pending_records" not in report and "spool_dead_letters" not in report, report


# -- kill -9 with a non-empty spool, then a restart ------------------------------------------------------


@dataclass
class Crashed:
    answers: list[Answer]
    pending_at_crash: int
    facts: LedgerFacts
    gateway: GatewayProcess
    spool_dir: Path
    user: uuid.UUID


@pytest.fixture(scope="module")
def crashed_with_spool(module_stack: FaultStack) -> Crashed:
    stack = module_stack
    directory = stack.tmp_path / "spool-crash"

    async def scenario() -> Crashed:
        user, key = await stack.seed_user("10")
        gateway = stack.gateway(**_spool_settings(directory, "crash"))
        answers = await drive_load(gateway.url, key, concurrency=2, requests=4)  # warm: snapshot in Redis
        await asyncio.to_thread(stack.pg.stop)
        answers += await drive_load(gateway.url, key, concurrency=4, requests=24, body=_every_third_streamed)
        pending = spool_status(directory).pending_records
        await asyncio.to_thread(gateway.kill)  # a crash: the spool is all that holds these records
        await asyncio.to_thread(stack.pg.start)
        await asyncio.to_thread(gateway.start)  # the same instance name: it replays at start-up
        await asyncio.to_thread(wait_until, lambda: _drained(directory), 30, "the spool to be replayed")
        answers += await drive_load(gateway.url, key, concurrency=2, requests=4)
        outcome = await finish_for_user(Outcome(gateway, answers), stack.dsn, user)
        return Crashed(answers, pending, outcome.facts, gateway, directory, user)

    return _off_loop(asyncio.run, scenario())


def test_kill9_with_a_non_empty_spool_is_replayed_once_on_restart(
    crashed_with_spool: Crashed, module_stack: FaultStack
) -> None:
    crashed = crashed_with_spool
    assert statuses(crashed.answers) == {"200": 32}, statuses(crashed.answers)  # served through the outage
    assert crashed.pending_at_crash == 24  # all in the spool when the process died
    streamed = [
        a for a in crashed.answers if a.headers.get("content-type", "").startswith("text/event-stream")
    ]
    assert len(streamed) == 8  # [DONE] only after the fsync: the spooled stream ended as a success
    assert all(a.body.rstrip().endswith(b"data: [DONE]") for a in streamed), [a.body[-200:] for a in streamed]
    assert ledger_problems(crashed.answers, crashed.facts, every_row_answered=True) == []
    report = _off_loop(asyncio.run, module_stack.reconcile_here(spool_dir=crashed.spool_dir))
    assert report["mismatches"] == [], report
    after_restart = crashed.gateway.log_lines()
    start = max(i for i, line in enumerate(after_restart) if line.startswith("--- start #2"))
    replays = [
        json.loads(line)
        for line in after_restart[start:]
        if line.startswith("{") and "spool replayed" in line
    ]
    assert len(replays) == 1 and replays[0].get("replayed") == 24, replays
