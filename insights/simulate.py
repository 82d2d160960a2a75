"""A synthetic SynapGate platform history with planted ground truth, for evaluating the insight models.

Generative assumptions (deterministic for a seed):
* Users follow one of four lifecycles. `steady` (45 %): active throughout, with a 15 % chance of one
  7–14-day break (holidays: quiet, then back — the hard negatives of churn). `declining` (20 %): from a
  random day their use fades linearly to nothing over 20–60 days, errors and negative feedback rising.
  `churned` (15 %): active, then stop on a random day; 60 % show frustration (more errors and negative
  feedback) in their last 10 days, 40 % leave without warning. `onboarding` (20 %): sign up in the last 90
  days, ramp up over two weeks; 30 % of them drop out after 1–4 weeks.
* Daily requests ~ Poisson(base rate × lifecycle factor × weekday factor); base rates are log-normal (median
  20 a day), weekends run at 45 %. Cost per request is log-normal per user (median 0.0008 USD); errors and
  negative feedback are binomial in the requests. Balances fall with spend; active users top up when under a
  week of runway, users in decline or about to churn stop topping up.
* Hourly series (the last `hourly_days` days, for `hourly_users` users active then, and their workspaces as
  the sum of their members): each day's requests are split over the hours by a working-day profile (peak
  9–18 h), spend in proportion. Spikes (runaway scripts) are planted in the last `anomaly_window_days` days
  on users: 25–60× the user's average hourly requests at their own cost per request, added to the daily
  totals too. Ground truth is the (user, hour); the same hour of that user's workspace is the same incident.
* Model traffic per (tag, model) in two periods (the first for recommending, the second held out), with a
  positive-feedback probability per (tag, model): large models ≈ 0.85–0.88, small ones ≈ 0.70 — except the
  planted cases where a cheaper model is as good (`summarization`: gpt-4o-mini = gpt-4o; `translation`:
  gemini-2.0-flash = claude-sonnet-4) and one equal-but-too-rarely-used case (`writing`: claude-haiku-3.5, 60
  requests: no evidence, no recommendation). 20 % of requests are rated; ratings carry EN/PT comments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

import numpy as np

from insights.anomaly import HourlyPoint
from insights.churn import DailyActivity, UserHistory
from insights.data.generate import generate_sentiment
from insights.recommend import ModelTraffic
from pricing.catalog import Catalog, Model, PriceTier, Pricing
from pricing.cost import Usage

Lifecycle = Literal["steady", "declining", "churned", "onboarding"]
_HOUR_PROFILE = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.5, 2.2, 2.4, 2.3, 1.8, 2.1, 2.4, 2.3, 2.0, 1.6, 1.1, 0.8, 0.7,
     0.6, 0.4, 0.3]
)  # fmt: skip
_HOUR_PROFILE = _HOUR_PROFILE / _HOUR_PROFILE.sum()


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 7
    n_users: int = 400
    days: int = 196  # 28 weeks
    start: date = date(2026, 1, 5)  # a Monday
    n_workspaces: int = 10
    hourly_users: int = 60
    hourly_days: int = 42
    anomaly_window_days: int = 7
    spikes: int = 15
    traffic_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class SimUser:
    user_id: str
    workspace_id: str
    lifecycle: Lifecycle
    signup: date
    last_active: date | None  # the last day of use for users who leave; None for users who stay
    base_rate: float
    cost_per_request_nano: int


@dataclass(frozen=True, slots=True)
class PlantedSpike:
    entity_type: Literal["user"]
    entity_id: str
    workspace_id: str
    hour: datetime
    extra_requests: int
    extra_spend_nano: int


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    tag: str
    model: str
    positive: bool
    comment: str
    lang: str


@dataclass(frozen=True, slots=True)
class SimulatedPlatform:
    config: SimConfig
    end: date  # the last simulated day
    users: tuple[SimUser, ...]
    histories: tuple[UserHistory, ...]
    hourly: tuple[HourlyPoint, ...]
    spikes: tuple[PlantedSpike, ...]
    anomaly_window: tuple[datetime, datetime]
    catalog: Catalog
    traffic_recent: tuple[ModelTraffic, ...]  # period 1: what recommendations are made from
    traffic_holdout: tuple[ModelTraffic, ...]  # period 2: what they are judged on
    true_positive_rate: dict[tuple[str, str], float]
    planted_cheaper: frozenset[tuple[str, str, str]]  # (tag, current, cheaper equal model)
    feedback: tuple[FeedbackEvent, ...]


def simulation_catalog() -> Catalog:
    """Five catalog models with list-like prices (USD per 1M tokens)."""

    def model(i: int, name: str, provider: str, inp: str, out: str, cached: str, write: str | None) -> Model:
        tier = PriceTier(Decimal(inp), Decimal(out), Decimal(cached), Decimal(write) if write else None)
        return Model(i, name, provider, name, name, Pricing(tier), 1, 128_000, 16_384)

    return Catalog(
        [
            model(1, "gpt-4o", "openai", "2.50", "10.00", "1.25", None),
            model(2, "gpt-4o-mini", "openai", "0.15", "0.60", "0.075", None),
            model(3, "claude-sonnet-4", "anthropic", "3.00", "15.00", "0.30", "3.75"),
            model(4, "claude-haiku-3.5", "anthropic", "0.80", "4.00", "0.08", "1.00"),
            model(5, "gemini-2.0-flash", "gemini", "0.10", "0.40", "0.025", None),
        ]
    )


# (tag, model) -> (true positive-feedback rate, requests per period at scale 1, error rate, latency p50 ms)
_ARMS: dict[tuple[str, str], tuple[float, int, float, float]] = {
    ("summarization", "gpt-4o"): (0.85, 1500, 0.010, 900.0),
    ("summarization", "gpt-4o-mini"): (0.85, 2000, 0.010, 600.0),  # planted: cheaper and as good
    ("translation", "claude-sonnet-4"): (0.86, 1200, 0.008, 1100.0),
    ("translation", "gemini-2.0-flash"): (0.86, 2000, 0.008, 500.0),  # planted: cheaper and as good
    ("coding", "claude-sonnet-4"): (0.88, 2000, 0.012, 1500.0),
    ("coding", "gpt-4o-mini"): (0.70, 800, 0.015, 700.0),  # cheaper but worse: must not be recommended
    ("writing", "gpt-4o"): (0.84, 900, 0.010, 1000.0),
    ("writing", "claude-haiku-3.5"): (0.84, 60, 0.010, 700.0),  # as good but too little evidence
    ("data_analysis", "gpt-4o"): (0.83, 800, 0.020, 1300.0),
    ("data_analysis", "gemini-2.0-flash"): (0.72, 500, 0.030, 600.0),  # cheaper but worse
}
_PLANTED = frozenset(
    {("summarization", "gpt-4o", "gpt-4o-mini"), ("translation", "claude-sonnet-4", "gemini-2.0-flash")}
)


def _lifecycle_factor(
    u: SimUser, day: date, rng_break: tuple[date, date] | None, decline: tuple[date, int] | None
) -> float:
    if day < u.signup:
        return 0.0
    if u.last_active is not None and day > u.last_active:
        return 0.0
    factor = 1.0
    if u.lifecycle == "onboarding":
        factor = min(1.0, 0.3 + 0.05 * (day - u.signup).days)
    if decline is not None and day >= decline[0]:
        factor *= max(0.0, 1.0 - (day - decline[0]).days / decline[1])
    if rng_break is not None and rng_break[0] <= day <= rng_break[1]:
        factor *= 0.03
    return factor


def _simulate_users(
    cfg: SimConfig, rng: np.random.Generator
) -> tuple[list[SimUser], list[dict[str, object]]]:
    end = cfg.start + timedelta(days=cfg.days - 1)
    users: list[SimUser] = []
    extras: list[dict[str, object]] = []
    kinds: list[Lifecycle] = ["steady", "declining", "churned", "onboarding"]
    for i in range(cfg.n_users):
        kind: Lifecycle = kinds[int(rng.choice(4, p=[0.45, 0.2, 0.15, 0.2]))]
        signup = cfg.start - timedelta(days=int(rng.integers(0, 200)))
        last_active: date | None = None
        decline: tuple[date, int] | None = None
        brk: tuple[date, date] | None = None
        frustrated_from: date | None = None
        if kind == "steady" and rng.random() < 0.15:
            b0 = cfg.start + timedelta(days=int(rng.integers(30, cfg.days - 14)))
            brk = (b0, b0 + timedelta(days=int(rng.integers(7, 15))))
        elif kind == "declining":
            length = int(rng.integers(20, 61))
            d0 = cfg.start + timedelta(days=int(rng.integers(35, cfg.days - 10)))
            decline = (d0, length)
            last_active = d0 + timedelta(days=length)
            frustrated_from = d0
        elif kind == "churned":
            last_active = cfg.start + timedelta(days=int(rng.integers(35, cfg.days - 5)))
            if rng.random() < 0.6:
                frustrated_from = last_active - timedelta(days=10)
        elif kind == "onboarding":
            signup = end - timedelta(days=int(rng.integers(14, 91)))
            if rng.random() < 0.3:
                last_active = signup + timedelta(days=int(rng.integers(7, 29)))
                frustrated_from = last_active - timedelta(days=7)
        if last_active is not None and last_active > end:
            last_active = None
        u = SimUser(
            user_id=f"u{i:04d}",
            workspace_id=f"w{int(rng.integers(0, cfg.n_workspaces)):02d}",
            lifecycle=kind,
            signup=signup,
            last_active=last_active,
            base_rate=float(rng.lognormal(math.log(20), 0.8)),
            cost_per_request_nano=int(rng.lognormal(math.log(800_000), 0.7)),
        )
        users.append(u)
        extras.append(
            {
                "break": brk,
                "decline": decline,
                "frustrated_from": frustrated_from,
                "error_rate": float(rng.beta(2, 80)),
                "neg_rate": float(rng.beta(2, 200)),
                "models": tuple(
                    str(m)
                    for m in rng.choice(
                        ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-3.5", "gemini-2.0-flash"],
                        size=int(rng.integers(1, 4)),
                        replace=False,
                    )
                ),
            }
        )
    return users, extras


def _daily_rows(
    cfg: SimConfig, u: SimUser, ex: dict[str, object], rng: np.random.Generator
) -> list[DailyActivity]:
    models: tuple[str, ...] = ex["models"]  # type: ignore[assignment]
    frustrated_from: date | None = ex["frustrated_from"]  # type: ignore[assignment]
    days = [cfg.start + timedelta(days=d) for d in range(cfg.days)]
    factor = np.array(
        [
            _lifecycle_factor(u, day, ex["break"], ex["decline"])  # type: ignore[arg-type]
            * (0.45 if day.weekday() >= 5 else 1.0)
            for day in days
        ]
    )
    frustrated = np.array([frustrated_from is not None and day >= frustrated_from for day in days])
    requests = rng.poisson(u.base_rate * factor)
    err_rate = np.minimum(float(ex["error_rate"]) + 0.12 * frustrated, 0.9)  # type: ignore[arg-type]
    neg_rate = np.minimum(float(ex["neg_rate"]) + 0.05 * frustrated, 0.9)  # type: ignore[arg-type]
    errors = rng.binomial(requests, err_rate)
    negative = rng.binomial(requests, neg_rate)
    cost = (requests * u.cost_per_request_nano * rng.gamma(20, 1 / 20, size=cfg.days)).astype(np.int64)
    tokens = requests * rng.integers(800, 2500, size=cfg.days)
    offsets = rng.integers(0, len(models), size=cfg.days)
    leaving = u.last_active is not None or ex["decline"] is not None
    stop_topping = frustrated_from if leaving else None
    balance = int(u.base_rate * u.cost_per_request_nano * 40)
    daily_need = u.base_rate * u.cost_per_request_nano
    rows: list[DailyActivity] = []
    # Plain lists: indexing numpy arrays element by element is slow.
    req_l, cost_l, err_l, tok_l, neg_l, off_l = (
        a.tolist() for a in (requests, cost, errors, tokens, negative, offsets)
    )
    for d, day in enumerate(days):
        n = req_l[d]
        balance -= cost_l[d]
        if balance < 7 * daily_need and (stop_topping is None or day < stop_topping) and day >= u.signup:
            balance += int(60 * daily_need)
        k = min(len(models), 1 + n // 40)
        used = frozenset(models[(off_l[d] + j) % len(models)] for j in range(k)) if n else frozenset()
        rows.append(DailyActivity(day, n, cost_l[d], err_l[d], tok_l[d], used, neg_l[d], balance))
    return rows


def _split_int(total: int, weights: np.ndarray) -> list[int]:
    """Split an integer in proportion to weights, exactly (largest remainders)."""
    if total <= 0 or weights.sum() <= 0:
        return [0] * len(weights)
    raw = weights / weights.sum() * total
    base = np.floor(raw).astype(np.int64)
    rest = total - int(base.sum())
    order = np.argsort(-(raw - base))[:rest]
    base[order] += 1
    return [int(x) for x in base]


def _hourly(
    cfg: SimConfig, users: list[SimUser], daily: dict[str, list[DailyActivity]], rng: np.random.Generator
) -> tuple[list[HourlyPoint], list[PlantedSpike], tuple[datetime, datetime]]:
    end_day = cfg.start + timedelta(days=cfg.days - 1)
    first_day = end_day - timedelta(days=cfg.hourly_days - 1)
    window_start = datetime.combine(
        end_day - timedelta(days=cfg.anomaly_window_days - 1), datetime.min.time(), UTC
    )
    window_end = datetime.combine(end_day + timedelta(days=1), datetime.min.time(), UTC)
    active = [
        u
        for u in users
        if sum(r.requests for r in daily[u.user_id] if r.day >= first_day) > 0 and u.signup <= first_day
    ]
    chosen = [
        active[i]
        for i in sorted(rng.choice(len(active), size=min(cfg.hourly_users, len(active)), replace=False))
    ]
    per_user: dict[str, dict[datetime, list[int]]] = {}
    for u in chosen:
        hours: dict[datetime, list[int]] = {}
        for r in daily[u.user_id]:
            if r.day < first_day or r.requests == 0:
                continue
            req_split = rng.multinomial(r.requests, _HOUR_PROFILE)
            cost_split = _split_int(r.cost_nano, req_split.astype(np.float64))
            midnight = datetime.combine(r.day, datetime.min.time(), UTC)
            for h in range(24):
                if req_split[h]:
                    hours[midnight + timedelta(hours=h)] = [int(req_split[h]), cost_split[h]]
        per_user[u.user_id] = hours
    spikes: list[PlantedSpike] = []
    spiked = rng.choice(len(chosen), size=min(cfg.spikes, len(chosen)), replace=False)
    window_hours = cfg.anomaly_window_days * 24
    for i in spiked:
        u = chosen[int(i)]
        hour = window_start + timedelta(hours=int(rng.integers(0, window_hours)))
        extra_req = max(40, int(u.base_rate / 24 * rng.uniform(25, 60)))
        extra_spend = extra_req * u.cost_per_request_nano
        cell = per_user[u.user_id].setdefault(hour, [0, 0])
        cell[0] += extra_req
        cell[1] += extra_spend
        day_rows = daily[u.user_id]
        idx = (hour.date() - cfg.start).days
        r = day_rows[idx]
        day_rows[idx] = DailyActivity(
            r.day,
            r.requests + extra_req,
            r.cost_nano + extra_spend,
            r.errors,
            r.tokens,
            r.models,
            r.negative_feedback,
            (r.balance_end_nano or 0) - extra_spend,
        )
        spikes.append(PlantedSpike("user", u.user_id, u.workspace_id, hour, extra_req, extra_spend))
    points: list[HourlyPoint] = []
    workspaces: dict[tuple[str, datetime], list[int]] = {}
    for u in chosen:
        for hour, (req, spend) in sorted(per_user[u.user_id].items()):
            points.append(HourlyPoint("user", u.user_id, hour, spend, req))
            cell = workspaces.setdefault((u.workspace_id, hour), [0, 0])
            cell[0] += req
            cell[1] += spend
    for (ws, hour), (req, spend) in sorted(workspaces.items()):
        points.append(HourlyPoint("workspace", ws, hour, spend, req))
    return points, spikes, (window_start, window_end)


def _traffic(
    cfg: SimConfig, rng: np.random.Generator, comments: dict[tuple[str, str], list[str]]
) -> tuple[list[ModelTraffic], list[ModelTraffic], list[FeedbackEvent]]:
    periods: list[list[ModelTraffic]] = [[], []]
    feedback: list[FeedbackEvent] = []
    for (tag, model), (quality, n_base, err, latency) in _ARMS.items():
        for period in (0, 1):
            n = max(1, int(n_base * cfg.traffic_scale)) if n_base >= 100 else n_base
            prompt = rng.lognormal(math.log(1200), 0.6, size=n).astype(np.int64) + 20
            cached = (prompt * rng.choice([0.0, 0.0, 0.5, 0.8], size=n)).astype(np.int64)
            output = rng.lognormal(math.log(350), 0.7, size=n).astype(np.int64) + 1
            usages = tuple(
                Usage(prompt_tokens=int(p), completion_tokens=int(o), cached_tokens=int(c))
                for p, c, o in zip(prompt, cached, output, strict=True)
            )
            rated = int(rng.binomial(n, 0.2))
            up = int(rng.binomial(rated, quality))
            errors = int(rng.binomial(n, err))
            p50 = float(latency * rng.uniform(0.95, 1.05))
            periods[period].append(ModelTraffic(tag, model, n, errors, round(p50, 1), up, rated - up, usages))
            if period == 0:
                for k in range(min(rated, 30)):
                    lang = "pt" if rng.random() < 0.4 else "en"
                    positive = k < round(min(rated, 30) * up / max(rated, 1))
                    pool = comments[("positive" if positive else "negative", lang)]
                    feedback.append(
                        FeedbackEvent(tag, model, positive, pool[int(rng.integers(len(pool)))], lang)
                    )
    return periods[0], periods[1], feedback


def simulate(cfg: SimConfig | None = None) -> SimulatedPlatform:
    """Build the synthetic platform history of `cfg` (same seed, same history)."""
    cfg = cfg or SimConfig()
    rng = np.random.default_rng(cfg.seed)
    users, extras = _simulate_users(cfg, rng)
    daily = {u.user_id: _daily_rows(cfg, u, ex, rng) for u, ex in zip(users, extras, strict=True)}
    hourly, spikes, window = _hourly(cfg, users, daily, rng)
    end = cfg.start + timedelta(days=cfg.days - 1)
    histories = tuple(
        UserHistory(
            u.user_id,
            u.signup,
            daily[u.user_id][-1].balance_end_nano or 0,
            tuple(r for r in daily[u.user_id] if r.requests > 0 or r.day >= u.signup),
        )
        for u in users
    )
    comments: dict[tuple[str, str], list[str]] = {}
    for row in generate_sentiment(seed=cfg.seed + 1000, per_label_lang=40):
        comments.setdefault((row["label"], row["lang"]), []).append(row["text"])
    recent, holdout, feedback = _traffic(cfg, rng, comments)
    return SimulatedPlatform(
        config=cfg,
        end=end,
        users=tuple(users),
        histories=histories,
        hourly=tuple(hourly),
        spikes=tuple(spikes),
        anomaly_window=window,
        catalog=simulation_catalog(),
        traffic_recent=tuple(recent),
        traffic_holdout=tuple(holdout),
        true_positive_rate={k: v[0] for k, v in _ARMS.items()},
        planted_cheaper=_PLANTED,
        feedback=tuple(feedback),
    )
