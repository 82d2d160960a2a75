"""Churn prediction from per-user daily activity: pure feature functions, a heuristic score for short
histories, and a scikit-learn model trained on the platform's own history once it is long enough.

Only training needs NumPy and scikit-learn, imported where it fits: a trained model is plain floats, so
predicting loads neither (storage/insights/service.py fits in a child process, away from the serving worker).

Label: a user active in the 30 days before a cut-off churns if they make no request in the 30 days after it.
Every prediction says which model made it (`heuristic-1` or `trained-<date>`) and lists its factors with
their signed contribution to the log-odds, so an operator can see why a user is at risk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

Risk = Literal["low", "medium", "high"]
HORIZON_DAYS = 30
WINDOW_DAYS = 28
RUNWAY_CAP_DAYS = 365.0
PRECISION_Z = 1.2816  # one-sided 90 %


@dataclass(frozen=True, slots=True)
class DailyActivity:
    """One user's totals for one day, as the usage rollups hold them.

    `balance_end_nano` (the balance at the end of the day) is optional: it lets the model be trained at past
    cut-offs; without it, the user's current balance stands in.
    """

    day: date
    requests: int
    cost_nano: int
    errors: int = 0
    tokens: int = 0
    models: frozenset[str] = frozenset()
    negative_feedback: int = 0
    balance_end_nano: int | None = None


@dataclass(frozen=True, slots=True)
class UserHistory:
    """A user's signup date, current balance and daily activity (any order, at most one row per day)."""

    user_id: str
    signup: date
    balance_nano: int
    days: tuple[DailyActivity, ...]


FEATURE_NAMES: tuple[str, ...] = (
    "days_since_last_request",
    "active_days_28",
    "log_requests_28",
    "request_trend",
    "spend_trend",
    "balance_runway_days",
    "error_rate_28",
    "negative_feedback_28",
    "distinct_models_28",
    "tenure_days",
)


@dataclass(frozen=True, slots=True)
class ChurnFeatures:
    """The features of one user at one cut-off, in `FEATURE_NAMES` order."""

    user_id: str
    cutoff: date
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(FEATURE_NAMES, self.values, strict=True))


def _log_ratio(recent: float, before: float) -> float:
    return math.log((recent + 1.0) / (before + 1.0))


def compute_features(history: UserHistory, cutoff: date) -> ChurnFeatures:
    """Features from the days up to and including `cutoff` (nothing after it is looked at).

    recency: days since the last request (tenure if none) · frequency: active days and log(1 + requests)
    in the last 28 days · trends: log ratio of the last 14 days to the 14 before, for requests and spend ·
    runway: balance ÷ average daily spend of the last 28 days (capped at 365) · error experience: errors ÷
    requests · negative feedback count · model mix: distinct models used · tenure: days since signup.
    """
    seen = [d for d in history.days if d.day <= cutoff]
    window_start = cutoff - timedelta(days=WINDOW_DAYS - 1)
    mid = cutoff - timedelta(days=WINDOW_DAYS // 2 - 1)
    recent = [d for d in seen if d.day >= window_start]
    tenure = float(max((cutoff - history.signup).days, 0))
    active = [d for d in seen if d.requests > 0]
    last = max((d.day for d in active), default=None)
    recency = float((cutoff - last).days) if last is not None else tenure
    req_28 = sum(d.requests for d in recent)
    req_a = sum(d.requests for d in recent if d.day >= mid)
    req_b = req_28 - req_a
    spend_a = sum(d.cost_nano for d in recent if d.day >= mid) / 1e6  # micro-USD: a feature, not money
    spend_b = sum(d.cost_nano for d in recent if d.day < mid) / 1e6
    balances = [d for d in seen if d.balance_end_nano is not None]
    balance = max(balances, key=lambda d: d.day).balance_end_nano if balances else history.balance_nano
    daily_spend = sum(d.cost_nano for d in recent) / WINDOW_DAYS
    runway = RUNWAY_CAP_DAYS if daily_spend <= 0 else min(max(balance or 0, 0) / daily_spend, RUNWAY_CAP_DAYS)
    errors = sum(d.errors for d in recent)
    models: set[str] = set()
    for d in recent:
        models.update(d.models)
    values = (
        min(recency, 90.0),
        float(sum(1 for d in recent if d.requests > 0)),
        math.log1p(req_28),
        _log_ratio(req_a, req_b),
        _log_ratio(spend_a, spend_b),
        runway,
        errors / req_28 if req_28 else 0.0,
        float(sum(d.negative_feedback for d in recent)),
        float(len(models)),
        min(tenure, 365.0),
    )
    return ChurnFeatures(history.user_id, cutoff, values)


def churned_after(history: UserHistory, cutoff: date, horizon_days: int = HORIZON_DAYS) -> bool:
    """The label: no request in the `horizon_days` after `cutoff`."""
    end = cutoff + timedelta(days=horizon_days)
    return not any(cutoff < d.day <= end and d.requests > 0 for d in history.days)


def is_active_at(history: UserHistory, cutoff: date, lookback_days: int = HORIZON_DAYS) -> bool:
    """Whether the user can churn at `cutoff`: at least one request in the `lookback_days` up to it."""
    start = cutoff - timedelta(days=lookback_days - 1)
    return any(start <= d.day <= cutoff and d.requests > 0 for d in history.days)


@dataclass(frozen=True, slots=True)
class Factor:
    """A feature's value and its signed contribution to the churn log-odds (+ raises the risk)."""

    name: str
    value: float
    effect: float


@dataclass(frozen=True, slots=True)
class ChurnPrediction:
    user_id: str
    churn_probability: float
    risk: Risk
    factors: tuple[Factor, ...]
    model_version: str


@dataclass(frozen=True, slots=True)
class LinearChurnModel:
    """A logistic model over centred, scaled features: the heuristic and the trained model share this form.

    effect_i = weight_i × (x_i − centre_i) / scale_i; probability = sigmoid(bias + Σ effect_i).
    """

    version: str
    weights: tuple[float, ...]
    centres: tuple[float, ...]
    scales: tuple[float, ...]
    bias: float
    high_threshold: float
    medium_threshold: float
    validation: dict[str, float] = field(default_factory=dict)

    def predict(self, features: ChurnFeatures) -> ChurnPrediction:
        effects = [
            w * (x - c) / s
            for w, x, c, s in zip(self.weights, features.values, self.centres, self.scales, strict=True)
        ]
        z = self.bias + sum(effects)
        p = 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))
        risk: Risk = "high" if p >= self.high_threshold else "medium" if p >= self.medium_threshold else "low"
        factors = sorted(
            (
                Factor(n, round(v, 4), round(e, 4))
                for n, v, e in zip(FEATURE_NAMES, features.values, effects, strict=True)
            ),
            key=lambda f: -abs(f.effect),
        )
        return ChurnPrediction(features.user_id, round(p, 4), risk, tuple(factors), self.version)


# Hand-set weights for histories too short to learn from: inactivity and falling use dominate; errors and
# negative feedback add risk; a varied model mix, a long tenure and a healthy runway lower it.
HEURISTIC = LinearChurnModel(
    version="heuristic-1",
    weights=(1.6, -0.8, -0.3, -0.7, -0.2, -0.2, 0.4, 0.3, -0.2, -0.2),
    centres=(2.0, 14.0, 4.0, 0.0, 0.0, 60.0, 0.03, 0.0, 2.0, 90.0),
    scales=(5.0, 7.0, 1.5, 0.7, 1.0, 60.0, 0.05, 2.0, 1.0, 90.0),
    bias=-1.5,
    high_threshold=0.7,
    medium_threshold=0.4,
)


def training_cutoffs(first_day: date, as_of: date, step_days: int = 7) -> list[date]:
    """Cut-offs whose label window ends by `as_of`, a week apart, each with 28 days of history before it."""
    out: list[date] = []
    c = as_of - timedelta(days=HORIZON_DAYS)
    while c - timedelta(days=WINDOW_DAYS) >= first_day:
        out.append(c)
        c -= timedelta(days=step_days)
    return sorted(out)


def labelled_examples(
    histories: Iterable[UserHistory], cutoffs: Sequence[date]
) -> tuple[list[ChurnFeatures], list[bool]]:
    """Features and labels of every user active at each cut-off."""
    feats: list[ChurnFeatures] = []
    labels: list[bool] = []
    for h in histories:
        for c in cutoffs:
            if h.signup <= c and is_active_at(h, c):
                feats.append(compute_features(h, c))
                labels.append(churned_after(h, c))
    return feats, labels


def threshold_for_precision(
    probs: Sequence[float],
    labels: Sequence[bool],
    precision: float,
    min_flagged: int = 10,
    z: float = PRECISION_Z,
) -> float | None:
    """The lowest threshold at which the flagged users' precision reaches `precision` with confidence.

    The lower bound of the precision's one-sided Wilson interval (z) must reach it, not just the point
    estimate: the lowest threshold that only just reaches it on validation would miss it about half the time
    on new data. z = 0 takes the point estimate.
    """
    import numpy as np

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    for t in np.round(np.arange(0.05, 0.99, 0.01), 2):
        flagged = p >= t
        n = int(flagged.sum())
        if n < min_flagged:
            break
        hits = int(y[flagged].sum())
        if _wilson_lower(hits, n, z) >= precision:
            return float(t)
    return None


def _wilson_lower(successes: int, n: int, z: float) -> float:
    phat = successes / n
    if z == 0:
        return phat
    denom = 1 + z * z / n
    centre = phat + z * z / (2 * n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return (centre - half) / denom


def _fit(feats: Sequence[ChurnFeatures], labels: Sequence[bool]) -> tuple[Any, np.ndarray, np.ndarray]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.asarray([f.values for f in feats], dtype=np.float64)
    centres = x.mean(axis=0)
    scales = x.std(axis=0)
    scales[scales == 0] = 1.0
    clf = LogisticRegression(C=1.0, max_iter=500)
    clf.fit((x - centres) / scales, np.asarray(labels, dtype=int))
    return clf, centres, scales


def _cutoffs(histories: Sequence[UserHistory], as_of: date) -> list[date]:
    return training_cutoffs(min((d.day for h in histories for d in h.days), default=as_of), as_of)


def history_long_enough(histories: Sequence[UserHistory], as_of: date, validation_cutoffs: int = 2) -> bool:
    """Whether the history spans enough cut-offs to train and validate on (else the heuristic predicts)."""
    return len(_cutoffs(histories, as_of)) > validation_cutoffs


def train_churn_model(
    histories: Sequence[UserHistory],
    as_of: date,
    *,
    target_precision: float = 0.85,
    min_examples: int = 300,
    min_churned: int = 30,
    validation_cutoffs: int = 2,
) -> LinearChurnModel | None:
    """A model trained on cut-offs whose outcome is known by `as_of`, or None while history is too short.

    Time split: the latest `validation_cutoffs` cut-offs are the validation split (never trained on); the high
    threshold is the lowest with ≥ `target_precision` precision there, the medium one the lowest with ≥ 50 %.
    """
    if not history_long_enough(histories, as_of, validation_cutoffs):
        return None
    cutoffs = _cutoffs(histories, as_of)
    train_c, valid_c = cutoffs[:-validation_cutoffs], cutoffs[-validation_cutoffs:]
    # Training cut-offs whose 30-day label window overlaps validation cut-offs would leak: keep a gap.
    gap_start = valid_c[0] - timedelta(days=HORIZON_DAYS)
    train_c = [c for c in train_c if c <= gap_start]
    tf, ty = labelled_examples(histories, train_c)
    vf, vy = labelled_examples(histories, valid_c)
    if len(tf) < min_examples or sum(ty) < min_churned or not vf or sum(vy) == 0:
        return None
    clf, centres, scales = _fit(tf, ty)
    model = LinearChurnModel(
        version=f"trained-{as_of.isoformat()}",
        weights=tuple(float(w) for w in clf.coef_[0]),
        centres=tuple(float(c) for c in centres),
        scales=tuple(float(s) for s in scales),
        bias=float(clf.intercept_[0]),
        high_threshold=1.0,
        medium_threshold=1.0,
    )
    probs = [model.predict(f).churn_probability for f in vf]
    high = threshold_for_precision(probs, vy, target_precision)
    medium = threshold_for_precision(probs, vy, 0.5, z=0.0)
    high_t = high if high is not None else 0.99
    medium_t = min(medium if medium is not None else high_t, high_t)
    flagged = [y for p, y in zip(probs, vy, strict=True) if p >= high_t]
    validation = {
        "examples": float(len(vf)),
        "churned": float(sum(vy)),
        "high_precision": sum(flagged) / len(flagged) if flagged else 0.0,
        "high_recall": sum(flagged) / sum(vy),
        "train_examples": float(len(tf)),
    }
    return LinearChurnModel(
        model.version, model.weights, model.centres, model.scales, model.bias, high_t, medium_t, validation
    )


def predict_churn(
    histories: Iterable[UserHistory], as_of: date, model: LinearChurnModel | None = None
) -> list[ChurnPrediction]:
    """Predictions for every user active at `as_of`, by the trained model if given, else the heuristic."""
    chosen = model if model is not None else HEURISTIC
    return [chosen.predict(compute_features(h, as_of)) for h in histories if is_active_at(h, as_of)]
