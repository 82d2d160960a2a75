"""Evaluation of the insight models: `python -m insights.evaluate [--seed N] [--users N]`.

Tagging and sentiment are scored on hand-written sets never trained on: the newest blind sets (`*_blind2`,
an author who never saw the models wrote them; they decide the targets), the first blind sets (spent: each
was scored once per model) and the older test sets (looked at during development, so reported for
comparison only); the tagger's threshold comes from the hand-written
validation set. Churn, recommendations and anomalies are scored on the
simulated platform with a time split: churn is trained on cut-offs whose outcome is known 30 days before the
end and judged on what users did in those last 30 days; recommendations are made from the first traffic
period and judged on the held-out second; anomalies are judged in the last week against planted spikes.

Newer blind sets are scored with `--sentiment-set PATH` / `--tagging-set PATH` (repeatable; same JSONL rows as
the shipped sets): when given, they decide the targets instead of the shipped blind sets, which are spent once
scored. `--development` prints only what may be looked at while a model is developed — 5-fold cross-validation
over the hand-written natural sentiment set and the old test sets — and never reads a blind set.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from insights.anomaly import detect_anomalies
from insights.churn import UserHistory, churned_after, predict_churn, train_churn_model
from insights.labels import LABELS
from insights.recommend import cost_nano, recommend_models, savings_percent
from insights.sentiment import SentimentModel, load_sentiment_training_set
from insights.simulate import SimConfig, SimulatedPlatform, simulate
from insights.tagging import SklearnTagger, load_training_set, load_validation_set
from insights.textmodel import DATA_DIR, LabelledText, load_jsonl

TARGETS = {
    "tagging_accuracy": 0.85,
    "tagging_coverage": 0.80,
    "sentiment_macro_f1": 0.80,
    "churn_precision": 0.85,
    "anomaly_precision": 0.90,
    "anomaly_recall": 0.90,
}


# --- metrics (pure) ---------------------------------------------------------------------------------------


def accuracy_and_coverage(truth: Sequence[str], predicted: Sequence[str | None]) -> tuple[float, float]:
    """Top-1 accuracy over the examples that got a prediction, and the share that got one."""
    tagged = [(t, p) for t, p in zip(truth, predicted, strict=True) if p is not None]
    coverage = len(tagged) / len(truth) if truth else 0.0
    accuracy = sum(t == p for t, p in tagged) / len(tagged) if tagged else 0.0
    return accuracy, coverage


def macro_f1(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    """The unweighted mean of per-label F1 (a label never predicted nor true scores 0)."""
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


H = TypeVar("H", bound=Hashable)


def precision_recall(flagged: AbstractSet[H], relevant: AbstractSet[H]) -> tuple[float, float]:
    """Precision and recall of a set of flags against the set of true cases (1.0 for empty denominators)."""
    hit = len(flagged & relevant)
    return (hit / len(flagged) if flagged else 1.0), (hit / len(relevant) if relevant else 1.0)


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the chance a random positive outranks a random negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    ranked = sorted(scores)
    # rank-sum (Mann–Whitney U) with mid-ranks for ties
    first: dict[float, int] = {}
    count: dict[float, int] = {}
    for i, s in enumerate(ranked):
        first.setdefault(s, i)
        count[s] = count.get(s, 0) + 1
    rank_sum = sum(first[s] + (count[s] + 1) / 2 for s in pos)
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


# --- the evaluation -------------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def add(self, text: str) -> None:
        self.lines.append(text)

    def missed(self) -> list[str]:
        return [k for k, target in TARGETS.items() if self.numbers.get(k, 0.0) < target]


# The targets are judged on the newest blind sets (`*_blind2.jsonl`): written by an author who never saw the
# models, the generator or the other data, and first scored once the models were final (2026-12-01). The
# first blind sets (`*_blind.jsonl`, scored 2026-11-30 and once more on 2026-12-01) are reported beside them
# but are spent; the older test sets were looked at while the models were developed, so their figures are
# reported but not trusted for the targets. A newer blind set passed on the command line decides instead.


@dataclass(frozen=True, slots=True)
class HeldOutSet:
    """One labelled set to score: its name in the report, what it is, and whether it decides the target."""

    name: str
    path: Path
    what: str
    decides: bool


def held_out_sets(kind: str, extra: Sequence[Path] = (), *, blind: bool = True) -> list[HeldOutSet]:
    """The sets a `kind` ("tagging" | "sentiment") is scored on: the extra (newer blind) sets, which then
    decide the target, the shipped blind set (unless `blind` is False) and the old test set."""
    sets = [HeldOutSet(p.name, p, "given on the command line", True) for p in extra]
    if blind:
        path = DATA_DIR / f"{kind}_blind2.jsonl"
        sets.append(HeldOutSet("blind2", path, "never seen in development", not extra))
        path = DATA_DIR / f"{kind}_blind.jsonl"
        sets.append(HeldOutSet("blind", path, "spent: scored before, with the older model", False))
    sets.append(HeldOutSet("test", DATA_DIR / f"{kind}_test.jsonl", "seen during development", False))
    return sets


def evaluate_tagging(report: Report, sets: Sequence[HeldOutSet]) -> None:
    started = time.perf_counter()
    tagger = SklearnTagger(load_training_set(), validation=load_validation_set())
    trained_s = time.perf_counter() - started
    report.add(
        f"tagging  (threshold {tagger.threshold:.2f} from the validation set; training {trained_s:.1f} s)"
    )
    for held in sets:
        test = load_jsonl(held.path, "tag")
        preds = tagger.tag_many([[e.text] for e in test])
        top = [p[0].tag if p else None for p in preds]
        report.add(f"  {held.name} set ({len(test)} examples, {held.what})")
        for lang in ("en", "pt", None):
            idx = [i for i, e in enumerate(test) if lang is None or e.lang == lang]
            acc, cov = accuracy_and_coverage([test[i].label for i in idx], [top[i] for i in idx])
            report.add(
                f"    {lang or 'all':>3}: top-1 accuracy over tagged {acc:.3f}, "
                f"coverage {cov:.3f}  (n={len(idx)})"
            )
            if lang is None and held.decides:
                # several deciding sets: the target must hold on each, so the lowest figure counts
                for key, value in (("tagging_accuracy", acc), ("tagging_coverage", cov)):
                    report.numbers[key] = min(value, report.numbers.get(key, value))
    report.numbers["tagger_training_seconds"] = trained_s


def _sentiment_f1_lines(report: Report, test: Sequence[LabelledText], pred: Sequence[str]) -> float:
    """Per-language and overall macro-F1 lines; returns the overall figure."""
    overall = 0.0
    for lang in ("en", "pt", None):
        idx = [i for i, e in enumerate(test) if lang is None or e.lang == lang]
        f1 = macro_f1([test[i].label for i in idx], [pred[i] for i in idx], LABELS)
        report.add(f"    {lang or 'all':>3}: macro-F1 {f1:.3f}  (n={len(idx)})")
        overall = f1
    return overall


def evaluate_sentiment(report: Report, sets: Sequence[HeldOutSet]) -> None:
    model = SentimentModel(load_sentiment_training_set())
    report.add("sentiment")
    for held in sets:
        test = load_jsonl(held.path, "label")
        pred = [s.label for s in model.sentiment_many([e.text for e in test])]
        report.add(f"  {held.name} set ({len(test)} examples, {held.what})")
        f1 = _sentiment_f1_lines(report, test, pred)
        if held.decides:
            report.numbers["sentiment_macro_f1"] = min(f1, report.numbers.get("sentiment_macro_f1", f1))


def sentiment_cross_validation(report: Report, folds: int = 5) -> float:
    """Development figure: k-fold cross-validation over the hand-written natural set (each fold held out of
    training in turn; the generated and dev sets always train). Reads no blind set."""
    natural = load_jsonl(DATA_DIR / "sentiment_natural.jsonl", "label")
    base = [
        *load_jsonl(DATA_DIR / "sentiment_train.jsonl", "label"),
        *load_jsonl(DATA_DIR / "sentiment_dev.jsonl", "label"),
    ]
    truth: list[LabelledText] = []
    pred: list[str] = []
    for k in range(folds):
        train = [e for i, e in enumerate(natural) if i % folds != k]
        held = [e for i, e in enumerate(natural) if i % folds == k]
        model = SentimentModel([*base, *train])
        truth.extend(held)
        pred.extend(s.label for s in model.sentiment_many([e.text for e in held]))
    report.add(f"  natural set, {folds}-fold cross-validation ({len(natural)} examples, development)")
    f1 = _sentiment_f1_lines(report, truth, pred)
    report.numbers["sentiment_cv_macro_f1"] = f1
    return f1


def evaluate_churn(report: Report, sim: SimulatedPlatform) -> None:
    as_of = sim.end - timedelta(days=30)
    known = [
        UserHistory(h.user_id, h.signup, h.balance_nano, tuple(d for d in h.days if d.day <= as_of))
        for h in sim.histories
    ]
    full = {h.user_id: h for h in sim.histories}
    model = train_churn_model(known, as_of)
    report.add(
        f"churn (simulated, {len(sim.histories)} users; predicted at {as_of}, judged on the next 30 days)"
    )
    for name, m in (("trained", model), ("heuristic", None)):
        if name == "trained" and m is None:
            report.add("  trained: history too short, no model")
            continue
        preds = predict_churn(known, as_of, m)
        labels = [churned_after(full[p.user_id], as_of) for p in preds]
        flagged = {p.user_id for p in preds if p.risk == "high"}
        churned = {p.user_id for p, y in zip(preds, labels, strict=True) if y}
        prec, rec = precision_recall(flagged, churned)
        auc = roc_auc(labels, [p.churn_probability for p in preds])
        version = preds[0].model_version if preds else "-"
        extra = (
            f", high ≥ {m.high_threshold:.2f} (validation precision {m.validation['high_precision']:.3f})"
            if m
            else ""
        )
        report.add(
            f"  {name} [{version}]: precision {prec:.3f}, recall {rec:.3f} at high risk"
            f" ({len(flagged)} flagged, {len(churned)} churned of {len(preds)} active), AUC {auc:.3f}{extra}"
        )
        if name == "trained" or (model is None and name == "heuristic"):
            report.numbers["churn_precision"], report.numbers["churn_recall"] = prec, rec
            report.numbers["churn_auc"] = auc


def evaluate_recommendations(report: Report, sim: SimulatedPlatform) -> None:
    recs = recommend_models(sim.traffic_recent, sim.catalog)
    holdout = {(t.tag, t.model): t for t in sim.traffic_holdout}
    report.add(
        f"recommendations (simulated; made on period 1, judged on held-out period 2): {len(recs)} made"
    )
    total_current = total_projected = 0
    equal = 0
    for r in recs:
        cur = holdout[(r.tag, r.current_model)]
        cand = holdout[(r.tag, r.recommended_model)]
        cur_model, cand_model = sim.catalog.get(r.current_model), sim.catalog.get(r.recommended_model)
        assert cur_model is not None and cand_model is not None
        c_now, c_new = cost_nano(cur.token_counts, cur_model), cost_nano(cur.token_counts, cand_model)
        total_current += c_now
        total_projected += c_new
        true_ok = (
            sim.true_positive_rate[(r.tag, r.recommended_model)]
            >= sim.true_positive_rate[(r.tag, r.current_model)] - 0.02
        )
        equal += true_ok
        held_rate = cand.feedback_up / cand.ratings if cand.ratings else 0.0
        cur_rate = cur.feedback_up / cur.ratings if cur.ratings else 0.0
        report.add(
            f"  {r.tag}: {r.current_model} → {r.recommended_model}: held-out cost {c_now} → {c_new} nano"
            f" ({savings_percent(c_now, c_new)} % saved);"
            f" held-out positive rate {cur_rate:.3f} → {held_rate:.3f};"
            f" truly equal quality: {'yes' if true_ok else 'NO'}"
        )
    planted = {(t, c, n) for t, c, n in sim.planted_cheaper}
    found = {(r.tag, r.current_model, r.recommended_model) for r in recs}
    all_spend = sum(
        cost_nano(t.token_counts, m)
        for t in sim.traffic_holdout
        if (m := sim.catalog.get(t.model)) is not None
    )
    pct_all = savings_percent(all_spend, all_spend - (total_current - total_projected))
    report.add(
        f"  planted cheaper-and-equal cases found {len(found & planted)}/{len(planted)};"
        f" recommendations at truly equal quality {equal}/{len(recs)};"
        f" held-out savings {total_current - total_projected} nano"
        f" = {savings_percent(total_current, total_projected)} % of the affected spend,"
        f" {pct_all} % of all spend"
    )
    report.numbers["recommendations_equal_quality"] = equal / len(recs) if recs else 1.0
    report.numbers["recommendation_savings_pct_all"] = float(pct_all if pct_all else Decimal(0))


def evaluate_anomalies(report: Report, sim: SimulatedPlatform) -> None:
    start, end = sim.anomaly_window
    found = detect_anomalies(sim.hourly, start, end)
    flagged = {(a.entity_type, a.entity_id, a.hour) for a in found}
    truth = {("user", s.entity_id, s.hour) for s in sim.spikes}
    same_incident = {("workspace", s.workspace_id, s.hour) for s in sim.spikes}
    prec, _ = precision_recall(flagged, truth | same_incident)
    _, rec = precision_recall(flagged, truth)
    report.add(
        f"anomalies (simulated, {len(sim.spikes)} planted spikes in the last week):"
        f" {len(flagged)} entity-hours flagged; precision {prec:.3f} (a planted user's workspace in the"
        f" same hour counts as the same incident), recall {rec:.3f}"
    )
    report.numbers["anomaly_precision"], report.numbers["anomaly_recall"] = prec, rec


def run(
    config: SimConfig | None = None,
    *,
    sentiment_sets: Sequence[Path] = (),
    tagging_sets: Sequence[Path] = (),
) -> Report:
    """Run every evaluation and return the report (numbers and printable lines)."""
    started = time.perf_counter()
    report = Report()
    evaluate_tagging(report, held_out_sets("tagging", tagging_sets))
    evaluate_sentiment(report, held_out_sets("sentiment", sentiment_sets))
    sim = simulate(config)
    evaluate_churn(report, sim)
    evaluate_recommendations(report, sim)
    evaluate_anomalies(report, sim)
    seconds = time.perf_counter() - started
    report.numbers["seconds"] = seconds
    missed = report.missed()
    report.add(f"targets: {'all met' if not missed else 'MISSED ' + ', '.join(missed)}  ({seconds:.1f} s)")
    return report


def run_development() -> Report:
    """What a developer may look at: the text models on the old test sets and the sentiment cross-validation
    over the natural set. No blind set is read, no target is judged."""
    report = Report()
    evaluate_tagging(report, held_out_sets("tagging", blind=False))
    evaluate_sentiment(report, held_out_sets("sentiment", blind=False))
    sentiment_cross_validation(report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    defaults = SimConfig()
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the simulation's seed")
    parser.add_argument("--users", type=int, default=defaults.n_users, help="simulated users")
    parser.add_argument(
        "--sentiment-set",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a newer blind sentiment set (JSONL rows {text, lang, label}); decides the target",
    )
    parser.add_argument(
        "--tagging-set",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a newer blind tagging set (JSONL rows {text, lang, tag}); decides the targets",
    )
    parser.add_argument(
        "--development",
        action="store_true",
        help="development figures only (old test sets, cross-validation); reads no blind set",
    )
    args = parser.parse_args(argv)
    if args.development:
        print("\n".join(run_development().lines))
        return 0
    for path in [*args.sentiment_set, *args.tagging_set]:
        if not path.is_file():
            parser.error(f"no such file: {path}")
    report = run(
        dataclasses.replace(defaults, seed=args.seed, n_users=args.users),
        sentiment_sets=args.sentiment_set,
        tagging_sets=args.tagging_set,
    )
    print("\n".join(report.lines))
    return 0 if not report.missed() else 1


if __name__ == "__main__":
    sys.exit(main())
