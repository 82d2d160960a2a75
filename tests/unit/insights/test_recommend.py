"""Model recommendations: the exact savings arithmetic by hand, and no evidence → no recommendation."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from insights.recommend import ModelTraffic, recommend_models, savings_percent, wilson_bounds
from pricing.catalog import Catalog, Model, PriceTier, Pricing
from pricing.cost import Usage


def model(i: int, name: str, inp: str, out: str, cached: str | None) -> Model:
    tier = PriceTier(Decimal(inp), Decimal(out), None if cached is None else Decimal(cached))
    return Model(i, name, "p", name, name, Pricing(tier), 1, 128_000, 8192)


CATALOG = Catalog(
    [
        model(1, "big", "2.00", "8.00", "1.00"),
        model(2, "small", "0.50", "2.00", None),
        model(3, "pricey", "9", "9", None),
    ]
)
U1 = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
U2 = Usage(prompt_tokens=333, completion_tokens=7)
TOKENS = (U1,) * 200 + (U2,) * 100


def traffic(
    name: str, up: int, down: int, errors: int = 0, p50: float = 1000.0, n: int = 300
) -> ModelTraffic:
    return ModelTraffic("summarization", name, n, errors, p50, up, down, TOKENS)


def test_exact_savings_by_hand() -> None:
    recs = recommend_models([traffic("big", 80, 20, errors=3), traffic("small", 85, 15, p50=500.0)], CATALOG)
    assert len(recs) == 1
    r = recs[0]
    assert (r.tag, r.current_model, r.recommended_model) == ("summarization", "big", "small")
    # U1 at big: 800 × 2 + 200 × 1 + 500 × 8 = 5800 USD per 1M → 5_800_000 nano; at small: 800×.5+200×.5+500×2
    #   = 1500 → 1_500_000 nano. U2 at big: 333 × 2 + 7 × 8 = 722 → 722_000; at small 166.5 + 14 → 180_500.
    assert r.current_cost_nano == 200 * 5_800_000 + 100 * 722_000 == 1_232_200_000
    assert r.projected_cost_nano == 200 * 1_500_000 + 100 * 180_500 == 318_050_000
    assert r.savings_nano == 914_150_000
    assert r.savings_pct == Decimal("74.19")  # 914.15 / 1232.2 = 74.1884 %
    assert (r.current.requests, r.current.ratings, r.candidate.ratings) == (300, 100, 100)
    assert r.current.positive_rate == pytest.approx(0.8)
    assert r.candidate.positive_rate_lower >= 0.75


@pytest.mark.parametrize(
    "candidate",
    [
        traffic("small", 17, 3, p50=500.0),  # 20 ratings: too few to say
        traffic("small", 60, 40, p50=500.0),  # clearly worse feedback
        traffic("small", 85, 15, errors=30, p50=500.0),  # 10 % errors against 1 %
        traffic("small", 85, 15, p50=1300.0),  # 30 % slower
        traffic("small", 85, 15, p50=500.0, n=50),  # too little traffic
        traffic("pricey", 95, 5, p50=500.0),  # better but dearer: no saving
        traffic("unknown", 95, 5, p50=500.0),  # not in the catalog
    ],
)
def test_no_evidence_no_recommendation(candidate: ModelTraffic) -> None:
    assert recommend_models([traffic("big", 80, 20, errors=3), candidate], CATALOG) == []


def test_current_needs_enough_traffic_itself() -> None:
    thin = dataclasses.replace(traffic("big", 80, 20), requests=100)
    assert recommend_models([thin, traffic("small", 85, 15, p50=500.0)], CATALOG) == []


def test_the_biggest_saving_wins() -> None:
    cheapest = Catalog([*CATALOG.all(), model(4, "tiny", "0.10", "0.40", None)])
    recs = recommend_models(
        [
            traffic("big", 80, 20, errors=3),
            traffic("small", 85, 15, p50=500.0),
            traffic("tiny", 85, 15, p50=500.0),
        ],
        cheapest,
    )
    assert [r.recommended_model for r in recs if r.current_model == "big"] == ["tiny"]


def test_wilson_bounds_and_percent() -> None:
    lo, hi = wilson_bounds(50, 100)
    assert lo < 0.5 < hi and 0.5 - lo == pytest.approx(hi - 0.5)
    assert wilson_bounds(0, 0) == (0.0, 1.0)
    assert wilson_bounds(0, 300)[0] == 0.0
    assert savings_percent(3, 1) == Decimal("66.67")
    assert savings_percent(0, 0) == Decimal("0.00")
