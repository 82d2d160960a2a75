"""The record in one round trip (PostgreSQL, `sg_record_usage`) against the statement path, on real databases.

Each test runs on both ways of writing a batch — `one-trip` (PostgreSQL + the Redis ledger: one call of the
function of migration 0014) and `statements` (SQLAlchemy, one statement at a time: SQLite and the
fallback) — and asserts the same rows: the usage_logs, messages, debits, account moves, conversation_llms and
every rollup (the four dimension rollups too) of a mixed batch; a replayed record that changes nothing; a
foreign conversation refused with nothing written; a low-balance crossing that queues its webhook; budgeted
debits that move their budgets in one call and queue `budget.threshold` (through the statement path) only when
they cross a level. And the one-trip path sends exactly one statement.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import storage.usage.recorder as recorder
from config import Settings
from pricing.cost import Usage
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.entries import account_state
from storage.billing.ledger.factory import build_ledger
from storage.billing.ledger.limits import LimitRequest, ScopeLimits
from storage.billing.reconcile import reconcile
from storage.db import create_engine
from storage.models import NO_KEY, NO_WORKSPACE
from storage.types import utcnow
from storage.usage.recorder import (
    CompletionRecord,
    ConversationNotOwned,
    record_batch,
    record_completion,
    record_failure,
)
from storage.usage.rollups import ROLLUP_ORDER, rebuild_usage_rollups, rollup_rows
from storage.webhooks.alerts import set_low_balance_threshold
from storage.webhooks.service import WebhookScope, create_endpoint
from tests.integration.helpers import completion_record

CREDIT = 1_000_000_000
PATHS = ["one-trip", "statements-postgres", "statements-sqlite"]


@pytest.fixture(params=PATHS)
async def env(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncEngine, Any]]:
    path = request.param
    url = request.getfixturevalue("sqlite_database" if path.endswith("sqlite") else "pg_reset_database")
    engine = create_engine(url, pool_size=5)
    redis = None if path.endswith("sqlite") else Redis.from_url(request.getfixturevalue("redis_url"))
    ledger: Any = build_ledger(Settings(database_url=url, reservation_ttl_seconds=600), engine, redis)
    assert recorder._one_trip_applies(engine, ledger) == (path != "statements-sqlite")
    if path == "statements-postgres":  # the fallback on PostgreSQL, same database and ledger as one-trip
        monkeypatch.setattr(recorder, "_one_trip_applies", lambda _engine, _ledger: False)
    try:
        yield engine, ledger
    finally:
        await ledger.close()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


async def new_user(engine: AsyncEngine, ledger: Any, credit: int = CREDIT) -> uuid.UUID:
    async with engine.begin() as conn:
        user = (await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")).user_id
    await add_credits(engine, ledger, user, credit, f"seed-{user}")
    return user


def completion(user_id: uuid.UUID, charged: int, **changes: Any) -> CompletionRecord:
    """With cached and reasoning tokens, a prompt with quotes and non-ASCII text, and a stored answer."""
    fields: dict[str, Any] = {
        "usage": Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=2, reasoning_tokens=1),
        "latency_ms": 17,
        "prompt": [{"role": "user", "content": 'hé "quoted" ✓'}],
        "content": "an answer",
        "finish_reason": "stop",
    }
    return completion_record(user_id, charged, **(fields | changes))


async def rows(engine: AsyncEngine, query: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(query), params)).all()]


async def test_a_mixed_batch_writes_every_row_exactly(env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = env
    async with engine.begin() as conn:  # alice has a workspace and a real key in it (the dimension rollups)
        created = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
        alice, workspace = created.user_id, created.workspace_id
        key, _ = await create_key(conn, alice, workspace_id=workspace)
    await add_credits(engine, ledger, alice, CREDIT, f"seed-{alice}")
    bob = await new_user(engine, ledger)
    _, alice_version = await _state(engine, alice)
    shared = uuid.uuid4()
    now = utcnow()
    batch = [
        completion(alice, 7_001, conversation_id=shared, created_at=now - timedelta(hours=1)),
        completion(
            alice,
            3_000,
            conversation_id=shared,
            is_stream=True,
            ttft_ms=4,
            latency_ms=250,
            workspace_id=workspace,
            api_key_id=key,
        ),
        completion(alice, 0, byok=True, cost_nano=9_999),  # BYOK without a fee: metered, not debited
        completion(bob, 5, status="cancelled", model="gpt-4o", llm_id=2),
        completion(bob, 123_456_789, workspace_id=None, latency_ms=0),
    ]
    reservations = [await ledger.reserve(r.user_id, r.request_id, 200_000_000) for r in batch]
    results = await record_batch(engine, ledger, list(zip(batch, reservations, strict=True)))

    assert [r.posted for r in results] == [True, True, False, True, True]
    assert [r.balance_nano for r in results] == [CREDIT - 10_001] * 3 + [CREDIT - 123_456_794] * 2
    assert await _state(engine, alice) == (CREDIT - 10_001, alice_version + 1)  # one move for the batch
    got = await rows(
        engine,
        "SELECT u.request_id, u.status, u.charged_nano, u.cost_nano, u.user_api_key_used, u.is_stream, "
        "u.ttft_ms, u.cached_input_tokens, u.reasoning_tokens, m.content, m.finish_reason, m.request_id "
        "FROM usage_logs u JOIN messages m ON m.id = u.message_id ORDER BY u.created_at, u.charged_nano",
    )
    assert sorted(g[0] for g in got) == sorted(r.request_id for r in batch)
    assert all(g[0] == g[11] and g[9] == "an answer" and g[7] == 2 and g[8] == 1 for g in got)
    assert {(g[1], g[2], g[3], g[4], g[5], g[6]) for g in got} == {
        ("success", 7_001, 7_001, False, False, None),
        ("success", 3_000, 3_000, False, True, 4),
        ("success", 0, 9_999, True, False, None),
        ("cancelled", 5, 5, False, False, None),
        ("success", 123_456_789, 123_456_789, False, False, None),
    }
    prompts = await rows(engine, "SELECT prompt FROM messages")
    assert {json.dumps(json.loads(p[0]) if isinstance(p[0], str) else p[0]) for p in prompts} == {
        json.dumps([{"role": "user", "content": 'hé "quoted" ✓'}])
    }
    debits = await rows(
        engine, "SELECT type, amount_nano, idempotency_key FROM billing_events WHERE type <> 'credit'"
    )
    assert sorted(debits) == sorted(
        ("usage", -r.charged_nano, f"usage:{r.request_id}") for r in batch if not r.byok
    )
    per_model = await rows(
        engine,
        "SELECT message_count, input_tokens, output_tokens, cost_nano, latency_ms_sum, first_used_at, "
        "last_used_at FROM conversation_llms ORDER BY message_count DESC",
    )
    assert [p[0] for p in per_model] == [2, 1, 1, 1]  # the shared conversation, then one per other record
    assert per_model[0][:5] == (2, 20, 10, 10_001, 267)
    # the rollups the batch kept equal those rebuilt from usage_logs
    async with engine.connect() as conn:
        kept = await conn.run_sync(rollup_rows)
    async with engine.begin() as conn:
        await conn.run_sync(rebuild_usage_rollups)
    async with engine.connect() as conn:
        rebuilt = await conn.run_sync(rollup_rows)
    assert kept == rebuilt and kept["latency_daily"] and kept["usage_daily"]
    # every rollup of ROLLUP_ORDER was kept (the four dimension rollups of 0011 too), with the NO_WORKSPACE /
    # NO_KEY sentinels beside the real workspace and key
    assert set(kept) == {t.name for t in ROLLUP_ORDER} | {"latency_daily"}
    assert {r[0] for r in kept["usage_workspace_daily"]} == {NO_WORKSPACE, workspace}
    assert {r[0] for r in kept["usage_key_daily"]} == {NO_KEY, key}
    assert (
        len(kept["usage_user_daily"]) >= 3 and len(kept["usage_model_daily"]) >= 3
    )  # (user|model, day, byok)
    assert (await reconcile(engine, ledger)).mismatches == []


async def test_a_replayed_record_changes_nothing(env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = env
    user = await new_user(engine, ledger)
    rec = completion(user, 42_000)
    first = await record_completion(engine, ledger, rec, await ledger.reserve(user, rec.request_id, 50_000))
    assert first.posted and first.balance_nano == CREDIT - 42_000
    before = await _snapshot(engine)
    again = await record_completion(engine, ledger, rec, None)  # the spool replays it after an outage
    assert not again.posted and again.balance_nano == CREDIT - 42_000
    other = completion(user, 1_000)
    mixed = await record_batch(engine, ledger, [(rec, None), (other, None)])  # a replay inside a batch
    assert [r.posted for r in mixed] == [False, True]
    after = await _snapshot(engine)
    assert (
        after["usage_logs"] == before["usage_logs"] + 1
        and after["billing_events"] == before["billing_events"] + 1
    )
    assert after["requests"] == before["requests"] + 1
    assert await ledger.available(user) == CREDIT - 43_000
    assert (await reconcile(engine, ledger)).mismatches == []


async def test_a_replayed_failure_changes_nothing(env: tuple[AsyncEngine, Any]) -> None:
    engine, _ledger = env
    user = await new_user(engine, _ledger)
    failed = completion(
        user,
        0,
        status="error",
        usage=Usage(prompt_tokens=0, completion_tokens=0),
        conversation_id=None,
        message_id=None,
        error_code="upstream_error",
        http_status=502,
        prompt=None,
        content=None,
    )
    await record_failure(engine, failed)
    before = await _snapshot(engine)
    await record_failure(engine, failed)  # replayed
    assert await _snapshot(engine) == before
    assert before["usage_logs"] == 1 and before["requests"] == 1


async def test_a_foreign_conversation_is_refused_and_nothing_is_written(env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = env
    alice, mallory = await new_user(engine, ledger), await new_user(engine, ledger)
    owned = completion(alice, 1_000)
    await record_completion(engine, ledger, owned, None)
    before = await _snapshot(engine)
    taken = completion(mallory, 2_000, conversation_id=owned.conversation_id)
    with pytest.raises(ConversationNotOwned, match=str(owned.conversation_id)):
        await record_batch(engine, ledger, [(completion(mallory, 5), None), (taken, None)])
    assert await _snapshot(engine) == before
    assert (await _state(engine, mallory))[0] == CREDIT


async def test_a_low_balance_crossing_queues_its_webhook(env: tuple[AsyncEngine, Any]) -> None:
    engine, ledger = env
    user = await new_user(engine, ledger, credit=1_000_000)
    async with engine.begin() as conn:
        await set_low_balance_threshold(conn, user, 900_000)
        await create_endpoint(
            conn, WebhookScope(user_id=user), url="http://127.0.0.1:9/hook", events=["credits.low"]
        )
    await record_completion(engine, ledger, completion(user, 50_000), None)  # 950,000: above
    assert await rows(engine, "SELECT event_type FROM webhook_deliveries") == []
    result = await record_completion(engine, ledger, completion(user, 100_000), None)  # 850,000: crossed
    assert result.posted and result.balance_nano == 850_000
    assert await rows(engine, "SELECT event_type FROM webhook_deliveries") == [("credits.low",)]
    await record_completion(engine, ledger, completion(user, 1), None)  # stays under: nothing more
    assert len(await rows(engine, "SELECT 1 FROM webhook_deliveries")) == 1
    assert (await _snapshot(engine))["usage_logs"] == 3


async def test_a_budgeted_debit_moves_its_budget_in_the_recording_transaction(
    env: tuple[AsyncEngine, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Budgeted debits move their budgets' spend rows in the recording transaction on every path, exactly as
    storage/webhooks/budgets.py does: on one-trip inside `sg_record_usage` (migration 0014), in ONE call,
    unless a debit crosses a 50/80/100 % level not yet announced — then the function hands the batch back and
    the statement path claims the level and queues `budget.threshold`. The key, user and workspace budgets
    (a `total`, a `day` and a `month` period) each start from Σ usage_logs of their period."""
    engine, ledger = env
    one_trip = recorder._one_trip_applies(engine, ledger)  # (the fixture turns it off for the fallback)
    async with engine.begin() as conn:
        created = await create_user(conn, f"{uuid.uuid4().hex[:8]}@example.com")
        user, workspace = created.user_id, created.workspace_id
        key, _ = await create_key(conn, user, workspace_id=workspace)
        await create_endpoint(
            conn, WebhookScope(user_id=None), url="http://127.0.0.1:9/hook", events=["budget.threshold"]
        )
    await add_credits(engine, ledger, user, CREDIT, f"seed-{user}")
    statement_batches: list[int] = []
    real = recorder._write_statements

    async def counted(*args: Any) -> Any:
        statement_batches.append(1)
        return await real(*args)

    monkeypatch.setattr(recorder, "_write_statements", counted)
    by_key = ScopeLimits(f"k:{key}", budget_nano=100_000)  # no period: `total`
    by_user = ScopeLimits(f"u:{user}", budget_nano=1_000, budget_period="day")
    by_workspace = ScopeLimits(f"w:{workspace}", budget_nano=100_000, budget_period="month")
    scopes = (by_key, by_user, by_workspace)

    def debit(charged: int, **changes: Any) -> CompletionRecord:
        return completion(user, charged, workspace_id=workspace, api_key_id=key, **changes)

    async def budgeted(charged: int) -> tuple[CompletionRecord, Any]:
        rec = debit(charged)
        return rec, await ledger.reserve(user, rec.request_id, 1, LimitRequest(scopes, 15))

    async def spend() -> list[tuple[Any, ...]]:
        return await rows(engine, "SELECT scope, period, spent_nano FROM budget_spend ORDER BY scope")

    def spent(n: int, user_n: int | None = None) -> list[tuple[Any, ...]]:
        return sorted(
            [(by_key.scope, "total", n), (by_user.scope, "day", n if user_n is None else user_n),
             (by_workspace.scope, "month", n)]
        )  # fmt: skip

    async def levels() -> list[tuple[Any, ...]]:
        return await rows(engine, "SELECT scope, threshold_pct, spent_nano FROM budget_alerts ORDER BY 1, 2")

    calls = 0

    def paths(crossing: bool) -> int:  # statement-path batches expected so far
        nonlocal calls
        calls += 1 if (crossing or not one_trip) else 0
        return calls

    # the period's first debit sums the period's usage_logs (this batch's unbudgeted 7 too): 30.7 % of the
    # user's budget, no level crossed: one call on one-trip
    first = await budgeted(300)
    await record_batch(engine, ledger, [first, (debit(7), None)])
    assert len(statement_batches) == paths(crossing=False)
    assert await spend() == spent(307)
    assert await levels() == []
    # 60.7 %: 50 % crossed, the statement path claims it and queues the event
    await record_batch(engine, ledger, [await budgeted(300)])
    assert len(statement_batches) == paths(crossing=True)
    assert await spend() == spent(607)
    assert await levels() == [(by_user.scope, 50, 607)]
    # two debits of one budget in one batch move its row once, by their sum; no level: one call again
    await record_batch(engine, ledger, [await budgeted(100), await budgeted(50), (debit(5), None)])
    assert len(statement_batches) == paths(crossing=False)
    assert await spend() == spent(757)  # the unbudgeted 5 moves no row (it counts at a period's first debit)
    # a replay moves nothing
    again = await record_batch(engine, ledger, [first])
    assert not again[0].posted
    assert len(statement_batches) == paths(crossing=False)
    assert await spend() == spent(757)
    # a level crossed that this period announced already (a budget lowered and raised again) raises nothing
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO budget_alerts (scope, period, period_start, threshold_pct, budget_nano,"
                " spent_nano, created_at) SELECT scope, period, period_start, 80, 1000, 700, period_start"
                " FROM budget_spend WHERE scope = :scope"
            ),
            {"scope": by_user.scope},
        )
    await record_batch(engine, ledger, [await budgeted(100)])  # 857: 80 % crossed, claimed already
    assert len(statement_batches) == paths(crossing=False)
    assert await spend() == spent(857)
    # 100 % crossed: announced once
    await record_batch(engine, ledger, [await budgeted(200)])
    assert len(statement_batches) == paths(crossing=True)
    assert await spend() == spent(1_057)
    assert await levels() == [(by_user.scope, 50, 607), (by_user.scope, 80, 700), (by_user.scope, 100, 1_057)]
    deliveries = await rows(engine, "SELECT event_type FROM webhook_deliveries")
    assert deliveries == [("budget.threshold",)] * 2
    # every debit committed once: the budgets count the budgeted ones, the ledger all of them
    assert (await rows(engine, "SELECT coalesce(sum(charged_nano), 0) FROM usage_logs"))[0][0] == 1_062
    assert (await _state(engine, user))[0] == CREDIT - 1_062
    assert (await reconcile(engine, ledger)).mismatches == []


async def test_one_trip_sends_one_statement(pg_reset_database: str, redis_url: str) -> None:
    engine = create_engine(pg_reset_database, pool_size=2)
    redis = Redis.from_url(redis_url)
    ledger: Any = build_ledger(Settings(database_url=pg_reset_database), engine, redis)
    sent: list[str] = []

    def log_queries(_dbapi_connection: Any, pool_entry: Any) -> None:
        pool_entry.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    event.listen(engine.sync_engine, "connect", log_queries)
    try:
        user = await new_user(engine, ledger)
        await ledger.available(user)  # the hot copy is loaded: what is left is the record itself
        batch = [(completion(user, 1_000 + i), None) for i in range(3)]
        await record_batch(engine, ledger, batch[:1])  # asyncpg prepares the call once per connection
        sent.clear()
        await record_batch(engine, ledger, batch[1:])
        assert sent == [recorder.RECORD_CALL]
        assert (await _state(engine, user))[0] == CREDIT - 3_003
    finally:
        await ledger.close()
        await redis.aclose()
        await engine.dispose()


async def _state(engine: AsyncEngine, user: uuid.UUID) -> tuple[int, int]:
    async with engine.connect() as conn:
        return await account_state(conn, user)


async def _snapshot(engine: AsyncEngine) -> dict[str, Any]:
    counts = {}
    for table in ("usage_logs", "messages", "billing_events", "conversations", "conversation_llms"):
        counts[table] = (await rows(engine, f"SELECT count(*) FROM {table}"))[0][0]
    counts["requests"] = (await rows(engine, "SELECT coalesce(sum(requests), 0) FROM usage_hourly"))[0][0]
    counts["balances"] = await rows(
        engine, "SELECT user_id, balance_nano, version FROM credit_accounts ORDER BY 1"
    )
    return counts
