"""Scenarios shared by several tests: a load through a gateway while something breaks, run once per module."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.faults.harness import (
    Answer,
    GatewayProcess,
    LedgerFacts,
    chat_body,
    drive_load,
    read_ledger,
)


@dataclass
class Outcome:
    """What a scenario produced: the answers under fault, the answers after it, and the ledger at the end."""

    gateway: GatewayProcess
    answers: list[Answer]
    recovery: list[Answer] = field(default_factory=list)
    recovered_after: float | None = None  # seconds from the end of the fault to the first 2xx
    facts: LedgerFacts = field(default_factory=LedgerFacts)
    fault_window: tuple[float, float] = (0.0, 0.0)  # monotonic start and end of the fault

    @property
    def all_answers(self) -> list[Answer]:
        return self.answers + self.recovery

    def during_fault(self) -> list[Answer]:
        start, end = self.fault_window
        return [a for a in self.answers if a.ended >= start and a.started <= end]


def slow_body(latency_ms: int) -> Callable[[int], dict[str, Any]]:
    return lambda index: chat_body(index, f"[mock latency_ms={latency_ms}]")


async def load_with_fault(
    gateway: GatewayProcess,
    key: str,
    *,
    begin: Callable[[], Any],
    end: Callable[[], Any] | None,
    begin_at: float,
    end_at: float,
    seconds: float,
    concurrency: int = 4,
    latency_ms: int = 50,
) -> tuple[list[Answer], tuple[float, float]]:
    """Drive a load for `seconds`; call `begin` (in a thread) at `begin_at` s and `end` at `end_at` s.

    A fresh gateway process is slow on its first requests (pools, encodings, catalog): they go first, so
    that the fault meets a warm gateway."""
    warm = await drive_load(gateway.url, key, concurrency=2, requests=2)
    assert all(a.ok for a in warm), [a.describe() for a in warm]
    window = [0.0, 0.0]

    async def inject() -> None:
        await asyncio.sleep(begin_at)
        window[0] = time.monotonic()
        await asyncio.to_thread(begin)
        await asyncio.sleep(max(0.0, end_at - begin_at))
        if end is not None:
            await asyncio.to_thread(end)
        window[1] = time.monotonic()

    answers, _ = await asyncio.gather(
        drive_load(gateway.url, key, concurrency=concurrency, seconds=seconds, body=slow_body(latency_ms)),
        inject(),
    )
    return warm + answers, (window[0], window[1])


async def recover(
    gateway: GatewayProcess, key: str, *, within: float = 20, then: int = 6
) -> tuple[list[Answer], float | None]:
    """After a fault: poll until a request succeeds (at most `within` s), then send `then` more."""
    started = time.monotonic()
    answers: list[Answer] = []
    while time.monotonic() - started < within:
        batch = await drive_load(gateway.url, key, concurrency=1, requests=1)
        answers += batch
        if batch[0].ok:
            break
        await asyncio.sleep(0.2)
    else:
        return answers, None
    recovered_after = time.monotonic() - started
    answers += await drive_load(gateway.url, key, concurrency=4, requests=then)
    return answers, recovered_after


async def finish(outcome: Outcome, dsn: str) -> Outcome:
    outcome.facts = await read_ledger(dsn)
    return outcome
