"""What the insight models read from the records, and where their results are kept (SQLAlchemy Core).

Reads: per-user daily activity (usage_daily rollups, negative feedback, balances) for churn; hourly spend
and requests per user, key and workspace (usage_logs) for anomalies; per (tag, model) traffic with its
feedback, errors, latency and recorded token counts for recommendations. Writes: churn predictions (the
latest per user) and spend anomalies (unique per entity, metric and hour). Every read that serves the API
takes the caller's user id (None: the operator) and is scoped by it here, in one place.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from insights.recommend import ArmEvidence, ModelTraffic, Recommendation
from pricing.cost import Usage
from storage.dialect import insert_for
from storage.models import ChurnPrediction as ChurnRow
from storage.models import (
    Conversation,
    CreditAccount,
    MessageFeedback,
    ModelRecommendation,
    RecommendationRun,
    SpendAnomaly,
    Tag,
    UsageDaily,
    UsageLog,
    User,
    table_of,
)
from storage.paging import Page
from storage.types import utcnow

if TYPE_CHECKING:  # the models load numpy / scikit-learn: imported where used, not with the gateway
    from insights.anomaly import Anomaly, HourlyPoint
    from insights.churn import ChurnPrediction, UserHistory

PROBABILITY_PLACES = Decimal("0.00001")
SCORE_PLACES = Decimal("0.01")

churn_rows = table_of(ChurnRow)
anomalies = table_of(SpendAnomaly)
conversations = table_of(Conversation)
accounts = table_of(CreditAccount)
feedback = table_of(MessageFeedback)
tags = table_of(Tag)
usage_daily = table_of(UsageDaily)
usage_logs = table_of(UsageLog)
users = table_of(User)
recommendation_rows = table_of(ModelRecommendation)
recommendation_runs = table_of(RecommendationRun)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _negative(scale: str, rating: int) -> bool:
    """A thumbs down or one or two stars."""
    return rating < 0 if scale == "thumbs" else rating <= 2


def _positive(scale: str, rating: int) -> bool:
    """A thumbs up or four or five stars."""
    return rating > 0 if scale == "thumbs" else rating >= 4


# -- churn -----------------------------------------------------------------------------------------------


async def user_histories(
    conn: AsyncConnection, since: date, user_id: uuid.UUID | None = None
) -> list[UserHistory]:
    """Every user's (or one user's) daily activity since `since`, from the usage_daily rollups."""
    from insights.churn import DailyActivity, UserHistory

    ud = usage_daily.c
    since_t = datetime(since.year, since.month, since.day, tzinfo=UTC)
    stmt = select(
        ud.user_id,
        ud.day,
        ud.model,
        ud.requests,
        ud.errors,
        ud.cost_nano,
        ud.input_tokens + ud.output_tokens,
    ).where(ud.day >= since_t)
    if user_id is not None:
        stmt = stmt.where(ud.user_id == user_id)
    days: dict[uuid.UUID, dict[date, dict[str, Any]]] = defaultdict(dict)
    for uid, day, model, requests, errors, cost, tokens in (await conn.execute(stmt)).all():
        d = _aware(day).date()
        row = days[uid].setdefault(d, {"requests": 0, "errors": 0, "cost": 0, "tokens": 0, "models": set()})
        row["requests"] += int(requests)
        row["errors"] += int(errors)
        row["cost"] += int(cost)
        row["tokens"] += int(tokens)
        if requests:
            row["models"].add(model)
    f = feedback.c
    fstmt = select(f.message_user_id, f.message_created_at, f.scale, f.rating).where(
        f.message_created_at >= since_t, f.message_user_id.is_not(None)
    )
    if user_id is not None:
        fstmt = fstmt.where(f.message_user_id == user_id)
    negatives: dict[tuple[uuid.UUID, date], int] = defaultdict(int)
    for uid, created, scale, rating in (await conn.execute(fstmt)).all():
        if _negative(scale, rating):
            negatives[(uid, _aware(created).date())] += 1
    ustmt = select(users.c.id, users.c.created_at, func.coalesce(accounts.c.balance_nano, 0)).select_from(
        users.outerjoin(accounts, accounts.c.user_id == users.c.id)
    )
    if user_id is not None:
        ustmt = ustmt.where(users.c.id == user_id)
    out: list[UserHistory] = []
    for uid, created, balance in (await conn.execute(ustmt)).all():
        per_day = days.get(uid, {})
        activity = tuple(
            DailyActivity(
                day=d,
                requests=v["requests"],
                cost_nano=v["cost"],
                errors=v["errors"],
                tokens=v["tokens"],
                models=frozenset(v["models"]),
                negative_feedback=negatives.get((uid, d), 0),
            )
            for d, v in sorted(per_day.items())
        )
        signup = _aware(created).date()
        if activity:
            signup = min(signup, activity[0].day)
        out.append(UserHistory(str(uid), signup, int(balance), activity))
    return out


@dataclass(frozen=True, slots=True)
class ChurnInfo:
    user_id: uuid.UUID
    churn_probability: Decimal
    risk: str
    factors: list[dict[str, Any]]
    model_version: str
    as_of: datetime


_CHURN_COLUMNS = (
    churn_rows.c.user_id,
    churn_rows.c.churn_probability,
    churn_rows.c.risk,
    churn_rows.c.factors,
    churn_rows.c.model_version,
    churn_rows.c.as_of,
)


async def replace_churn_predictions(
    conn: AsyncConnection, predictions: Sequence[ChurnPrediction], as_of: datetime
) -> int:
    """Replace every stored prediction by this run's (users no longer active drop out)."""
    await conn.execute(delete(churn_rows))
    if predictions:
        now = utcnow()
        await conn.execute(
            churn_rows.insert(),
            [
                {
                    "user_id": uuid.UUID(p.user_id),
                    "churn_probability": Decimal(str(p.churn_probability)).quantize(PROBABILITY_PLACES),
                    "risk": p.risk,
                    "factors": [{"name": f.name, "value": f.value, "effect": f.effect} for f in p.factors],
                    "model_version": p.model_version,
                    "as_of": as_of,
                    "created_at": now,
                }
                for p in predictions
            ],
        )
    return len(predictions)


async def get_churn(conn: AsyncConnection, user_id: uuid.UUID) -> ChurnInfo | None:
    row = (await conn.execute(select(*_CHURN_COLUMNS).where(churn_rows.c.user_id == user_id))).first()
    return None if row is None else ChurnInfo(*row)


async def churn_of_users(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ChurnInfo]:
    """The stored predictions of these users (a page of users at once); those without one are absent."""
    if not user_ids:
        return {}
    stmt = select(*_CHURN_COLUMNS).where(churn_rows.c.user_id.in_(list(user_ids)))
    return {row[0]: ChurnInfo(*row) for row in (await conn.execute(stmt)).all()}


async def list_churn(
    conn: AsyncConnection, *, risk: str | None, user_id: uuid.UUID | None, limit: int, offset: int
) -> Page[ChurnInfo]:
    """Stored predictions, most likely to churn first (ties by user id); a user sees only their own."""
    where = []
    if risk is not None:
        where.append(churn_rows.c.risk == risk)
    if user_id is not None:
        where.append(churn_rows.c.user_id == user_id)
    total = (await conn.execute(select(func.count()).select_from(churn_rows).where(*where))).scalar_one()
    stmt = (
        select(*_CHURN_COLUMNS)
        .where(*where)
        .order_by(churn_rows.c.churn_probability.desc(), churn_rows.c.user_id)
        .limit(limit)
        .offset(offset)
    )
    return Page([ChurnInfo(*r) for r in (await conn.execute(stmt)).all()], int(total), limit, offset)


# -- anomalies -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntityOwner:
    """Who an anomalous entity belongs to (for scoping and for the webhook's user)."""

    user_id: uuid.UUID | None
    workspace_id: uuid.UUID | None


async def hourly_points(
    conn: AsyncConnection, since: datetime, until: datetime
) -> tuple[list[HourlyPoint], dict[tuple[str, str], EntityOwner]]:
    """Hourly spend and requests per user, key and workspace in [since, until), and each entity's owner."""
    from insights.anomaly import HourlyPoint

    u = usage_logs.c
    stmt = select(u.user_id, u.api_key_id, u.workspace_id, u.created_at, u.cost_nano).where(
        u.created_at >= since, u.created_at < until
    )
    sums: dict[tuple[str, str, datetime], list[int]] = defaultdict(lambda: [0, 0])
    owners: dict[tuple[str, str], EntityOwner] = {}
    for user_id, key_id, workspace_id, created, cost in (await conn.execute(stmt)).all():
        hour = _aware(created).replace(minute=0, second=0, microsecond=0)
        entities: list[tuple[str, Any, EntityOwner]] = [("user", user_id, EntityOwner(user_id, None))]
        if key_id is not None:
            entities.append(("key", key_id, EntityOwner(user_id, workspace_id)))
        if workspace_id is not None:
            entities.append(("workspace", workspace_id, EntityOwner(None, workspace_id)))
        for kind, ident, owner in entities:
            cell = sums[(kind, str(ident), hour)]
            cell[0] += int(cost)
            cell[1] += 1
            owners.setdefault((kind, str(ident)), owner)
    points = [
        HourlyPoint(kind, ident, hour, spend, requests)  # type: ignore[arg-type]
        for (kind, ident, hour), (spend, requests) in sums.items()
    ]
    return points, owners


async def insert_new_anomalies(
    conn: AsyncConnection, found: Sequence[Anomaly], owners: dict[tuple[str, str], EntityOwner]
) -> list[Anomaly]:
    """Store the anomalies not stored yet; the new ones are returned (a rerun returns none of them)."""
    new: list[Anomaly] = []
    now = utcnow()
    for a in found:
        owner = owners.get((a.entity_type, a.entity_id), EntityOwner(None, None))
        stmt = (
            insert_for(conn, anomalies)
            .values(
                id=uuid.uuid4(),
                entity_type=a.entity_type,
                entity_id=uuid.UUID(a.entity_id),
                user_id=owner.user_id,
                metric=a.metric,
                hour=a.hour,
                observed=a.observed,
                expected=a.expected,
                score=Decimal(str(a.score)).quantize(SCORE_PLACES),
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["entity_type", "entity_id", "metric", "hour"])
            .returning(anomalies.c.id)
        )
        if (await conn.execute(stmt)).first() is not None:
            new.append(a)
    return new


@dataclass(frozen=True, slots=True)
class AnomalyInfo:
    id: uuid.UUID
    entity_type: str
    entity_id: uuid.UUID
    user_id: uuid.UUID | None
    metric: str
    hour: datetime
    observed: int
    expected: int
    score: Decimal
    created_at: datetime


async def list_anomalies(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> Page[AnomalyInfo]:
    """Stored anomalies, newest hour first (ties by id); a user sees those of their user and keys."""
    a = anomalies.c
    where = []
    if user_id is not None:
        where.append(a.user_id == user_id)
    if since is not None:
        where.append(a.hour >= since)
    if until is not None:
        where.append(a.hour < until)
    total = (await conn.execute(select(func.count()).select_from(anomalies).where(*where))).scalar_one()
    cols = (
        a.id,
        a.entity_type,
        a.entity_id,
        a.user_id,
        a.metric,
        a.hour,
        a.observed,
        a.expected,
        a.score,
        a.created_at,
    )
    stmt = select(*cols).where(*where).order_by(a.hour.desc(), a.id).limit(limit).offset(offset)
    rows: list[Any] = list((await conn.execute(stmt)).all())
    return Page([AnomalyInfo(*r) for r in rows], int(total), limit, offset)


# -- recommendations -------------------------------------------------------------------------------------


Scope = tuple[str, uuid.UUID]  # ("platform", nil UUID) or ("user", the user's id)
PLATFORM_SCOPE: Scope = ("platform", uuid.UUID(int=0))  # the nil UUID for "the platform"


async def model_traffic(
    conn: AsyncConnection,
    since: datetime,
    *,
    user_id: uuid.UUID | None = None,
    workspace_id: uuid.UUID | None = None,
) -> list[ModelTraffic]:
    """Per (conversation tag, serving model): requests, errors, latency p50, feedback and token counts.

    A request counts under every tag of its conversation (automatic and manual); the recorded token counts
    are one `Usage` per successful request, so costs at any model's prices are exact.
    """
    found = await _traffic(conn, since, user_id=user_id, workspace_id=workspace_id, per_user=False)
    return found.get(PLATFORM_SCOPE, [])


async def model_traffic_by_scope(conn: AsyncConnection, since: datetime) -> dict[Scope, list[ModelTraffic]]:
    """The platform's traffic and each user's, from one scan: each user's equals `model_traffic` narrowed to
    that user (the same rows, grouped once more)."""
    return await _traffic(conn, since, user_id=None, workspace_id=None, per_user=True)


async def _traffic(
    conn: AsyncConnection,
    since: datetime,
    *,
    user_id: uuid.UUID | None,
    workspace_id: uuid.UUID | None,
    per_user: bool,
) -> dict[Scope, list[ModelTraffic]]:
    u = usage_logs.c
    t = tags.c
    stmt = (
        select(
            t.name,
            u.model,
            u.user_id,
            u.status,
            u.latency_ms,
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_write_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.message_id,
        )
        .select_from(
            usage_logs.join(
                tags,
                and_(t.target_type == "conversation", t.target_id == u.conversation_id),
            )
        )
        .where(u.created_at >= since, u.status != "cancelled")
    )
    if user_id is not None:
        stmt = stmt.where(u.user_id == user_id)
    if workspace_id is not None:
        stmt = stmt.where(u.workspace_id == workspace_id)
    ArmKey = tuple[Scope, str, str]
    arms: dict[ArmKey, dict[str, Any]] = {}
    message_arms: dict[uuid.UUID, list[ArmKey]] = defaultdict(list)
    for row in (await conn.execute(stmt)).all():
        scopes = [PLATFORM_SCOPE]
        if per_user and row.user_id is not None:
            scopes.append(("user", row.user_id))
        usage = None
        if row.status != "error":
            usage = Usage(
                prompt_tokens=row.input_tokens,
                completion_tokens=row.output_tokens,
                cached_tokens=row.cached_input_tokens,
                cache_write_tokens=row.cache_write_tokens,
                reasoning_tokens=row.reasoning_tokens,
            )
        for scope in scopes:
            key = (scope, row.name, row.model)
            arm = arms.setdefault(key, {"requests": 0, "errors": 0, "latency": [], "usages": []})
            arm["requests"] += 1
            if usage is None:
                arm["errors"] += 1
                continue
            arm["latency"].append(int(row.latency_ms))
            arm["usages"].append(usage)
            if row.message_id is not None:
                message_arms[row.message_id].append(key)
    ups: dict[ArmKey, int] = defaultdict(int)
    downs: dict[ArmKey, int] = defaultdict(int)
    ids = list(message_arms)
    for start in range(0, len(ids), 500):
        f = feedback.c
        rows = await conn.execute(
            select(f.message_id, f.scale, f.rating).where(f.message_id.in_(ids[start : start + 500]))
        )
        for message_id, scale, rating in rows.all():
            for key in message_arms[message_id]:
                if _positive(scale, rating):
                    ups[key] += 1
                elif _negative(scale, rating):
                    downs[key] += 1
    out: dict[Scope, list[ModelTraffic]] = defaultdict(list)
    for key, arm in sorted(arms.items(), key=lambda item: (str(item[0][0]), item[0][1], item[0][2])):
        scope, tag, model = key
        lat = sorted(arm["latency"])
        p50 = float(lat[len(lat) // 2]) if lat else 0.0
        out[scope].append(
            ModelTraffic(
                tag=tag,
                model=model,
                requests=arm["requests"],
                errors=arm["errors"],
                latency_p50_ms=p50,
                feedback_up=ups[key],
                feedback_down=downs[key],
                token_counts=tuple(arm["usages"]),
            )
        )
    return dict(out)


# -- recommendations: the stored snapshot ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecommendationSnapshot:
    """A scope's stored recommendations as its latest run computed them (by tag, then current model)."""

    scope: str
    computed_at: datetime
    since: datetime
    items: list[Recommendation]


def _arm_json(e: ArmEvidence) -> dict[str, Any]:
    return {
        "model": e.model,
        "requests": e.requests,
        "ratings": e.ratings,
        "positive_rate": e.positive_rate,
        "positive_rate_lower": e.positive_rate_lower,
        "error_rate": e.error_rate,
        "error_rate_upper": e.error_rate_upper,
        "latency_p50_ms": e.latency_p50_ms,
    }


def _arm_of(j: dict[str, Any]) -> ArmEvidence:
    return ArmEvidence(
        model=str(j["model"]),
        requests=int(j["requests"]),
        ratings=int(j["ratings"]),
        positive_rate=float(j["positive_rate"]),
        positive_rate_lower=float(j["positive_rate_lower"]),
        error_rate=float(j["error_rate"]),
        error_rate_upper=float(j["error_rate_upper"]),
        latency_p50_ms=float(j["latency_p50_ms"]),
    )


async def replace_recommendations(
    conn: AsyncConnection,
    by_scope: Mapping[Scope, Sequence[Recommendation]],
    *,
    computed_at: datetime,
    since: datetime,
) -> int:
    """Replace the whole stored snapshot — every scope's rows and the run row — with this run's (call it
    inside the caller's transaction, so readers see the old snapshot or the new one, never a mix).

    The run row is the platform's: a user's scope is computed in the same run (a user with no rows in it
    had nothing to recommend)."""
    await conn.execute(delete(recommendation_rows))
    await conn.execute(delete(recommendation_runs))
    platform = by_scope.get(PLATFORM_SCOPE, ())
    name, scope_id = PLATFORM_SCOPE
    await conn.execute(
        recommendation_runs.insert().values(
            scope=name, scope_id=scope_id, computed_at=computed_at, since=since, recommendations=len(platform)
        )
    )
    rows = [
        {
            "id": uuid.uuid4(),
            "scope": scope[0],
            "scope_id": scope[1],
            "computed_at": computed_at,
            "tag": x.tag,
            "current_model": x.current_model,
            "recommended_model": x.recommended_model,
            "requests": x.current.requests,
            "current_cost_nano": x.current_cost_nano,
            "projected_cost_nano": x.projected_cost_nano,
            "savings_nano": x.savings_nano,
            "savings_pct": x.savings_pct,
            "evidence": {"current": _arm_json(x.current), "candidate": _arm_json(x.candidate)},
        }
        for scope, found in sorted(by_scope.items(), key=lambda item: (item[0][0], str(item[0][1])))
        for x in found
    ]
    for start in range(0, len(rows), 1000):
        await conn.execute(recommendation_rows.insert(), rows[start : start + 1000])
    return len(rows)


async def stored_recommendations(
    conn: AsyncConnection, scope: Scope = PLATFORM_SCOPE
) -> RecommendationSnapshot | None:
    """A scope's recommendations of the latest run (the live order); None: the job has never run."""
    name, scope_id = scope
    r, run = recommendation_rows.c, recommendation_runs.c
    platform_name, platform_id = PLATFORM_SCOPE
    head = (
        await conn.execute(
            select(run.computed_at, run.since).where(run.scope == platform_name, run.scope_id == platform_id)
        )
    ).first()
    if head is None:
        return None
    rows = (
        await conn.execute(
            select(recommendation_rows)
            .where(r.scope == name, r.scope_id == scope_id)
            .order_by(r.tag, r.current_model)
        )
    ).all()
    items = [
        Recommendation(
            tag=row.tag,
            current_model=row.current_model,
            recommended_model=row.recommended_model,
            current_cost_nano=int(row.current_cost_nano),
            projected_cost_nano=int(row.projected_cost_nano),
            savings_nano=int(row.savings_nano),
            savings_pct=Decimal(row.savings_pct),
            current=_arm_of(row.evidence["current"]),
            candidate=_arm_of(row.evidence["candidate"]),
        )
        for row in rows
    ]
    return RecommendationSnapshot(name, _aware(head.computed_at), _aware(head.since), items)


# -- coverage --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TagCoverage:
    """Conversations (created in the range) and how many of them carry an automatic tag."""

    conversations: int
    auto_tagged: int


async def auto_tag_coverage(
    conn: AsyncConnection, *, user_id: uuid.UUID | None, since: datetime | None, until: datetime | None
) -> TagCoverage:
    c = conversations.c
    where = []
    if user_id is not None:
        where.append(c.user_id == user_id)
    if since is not None:
        where.append(c.created_at >= since)
    if until is not None:
        where.append(c.created_at < until)
    total = (await conn.execute(select(func.count()).select_from(conversations).where(*where))).scalar_one()
    tagged_ids = (
        select(tags.c.target_id)
        .where(tags.c.target_type == "conversation", tags.c.is_auto.is_(True))
        .distinct()
        .scalar_subquery()
    )
    tagged = (
        await conn.execute(
            select(func.count()).select_from(conversations).where(*where, c.id.in_(tagged_ids))
        )
    ).scalar_one()
    return TagCoverage(int(total), int(tagged))


# -- helpers for the jobs --------------------------------------------------------------------------------


def day_start(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def hours_back(now: datetime, hours: int) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)
