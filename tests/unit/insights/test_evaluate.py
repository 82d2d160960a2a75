"""The evaluation's metrics by hand, and the whole evaluation meeting its targets in bounded time."""

from __future__ import annotations

import pytest

from insights.evaluate import TARGETS, accuracy_and_coverage, macro_f1, precision_recall, roc_auc, run
from insights.simulate import SimConfig


def test_accuracy_and_coverage() -> None:
    acc, cov = accuracy_and_coverage(["a", "b", "c", "d"], ["a", None, "x", "d"])
    assert acc == pytest.approx(2 / 3) and cov == 0.75
    assert accuracy_and_coverage(["a"], [None]) == (0.0, 0.0)


def test_macro_f1() -> None:
    # p: tp 1, fp 0, fn 1 → 2/3; n: tp 2, fp 1, fn 0 → 4/5
    assert macro_f1(["p", "p", "n", "n"], ["p", "n", "n", "n"], ["p", "n"]) == pytest.approx(
        (2 / 3 + 0.8) / 2
    )
    assert macro_f1(["p"], ["n"], ["p", "n"]) == 0.0


def test_precision_recall() -> None:
    assert precision_recall({1, 2, 3}, {2, 3, 4, 5}) == (pytest.approx(2 / 3), 0.5)
    assert precision_recall(set(), {1}) == (1.0, 0.0)


def test_roc_auc_with_ties() -> None:
    # pairs (pos, neg): 0.9>0.1, 0.9>0.4, 0.4>0.1, 0.4=0.4 (half) → 3.5 / 4
    assert roc_auc([True, False, True, False], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)
    assert roc_auc([True, False], [0.1, 0.9]) == 0.0


def test_the_evaluation_meets_its_targets() -> None:
    report = run(SimConfig())
    # Every target holds on the newest shipped blind sets (blind2, first scored 2026-12-01 with the final
    # models: sentiment 0.870; it was 0.728 on the first blind set before the natural comments and the
    # negation/lexicon features).
    assert not report.missed(), "\n".join(report.lines)
    assert report.numbers["sentiment_macro_f1"] >= 0.85, "\n".join(report.lines)
    assert set(TARGETS) <= set(report.numbers)
    assert report.numbers["recommendations_equal_quality"] == 1.0
    assert report.numbers["seconds"] < 60
