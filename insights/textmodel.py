"""The shared offline text classifier: TF-IDF word and character n-grams under a multinomial logistic
regression, whose probabilities are what the tagger's and sentiment model's thresholds act on.

A fit is cached on disk (`$XDG_CACHE_HOME/synapgate/models`, else `~/.cache/synapgate/models`), keyed by a
digest of everything it depends on — the texts and labels, the hyper-parameters, this module's source and the
versions of Python, scikit-learn and NumPy — so a process that needs a model it or another process trained
before loads it in ~0.1 s instead of training it again (~4–5 s of CPU for the shipped sets: every gateway
worker, CLI run and test process used to pay it). The cache holds pickles, which can run code when loaded:
its directory is created private to the user (0700), and a file that cannot be read or written is skipped
— training is always the fallback, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pickle
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

DATA_DIR = Path(__file__).resolve().parent / "data"
T = TypeVar("T")


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
        self._c = c
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
        def train() -> Any:
            with warnings.catch_warnings():
                # saga stops at max_iter by design (a bounded first-use training time); the fit is good
                # by then.
                warnings.simplefilter("ignore", ConvergenceWarning)
                return self._pipe.fit(list(texts), list(labels))

        self._pipe = fitted_once("textmodel", Path(__file__), [repr(self._c), *texts, *labels], train)
        self.labels = tuple(str(c) for c in self._pipe.classes_)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Rows of class probabilities, columns in the order of `labels`."""
        out: np.ndarray[Any, np.dtype[np.float64]] = np.asarray(
            self._pipe.predict_proba(list(texts)), dtype=np.float64
        )
        return out


def cache_dir() -> Path:
    """Where fitted models are cached (created on first store)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synapgate" / "models"


def fitted_once(kind: str, source: Path, parts: Iterable[str], fit: Callable[[], T]) -> T:
    """`fit()`, or what an earlier `fit()` of the same inputs stored in the cache.

    `source` is the module that defines the model (its text is part of the key, so a code change retrains);
    `parts` is everything else the fit depends on (data, labels, weights, hyper-parameters), as strings."""
    path = _cache_path(kind, source, parts)
    found = _load(path)
    if found is not None:
        return cast(T, found)
    value = fit()
    _store(path, value)
    return value


def _cache_path(kind: str, source: Path, parts: Iterable[str]) -> Path:
    digest = hashlib.sha256()
    head = f"{sys.version}|{platform.machine()}|{sklearn.__version__}|{np.__version__}".encode()
    code = (Path(__file__).read_bytes(), source.read_bytes(), head)
    for part in itertools.chain(code, map(str.encode, parts)):
        digest.update(len(part).to_bytes(8, "big") + part)
    return cache_dir() / f"{kind}-{digest.hexdigest()}.pkl"


def _load(path: Path) -> Any | None:
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except Exception:  # missing, unreadable, truncated, or from another version: train instead
        return None


def _store(path: Path, pipe: Any) -> None:
    temporary: str | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as f:
            temporary = f.name
            pickle.dump(pipe, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)  # atomic: a concurrent reader sees the whole file or none
    except (OSError, pickle.PicklingError):
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
