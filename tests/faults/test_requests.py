"""One gateway process on throwaway servers: it answers and the ledger agrees; hostile bodies; SIGTERM under
load (last: it stops the gateway)."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.faults.conftest import FaultStack, _off_loop
from tests.faults.harness import (
    GatewayProcess,
    drive_load,
    ledger_problems,
    read_ledger,
    reconcile,
    statuses,
)
from tests.faults.scenario import slow_body


@dataclass
class Served:
    stack: FaultStack
    gateway: GatewayProcess
    key: str


@pytest.fixture(scope="module")
def served(module_stack: FaultStack) -> Served:
    _user, key = _off_loop(asyncio.run, module_stack.seed_user("5"))
    return Served(module_stack, module_stack.gateway(), key)


async def test_a_gateway_process_answers_and_every_answer_agrees_with_the_ledger(served: Served) -> None:
    answers = await drive_load(served.gateway.url, served.key, concurrency=4, requests=12)
    assert statuses(answers) == {"200": 12}
    facts = await read_ledger(served.stack.dsn)
    assert len(facts.success_charged) == 12
    assert facts.total_charged > 0
    assert ledger_problems(answers, facts, every_row_answered=True) == []
    assert any('"msg"' in line for line in served.gateway.log_lines())  # the log file is readable JSON lines
    result = reconcile(served.stack.env())
    assert (result.exit_code, result.mismatches, result.report["users"]) == (0, [], 1)


def _post(served: Served, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{served.gateway.v1}/chat/completions",
        content=content,
        headers={"authorization": f"Bearer {served.key}", "content-type": "application/json"},
        timeout=10,
    )


def test_an_absurd_max_tokens_is_a_400(served: Served) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10'
    body += b"0" * 11 + b"}"
    answer = _post(served, body)
    assert answer.status_code == 400, answer.text
    assert "max_tokens" in answer.text


def test_a_body_nested_10000_deep_is_a_400(served: Served) -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    answer = _post(served, b'{"model": "gpt-4o-mini", "messages": ' + deep + b"}")
    assert answer.status_code == 400, answer.text[:300]


def test_a_body_that_is_not_utf8_is_a_400(served: Served) -> None:
    answer = _post(served, b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "caf\xe9"}]}')
    assert answer.status_code == 400, answer.text[:300]
    assert "UTF-8" in answer.text


async def test_sigterm_under_load_answers_every_request_it_took_and_records_each(served: Served) -> None:
    """Graceful shutdown: requests in flight finish, each 2xx is recorded, no record loses its answer."""
    before = await read_ledger(served.stack.dsn)

    signalled = []

    async def terminate() -> int:
        await asyncio.sleep(0.8)
        signalled.append(time.monotonic())
        return await asyncio.to_thread(served.gateway.sigterm)

    answers, exit_code = await asyncio.gather(
        drive_load(served.gateway.url, served.key, concurrency=8, seconds=1.6, body=slow_body(300)),
        terminate(),
    )
    assert exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it handled, once it is done
    in_flight = [a for a in answers if a.started < signalled[0] - 0.05]
    assert in_flight and all(a.ok for a in in_flight), statuses(in_flight)  # taken before SIGTERM: answered
    assert not served.gateway.running
    served_ok = [a for a in answers if a.ok]
    assert len(served_ok) >= 8, statuses(answers)
    assert all(a.status is None or a.ok for a in answers), statuses(answers)  # refused later, never failed
    facts = await read_ledger(served.stack.dsn)
    new_rows = set(facts.success_charged) - set(before.success_charged)
    assert new_rows == {a.request_id for a in served_ok}
    assert ledger_problems(answers, facts, every_row_answered=False) == []
