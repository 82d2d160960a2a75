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
    # A cold process answers its first call slowly (imports, tokenizer): warm both with another user's calls,
    # so that under a loaded machine the credit is not gone before the second gateway serves anything.
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
    assert any(a.ok for a in on_first) and any(a.ok for a in on_second), (
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
