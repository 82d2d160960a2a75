"""Model recommendations: for each (task tag, current model) with enough traffic, a cheaper model whose
evidence on that tag is not worse — or nothing. Pure; money is exact.

The rule (all must hold, defaults in `RecommendationRule`):
  * sample sizes: the current model has ≥ `min_requests` requests and ≥ `min_feedback` ratings on the tag; the
    candidate has ≥ `min_candidate_requests` and ≥ `min_feedback` ratings on the same tag;
  * quality: the candidate's positive-feedback rate, at the lower bound of its one-sided 95 % Wilson interval,
    is ≥ the current model's point estimate − `feedback_tolerance`;
  * errors: the candidate's error rate, at the upper bound of its Wilson interval, is ≤ the current's point
    estimate + `error_tolerance`;
  * latency: the candidate's p50 is ≤ the current's × (1 + `latency_tolerance`);
  * price: the current traffic's recorded token counts cost less at the candidate's prices.
Costs are `pricing.cost.price_usage` of each recorded token count at each model's prices (the candidate is
assumed to produce the same token counts), summed in integer nano-USD. Among candidates that qualify the one
saving most is recommended.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from pricing.catalog import Catalog, Model
from pricing.cost import Usage, price_usage

Z_ONE_SIDED_95 = 1.6449


@dataclass(frozen=True, slots=True)
class ModelTraffic:
    """One model's traffic on one task tag over a period.

    `token_counts` are the recorded usages (input incl. cached and cache-write, output incl. reasoning):
    one per request for exact costs, or aggregates of requests whose prompts sit in the same price tier.
    """

    tag: str
    model: str
    requests: int
    errors: int
    latency_p50_ms: float
    feedback_up: int
    feedback_down: int
    token_counts: tuple[Usage, ...]

    @property
    def ratings(self) -> int:
        return self.feedback_up + self.feedback_down


@dataclass(frozen=True, slots=True)
class RecommendationRule:
    min_requests: int = 200
    min_candidate_requests: int = 100
    min_feedback: int = 30
    feedback_tolerance: float = 0.05
    error_tolerance: float = 0.01
    latency_tolerance: float = 0.2
    z: float = Z_ONE_SIDED_95


@dataclass(frozen=True, slots=True)
class ArmEvidence:
    """What the data says about one model on the tag, with its sample sizes."""

    model: str
    requests: int
    ratings: int
    positive_rate: float
    positive_rate_lower: float
    error_rate: float
    error_rate_upper: float
    latency_p50_ms: float


@dataclass(frozen=True, slots=True)
class Recommendation:
    tag: str
    current_model: str
    recommended_model: str
    current_cost_nano: int
    projected_cost_nano: int
    savings_nano: int
    savings_pct: Decimal
    current: ArmEvidence
    candidate: ArmEvidence


def wilson_bounds(successes: int, n: int, z: float = Z_ONE_SIDED_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (lower, upper); (0, 1) when there is no sample."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def evidence(t: ModelTraffic, z: float = Z_ONE_SIDED_95) -> ArmEvidence:
    lo, _ = wilson_bounds(t.feedback_up, t.ratings, z)
    _, err_hi = wilson_bounds(t.errors, t.requests, z)
    return ArmEvidence(
        model=t.model,
        requests=t.requests,
        ratings=t.ratings,
        positive_rate=t.feedback_up / t.ratings if t.ratings else 0.0,
        positive_rate_lower=lo,
        error_rate=t.errors / t.requests if t.requests else 0.0,
        error_rate_upper=err_hi,
        latency_p50_ms=t.latency_p50_ms,
    )


def cost_nano(token_counts: Iterable[Usage], model: Model) -> int:
    """The exact cost of recorded token counts at `model`'s prices: Σ of each count's rounded cost."""
    return sum(price_usage(u, model).total_nano for u in token_counts)


def savings_percent(current_nano: int, projected_nano: int) -> Decimal:
    """(current − projected) ÷ current × 100, exact to two decimal places (0 when nothing was spent)."""
    if current_nano <= 0:
        return Decimal("0.00")
    return (Decimal(current_nano - projected_nano) * 100 / Decimal(current_nano)).quantize(Decimal("0.01"))


def qualifies(current: ArmEvidence, candidate: ArmEvidence, rule: RecommendationRule) -> bool:
    """The statistical rule of the module docstring (sample sizes, quality, errors, latency)."""
    return (
        current.requests >= rule.min_requests
        and current.ratings >= rule.min_feedback
        and candidate.requests >= rule.min_candidate_requests
        and candidate.ratings >= rule.min_feedback
        and candidate.positive_rate_lower >= current.positive_rate - rule.feedback_tolerance
        and candidate.error_rate_upper <= current.error_rate + rule.error_tolerance
        and candidate.latency_p50_ms <= current.latency_p50_ms * (1 + rule.latency_tolerance)
    )


def recommend_models(
    traffic: Sequence[ModelTraffic], catalog: Catalog, rule: RecommendationRule | None = None
) -> list[Recommendation]:
    """One recommendation per (tag, current model) where a cheaper model's evidence is not worse."""
    rule = rule or RecommendationRule()
    by_tag: dict[str, list[ModelTraffic]] = {}
    for t in traffic:
        by_tag.setdefault(t.tag, []).append(t)
    out: list[Recommendation] = []
    for tag in sorted(by_tag):
        arms = by_tag[tag]
        for cur in sorted(arms, key=lambda a: a.model):
            cur_model = catalog.get(cur.model)
            if cur_model is None or cur.requests < rule.min_requests or cur.ratings < rule.min_feedback:
                continue
            cur_ev = evidence(cur, rule.z)
            current_cost = cost_nano(cur.token_counts, cur_model)
            best: Recommendation | None = None
            for cand in arms:
                cand_model = catalog.get(cand.model)
                if cand.model == cur.model or cand_model is None:
                    continue
                cand_ev = evidence(cand, rule.z)
                if not qualifies(cur_ev, cand_ev, rule):
                    continue
                projected = cost_nano(cur.token_counts, cand_model)
                saved = current_cost - projected
                if saved <= 0 or (best is not None and saved <= best.savings_nano):
                    continue
                best = Recommendation(
                    tag,
                    cur.model,
                    cand.model,
                    current_cost,
                    projected,
                    saved,
                    savings_percent(current_cost, projected),
                    cur_ev,
                    cand_ev,
                )
            if best is not None:
                out.append(best)
    return out
