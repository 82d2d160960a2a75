"""Feedback sentiment on clear cases, and its data sets."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from insights.evaluate import held_out_sets, main
from insights.sentiment import (
    Sentiment,
    default_sentiment_model,
    lexicon_features,
    load_sentiment_training_set,
    mark_negation,
    sentiment,
)
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


@pytest.mark.parametrize("name", ["test", "blind", "blind2"])
def test_test_set_is_balanced_and_not_in_training(name: str) -> None:
    test = load_jsonl(DATA_DIR / f"sentiment_{name}.jsonl", "label")
    train = {e.text.lower() for e in load_jsonl(DATA_DIR / "sentiment_train.jsonl", "label")}
    train |= {e.text.lower() for e in load_jsonl(DATA_DIR / "sentiment_dev.jsonl", "label")}
    train |= {e.text.lower() for e in load_jsonl(DATA_DIR / "sentiment_natural.jsonl", "label")}
    assert len(test) >= 150
    counts = collections.Counter((e.label, e.lang) for e in test)
    assert len(counts) == 6 and min(counts.values()) >= max(counts.values()) - 3
    assert not {e.text.lower() for e in test} & train


def test_natural_set_is_hand_written_balanced_and_trained_on() -> None:
    natural = load_jsonl(DATA_DIR / "sentiment_natural.jsonl", "label")
    assert len(natural) >= 450 and not any(e.template for e in natural)
    counts = collections.Counter((e.label, e.lang) for e in natural)
    assert len(counts) == 6 and min(counts.values()) >= 75
    assert len({e.text.lower() for e in natural}) == len(natural)
    trained = {e.text for e in load_sentiment_training_set()}
    assert {e.text for e in natural} <= trained


def test_negation_scope_is_marked_until_punctuation_or_contrast() -> None:
    assert mark_negation("Not helpful at all, but fast") == "not NEG_helpful NEG_at NEG_all PUNCT but fast"
    assert mark_negation("Isn't wrong") == "isnt NEG_wrong"
    assert (
        mark_negation("Não ajudou em nada!") == "nao NEG_ajudou NEG_em nada EXCL"
    )  # "nada" is a negator itself


def test_lexicon_counts_negated_words_and_the_clause_after_but() -> None:
    pos, neg, neg_pos, neg_neg, after_pos, after_neg, contrasted, net, _ = lexicon_features(
        "good start but not useful, wrong again"
    )
    assert (pos, neg, neg_pos, neg_neg) == (1, 1, 1, 0)
    assert (after_pos, after_neg, contrasted) == (0.0, 2.0, 1.0)
    assert net == 1 - 1 - 1
    assert lexicon_features("nao e ruim")[3] == 1  # accents folded, "ruim" negated


@pytest.mark.parametrize(
    ("comment", "label"),
    [
        ("not helpful at all", "negative"),
        ("no complaints, it works perfectly", "positive"),
        ("ok but the numbers are wrong", "negative"),
        ("nao funcionou de jeito nenhum", "negative"),
    ],
)
def test_negation_and_mixed_clauses(comment: str, label: str) -> None:
    assert sentiment(comment).label == label


def test_development_mode_reads_no_blind_set() -> None:
    assert all(not s.name.startswith("blind") for s in held_out_sets("sentiment", blind=False))
    assert [(s.name, s.decides) for s in held_out_sets("tagging")] == [
        ("blind2", True),
        ("blind", False),
        ("test", False),
    ]


def test_a_newer_set_decides_the_target(tmp_path: Path) -> None:
    newer = tmp_path / "sentiment_blind_2.jsonl"
    newer.write_text('{"text": "great", "lang": "en", "label": "positive"}\n', encoding="utf-8")
    sets = held_out_sets("sentiment", [newer])
    assert [(s.name, s.decides) for s in sets] == [
        ("sentiment_blind_2.jsonl", True),
        ("blind2", False),
        ("blind", False),
        ("test", False),
    ]


def test_evaluate_refuses_a_missing_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--sentiment-set", str(tmp_path / "missing.jsonl")])
    assert exc.value.code == 2 and "no such file" in capsys.readouterr().err
