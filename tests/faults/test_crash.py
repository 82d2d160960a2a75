"""kill -9 of a gateway with requests in flight, then a restart: the ledger stays exact; the reservations the
dead instance held must be freed within 60 s (issue 10: today they are held for the 600 s TTL)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultStack, _off_loop
from tests.faults.harness import (
    Answer,
    GatewayProcess,
    LedgerFacts,
    chat_body,
    drive_load,
    ledger_problems,
    read_ledger,
    statuses,
)

# gpt-4o-mini output is $0.60 / 1M tokens: a request allowed 10,000 output tokens reserves ~$0.006.
BIG_MAX_TOKENS = 10_000
CREDIT_USD = "0.02"  # three big reservations hold $0.018 of it: a fourth cannot be reserved
HOLDERS = 3


def big_body(index: int, latency_ms: int = 0) -> dict[str, Any]:
    body = chat_body(index, f"[mock latency_ms={latency_ms}]" if latency_ms else "")
    body["max_tokens"] = BIG_MAX_TOKENS
    return body


@dataclass
class Crash:
    stack: FaultStack
    gateway: GatewayProcess
    key: str
    killed_at: float
    answers: list[Answer]
    first_probe: Answer
    recovery: list[Answer]
    facts: LedgerFacts


def probe(crash_gateway: GatewayProcess, key: str) -> Answer:
    """One request that needs a big reservation: 402 while the dead instance's reservations are held."""
    started = time.monotonic()
    response = httpx.post(
        f"{crash_gateway.v1}/chat/completions",
        json=big_body(0),
        headers={"authorization": f"Bearer {key}"},
        timeout=15,
    )
    return Answer(
        0,
        response.status_code,
        dict(response.headers),
        response.content,
        None,
        True,
        started,
        time.monotonic(),
    )


@pytest.fixture(scope="session")
def crash(session_stack: FaultStack) -> Crash:
    """Staged first in the session: big requests hang upstream, quick ones flow; kill -9; restart."""
    stack = session_stack

    async def scenario() -> Crash:
        _user, key = await stack.seed_user(CREDIT_USD)
        gateway = stack.gateway()
        warm = await drive_load(
            gateway.url, key, concurrency=1, requests=1
        )  # a cold process is slow at first
        assert warm[0].ok, warm[0].describe()

        async def kill_soon() -> float:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(gateway.kill)
            return time.monotonic()

        holders, quick, killed_at = await asyncio.gather(
            drive_load(
                gateway.url, key, concurrency=HOLDERS, requests=HOLDERS, body=lambda i: big_body(i, 5000)
            ),
            drive_load(gateway.url, key, concurrency=3, seconds=1.5, body=lambda i: chat_body(i + 100)),
            kill_soon(),
        )
        await asyncio.to_thread(gateway.start)  # the restart after the crash
        first_probe = await asyncio.to_thread(probe, gateway, key)
        recovery = await drive_load(gateway.url, key, concurrency=4, requests=8)
        facts = await read_ledger(stack.dsn)
        return Crash(stack, gateway, key, killed_at, holders + quick, first_probe, recovery, facts)

    return _off_loop(asyncio.run, scenario())


def test_kill9_and_restart_the_ledger_stays_exact(crash: Crash) -> None:
    assert any(a.ok for a in crash.answers), [a.describe() for a in crash.answers[:3]]  # served before
    assert any(a.status is None for a in crash.answers)  # ... and some were cut by the crash
    assert statuses(crash.recovery) == {"200": 8}  # the restarted gateway serves at once
    assert ledger_problems(crash.answers + crash.recovery, crash.facts, every_row_answered=False) == []
    report = _off_loop(asyncio.run, crash.stack.reconcile_here())
    assert report["mismatches"] == [], report


@pytest.mark.xfail(
    strict=True, reason="issue 10: a killed instance's reservations stay held for the reservation TTL (600 s)"
)
def test_reservations_of_a_killed_instance_are_freed_within_60_s(crash: Crash) -> None:
    assert crash.first_probe.status in (200, 402), crash.first_probe.describe()
    answer = crash.first_probe
    while not answer.ok and time.monotonic() < crash.killed_at + 60:
        time.sleep(1)
        answer = probe(crash.gateway, crash.key)
    assert answer.ok, f"still refused 60 s after the crash: {answer.describe()}"
