"""`synapgate insights simulate`: write a synthetic platform history into the configured database, for demos.

The history is `insights.simulate`'s (users with lifecycles — steady, declining, churned, onboarding —, weekly
seasonality, error experience and negative feedback; its generative assumptions are documented there), ending
yesterday. Each simulated user becomes a real user with a key and credits; each simulated request is recorded
through the recorder (usage_logs, messages, ledger debits, rollups), at most `max_per_day` a day per user so a
demo database stays small. Requests are priced at the catalog's current prices of their model.

On top of that history, so that `synapgate insights run` and the insights API have something to show:

* **Tasks and models.** Each request serves one task of `DEMO_ARMS` (tag, model, true positive-feedback rate,
  latency p50, share of traffic), drawn by share; its conversation gets the task's automatic tag (confidence
  0.9). Two cheaper models are planted as good as the dearer one on a task (summarization: gpt-4o-mini =
  gpt-4o; translation: gemini-1.5-flash = gpt-4-turbo), one is cheaper but worse (coding: gpt-4o-mini), so
  the recommendations have evidence to find (on enough traffic: the defaults give it).
* **Feedback.** Each day's negative feedback of the lifecycle (`DailyActivity.negative_feedback`: rising
  before a user declines or churns) turns that share of the day's answers into thumbs-down; of the other
  successful answers `RATED_SHARE` are rated, up at the task's positive rate. Error, frustration and
  thumbs-up rates (errors at `ERROR_SHARE` of the simulation's) are spread over each task by error
  diffusion (even, not Bernoulli), so a 30-user demo has the even evidence per task that a large platform's
  volume would give. `COMMENTED_SHARE` of the ratings carry an EN or PT comment of the rating's polarity
  (sometimes neutral) from the generator, its sentiment from the offline model — llm-performance and
  churn's negative-feedback factor then have data.
* **Spikes.** `spikes` users that were active in the last four weeks (and for at least the two weeks an
  anomaly baseline needs) each get one runaway hour of `SPIKE_REQUESTS` requests to gpt-4o (3–6k prompt
  tokens) in the last 24 complete hours, ending at the hour of the run: `insights run` (the hourly job judges
  the last 24 hours) flags them, with their `spend.anomaly` webhooks. Run it within the day.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from pricing.catalog import Catalog, Model
from pricing.cost import Usage, price_usage
from storage.accounts.keys import create_key
from storage.accounts.users import CreatedUser, create_user
from storage.billing.credits import add_credits
from storage.billing.ledger.base import CreditLedger
from storage.catalog.repository import load_catalog
from storage.errors import InvalidInput
from storage.models import MessageFeedback, Tag, table_of
from storage.types import utcnow
from storage.usage.recorder import CompletionRecord, record_batch

BATCH = 500
MIN_DAYS = 60
MAX_SPIKES = 20
RATED_SHARE = 0.3
# The demo keeps this share of the simulation's error rate (its shape over a lifecycle intact): at the full
# ~5 % a 30-user platform's error evidence per task is too wide for the recommendation rule's 1-point bound.
ERROR_SHARE = 0.25
COMMENTED_SHARE = 0.5
SPIKE_REQUESTS = 150
TAG_CONFIDENCE = Decimal("0.9")
SCORE_PLACES = Decimal("0.00001")

# (tag, model, true positive-feedback rate, latency p50 ms, share of traffic)
DEMO_ARMS: tuple[tuple[str, str, float, int, float], ...] = (
    ("summarization", "gpt-4o", 0.85, 900, 3.0),
    ("summarization", "gpt-4o-mini", 0.85, 700, 4.0),  # planted: cheaper and as good
    ("translation", "gpt-4-turbo", 0.86, 1100, 3.0),
    ("translation", "gemini-1.5-flash", 0.86, 600, 4.0),  # planted: cheaper and as good
    ("coding", "gpt-4o", 0.88, 1500, 4.0),
    ("coding", "gpt-4o-mini", 0.70, 700, 2.0),  # cheaper but worse: never recommended
    ("writing", "gpt-4o", 0.84, 1000, 2.0),
    ("data_analysis", "gpt-4o", 0.83, 1300, 2.0),
    ("data_analysis", "gemini-1.5-flash", 0.72, 600, 1.0),  # cheaper but worse
)

_tags = table_of(Tag)
_feedback = table_of(MessageFeedback)


@dataclass(frozen=True, slots=True)
class SpikeWritten:
    user_id: str
    hour: str
    requests: int
    spend_nano: int


@dataclass(frozen=True, slots=True)
class SimulationWritten:
    users: int
    requests: int
    first_day: str
    last_day: str
    tagged_conversations: int = 0
    feedback: int = 0
    comments: int = 0
    spikes: list[SpikeWritten] = field(default_factory=list)


@dataclass(slots=True)
class _Rating:
    record: CompletionRecord
    up: bool
    comment: str | None


def _arms(catalog: Catalog, fallback: Model) -> list[tuple[str, Model, float, int, float]]:
    """The demo arms whose model the catalog has (an arm of a missing model serves on the fallback)."""
    return [
        (tag, catalog.get(name) or fallback, rate, p50, share) for tag, name, rate, p50, share in DEMO_ARMS
    ]


def _comment_pools(seed: int) -> dict[tuple[str, str], list[str]]:
    from insights.data.generate import generate_sentiment

    pools: dict[tuple[str, str], list[str]] = {}
    for row in generate_sentiment(seed=seed + 1000, per_label_lang=40):
        pools.setdefault((row["label"], row["lang"]), []).append(row["text"])
    return pools


def _comment(rng: random.Random, pools: dict[tuple[str, str], list[str]], up: bool) -> str | None:
    if rng.random() >= COMMENTED_SHARE:
        return None
    label = ("positive" if up else "negative") if rng.random() < 0.8 else "neutral"
    return rng.choice(pools[(label, rng.choice(("en", "pt")))])


async def _write_feedback(engine: AsyncEngine, ratings: list[_Rating], user_id: uuid.UUID) -> None:
    """The ratings as feedback rows (thumbs), each comment with its offline sentiment."""
    from insights.sentiment import default_sentiment_model

    texts = [r.comment for r in ratings if r.comment]
    moods = iter(await asyncio.to_thread(default_sentiment_model().sentiment_many, texts) if texts else [])
    rows = []
    for r in ratings:
        mood = next(moods) if r.comment else None
        rows.append(
            {
                "id": uuid.uuid4(),
                "message_id": r.record.message_id,
                "user_id": user_id,
                "scale": "thumbs",
                "rating": 1 if r.up else -1,
                "comment": r.comment,
                "categories": None,
                "created_at": r.record.created_at + timedelta(minutes=2),
                "llm_id": r.record.llm_id,
                "message_user_id": user_id,
                "message_created_at": r.record.created_at,
                "sentiment": mood.label if mood is not None else None,
                "sentiment_score": (
                    Decimal(str(mood.score)).quantize(SCORE_PLACES) if mood is not None else None
                ),
            }
        )
    async with engine.begin() as conn:
        for i in range(0, len(rows), BATCH):
            await conn.execute(_feedback.insert(), rows[i : i + BATCH])


async def _write_tags(engine: AsyncEngine, tagged: list[tuple[uuid.UUID, str, datetime]]) -> None:
    async with engine.begin() as conn:
        for i in range(0, len(tagged), BATCH):
            await conn.execute(
                _tags.insert(),
                [
                    {
                        "id": uuid.uuid4(),
                        "target_type": "conversation",
                        "target_id": conversation_id,
                        "name": tag,
                        "is_auto": True,
                        "confidence": TAG_CONFIDENCE,
                        "author_user_id": None,
                        "created_at": at,
                    }
                    for conversation_id, tag, at in tagged[i : i + BATCH]
                ],
            )


def _record(
    owner: CreatedUser,
    key_id: uuid.UUID,
    model: Model,
    usage: Usage,
    at: datetime,
    latency_ms: int,
    *,
    failed: bool,
) -> CompletionRecord:
    """One simulated request of `owner` (a failure has no usage and costs nothing)."""
    cost = 0 if failed else price_usage(usage, model).total_nano
    return CompletionRecord(
        request_id=f"sim-{uuid.uuid4().hex}",
        user_id=owner.user_id,
        workspace_id=owner.workspace_id,
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
        latency_ms=latency_ms,
        created_at=at,
    )


async def write_simulated_history(
    engine: AsyncEngine,
    ledger: CreditLedger,
    *,
    users: int,
    days: int,
    seed: int,
    max_per_day: int = 20,
    spikes: int = 2,
) -> SimulationWritten:
    """Create `users` simulated users and record their last `days` days of requests, their tasks' tags,
    feedback and `spikes` planted runaway hours (see module doc)."""
    from insights.simulate import SimConfig, simulate

    if days < MIN_DAYS:
        raise InvalidInput(
            f"the simulation needs at least {MIN_DAYS} days (lifecycles play out over weeks)", param="days"
        )
    if users < 1:
        raise InvalidInput("at least one user", param="users")
    if not 0 <= spikes <= MAX_SPIKES:
        raise InvalidInput(f"from 0 to {MAX_SPIKES} planted spikes", param="spikes")
    now = utcnow()
    today = now.date()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    cfg = replace(SimConfig(), seed=seed, n_users=users, days=days, start=start, hourly_users=0, spikes=0)
    sim = simulate(cfg)
    rng = random.Random(seed)
    async with engine.connect() as conn:
        catalog = await load_catalog(conn)
    fallback = catalog.get("gpt-4o-mini")
    if fallback is None:
        raise InvalidInput("the catalog has no gpt-4o-mini to simulate with", param="models")
    spike_model = catalog.get("gpt-4o") or fallback
    arms = _arms(catalog, fallback)
    weights = [a[4] for a in arms]
    pools = _comment_pools(seed)
    # Spiked users: active in the last 4 weeks and for the 2 weeks an anomaly baseline needs.
    eligible = [
        h.user_id
        for h in sim.histories
        if any(d.requests and today - d.day <= timedelta(days=28) for d in h.days)
        and any(d.requests and today - d.day >= timedelta(days=15) for d in h.days)
    ]
    spiked = dict(zip(rng.sample(eligible, min(spikes, len(eligible))), range(spikes), strict=False))
    carried: dict[tuple[str, int], float] = {}

    def diffuse(key: tuple[str, int], rate: float) -> bool:
        """Error diffusion: True about `rate` of the time, evenly (the shortfall carries to the next call)."""
        carried[key] = carried.get(key, 0.0) + rate
        if carried[key] >= 1.0:
            carried[key] -= 1.0
            return True
        return False

    written = tagged_count = feedback_count = comment_count = 0
    spike_rows: list[SpikeWritten] = []
    for sim_user, history in zip(sim.users, sim.histories, strict=True):
        async with engine.begin() as conn:
            created = await create_user(
                conn, f"sim-{seed}-{sim_user.user_id}-{uuid.uuid4().hex[:6]}@example.invalid"
            )
            key_id, _plain = await create_key(
                conn, created.user_id, workspace_id=created.workspace_id, name="sim"
            )

        records: list[CompletionRecord] = []
        tagged: list[tuple[uuid.UUID, str, datetime]] = []
        ratings: list[_Rating] = []
        for day in history.days:
            if day.requests <= 0 or day.day >= today:
                continue
            n = min(day.requests, max_per_day)
            # The day's error and frustration rates (kept when the day is cut to max_per_day requests) are
            # spread over the tasks by error diffusion, like the ratings: a small demo then has the even
            # evidence per task that a large platform's volume would give.
            error_rate = ERROR_SHARE * day.errors / day.requests
            negative_rate = day.negative_feedback / max(1, day.requests - day.errors)
            for _ in range(n):
                arm = rng.choices(range(len(arms)), weights)[0]
                tag, model, positive_rate, p50, _share = arms[arm]
                usage = Usage(prompt_tokens=rng.randint(200, 2000), completion_tokens=rng.randint(50, 600))
                at = datetime(day.day.year, day.day.month, day.day.day, tzinfo=UTC) + timedelta(
                    seconds=rng.randint(8 * 3600, 22 * 3600)
                )
                latency = max(50, int(p50 * rng.lognormvariate(0.0, 0.3)))
                failed = diffuse(("error", arm), error_rate)
                rec = _record(created, key_id, model, usage, at, latency, failed=failed)
                records.append(rec)
                assert rec.conversation_id is not None
                tagged.append((rec.conversation_id, tag, at))
                if failed:
                    continue
                if diffuse(("frustrated", arm), negative_rate):  # the lifecycle's frustration: thumbs-down
                    ratings.append(_Rating(rec, False, _comment(rng, pools, False)))
                elif rng.random() < RATED_SHARE:
                    up = diffuse(("up", arm), positive_rate)
                    ratings.append(_Rating(rec, up, _comment(rng, pools, up)))
        if sim_user.user_id in spiked:
            hour = this_hour - timedelta(hours=2 + 5 * spiked[sim_user.user_id])
            spike = [
                _record(
                    created,
                    key_id,
                    spike_model,
                    Usage(prompt_tokens=rng.randint(3000, 6000), completion_tokens=rng.randint(300, 800)),
                    hour + timedelta(seconds=rng.randint(0, 3599)),
                    rng.randint(800, 2500),
                    failed=False,
                )
                for _ in range(SPIKE_REQUESTS)
            ]
            records.extend(spike)
            spike_rows.append(
                SpikeWritten(
                    str(created.user_id), hour.isoformat(), len(spike), sum(r.cost_nano for r in spike)
                )
            )
        total_cost = sum(r.charged_nano for r in records)
        await add_credits(
            engine, ledger, created.user_id, total_cost + 5_000_000_000, f"sim:{created.user_id}"
        )
        for i in range(0, len(records), BATCH):
            await record_batch(engine, ledger, [(r, None) for r in records[i : i + BATCH]])
        await _write_tags(engine, tagged)
        await _write_feedback(engine, ratings, created.user_id)
        written += len(records)
        tagged_count += len(tagged)
        feedback_count += len(ratings)
        comment_count += sum(1 for r in ratings if r.comment)
    return SimulationWritten(
        len(sim.users),
        written,
        start.isoformat(),
        (today - timedelta(days=1)).isoformat(),
        tagged_count,
        feedback_count,
        comment_count,
        spike_rows,
    )
