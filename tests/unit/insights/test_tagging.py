"""The offline tagger on clear cases, its threshold rule, and the provenance rules of its data sets."""

from __future__ import annotations

import collections
import json

import pytest

from insights.data.generate import generate_tagging
from insights.tagging import (
    DEFAULT_TAXONOMY,
    SklearnTagger,
    Tagger,
    TagPrediction,
    choose_threshold,
    conversation_text,
    default_tagger,
)
from insights.textmodel import DATA_DIR, load_jsonl


@pytest.fixture(scope="module")
def tagger() -> SklearnTagger:
    return default_tagger()


@pytest.mark.parametrize(
    ("turns", "tag"),
    [
        (["my python function raises a TypeError, can you debug this code?"], "coding"),
        (["traduz esse parágrafo para o inglês, por favor"], "translation"),
        (["Solve the equation 3x + 5 = 20 step by step"], "math"),
        (["quais são os sintomas de gripe e quando devo ir ao médico?"], "health"),
        (["Write a poem about the sea at night", "make it rhyme"], "creative"),
    ],
)
def test_clear_cases_get_their_tag_first(tagger: SklearnTagger, turns: list[str], tag: str) -> None:
    got = tagger.tag(turns)
    assert got, f"no tag for {turns!r}"
    assert got[0].tag == tag
    assert 0.0 < got[0].confidence <= 1.0
    assert all(p.confidence >= tagger.threshold for p in got)
    assert [p.confidence for p in got] == sorted((p.confidence for p in got), reverse=True)


def test_nothing_is_returned_under_the_threshold() -> None:
    strict = default_tagger(threshold=0.999)
    assert strict.tag(["my python function raises a TypeError"]) == []


def test_empty_conversation_has_no_tags(tagger: SklearnTagger) -> None:
    assert tagger.tag([]) == []
    assert tagger.tag(["   ", ""]) == []


def test_the_sklearn_tagger_is_a_tagger(tagger: SklearnTagger) -> None:
    as_protocol: Tagger = tagger
    assert isinstance(as_protocol.tag(["hello"]), list)
    assert set(tagger.taxonomy) == set(DEFAULT_TAXONOMY)


def test_a_smaller_taxonomy_only_returns_its_tags() -> None:
    small = default_tagger(taxonomy=("coding", "legal", "general"))
    got = small.tag(["translate this contract clause into french"])
    assert {p.tag for p in got} <= {"coding", "legal", "general"}


def test_conversation_text_joins_and_bounds_turns() -> None:
    assert conversation_text([" a ", "", "b"]) == "a\nb"
    assert len(conversation_text(["x" * 10_000])) == 4000


def test_choose_threshold_takes_the_lowest_that_reaches_the_accuracy() -> None:
    # 30 confident correct, 30 unsure wrong: below 0.5 accuracy is 50 %, from 0.5 it is 100 %.
    conf = [0.9] * 30 + [0.3] * 30
    correct = [True] * 30 + [False] * 30
    assert choose_threshold(conf, correct, 0.9) == pytest.approx(0.31)
    # reachable at the bottom: every example correct
    assert choose_threshold([0.6] * 30, [True] * 30, 0.9) == pytest.approx(0.05)


def test_training_file_is_what_the_generator_writes() -> None:
    shipped = [
        json.loads(line) for line in (DATA_DIR / "tagging_train.jsonl").read_text("utf-8").splitlines()
    ]
    assert shipped == generate_tagging()


# blind2: 10 per tag and language as written, less 2 "general" ones that the training data also holds.
@pytest.mark.parametrize(
    ("name", "least", "each"), [("test", 260, 10), ("blind", 260, 10), ("blind2", 258, 8)]
)
def test_test_set_is_hand_written_and_large_enough(name: str, least: int, each: int) -> None:
    test = load_jsonl(DATA_DIR / f"tagging_{name}.jsonl", "tag")
    train_texts = {e.text.lower() for e in load_jsonl(DATA_DIR / "tagging_train.jsonl", "tag")}
    valid_texts = {e.text.lower() for e in load_jsonl(DATA_DIR / "tagging_valid.jsonl", "tag")}
    assert len(test) >= least
    per = collections.Counter((e.label, e.lang) for e in test)
    assert all(per[(tag, lang)] >= each for tag in DEFAULT_TAXONOMY for lang in ("en", "pt"))
    assert not {e.text.lower() for e in test} & (train_texts | valid_texts)


def test_tag_prediction_is_a_value() -> None:
    assert TagPrediction("coding", 0.9) == TagPrediction("coding", 0.9)
