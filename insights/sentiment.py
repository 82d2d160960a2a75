"""Sentiment of feedback comments (EN + PT), offline: a label and a score in −1…1.

Trained on first use from the shipped, generated `sentiment_train.jsonl`; the score is
P(positive) − P(negative), so a confident neutral comment scores near 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from insights.textmodel import DATA_DIR, LabelledText, TextClassifier, load_jsonl

SentimentLabel = Literal["positive", "neutral", "negative"]
LABELS: tuple[SentimentLabel, ...] = ("positive", "neutral", "negative")


@dataclass(frozen=True, slots=True)
class Sentiment:
    """The label of a comment and its signed score (−1 very negative … 1 very positive)."""

    label: SentimentLabel
    score: float


class SentimentModel:
    """TF-IDF + logistic regression over positive / neutral / negative comments."""

    def __init__(self, examples: Sequence[LabelledText]) -> None:
        self._model = TextClassifier().fit([e.text for e in examples], [e.label for e in examples])
        self._col = {label: self._model.labels.index(label) for label in LABELS}

    def sentiment(self, comment: str) -> Sentiment:
        """The sentiment of one comment; an empty comment is neutral."""
        return self.sentiment_many([comment])[0]

    def sentiment_many(self, comments: Sequence[str]) -> list[Sentiment]:
        """`sentiment` for many comments at once."""
        out = [Sentiment("neutral", 0.0) for _ in comments]
        live = [i for i, c in enumerate(comments) if c and c.strip()]
        if not live:
            return out
        proba = self._model.predict_proba([comments[i].strip() for i in live])
        for row, i in enumerate(live):
            best = max(LABELS, key=lambda lab: float(proba[row, self._col[lab]]))
            score = float(proba[row, self._col["positive"]] - proba[row, self._col["negative"]])
            out[i] = Sentiment(best, round(score, 4))
        return out


def load_sentiment_training_set() -> list[LabelledText]:
    """The shipped training comments: the generated set plus the small hand-written development set.

    The development set served to compare generator versions; the model has no threshold to choose, so
    it then joins the training data (its natural phrasing is what the generated set lacks). The test set
    never does.
    """
    return [
        *load_jsonl(DATA_DIR / "sentiment_train.jsonl", "label"),
        *load_jsonl(DATA_DIR / "sentiment_dev.jsonl", "label"),
    ]


@functools.cache
def default_sentiment_model() -> SentimentModel:
    """The offline sentiment model, trained on first use (then kept in-process)."""
    return SentimentModel(load_sentiment_training_set())


def sentiment(comment: str) -> Sentiment:
    """The sentiment of a feedback comment with the default offline model."""
    return default_sentiment_model().sentiment(comment)
