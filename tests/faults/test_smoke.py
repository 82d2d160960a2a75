"""The harness itself: a gateway process on the throwaway servers answers, and the ledger checks see it."""

from __future__ import annotations

from tests.faults.conftest import FaultStack
from tests.faults.harness import drive_load, ledger_problems, read_ledger, reconcile, statuses


async def test_a_gateway_process_on_throwaway_servers_answers_and_the_ledger_agrees(stack: FaultStack) -> None:
    _user, key = await stack.seed_user("1")
    gateway = stack.gateway()
    answers = await drive_load(gateway.url, key, concurrency=4, requests=12)
    assert statuses(answers) == {"200": 12}
    facts = await read_ledger(stack.dsn)
    assert len(facts.success_charged) == 12
    assert facts.total_charged > 0
    assert ledger_problems(answers, facts, every_row_answered=True) == []
    result = reconcile(stack.env())
    assert (result.exit_code, result.mismatches) == (0, [])
