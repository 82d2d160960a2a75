"""Churn: the features by hand on a tiny history, the label, the heuristic, the threshold rule, training."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta

import pytest

from insights.churn import (
    FEATURE_NAMES,
    HEURISTIC,
    DailyActivity,
    UserHistory,
    churned_after,
    compute_features,
    is_active_at,
    predict_churn,
    threshold_for_precision,
    train_churn_model,
)
from insights.simulate import SimConfig, simulate
from tests.environment import in_a_fresh_interpreter

CUTOFF = date(2026, 3, 1)


def tiny() -> UserHistory:
    return UserHistory(
        user_id="u1",
        signup=date(2026, 1, 1),
        balance_nano=999,  # superseded by the balance recorded on Feb 20
        days=(
            DailyActivity(date(2026, 1, 20), 50, 1_000_000, 0, 9000, frozenset({"a"})),  # before the window
            DailyActivity(date(2026, 2, 5), 10, 2_000_000, 1, 1000, frozenset({"a"})),
            DailyActivity(date(2026, 2, 10), 20, 4_000_000, 1, 2000, frozenset({"a", "b"}), 1),
            DailyActivity(date(2026, 2, 20), 5, 1_000_000, 2, 500, frozenset({"c"}), 2, 3_500_000),
            DailyActivity(date(2026, 3, 5), 3, 600_000, 0, 300, frozenset({"z"})),  # after the cut-off
        ),
    )


def test_features_by_hand() -> None:
    f = compute_features(tiny(), CUTOFF).as_dict()
    assert list(f) == list(FEATURE_NAMES)
    assert f["days_since_last_request"] == 9.0  # Feb 20 → Mar 1
    assert f["active_days_28"] == 3.0  # Feb 5, 10, 20 (Jan 20 is outside the 28 days)
    assert f["log_requests_28"] == pytest.approx(math.log1p(35))
    # last 14 days (Feb 16 – Mar 1): 5 requests, 1.0 micro-USD-millions; the 14 before: 30 and 6.0
    assert f["request_trend"] == pytest.approx(math.log(6 / 31))
    assert f["spend_trend"] == pytest.approx(math.log(2 / 7))
    assert f["balance_runway_days"] == pytest.approx(3_500_000 / (7_000_000 / 28))  # 14 days
    assert f["error_rate_28"] == pytest.approx(4 / 35)
    assert f["negative_feedback_28"] == 3.0
    assert f["distinct_models_28"] == 3.0  # a, b, c — never z, which comes after the cut-off
    assert f["tenure_days"] == 59.0


def test_runway_uses_the_current_balance_without_daily_balances() -> None:
    h = UserHistory("u", date(2026, 1, 1), 2_800_000, (DailyActivity(date(2026, 2, 20), 10, 2_800_000),))
    assert compute_features(h, CUTOFF).as_dict()["balance_runway_days"] == pytest.approx(28.0)
    idle = UserHistory("u", date(2026, 1, 1), 5, (DailyActivity(date(2026, 2, 20), 0, 0),))
    assert compute_features(idle, CUTOFF).as_dict()["balance_runway_days"] == 365.0


def test_label_and_activity() -> None:
    h = tiny()
    assert not churned_after(h, CUTOFF)  # Mar 5 is within the 30 days
    assert churned_after(h, date(2026, 3, 5))
    assert is_active_at(h, CUTOFF)
    assert not is_active_at(h, date(2026, 4, 10))


def steady(user: str, last_day: date, days: int = 60) -> UserHistory:
    rows = tuple(
        DailyActivity(last_day - timedelta(days=i), 30, 3_000_000, 0, 30_000, frozenset({"m1", "m2"}))
        for i in range(days)
    )
    return UserHistory(user, last_day - timedelta(days=200), 500_000_000, rows)


def test_heuristic_on_clear_cases() -> None:
    active = HEURISTIC.predict(compute_features(steady("busy", CUTOFF), CUTOFF))
    gone = HEURISTIC.predict(compute_features(steady("gone", CUTOFF - timedelta(days=25)), CUTOFF))
    assert active.risk == "low" and active.churn_probability < 0.2
    assert gone.risk == "high" and gone.churn_probability > 0.9
    assert gone.model_version == "heuristic-1"
    top = gone.factors[0]
    assert top.name == "days_since_last_request" and top.effect > 0
    # the factors' effects are the log-odds: bias + Σ effect = logit(p)
    z = HEURISTIC.bias + sum(f.effect for f in active.factors)
    assert 1 / (1 + math.exp(-z)) == pytest.approx(active.churn_probability, abs=1e-3)


def test_predict_skips_users_not_active_at_the_date() -> None:
    preds = predict_churn([steady("a", CUTOFF), steady("b", CUTOFF - timedelta(days=45))], CUTOFF)
    assert [p.user_id for p in preds] == ["a"]


def test_threshold_for_precision_by_hand() -> None:
    probs = [0.9] * 20 + [0.5] * 20
    labels = [True] * 20 + [True, False] * 10  # at ≥0.05: 30/40 = 75 %; above 0.5: 20/20
    assert threshold_for_precision(probs, labels, 0.85, z=0.0) == pytest.approx(0.51)
    assert threshold_for_precision(probs, labels, 0.7, z=0.0) == pytest.approx(0.05)
    assert threshold_for_precision(probs, labels, 0.85) == pytest.approx(0.51)  # 20/20: Wilson lower 0.92
    assert threshold_for_precision([0.9] * 5, [True] * 5, 0.85) is None  # too few flagged to say


def test_short_history_means_no_trained_model() -> None:
    assert train_churn_model([steady("a", CUTOFF, days=40)], CUTOFF) is None


def test_trained_model_on_a_simulated_history() -> None:
    sim = simulate(SimConfig(n_users=200, hourly_users=5, spikes=1))
    model = train_churn_model(list(sim.histories), sim.end)
    assert model is not None
    assert model.version == f"trained-{sim.end.isoformat()}"
    assert 0.05 <= model.medium_threshold <= model.high_threshold < 1.0
    preds = predict_churn(sim.histories, sim.end, model)
    assert preds and all(p.model_version == model.version for p in preds)
    assert {p.risk for p in preds} >= {"low", "high"}


def test_training_runs_in_a_child_process_and_gives_the_same_model() -> None:
    """The daily job trains in a child process (storage/insights/service.py): the process that runs it —
    on SQLite the serving worker itself — never loads scikit-learn or SciPy, and gets the very model that
    training here gives (a fresh interpreter; the model is plain floats, so predicting needs neither)."""
    code = (
        "import asyncio, json, sys\n"
        "from insights.churn import predict_churn\n"
        "from insights.simulate import SimConfig, simulate\n"
        "from storage.insights.service import trained_in_a_child_process\n"
        "sim = simulate(SimConfig(n_users=200, hourly_users=5, spikes=1))\n"
        "model = asyncio.run(trained_in_a_child_process(list(sim.histories), sim.end))\n"
        "assert model is not None and predict_churn(sim.histories, sim.end, model)\n"
        "print(json.dumps([sorted(m for m in ('sklearn', 'scipy') if m in sys.modules),\n"
        "                  [model.version, model.weights, model.bias, model.high_threshold]]))\n"
    )
    loaded, (version, weights, bias, high) = json.loads(in_a_fresh_interpreter(code))
    assert loaded == []
    sim = simulate(SimConfig(n_users=200, hourly_users=5, spikes=1))
    here = train_churn_model(list(sim.histories), sim.end)
    assert here is not None
    assert [version, tuple(weights), bias] == [here.version, here.weights, here.bias]
    assert high == here.high_threshold
