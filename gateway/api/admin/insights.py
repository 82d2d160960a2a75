"""Admin API: insights — churn predictions, model recommendations, spend anomalies, automatic tags, coverage.

Scoped like the other analytics: the admin key sees everyone (optionally narrowed by `user_id`); a user's key
sees its own user only (another user's id: 404). The rules live in storage/insights/service.py; the stored
results are written by the `insights.daily` and `insights.hourly` jobs (or `synapgate insights run`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from litestar import Controller, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from gateway.api.admin.analytics import End, Start, window_of
from gateway.api.admin.common import Body, Struct
from gateway.api.admin.conversations import TagOut, _visible_target, tag_out
from gateway.api.admin.scope import Caller, Engine, Paging, not_found
from gateway.chat.tagging import model_insights, offline_models
from gateway.errors import bad_request
from insights.recommend import ArmEvidence, Recommendation
from pricing.money import format_usd
from storage.insights import repository, service

# -- response shapes -----------------------------------------------------------------------------


class FactorOut(Struct):
    name: str
    value: float
    effect: float  # signed contribution to the churn log-odds (+ raises the risk)


class ChurnOut(Struct):
    user_id: uuid.UUID
    churn_probability: float
    risk: str  # low | medium | high
    factors: list[FactorOut]
    model_version: str  # heuristic-1 while history is too short to train on, else trained-<date>
    as_of: datetime


class ChurnPage(Struct):
    data: list[ChurnOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class EvidenceOut(Struct):
    model: str
    requests: int
    ratings: int
    positive_rate: float
    positive_rate_lower: float
    error_rate: float
    error_rate_upper: float
    latency_p50_ms: float


class RecommendationOut(Struct):
    tag: str
    current_model: str
    recommended_model: str
    requests: int
    current_cost_usd: str
    current_cost_nano: int
    projected_cost_usd: str
    projected_cost_nano: int
    savings_usd: str
    savings_nano: int
    savings_pct: str
    evidence: dict[str, EvidenceOut]  # "current" and "candidate", with their sample sizes


class RecommendationsOut(Struct):
    data: list[RecommendationOut]
    source: str = "live"  # live: computed now; snapshot: as the insights.daily job stored it
    # snapshot only: when the job computed it and from when its traffic counts (null: the job has not
    # run, or a workspace was asked for — the job snapshots the platform and each user, not workspaces)
    computed_at: datetime | None = None
    since: datetime | None = None


class AnomalyOut(Struct):
    id: uuid.UUID
    entity_type: str  # user | key | workspace
    entity_id: uuid.UUID
    user_id: uuid.UUID | None
    metric: str  # spend_nano | requests
    hour: datetime
    observed: int
    expected: int
    score: float


class AnomalyPage(Struct):
    data: list[AnomalyOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class AutoTagsOut(Struct):
    data: list[TagOut]


class CoverageOut(Struct):
    conversations: int
    auto_tagged: int
    coverage: float | None  # auto_tagged / conversations


class AutoTagIn(Body):
    target_type: Literal["conversation", "message", "user", "workspace"]
    target_id: uuid.UUID


def churn_out(c: repository.ChurnInfo) -> ChurnOut:
    return ChurnOut(
        user_id=c.user_id,
        churn_probability=float(c.churn_probability),
        risk=c.risk,
        factors=[FactorOut(name=f["name"], value=f["value"], effect=f["effect"]) for f in c.factors],
        model_version=c.model_version,
        as_of=c.as_of,
    )


def _evidence(e: ArmEvidence) -> EvidenceOut:
    return EvidenceOut(
        model=e.model,
        requests=e.requests,
        ratings=e.ratings,
        positive_rate=round(e.positive_rate, 6),
        positive_rate_lower=round(e.positive_rate_lower, 6),
        error_rate=round(e.error_rate, 6),
        error_rate_upper=round(e.error_rate_upper, 6),
        latency_p50_ms=e.latency_p50_ms,
    )


def recommendation_out(r: Recommendation) -> RecommendationOut:
    return RecommendationOut(
        tag=r.tag,
        current_model=r.current_model,
        recommended_model=r.recommended_model,
        requests=r.current.requests,
        current_cost_usd=format_usd(r.current_cost_nano),
        current_cost_nano=r.current_cost_nano,
        projected_cost_usd=format_usd(r.projected_cost_nano),
        projected_cost_nano=r.projected_cost_nano,
        savings_usd=format_usd(r.savings_nano),
        savings_nano=r.savings_nano,
        savings_pct=str(r.savings_pct.quantize(Decimal("0.01"))),
        evidence={"current": _evidence(r.current), "candidate": _evidence(r.candidate)},
    )


def anomaly_out(a: repository.AnomalyInfo) -> AnomalyOut:
    return AnomalyOut(
        id=a.id,
        entity_type=a.entity_type,
        entity_id=a.entity_id,
        user_id=a.user_id,
        metric=a.metric,
        hour=a.hour,
        observed=a.observed,
        expected=a.expected,
        score=float(a.score),
    )


def _scoped_user(caller: Caller, user_id: uuid.UUID | None) -> uuid.UUID | None:
    """The user a read is narrowed to: a user key's own (another id: 404); the operator's choice."""
    if caller.is_admin:
        return user_id
    if user_id is not None and user_id != caller.user_id:
        raise not_found("user")
    return caller.user_id


class InsightsController(Controller):
    """Churn, recommendations, anomalies, automatic tags. (Guard and dependencies: on the admin router.)"""

    path = "/"
    tags = ("insights",)

    @get("/analytics/churn-prediction/{user_id:uuid}")
    async def churn_route(self, caller: Caller, engine: Engine, user_id: FromPath[uuid.UUID]) -> ChurnOut:
        """A user's latest churn prediction with its factors (404 until the daily job has predicted them)."""
        caller.require_user(user_id)
        async with engine.connect() as conn:
            return churn_out(await service.churn_of(conn, user_id))

    @get("/analytics/churn-prediction")
    async def churn_list_route(
        self,
        caller: Caller,
        engine: Engine,
        page: Paging,
        risk: FromQuery[Literal["low", "medium", "high"] | None] = None,
    ) -> ChurnPage:
        """Stored predictions, most likely to churn first; `risk=` filters (a user key: its own only)."""
        async with engine.connect() as conn:
            found = await repository.list_churn(
                conn, risk=risk, user_id=_scoped_user(caller, None), limit=page.limit, offset=page.offset
            )
        return ChurnPage(
            data=[churn_out(c) for c in found.items],
            total=found.total,
            limit=found.limit,
            offset=found.offset,
            has_more=found.has_more,
        )

    @get("/analytics/recommendations")
    async def recommendations_route(
        self,
        caller: Caller,
        engine: Engine,
        user_id: FromQuery[uuid.UUID | None] = None,
        workspace_id: FromQuery[uuid.UUID | None] = None,
        start: Start = None,
        source: FromQuery[Literal["live", "snapshot"]] = "live",
    ) -> RecommendationsOut:
        """Per (task tag, current model) with enough traffic: a cheaper model whose evidence on that tag is
        not worse, with exact costs at the candidate's prices and the evidence's sample sizes (else none).

        `source=snapshot` reads what the daily insights job stored for the same scope (the platform, or
        the user); a workspace is not snapshotted (`data` empty, `computed_at` null); `start` is live-only."""
        scoped = _scoped_user(caller, user_id)
        if source == "snapshot":
            if start is not None:
                raise bad_request(
                    "'start' applies to live recommendations; the snapshot covers the 30 days before its "
                    "computed_at.",
                    param="start",
                )
            async with engine.connect() as conn:
                snap = await service.stored_recommendations(conn, user_id=scoped, workspace_id=workspace_id)
            if snap is None:
                return RecommendationsOut(data=[], source="snapshot")
            return RecommendationsOut(
                data=[recommendation_out(r) for r in snap.items],
                source="snapshot",
                computed_at=snap.computed_at,
                since=snap.since,
            )
        window = window_of(start, None)
        async with engine.connect() as conn:
            found = await service.recommendations(
                conn, user_id=scoped, workspace_id=workspace_id, since=window.start
            )
        return RecommendationsOut(data=[recommendation_out(r) for r in found])

    @get("/analytics/anomalies")
    async def anomalies_route(
        self,
        caller: Caller,
        engine: Engine,
        page: Paging,
        start: Start = None,
        end: End = None,
        user_id: FromQuery[uuid.UUID | None] = None,
    ) -> AnomalyPage:
        """Anomalous hours of spend or requests (user, key, workspace), newest first."""
        window = window_of(start, end)
        async with engine.connect() as conn:
            found = await repository.list_anomalies(
                conn,
                user_id=_scoped_user(caller, user_id),
                since=window.start,
                until=window.end,
                limit=page.limit,
                offset=page.offset,
            )
        return AnomalyPage(
            data=[anomaly_out(a) for a in found.items],
            total=found.total,
            limit=found.limit,
            offset=found.offset,
            has_more=found.has_more,
        )

    @get("/analytics/tag-coverage")
    async def coverage_route(
        self,
        caller: Caller,
        engine: Engine,
        start: Start = None,
        end: End = None,
        user_id: FromQuery[uuid.UUID | None] = None,
    ) -> CoverageOut:
        """The share of conversations (created in the range) that carry an automatic tag."""
        window = window_of(start, end)
        async with engine.connect() as conn:
            found = await repository.auto_tag_coverage(
                conn, user_id=_scoped_user(caller, user_id), since=window.start, until=window.end
            )
        share = None if found.conversations == 0 else round(found.auto_tagged / found.conversations, 6)
        return CoverageOut(conversations=found.conversations, auto_tagged=found.auto_tagged, coverage=share)

    @post("/tags/auto-generate", status_code=200)
    async def auto_generate_route(
        self, caller: Caller, engine: Engine, data: JSONBody[AutoTagIn]
    ) -> AutoTagsOut:
        """Tag a stored conversation now — with the tagger model when configured (metered, charged to the
        platform user), else or when it is unsure with the offline classifier; returns the automatic tags
        written (none when unsure). Needs the conversation's text stored (SYNAPGATE_STORE_MESSAGE_CONTENT)."""
        async with engine.connect() as conn:
            await _visible_target(conn, caller, data.target_type, data.target_id)
        model, offline = model_insights(engine), offline_models(engine)
        found = await service.auto_tag_conversation(
            engine,
            data.target_type,
            data.target_id,
            model_tags=model.tag if model is not None else None,
            offline_tags=offline.tag if offline is not None else None,  # the tagger process (503 when down)
        )
        return AutoTagsOut(data=[tag_out(t) for t in found])
