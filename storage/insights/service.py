"""The rules of the insights, held once: the API, the CLI and the jobs call these.

- Automatic tags: the offline tagger's predictions above its threshold are written as conversation tags
  with `is_auto = true` and their confidence (5 places); below it nothing is written. The text is classified
  where it is given (in memory on the live path: never stored by this code).
- Churn (daily): a model trained on the platform's own history when it is long enough, else the heuristic;
  every active user's prediction replaces the stored ones.
- Anomalies (hourly): the last hours of every user, key and workspace against their seasonal baseline; each
  anomaly not seen before is stored and its `spend.anomaly` webhook event queued in the same transaction.
- Recommendations: computed on request from the recorded traffic per (tag, model) and the catalog's prices;
  the daily job also computes the platform's and each user's (one scan) and stores them as a snapshot
  (replaced in one transaction), which the dashboard and `?source=snapshot` read. A workspace's are
  computed live only.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from insights.labels import TagPrediction
from insights.recommend import Recommendation, RecommendationRule, recommend_models
from storage.annotations import service as annotation_rules
from storage.annotations.repository import TagInfo, messages
from storage.catalog.repository import load_catalog
from storage.errors import InvalidInput, NotFound, Unavailable
from storage.insights import repository
from storage.types import utcnow
from storage.webhooks.payloads import usd
from storage.webhooks.service import enqueue

if TYPE_CHECKING:  # the models load numpy / scikit-learn: imported where used, so the gateway starts light
    from insights.anomaly import Anomaly, AnomalyRule
    from insights.churn import LinearChurnModel, UserHistory
    from insights.tagging import Tagger

CHURN_HISTORY_DAYS = 180
ANOMALY_LOOKBACK_HOURS = 24  # the hours judged by each hourly run (a missed run is caught up)
RECOMMENDATION_DAYS = 30
CONFIDENCE_PLACES = Decimal("0.00001")

# Tags of a conversation's text from elsewhere (the tagger model, a server's tagger process); None: no answer.
TagSource = Callable[[Sequence[str]], Awaitable[list[TagPrediction] | None]]


class PredictionNotFound(NotFound):
    code = "prediction_not_found"


class ContentNotStored(InvalidInput):
    code = "content_not_stored"


# -- automatic tags --------------------------------------------------------------------------------------


def user_texts(request_messages: Any) -> list[str]:
    """The user turns' text of a chat request's `messages` (string or content parts), in order."""
    out: list[str] = []
    if not isinstance(request_messages, list):
        return out
    for m in request_messages:
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, dict) and p.get("type") in ("text", "input_text")
            )
    return [t for t in out if t.strip()]


def is_first_exchange(request_messages: Any) -> bool:
    """A request whose messages hold exactly one user turn: the conversation's opening exchange."""
    if not isinstance(request_messages, list):
        return False
    return sum(1 for m in request_messages if isinstance(m, dict) and m.get("role") == "user") == 1


def classify(texts: Sequence[str], tagger: Tagger | None = None) -> list[TagPrediction]:
    """The confident tags of a conversation's text (CPU-bound: call it in a thread on a server)."""
    from insights.tagging import default_tagger

    return (tagger or default_tagger()).tag(texts)


async def write_auto_tags(
    conn: AsyncConnection, conversation_id: uuid.UUID, predictions: Sequence[TagPrediction]
) -> list[TagInfo]:
    """Write the predictions as automatic tags of the conversation (an existing tag of the name stays)."""
    out: list[TagInfo] = []
    for p in predictions:
        tag, _ = await annotation_rules.add_tag(
            conn,
            target_type="conversation",
            target_id=conversation_id,
            name=p.tag,
            is_auto=True,
            confidence=Decimal(str(p.confidence)).quantize(CONFIDENCE_PLACES),
            author_user_id=None,
        )
        out.append(tag)
    return out


async def auto_tag_texts(
    engine: AsyncEngine, conversation_id: uuid.UUID, texts: Sequence[str], tagger: Tagger | None = None
) -> list[TagInfo]:
    """Classify in-memory text (in a thread) and write its confident tags; the text is not stored."""
    predictions = await asyncio.to_thread(classify, list(texts), tagger)
    if not predictions:
        return []
    async with engine.begin() as conn:
        return await write_auto_tags(conn, conversation_id, predictions)


async def stored_user_texts(conn: AsyncConnection, conversation_id: uuid.UUID) -> list[str]:
    """The user turns of a conversation as stored (its latest message's prompt holds the whole chat)."""
    m = messages.c
    row = (
        await conn.execute(
            select(m.prompt)
            .where(m.conversation_id == conversation_id, m.prompt.is_not(None))
            .order_by(m.created_at.desc(), m.id)
            .limit(1)
        )
    ).first()
    return [] if row is None else user_texts(row[0])


async def auto_tag_conversation(
    engine: AsyncEngine,
    target_type: str,
    target_id: uuid.UUID,
    tagger: Tagger | None = None,
    *,
    model_tags: TagSource | None = None,
    offline_tags: TagSource | None = None,
) -> list[TagInfo]:
    """`POST /tags/auto-generate`: tag a stored conversation now; refused when its text was not stored.

    `model_tags` (the tagger model through the chat service, when configured) is asked first; when it
    answers None the offline tagger decides: `offline_tags` (a server's tagger process; None from it is a
    503 `Unavailable`), else `tagger` or the default model in this process."""
    if target_type != "conversation":
        raise InvalidInput("only conversations are tagged automatically", param="target_type")
    async with engine.connect() as conn:
        texts = await stored_user_texts(conn, target_id)
    if not texts:
        raise ContentNotStored(
            "the conversation's text is not stored (SYNAPGATE_STORE_MESSAGE_CONTENT=false, or no such "
            "conversation): it was tagged, if at all, when it was first sent",
            param="target_id",
        )
    if model_tags is not None:
        predictions = await model_tags(texts)
        if predictions is not None:
            async with engine.begin() as conn:
                return await write_auto_tags(conn, target_id, predictions)
    if offline_tags is not None:
        offline = await offline_tags(texts)
        if offline is None:
            raise Unavailable("the offline tagger does not answer now; try again shortly")
        if not offline:
            return []
        async with engine.begin() as conn:
            return await write_auto_tags(conn, target_id, offline)
    return await auto_tag_texts(engine, target_id, texts, tagger)


# -- churn -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChurnRun:
    """What a daily churn run did."""

    as_of: date
    model_version: str
    predictions: int
    validation: dict[str, float]


async def run_churn(engine: AsyncEngine, as_of: date | None = None) -> ChurnRun:
    """Train (when history allows) and predict every active user's churn; store the predictions."""
    from insights.churn import history_long_enough, predict_churn

    as_of = as_of or utcnow().date()
    async with engine.connect() as conn:
        histories = await repository.user_histories(conn, as_of - timedelta(days=CHURN_HISTORY_DAYS))
    model = None  # too short a history to learn from: the heuristic predicts, and no child is started
    if history_long_enough(histories, as_of):
        model = await trained_in_a_child_process(histories, as_of)
    predictions = predict_churn(histories, as_of, model)
    as_of_t = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    async with engine.begin() as conn:
        await repository.replace_churn_predictions(conn, predictions, as_of_t)
    version = model.version if model is not None else "heuristic-1"
    return ChurnRun(as_of, version, len(predictions), dict(model.validation) if model is not None else {})


async def trained_in_a_child_process(
    histories: Sequence[UserHistory], as_of: date
) -> LinearChurnModel | None:
    """`train_churn_model` in a process of its own (`python -m insights.train_churn`) that exits when done:
    scikit-learn and SciPy (+86 MB of RSS in a measured run, never unloaded) stay out of the caller — on
    SQLite, or with SYNAPGATE_JOBS_IN_PROCESS, that is the serving worker, which the daily job would otherwise
    leave that much bigger (issue 15: RSS per worker). The model comes back as plain floats."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "insights.train_churn",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate(pickle.dumps((list(histories), as_of)))
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"churn training exited with {child.returncode}: {tail[0]}")
    model: LinearChurnModel | None = pickle.loads(out)
    return model


async def churn_of(conn: AsyncConnection, user_id: uuid.UUID) -> repository.ChurnInfo:
    """A user's stored prediction; 404 when the daily job has not predicted them (not active, or not run)."""
    found = await repository.get_churn(conn, user_id)
    if found is None:
        raise PredictionNotFound(
            "has no churn prediction (no recent activity, or insights.daily has not run)", param="user_id"
        )
    return found


# -- anomalies -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnomalyRun:
    judged_from: datetime
    judged_to: datetime
    found: int
    new: int
    webhooks_queued: int


async def run_anomalies(
    engine: AsyncEngine, now: datetime | None = None, rule: AnomalyRule | None = None
) -> AnomalyRun:
    """Judge the last complete hours; store new anomalies and queue their webhooks in one transaction."""
    from insights.anomaly import HOURS_PER_WEEK, AnomalyRule, detect_anomalies

    rule = rule or AnomalyRule()
    now = now or utcnow()
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=ANOMALY_LOOKBACK_HOURS)
    since = start - timedelta(hours=rule.weeks * HOURS_PER_WEEK + rule.neighbour_hours)
    async with engine.connect() as conn:
        points, owners = await repository.hourly_points(conn, since, end)
    found = detect_anomalies(points, start, end, rule)
    queued = 0
    async with engine.begin() as conn:
        new = await repository.insert_new_anomalies(conn, found, owners)
        for a in new:
            owner = owners.get((a.entity_type, a.entity_id), repository.EntityOwner(None, None))
            queued += await enqueue(
                conn,
                "spend.anomaly",
                anomaly_event(a, owner),
                user_id=owner.user_id,
                workspace_id=owner.workspace_id,
            )
    return AnomalyRun(start, end, len(found), len(new), queued)


def anomaly_event(a: Anomaly, owner: repository.EntityOwner) -> dict[str, Any]:
    """The `spend.anomaly` event's data: the webhook's documented fields plus the entity and metric."""
    spend = a.metric == "spend_nano"
    data: dict[str, Any] = {
        "user_id": str(owner.user_id) if owner.user_id is not None else None,
        "workspace_id": str(owner.workspace_id) if owner.workspace_id is not None else None,
        "entity_type": a.entity_type,
        "entity_id": a.entity_id,
        "metric": a.metric,
        "window_start": a.hour.isoformat().replace("+00:00", "Z"),
        "window_end": (a.hour + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "observed": a.observed,
        "expected": a.expected,
        "score": a.score,
    }
    if spend:
        data.update(
            spent_nano=a.observed,
            spent_usd=usd(a.observed),
            expected_nano=a.expected,
            expected_usd=usd(a.expected),
        )
    return data


# -- recommendations -------------------------------------------------------------------------------------


async def recommendations(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID | None,
    workspace_id: uuid.UUID | None,
    since: datetime | None = None,
    rule: RecommendationRule | None = None,
) -> list[Recommendation]:
    """Cheaper models whose evidence on the same task tag is not worse, with exact savings (or none)."""
    since = since or utcnow() - timedelta(days=RECOMMENDATION_DAYS)
    traffic = await repository.model_traffic(conn, since, user_id=user_id, workspace_id=workspace_id)
    catalog = await load_catalog(conn)
    return recommend_models(traffic, catalog, rule)


@dataclass(frozen=True, slots=True)
class RecommendationsRun:
    """What a snapshot run stored: the platform's and each user's recommendations, traffic since `since`."""

    computed_at: datetime
    since: datetime
    recommendations: int  # the platform's
    user_recommendations: int  # all users' together
    users: int  # users with tagged traffic in the window


async def run_recommendations(
    engine: AsyncEngine, now: datetime | None = None, rule: RecommendationRule | None = None
) -> RecommendationsRun:
    """Compute the recommendations of the last 30 days — the platform's and each user's, from one scan of
    the tagged traffic — and replace the stored snapshot in one transaction."""
    now = now or utcnow()
    since = now - timedelta(days=RECOMMENDATION_DAYS)
    async with engine.connect() as conn:
        traffic = await repository.model_traffic_by_scope(conn, since)
        catalog = await load_catalog(conn)
    found = {scope: recommend_models(arms, catalog, rule) for scope, arms in traffic.items()}
    found.setdefault(repository.PLATFORM_SCOPE, [])
    async with engine.begin() as conn:
        await repository.replace_recommendations(conn, found, computed_at=now, since=since)
    users = [scope for scope in found if scope != repository.PLATFORM_SCOPE]
    return RecommendationsRun(
        now,
        since,
        len(found[repository.PLATFORM_SCOPE]),
        sum(len(found[u]) for u in users),
        len(users),
    )


async def stored_recommendations(
    conn: AsyncConnection, *, user_id: uuid.UUID | None, workspace_id: uuid.UUID | None
) -> repository.RecommendationSnapshot | None:
    """The stored snapshot for a read scoped as the live API's: the platform's (the operator), or a user's
    (a user key, or the operator narrowing to a user). None: the job has not run — or a workspace was asked
    for, which the job does not compute (the live API does)."""
    if workspace_id is not None:
        return None
    if user_id is not None:
        return await repository.stored_recommendations(conn, ("user", user_id))
    return await repository.stored_recommendations(conn)


# -- everything now (the CLI's `insights run`) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InsightsRun:
    churn: ChurnRun
    anomalies: AnomalyRun
    recommendations: RecommendationsRun


async def run_all(engine: AsyncEngine, now: datetime | None = None) -> InsightsRun:
    """Every insights job, now."""
    now = now or utcnow()
    churn = await run_churn(engine, now.date())
    found = await run_anomalies(engine, now)
    recs = await run_recommendations(engine, now)
    return InsightsRun(churn, found, recs)
