"""`synapgate insights simulate`: write a synthetic platform history into the configured database, for demos.

The history is `insights.simulate`'s (users with lifecycles — steady, declining, churned, onboarding —, weekly
seasonality, error experience; its generative assumptions are documented there), ending yesterday. Each
simulated user becomes a real user with a key and credits; each simulated request is recorded through the
recorder (usage_logs, messages, ledger debits, rollups), at most `max_per_day` a day per user so a demo
database stays small. Requests are priced at the catalog's current prices of their model.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.cost import Usage, price_usage
from storage.accounts.keys import create_key
from storage.accounts.users import create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.base import CreditLedger
from storage.catalog.repository import load_catalog
from storage.errors import InvalidInput
from storage.types import utcnow
from storage.usage.recorder import CompletionRecord, record_batch

BATCH = 500
MIN_DAYS = 60


@dataclass(frozen=True, slots=True)
class SimulationWritten:
    users: int
    requests: int
    first_day: str
    last_day: str


async def write_simulated_history(
    engine: AsyncEngine, ledger: CreditLedger, *, users: int, days: int, seed: int, max_per_day: int = 20
) -> SimulationWritten:
    """Create `users` simulated users and record their last `days` days of requests (see module doc)."""
    from insights.simulate import SimConfig, simulate

    if days < MIN_DAYS:
        raise InvalidInput(
            f"the simulation needs at least {MIN_DAYS} days (lifecycles play out over weeks)", param="days"
        )
    if users < 1:
        raise InvalidInput("at least one user", param="users")
    today = utcnow().date()
    start = today - timedelta(days=days)
    cfg = replace(SimConfig(), seed=seed, n_users=users, days=days, start=start, hourly_users=0, spikes=0)
    sim = simulate(cfg)
    rng = random.Random(seed)
    async with engine.connect() as conn:
        catalog = await load_catalog(conn)
    fallback = catalog.get("gpt-4o-mini")
    written = 0
    for sim_user, history in zip(sim.users, sim.histories, strict=True):
        async with engine.begin() as conn:
            created = await create_user(
                conn, f"sim-{seed}-{sim_user.user_id}-{uuid.uuid4().hex[:6]}@example.invalid"
            )
            key_id, _plain = await create_key(
                conn, created.user_id, workspace_id=created.workspace_id, name="sim"
            )
        records: list[CompletionRecord] = []
        for day in history.days:
            if day.requests <= 0 or day.day >= today:
                continue
            n = min(day.requests, max_per_day)
            models = sorted(day.models) or ["gpt-4o-mini"]
            errors = min(day.errors, n)
            for i in range(n):
                model = catalog.get(models[i % len(models)]) or fallback
                if model is None:
                    continue
                usage = Usage(prompt_tokens=rng.randint(200, 2000), completion_tokens=rng.randint(50, 600))
                failed = i < errors
                cost = 0 if failed else price_usage(usage, model).total_nano
                at = datetime(day.day.year, day.day.month, day.day.day, tzinfo=UTC) + timedelta(
                    seconds=rng.randint(8 * 3600, 22 * 3600)
                )
                records.append(
                    CompletionRecord(
                        request_id=f"sim-{uuid.uuid4().hex}",
                        user_id=created.user_id,
                        workspace_id=created.workspace_id,
                        api_key_id=key_id,
                        conversation_id=uuid.uuid4(),
                        message_id=uuid.uuid4(),
                        llm_id=model.id,
                        model=model.name,
                        provider=model.provider,
                        price_version=model.price_version,
                        usage=Usage() if failed else usage,
                        cost_nano=cost,
                        charged_nano=cost,
                        byok=False,
                        is_stream=False,
                        status="error" if failed else "success",
                        latency_ms=rng.randint(300, 3000),
                        created_at=at,
                    )
                )
        total_cost = sum(r.charged_nano for r in records)
        await add_credits(
            engine, ledger, created.user_id, total_cost + 5_000_000_000, f"sim:{created.user_id}"
        )
        for i in range(0, len(records), BATCH):
            await record_batch(engine, ledger, [(r, None) for r in records[i : i + BATCH]])
        written += len(records)
    return SimulationWritten(
        len(sim.users), written, start.isoformat(), (today - timedelta(days=1)).isoformat()
    )
