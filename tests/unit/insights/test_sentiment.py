"""Feedback sentiment on clear cases, and its data sets."""

from __future__ import annotations

import collections

import pytest

from insights.sentiment import Sentiment, default_sentiment_model, sentiment
from insights.textmodel import DATA_DIR, load_jsonl


@pytest.mark.parametrize(
    ("comment", "label"),
    [
        ("Excellent answer, it worked perfectly, thank you!", "positive"),
        ("Resposta excelente, resolveu meu problema", "positive"),
        ("Wrong answer, the code does not work", "negative"),
        ("não funcionou, resposta errada e confusa", "negative"),
        ("ok", "neutral"),
    ],
)
def test_clear_comments(comment: str, label: str) -> None:
    got = sentiment(comment)
    assert got.label == label
    assert -1.0 <= got.score <= 1.0
    if label == "positive":
        assert got.score > 0.3
    if label == "negative":
        assert got.score < -0.3


def test_empty_comment_is_neutral() -> None:
    assert sentiment("  ") == Sentiment("neutral", 0.0)


def test_batch_agrees_with_single() -> None:
    model = default_sentiment_model()
    comments = ["great, thanks", "péssimo", ""]
    assert model.sentiment_many(comments) == [model.sentiment(c) for c in comments]


@pytest.mark.parametrize("name", ["test", "blind"])
def test_test_set_is_balanced_and_not_in_training(name: str) -> None:
    test = load_jsonl(DATA_DIR / f"sentiment_{name}.jsonl", "label")
    train = {e.text.lower() for e in load_jsonl(DATA_DIR / "sentiment_train.jsonl", "label")}
    train |= {e.text.lower() for e in load_jsonl(DATA_DIR / "sentiment_dev.jsonl", "label")}
    assert len(test) >= 150
    counts = collections.Counter((e.label, e.lang) for e in test)
    assert len(counts) == 6 and min(counts.values()) >= max(counts.values()) - 3
    assert not {e.text.lower() for e in test} & train
