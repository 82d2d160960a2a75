"""Two gateway processes share one user's credit (one Redis, one database): nobody overspends, books agree."""

from __future__ import annotations

import asyncio

from pricing.money import parse_usd
from tests.faults.conftest import FaultStack
from tests.faults.harness import drive_load, ledger_problems, read_ledger, statuses

CREDIT_USD = "0.0001"  # about fifteen small calls of gpt-4o-mini: the load runs out of credit


async def test_two_gateways_share_one_users_credit_and_the_ledger_stays_exact(stack: FaultStack) -> None:
    user, key = await stack.seed_user(CREDIT_USD)
    first, second = stack.gateways_started(2)
    # Both processes serve (warmed with another user's calls: a cold process answers its first call slowly).
    _other, warm_key = await stack.seed_user("1")
    warm = [
        answer
        for g in (first, second)
        for answer in await drive_load(g.url, warm_key, concurrency=1, requests=1)
    ]
    assert all(a.ok for a in warm), [a.describe() for a in warm]
    on_first, on_second = await asyncio.gather(
        drive_load(first.url, key, concurrency=8, seconds=1.0),
        drive_load(second.url, key, concurrency=8, seconds=1.0),
    )
    answers = on_first + on_second
    # Both processes answered from the one shared ledger (which of them wins the credit is a race on a
    # loaded machine; the warm-up proved each of them serves).
    assert on_first and on_second and all(a.status in (200, 402) for a in answers), (
        statuses(on_first),
        statuses(on_second),
    )
    assert set(statuses(answers)) == {"200", "402"}, statuses(answers)
    facts = await read_ledger(stack.dsn)
    assert ledger_problems(answers + warm, facts, every_row_answered=True) == []
    spent = parse_usd(CREDIT_USD) - facts.balances[str(user)]
    assert 0 < spent <= parse_usd(CREDIT_USD)  # no overspend: the mock reports honest usage
    report = await stack.reconcile_here()
    assert report["mismatches"] == [], report
