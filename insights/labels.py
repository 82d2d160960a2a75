"""What the insight models answer, without their libraries: the serving side passes these around.

The models themselves (`tagging`, `sentiment`) import NumPy and scikit-learn and run in the tagger process
(gateway/tagger_process.py) or in a CLI/job process; a request-serving worker imports only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The tags the offline tagger knows (and the tagger model is asked to choose from).
DEFAULT_TAXONOMY: tuple[str, ...] = (
    "coding",
    "writing",
    "translation",
    "data_analysis",
    "math",
    "summarization",
    "customer_support",
    "education",
    "business",
    "creative",
    "health",
    "legal",
    "general",
)

SentimentLabel = Literal["positive", "neutral", "negative"]
LABELS: tuple[SentimentLabel, ...] = ("positive", "neutral", "negative")


@dataclass(frozen=True, slots=True)
class TagPrediction:
    """One tag with the model's confidence in it (0…1)."""

    tag: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Sentiment:
    """The label of a comment and its signed score (−1 very negative … 1 very positive)."""

    label: SentimentLabel
    score: float
