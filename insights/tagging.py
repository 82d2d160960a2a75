"""Automatic conversation tags from a configurable taxonomy, behind one `Tagger` protocol.

The offline default (`SklearnTagger`) is trained on first use from the shipped, generated training set;
its confidence threshold is chosen on the shipped hand-written validation set (never on the test set), and
predictions under it are not returned. A taxonomy is any subset of the tags that have training examples; a
new tag needs examples (or the LLM tagger, which fits the same protocol: see `llm_prompts`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from insights.labels import DEFAULT_TAXONOMY, TagPrediction
from insights.textmodel import DATA_DIR, LabelledText, TextClassifier, load_jsonl

# The target is 85 % top-1 over tagged conversations; the validation set has 130 examples, so the
# threshold aims a little higher there to leave room for sampling noise.
TARGET_VALIDATION_ACCURACY = 0.88
MAX_CHARS = 4000  # long conversations: the opening turns say what the conversation is about


class Tagger(Protocol):
    """Tags one conversation from its turns (user messages first and foremost); [] when unsure."""

    def tag(self, texts: Sequence[str]) -> list[TagPrediction]: ...


def conversation_text(texts: Sequence[str]) -> str:
    """The turns as one document, cut to a bounded length."""
    return "\n".join(t.strip() for t in texts if t and t.strip())[:MAX_CHARS]


def choose_threshold(
    confidences: Sequence[float], correct: Sequence[bool], target_accuracy: float, min_tagged: int = 20
) -> float:
    """The lowest threshold at which accuracy over the examples it keeps reaches `target_accuracy`.

    Lowest threshold = most coverage. If no threshold reaches the target, the one with the best accuracy.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    best_t, best_acc = 0.95, -1.0
    for t in np.round(np.arange(0.05, 0.96, 0.01), 2):
        keep = conf >= t
        n = int(keep.sum())
        if n < min_tagged:
            continue
        acc = float(ok[keep].mean())
        if acc >= target_accuracy:
            return float(t)
        if acc > best_acc:
            best_t, best_acc = float(t), acc
    return best_t


def load_validation_set(taxonomy: Sequence[str] = DEFAULT_TAXONOMY) -> list[LabelledText]:
    """The shipped hand-written validation (dev) set: thresholds are chosen here, never on the test set."""
    wanted = set(taxonomy)
    return [e for e in load_jsonl(DATA_DIR / "tagging_valid.jsonl", "tag") if e.label in wanted]


class SklearnTagger:
    """The offline tagger: TF-IDF + logistic regression over the taxonomy's labelled examples.

    With `threshold=None` the threshold is chosen on `validation` (the lowest one whose accuracy over the
    examples it keeps reaches `target_accuracy`, i.e. the most coverage at that accuracy).
    """

    def __init__(
        self,
        examples: Sequence[LabelledText],
        *,
        validation: Sequence[LabelledText] = (),
        threshold: float | None = None,
        target_accuracy: float = TARGET_VALIDATION_ACCURACY,
        max_tags: int = 2,
    ) -> None:
        self.taxonomy = tuple(sorted({e.label for e in examples}))
        self.max_tags = max_tags
        self._model = TextClassifier().fit([e.text for e in examples], [e.label for e in examples])
        if threshold is None:
            if not validation:
                raise ValueError("a threshold, or a validation set to choose it on, is needed")
            proba = self._model.predict_proba([e.text for e in validation])
            top = proba.argmax(axis=1)
            conf = [float(proba[i, j]) for i, j in enumerate(top)]
            correct = [self._model.labels[j] == e.label for j, e in zip(top, validation, strict=True)]
            threshold = choose_threshold(conf, correct, target_accuracy)
        self.threshold = threshold

    def tag(self, texts: Sequence[str]) -> list[TagPrediction]:
        """Tags above the threshold, most confident first (at most `max_tags`)."""
        return self.tag_many([texts])[0]

    def tag_many(self, conversations: Sequence[Sequence[str]]) -> list[list[TagPrediction]]:
        """`tag` for many conversations at once (one vectorisation)."""
        docs = [conversation_text(c) for c in conversations]
        out: list[list[TagPrediction]] = [[] for _ in docs]
        live = [i for i, d in enumerate(docs) if d]
        if not live:
            return out
        proba = self._model.predict_proba([docs[i] for i in live])
        for row, i in enumerate(live):
            order = np.argsort(-proba[row])[: self.max_tags]
            out[i] = [
                TagPrediction(self._model.labels[j], round(float(proba[row, j]), 4))
                for j in order
                if proba[row, j] >= self.threshold
            ]
        return out


def load_training_set(taxonomy: Sequence[str] = DEFAULT_TAXONOMY) -> list[LabelledText]:
    """The shipped training examples of the tags in `taxonomy`."""
    wanted = set(taxonomy)
    return [e for e in load_jsonl(DATA_DIR / "tagging_train.jsonl", "tag") if e.label in wanted]


@functools.cache
def default_tagger(
    taxonomy: tuple[str, ...] = DEFAULT_TAXONOMY, threshold: float | None = None
) -> SklearnTagger:
    """The offline tagger, trained on first use from the shipped sets (then kept in-process).

    `threshold=None` chooses it on the shipped validation set."""
    return SklearnTagger(
        load_training_set(taxonomy), validation=load_validation_set(taxonomy), threshold=threshold
    )
