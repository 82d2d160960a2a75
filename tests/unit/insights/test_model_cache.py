"""The on-disk cache of fitted text models (insights/textmodel.py `fitted_once`): the same inputs load what
an earlier fit stored, other inputs train anew, and a cache that is broken or cannot be written never fails
a fit."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from insights import textmodel
from insights.textmodel import TextClassifier, cache_dir, fitted_once

TEXTS = ["write a python function", "fix this sql query", "draft a contract clause", "is this lease legal"]
TEXTS *= 3
LABELS = ["coding", "coding", "legal", "legal"] * 3


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "synapgate" / "models"


def test_the_same_inputs_load_the_stored_fit_and_others_train(private_cache: Path) -> None:
    calls: list[str] = []

    def fit(value: str) -> dict[str, str]:
        calls.append(value)
        return {"model": value}

    source = Path(textmodel.__file__)
    assert fitted_once("t", source, ["a", "b"], lambda: fit("first")) == {"model": "first"}
    assert fitted_once("t", source, ["a", "b"], lambda: fit("second")) == {"model": "first"}  # loaded
    assert fitted_once("t", source, ["ab"], lambda: fit("third")) == {"model": "third"}  # parts are delimited
    assert fitted_once("u", source, ["a", "b"], lambda: fit("fourth")) == {"model": "fourth"}  # another kind
    assert calls == ["first", "third", "fourth"]
    assert cache_dir() == private_cache and len(list(private_cache.glob("*.pkl"))) == 3
    assert (private_cache.stat().st_mode & 0o777) == 0o700  # pickles run code when loaded: private directory


def test_a_cached_classifier_predicts_exactly_as_the_trained_one(private_cache: Path) -> None:
    trained = TextClassifier().fit(TEXTS, LABELS)
    (stored,) = private_cache.glob("textmodel-*.pkl")
    loaded = TextClassifier().fit(TEXTS, LABELS)
    probe = ["a python query", "a legal contract"]
    assert loaded.labels == trained.labels == ("coding", "legal")
    assert (loaded.predict_proba(probe) == trained.predict_proba(probe)).all()
    assert loaded._pipe is not trained._pipe  # it came from the file
    assert TextClassifier(c=1.0).fit(TEXTS, LABELS) is not None
    assert len(list(private_cache.glob("textmodel-*.pkl"))) == 2  # another hyper-parameter, another entry
    assert stored.exists()


def test_a_broken_or_unwritable_cache_falls_back_to_training(private_cache: Path) -> None:
    source = Path(textmodel.__file__)
    fitted_once("t", source, ["x"], lambda: 1)
    (entry,) = private_cache.glob("t-*.pkl")
    entry.write_bytes(b"not a pickle")
    assert fitted_once("t", source, ["x"], lambda: 2) == 2  # unreadable: trained, and stored again
    assert pickle.loads(entry.read_bytes()) == 2
    os.chmod(private_cache, 0o500)
    try:
        if os.access(private_cache, os.W_OK):  # root ignores the mode: make the path unusable instead
            os.chmod(private_cache, 0o700)
            entry.unlink()
            private_cache.rmdir()
            private_cache.write_text("a file where the directory should be")
        assert fitted_once("t", source, ["y"], lambda: 3) == 3
        assert fitted_once("t", source, ["y"], lambda: 4) == 4  # nothing could be stored: trained again
    finally:
        if private_cache.is_dir():
            os.chmod(private_cache, 0o700)
