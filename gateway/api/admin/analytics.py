"""Admin API: analytics — a user's usage, a workspace's costs, per-model performance, top LLMs.

Time ranges are `[start, end)` with a time zone (a naive time is a 400 naming the field); periods
(day, week from Monday, month) are UTC. Amounts are decimal USD strings plus integer nano-USD.

Who sees what:
- usage/{user_id}: the admin key, or that user's own key (anyone else's: 404).
- costs/{workspace_id}: the admin key, or a key of a user who is an owner or admin of the workspace;
  plain members and outsiders get 404 (the workspace's spend is its managers' business).
- llm-performance, top-llms: the admin key sees every request (optionally `user_id=` to narrow it to one
  user); a user's key sees the same figures computed over its own requests only.

Definitions (llm-performance): `error_rate` = requests with status error / all requests (cancelled ones
are neither); latency and TTFT percentiles, and tokens per second (Σ output tokens / Σ latency), are over
successful requests; cost per 1k output tokens = Σ cost / Σ output tokens × 1000; feedback counts the
ratings of the messages answered in the range (stars 1–5 averaged; thumbs counted up and down).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from litestar import Controller, get
from litestar.params import FromPath, FromQuery, QueryParameter

from gateway.api.admin.common import Struct, aware, money
from gateway.api.admin.scope import Caller, Engine, Paging, not_found
from gateway.errors import bad_request
from pricing.money import nano_to_usd, round_to_nano
from storage.accounts import users
from storage.accounts.users import require_user
from storage.usage import analytics as queries
from storage.usage.analytics import CatalogEntry, Sums, Window

K = TypeVar("K")
G = TypeVar("G")

Start = Annotated[datetime | None, QueryParameter(description="inclusive, with a time zone")]
End = Annotated[datetime | None, QueryParameter(description="exclusive, with a time zone")]


def window_of(start: datetime | None, end: datetime | None) -> Window:
    since, until = aware(start, "start"), aware(end, "end")
    if since is not None and until is not None and until <= since:
        raise bad_request("'end' must be after 'start'.", param="end")
    return Window(since, until)


def _ratio(numerator: int, denominator: int, places: int = 6) -> float | None:
    return None if denominator == 0 else round(numerator / denominator, places)


# -- response shapes -----------------------------------------------------------------------------


class TokensOut(Struct):
    """Token counts: `input` includes cached input and cache writes; `output` includes reasoning."""

    input: int
    cached_input: int
    cache_write: int
    output: int
    reasoning: int
    total: int


class UsageFiguresOut(Struct):
    requests: int
    errors: int
    cancelled: int
    tokens: TokensOut
    cost_usd: str
    cost_nano: int
    charged_usd: str
    charged_nano: int


class UsagePeriodOut(UsageFiguresOut):
    period_start: datetime


class ModelUsageOut(UsageFiguresOut):
    model: str
    llm_id: int | None
    provider: str | None


class UsageReportOut(Struct):
    user_id: uuid.UUID
    start: datetime | None
    end: datetime | None
    granularity: str
    totals: UsageFiguresOut
    series: list[UsagePeriodOut]
    by_model: list[ModelUsageOut]


class CostFiguresOut(Struct):
    requests: int
    cost_usd: str
    cost_nano: int
    charged_usd: str
    charged_nano: int


class CostBreakdownOut(CostFiguresOut):
    """`cost` is the metered cost at catalog prices; `charged` what the ledger debited (BYOK: the fee)."""

    platform: CostFiguresOut
    byok: CostFiguresOut


class UserCostOut(CostBreakdownOut):
    user_id: uuid.UUID
    email: str | None


class ModelCostOut(CostBreakdownOut):
    model: str
    llm_id: int | None
    provider: str | None


class UserCostPage(Struct):
    data: list[UserCostOut]
    total: int
    limit: int
    offset: int
    has_more: bool


class WorkspaceCostsOut(Struct):
    workspace_id: uuid.UUID
    start: datetime | None
    end: datetime | None
    totals: CostBreakdownOut
    by_model: list[ModelCostOut]
    by_user: UserCostPage


class TopLlmOut(CostBreakdownOut):
    rank: int
    model: str
    llm_id: int | None
    provider: str | None
    tokens: TokensOut
    cost_share: float | None  # of the total cost of the range, 0–1


class TopLlmsOut(Struct):
    start: datetime | None
    end: datetime | None
    scope: str  # all | user
    user_id: uuid.UUID | None
    order_by: str
    models_total: int
    totals: CostFiguresOut
    data: list[TopLlmOut]


class LatencyOut(Struct):
    p50: float | None
    p95: float | None


class TtftOut(Struct):
    p50: float | None


class SentimentCountsOut(Struct):
    """How many of the ratings' comments read positive, neutral, negative (rated without comment: none)."""

    positive: int
    neutral: int
    negative: int


class FeedbackOut(Struct):
    count: int
    stars_count: int
    stars_average: float | None
    thumbs_up: int
    thumbs_down: int
    thumbs_up_rate: float | None
    sentiment: SentimentCountsOut


class ModelPerformanceOut(Struct):
    model: str
    llm_id: int | None
    provider: str | None
    requests: int
    successes: int
    errors: int
    cancelled: int
    error_rate: float | None
    latency_ms: LatencyOut
    ttft_ms: TtftOut
    output_tokens: int
    tokens_per_second: float | None
    cost_usd: str
    cost_nano: int
    cost_per_1k_output_tokens_usd: str | None
    cost_per_1k_output_tokens_nano: int | None
    feedback: FeedbackOut


class PerformanceOut(Struct):
    start: datetime | None
    end: datetime | None
    scope: str  # all | user
    user_id: uuid.UUID | None
    percentile_method: str  # exact | histogram (storage/usage/analytics.py)
    data: list[ModelPerformanceOut]


# -- building the shapes -------------------------------------------------------------------------


def tokens_out(s: Sums) -> TokensOut:
    return TokensOut(
        input=s.input_tokens,
        cached_input=s.cached_input_tokens,
        cache_write=s.cache_write_tokens,
        output=s.output_tokens,
        reasoning=s.reasoning_tokens,
        total=s.input_tokens + s.output_tokens,
    )


def _usage_fields(s: Sums) -> dict[str, Any]:
    return {
        "requests": s.requests,
        "errors": s.errors,
        "cancelled": s.cancelled,
        "tokens": tokens_out(s),
        **money(s.cost_nano, "cost"),
        **money(s.charged_nano, "charged"),
    }


def _cost_fields(s: Sums) -> dict[str, Any]:
    return {"requests": s.requests, **money(s.cost_nano, "cost"), **money(s.charged_nano, "charged")}


def _breakdown_fields(platform: Sums, byok: Sums) -> dict[str, Any]:
    total = Sums.total([platform, byok])
    return {
        **_cost_fields(total),
        "platform": CostFiguresOut(**_cost_fields(platform)),
        "byok": CostFiguresOut(**_cost_fields(byok)),
    }


def _model_fields(name: str, catalog: dict[str, CatalogEntry]) -> dict[str, Any]:
    entry = catalog.get(name)
    return {
        "model": name,
        "llm_id": entry.llm_id if entry else None,
        "provider": entry.provider if entry else None,
    }


def period_start(day: datetime, granularity: str) -> datetime:
    """The UTC day, ISO week (from Monday) or month a UTC day belongs to."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _split_byok(found: dict[K, Sums], group_of: Callable[[K], tuple[G, bool]]) -> dict[G, tuple[Sums, Sums]]:
    """Totals per group as (platform calls, BYOK calls)."""
    out: dict[G, tuple[Sums, Sums]] = defaultdict(lambda: (Sums(), Sums()))
    for key, sums in found.items():
        group, byok = group_of(key)
        out[group][1 if byok else 0].add(sums)
    return out


def _target_user(caller: Caller, user_id: uuid.UUID | None) -> uuid.UUID | None:
    """Whose requests a global report covers: a user key always its own; the admin anyone's, or all."""
    if caller.is_admin:
        return user_id
    if user_id is not None and user_id != caller.user_id:
        raise not_found("user")
    return caller.user_id


# -- routes --------------------------------------------------------------------------------------


def _cost_per_1k(cost_nano: int, output_tokens: int) -> dict[str, Any]:
    if output_tokens == 0:
        return {"cost_per_1k_output_tokens_usd": None, "cost_per_1k_output_tokens_nano": None}
    nano = round_to_nano(nano_to_usd(cost_nano) * 1000 / Decimal(output_tokens))
    return money(nano, "cost_per_1k_output_tokens")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class AnalyticsController(Controller):
    """Usage, costs, per-model performance and top LLMs. (Guard and dependencies: on the admin router.)"""

    path = "/"
    tags = ("analytics",)

    @get("/analytics/usage/{user_id:uuid}")
    async def usage_route(
        self,
        caller: Caller,
        engine: Engine,
        user_id: FromPath[uuid.UUID],
        start: Start = None,
        end: End = None,
        granularity: FromQuery[Literal["day", "week", "month"]] = "day",
    ) -> UsageReportOut:
        """A user's requests, tokens by kind and cost: totals, a series per UTC day/week/month, and per model.

        The series lists only periods with requests, oldest first; models are ordered by cost, then name.
        """
        caller.require_user(user_id)
        window = window_of(start, end)
        async with engine.connect() as conn:
            await require_user(conn, user_id, param=None)
            days = await queries.user_usage_by_day(conn, user_id, window)
            models = await queries.user_usage_by_model(conn, user_id, window)
            catalog = await queries.catalog_entries(conn)
        periods: dict[datetime, Sums] = defaultdict(Sums)
        for day, sums in days.items():
            periods[period_start(day, granularity)].add(sums)
        by_model = sorted(models.items(), key=lambda item: (-item[1].cost_nano, item[0]))
        return UsageReportOut(
            user_id=user_id,
            start=window.start,
            end=window.end,
            granularity=granularity,
            totals=UsageFiguresOut(**_usage_fields(Sums.total(models.values()))),
            series=[UsagePeriodOut(period_start=p, **_usage_fields(periods[p])) for p in sorted(periods)],
            by_model=[ModelUsageOut(**_model_fields(m, catalog), **_usage_fields(s)) for m, s in by_model],
        )

    @get("/analytics/costs/{workspace_id:uuid}")
    async def costs_route(
        self,
        caller: Caller,
        engine: Engine,
        page: Paging,
        workspace_id: FromPath[uuid.UUID],
        start: Start = None,
        end: End = None,
    ) -> WorkspaceCostsOut:
        """A workspace's cost by user (paged: highest cost first, ties by user id) and by model, split into
        platform calls and BYOK calls. Admin key, or a workspace owner's or admin's own key."""
        limit, offset = page.limit, page.offset
        window = window_of(start, end)
        async with engine.connect() as conn:
            if caller.is_admin:
                visible = await users.workspace_exists(conn, workspace_id)
            else:
                assert caller.user_id is not None
                visible = await users.workspace_role(conn, workspace_id, caller.user_id) in ("owner", "admin")
            if not visible:
                raise not_found("workspace")
            found = await queries.workspace_costs_by_user_and_model(conn, workspace_id, window)
            catalog = await queries.catalog_entries(conn)
            by_user = _split_byok(found, lambda k: (k[0], k[2]))
            ranked = sorted(by_user.items(), key=lambda item: (-Sums.total(item[1]).cost_nano, str(item[0])))
            chunk = ranked[offset : offset + limit]
            emails = await users.user_emails(conn, [u for u, _ in chunk])
        by_model = _split_byok(found, lambda k: (k[1], k[2]))
        models = sorted(by_model.items(), key=lambda item: (-Sums.total(item[1]).cost_nano, item[0]))
        platform = Sums.total(p for p, _ in by_model.values())
        byok = Sums.total(b for _, b in by_model.values())
        return WorkspaceCostsOut(
            workspace_id=workspace_id,
            start=window.start,
            end=window.end,
            totals=CostBreakdownOut(**_breakdown_fields(platform, byok)),
            by_model=[
                ModelCostOut(**_model_fields(m, catalog), **_breakdown_fields(*pair)) for m, pair in models
            ],
            by_user=UserCostPage(
                data=[
                    UserCostOut(user_id=u, email=emails.get(u), **_breakdown_fields(*pair))
                    for u, pair in chunk
                ],
                total=len(ranked),
                limit=limit,
                offset=offset,
                has_more=offset + len(chunk) < len(ranked),
            ),
        )

    @get("/analytics/top-llms")
    async def top_llms_route(
        self,
        caller: Caller,
        engine: Engine,
        start: Start = None,
        end: End = None,
        user_id: Annotated[
            uuid.UUID | None, QueryParameter(description="admin key: only this user's requests")
        ] = None,
        order_by: FromQuery[Literal["cost", "requests", "tokens"]] = "cost",
        limit: Annotated[int, QueryParameter(description="how many models, 1 to 100")] = 10,
    ) -> TopLlmsOut:
        """The models with the highest cost (or requests, or tokens) in the range, with their share of the
        total cost and the platform/BYOK split. Ties are ordered by model name."""
        if not 1 <= limit <= 100:
            raise bad_request("'limit' must be between 1 and 100.", param="limit")
        window = window_of(start, end)
        target = _target_user(caller, user_id)
        async with engine.connect() as conn:
            if target is not None:
                await require_user(conn, target, param=None)
            found = await queries.totals_by_model(conn, window, target)
            catalog = await queries.catalog_entries(conn)
        per_model = _split_byok(found, lambda k: k)

        def measure(sums: Sums) -> int:
            if order_by == "requests":
                return sums.requests
            if order_by == "tokens":
                return sums.input_tokens + sums.output_tokens
            return sums.cost_nano

        totals = {m: Sums.total(pair) for m, pair in per_model.items()}
        ranked = sorted(per_model, key=lambda m: (-measure(totals[m]), m))
        grand = Sums.total(totals.values())
        return TopLlmsOut(
            start=window.start,
            end=window.end,
            scope="all" if target is None else "user",
            user_id=target,
            order_by=order_by,
            models_total=len(ranked),
            totals=CostFiguresOut(**_cost_fields(grand)),
            data=[
                TopLlmOut(
                    rank=rank,
                    **_model_fields(m, catalog),
                    tokens=tokens_out(totals[m]),
                    cost_share=_ratio(totals[m].cost_nano, grand.cost_nano),
                    **_breakdown_fields(*per_model[m]),
                )
                for rank, m in enumerate(ranked[:limit], start=1)
            ],
        )

    @get("/analytics/llm-performance")
    async def llm_performance_route(
        self,
        caller: Caller,
        engine: Engine,
        start: Start = None,
        end: End = None,
        user_id: Annotated[
            uuid.UUID | None, QueryParameter(description="admin key: only this user's requests")
        ] = None,
    ) -> PerformanceOut:
        """Per model: requests, error rate, latency p50/p95, TTFT p50, tokens per second, cost per 1k output
        tokens and the feedback its answers got. Ordered by requests, then model name."""
        window = window_of(start, end)
        target = _target_user(caller, user_id)
        async with engine.connect() as conn:
            if target is not None:
                await require_user(conn, target, param=None)
            report = await queries.llm_performance(conn, window, target)
        data = []
        for m in report.models:
            s, p, f = m.sums, m.percentiles, m.feedback
            data.append(
                ModelPerformanceOut(
                    model=m.model.name,
                    llm_id=m.model.llm_id,
                    provider=m.model.provider,
                    requests=s.requests,
                    successes=s.successes,
                    errors=s.errors,
                    cancelled=s.cancelled,
                    error_rate=_ratio(s.errors, s.requests),
                    latency_ms=LatencyOut(p50=_ms(p.latency_p50), p95=_ms(p.latency_p95)),
                    ttft_ms=TtftOut(p50=_ms(p.ttft_p50)),
                    output_tokens=s.output_tokens,
                    tokens_per_second=_ratio(s.success_output_tokens * 1000, s.success_latency_ms_sum, 3),
                    **money(s.cost_nano, "cost"),
                    **_cost_per_1k(s.cost_nano, s.output_tokens),
                    feedback=FeedbackOut(
                        count=f.count,
                        stars_count=f.stars_count,
                        stars_average=_ratio(f.stars_sum, f.stars_count, 3),
                        thumbs_up=f.thumbs_up,
                        thumbs_down=f.thumbs_down,
                        thumbs_up_rate=_ratio(f.thumbs_up, f.thumbs_up + f.thumbs_down),
                        sentiment=SentimentCountsOut(
                            positive=f.sentiment.get("positive", 0),
                            neutral=f.sentiment.get("neutral", 0),
                            negative=f.sentiment.get("negative", 0),
                        ),
                    ),
                )
            )
        return PerformanceOut(
            start=window.start,
            end=window.end,
            scope="all" if target is None else "user",
            user_id=target,
            percentile_method=report.percentile_method,
            data=data,
        )
