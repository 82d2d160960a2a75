"""The shared offline text classifier: TF-IDF word and character n-grams under a multinomial logistic
regression, whose probabilities are what the tagger's and sentiment model's thresholds act on."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True, slots=True)
class LabelledText:
    """One example of a shipped data set."""

    text: str
    lang: str
    label: str
    template: str = ""
    slot: str = ""


def load_jsonl(path: Path, label_key: str) -> list[LabelledText]:
    """Read a shipped data file (`label_key` is "tag" or "label")."""
    rows: list[LabelledText] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                rows.append(
                    LabelledText(
                        obj["text"], obj["lang"], obj[label_key], obj.get("template", ""), obj.get("slot", "")
                    )
                )
    return rows


class TextClassifier:
    """Word (1–2) and char_wb (2–5) TF-IDF features, accents folded, and a logistic regression."""

    def __init__(self, c: float = 4.0) -> None:
        features = FeatureUnion(
            [
                ("word", TfidfVectorizer(strip_accents="unicode", ngram_range=(1, 2), sublinear_tf=True)),
                (
                    "char",
                    TfidfVectorizer(
                        strip_accents="unicode",
                        analyzer="char_wb",
                        ngram_range=(3, 5),
                        sublinear_tf=True,
                        min_df=3,
                    ),
                ),
            ]
        )
        self._pipe: Any = Pipeline(
            [
                ("features", features),
                ("clf", LogisticRegression(C=c, solver="saga", max_iter=20, tol=1e-3, random_state=0)),
            ]
        )
        self.labels: tuple[str, ...] = ()

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TextClassifier:
        with warnings.catch_warnings():
            # saga stops at max_iter by design (a bounded first-use training time); the fit is good by then.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._pipe.fit(list(texts), list(labels))
        self.labels = tuple(str(c) for c in self._pipe.classes_)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Rows of class probabilities, columns in the order of `labels`."""
        out: np.ndarray[Any, np.dtype[np.float64]] = np.asarray(
            self._pipe.predict_proba(list(texts)), dtype=np.float64
        )
        return out
