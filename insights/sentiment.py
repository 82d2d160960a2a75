"""Sentiment of feedback comments (EN + PT), offline: a label and a score in −1…1.

Trained on first use from the shipped sets: the generated `sentiment_train.jsonl` and the hand-written
`sentiment_dev.jsonl` and `sentiment_natural.jsonl` (weighted `HAND_WRITTEN_WEIGHT` times a generated row:
natural comments are what the generated phrasing lacks). Three kinds of features feed one multinomial
logistic regression:

- word 1–2-grams over the accent-folded text with **negation scope marked** ("not helpful" → `not
  NEG_helpful`, up to the next punctuation or contrast word such as "but"/"mas");
- character 2–5-grams of the raw text (typos, Portuguese without accents, inflections);
- a small hand-built **polarity lexicon** (EN + PT): counts of positive and negative words, each flipped
  when negated, and the polarity of the clause after the last contrast word ("ok but the numbers are
  wrong" leans on its second half).

The score is P(positive) − P(negative), so a confident neutral comment scores near 0.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from insights.labels import LABELS, Sentiment
from insights.textmodel import DATA_DIR, LabelledText, fitted_once, load_jsonl

# Chosen by 5-fold cross-validation over the natural set (insights/data/README.md): 2–4 score alike.
HAND_WRITTEN_WEIGHT = 3.0
LEXICON_SCALE = 0.3  # the lexicon counts' weight against the unit-length TF-IDF blocks


# -- text features (pure) ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?.,;:()]")
_PUNCT = frozenset("!?.,;:()")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


NEGATORS = _words(
    "not no never nothing none nobody nor neither without cannot dont doesnt didnt isnt wasnt arent werent "
    "cant wont couldnt wouldnt shouldnt havent hasnt hadnt aint "
    "nao nem nunca nada sem ninguem nenhum nenhuma jamais"
)
CONTRAST = _words("but however though although yet except mas porem contudo entretanto embora menos")
POSITIVE_WORDS = _words(
    """good great excellent perfect perfectly awesome amazing love loved like liked nice helpful useful clear
    correct accurate thanks thank thx ty brilliant fantastic wonderful impressive impressed best better works
    worked working solved fixed saved lifesaver nailed clean right exactly easy fast quick concise thorough
    solid gold beautiful appreciated appreciate happy glad recommend superb outstanding precise elegant smart
    cool neat top
    bom boa otimo otima excelente perfeito perfeita incrivel amei adorei gostei curti util uteis claro clara
    correto correta certo certa certinho obrigado obrigada valeu vlw obg brigado funcionou funciona resolveu
    salvou ajudou ajuda melhor rapido rapida facil lindo linda show massa maravilha sensacional impecavel
    preciso precisa parabens satisfeito satisfeita acertou certeira"""
)
NEGATIVE_WORDS = _words(
    """bad wrong terrible awful useless broken broke error errors crash crashes fail failed fails worse worst
    poor confusing confused incorrect inaccurate outdated slow vague generic fluff hallucinated invented
    frustrating disappointing disappointed annoying mistake mistakes misleading dangerous boring repetitive
    ignored ignores refused nonsense garbage trash waste wasted horrible rude missing meh
    ruim pessimo pessima errado errada erros erro horrivel inutil quebrou quebrado falhou falha pior lento
    lenta confuso confusa desatualizado desatualizada generico generica inventou frustrante decepcionante
    decepcionado chato chata repetitivo ignorou recusou perdi perdeu enrolacao lixo grosseiro robotico vago
    vaga faltam falta cortou piorou aff"""
)


def fold(text: str) -> str:
    """Lower case without accents ("Não" → "nao")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Folded words and punctuation; English contractions joined ("doesn't" → "doesnt")."""
    folded = fold(text).replace("’", "'").replace("n't", "nt")
    return [t.replace("'", "") for t in _TOKEN.findall(folded)]


def _is_negator(token: str) -> bool:
    return token in NEGATORS or (len(token) > 3 and token.endswith("nt"))


def mark_negation(text: str) -> str:
    """The words in a negation's scope prefixed `NEG_`; the scope ends at punctuation or a contrast word."""
    out: list[str] = []
    negated = False
    for t in tokens(text):
        if t in _PUNCT or t in CONTRAST:
            negated = False
            out.append({"!": "EXCL", "?": "QUES"}.get(t, "PUNCT") if t in _PUNCT else t)
        elif _is_negator(t):
            negated = True
            out.append(t)
        else:
            out.append("NEG_" + t if negated else t)
    return " ".join(out)


def lexicon_features(text: str) -> list[float]:
    """Polarity-lexicon counts: plain and negated positive/negative words, the polarity after the last
    contrast word, whether there is one, a net polarity, and the log length."""
    toks = tokens(text)
    pos = neg = neg_pos = neg_neg = 0
    after_pos = after_neg = 0.0
    contrasted = negated = False
    for t in toks:
        if t in _PUNCT or t in CONTRAST:
            negated = False
            if t in CONTRAST:
                contrasted, after_pos, after_neg = True, 0.0, 0.0
        elif _is_negator(t):
            negated = True
        elif t in POSITIVE_WORDS:
            if negated:
                neg_pos += 1
                after_neg += contrasted
            else:
                pos += 1
                after_pos += contrasted
        elif t in NEGATIVE_WORDS:
            if negated:
                neg_neg += 1
                after_pos += 0.5 * contrasted
            else:
                neg += 1
                after_neg += contrasted
    net = pos - neg - neg_pos + 0.5 * neg_neg
    return [
        pos,
        neg,
        neg_pos,
        neg_neg,
        after_pos,
        after_neg,
        float(contrasted),
        net,
        float(np.log1p(len(toks))),
    ]


# -- the model -------------------------------------------------------------------------------------------


class SentimentModel:
    """Negation-marked word n-grams + character n-grams + lexicon counts → logistic regression."""

    def __init__(
        self,
        examples: Sequence[LabelledText],
        *,
        hand_written_weight: float = HAND_WRITTEN_WEIGHT,
        c: float = 4.0,
    ) -> None:
        self._word: Any = None
        self._char: Any = None
        self._clf: Any = None
        texts = [e.text for e in examples]
        labels = [e.label for e in examples]
        # generated rows carry the template they came from; hand-written rows do not
        weights = [1.0 if e.template else hand_written_weight for e in examples]

        def train() -> tuple[Any, Any, Any]:
            self._word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"\S+")
            self._char = TfidfVectorizer(
                strip_accents="unicode", analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2
            )
            clf = LogisticRegression(C=c, max_iter=2000, random_state=0)
            features = self._features(texts, fit=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(features, labels, sample_weight=weights)
            return self._word, self._char, clf

        parts = [repr(c), *texts, *labels, *map(repr, weights)]
        self._word, self._char, self._clf = fitted_once("sentiment", Path(__file__), parts, train)
        classes = [str(c) for c in self._clf.classes_]
        self._col = {label: classes.index(label) for label in LABELS}

    def _features(self, texts: list[str], *, fit: bool = False) -> Any:
        marked = [mark_negation(t) for t in texts]
        if fit:
            words, chars = self._word.fit_transform(marked), self._char.fit_transform(texts)
        else:
            words, chars = self._word.transform(marked), self._char.transform(texts)
        lexicon = sparse.csr_matrix(np.asarray([lexicon_features(t) for t in texts]) * LEXICON_SCALE)
        return sparse.hstack([words, chars, lexicon]).tocsr()

    def sentiment(self, comment: str) -> Sentiment:
        """The sentiment of one comment; an empty comment is neutral."""
        return self.sentiment_many([comment])[0]

    def sentiment_many(self, comments: Sequence[str]) -> list[Sentiment]:
        """`sentiment` for many comments at once."""
        out = [Sentiment("neutral", 0.0) for _ in comments]
        live = [i for i, c in enumerate(comments) if c and c.strip()]
        if not live:
            return out
        proba = np.asarray(self._clf.predict_proba(self._features([comments[i].strip() for i in live])))
        for row, i in enumerate(live):
            best = max(LABELS, key=lambda lab: float(proba[row, self._col[lab]]))
            score = float(proba[row, self._col["positive"]] - proba[row, self._col["negative"]])
            out[i] = Sentiment(best, round(score, 4))
        return out


def load_sentiment_training_set() -> list[LabelledText]:
    """The shipped training comments: the generated set, the small hand-written development set and the
    hand-written natural set. The test and blind sets never are."""
    return [
        *load_jsonl(DATA_DIR / "sentiment_train.jsonl", "label"),
        *load_jsonl(DATA_DIR / "sentiment_dev.jsonl", "label"),
        *load_jsonl(DATA_DIR / "sentiment_natural.jsonl", "label"),
    ]


@functools.cache
def default_sentiment_model() -> SentimentModel:
    """The offline sentiment model, trained on first use (then kept in-process)."""
    return SentimentModel(load_sentiment_training_set())


def sentiment(comment: str) -> Sentiment:
    """The sentiment of a feedback comment with the default offline model."""
    return default_sentiment_model().sentiment(comment)
