"""The lexical channel: word and character n-gram TF-IDF features and one linear classifier per category.

Slurs, insults and profanity are often rare words, misspellings and obfuscations ("f*ck", "id1ot") that a
small sentence encoder smooths over; character n-grams see them. The model directory stores this channel
without pickle:

    lexical.json          format version, categories, the analyzer settings, both vocabularies (n-gram -> column)
    lexical.safetensors   idf_word (Vw,), idf_char (Vc,), coef (C, Vw + Vc), intercept (C,)  float32

`LexicalModel.logits(texts)` gives (N, C) logits; the model adds them to the neural text logits with a
per-category weight chosen on validation data (moderation.model), so batch scoring, the endpoint and
evaluation all score it in the same code path. Fitting (`fit_lexical`) needs scikit-learn, which the core
already depends on; applying it uses scikit-learn's analyzers with the stored vocabularies, so the n-grams
can never drift between training and serving.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

LEXICAL_JSON = "lexical.json"
LEXICAL_WEIGHTS = "lexical.safetensors"
FORMAT_VERSION = 1
#: Batches of at most this many texts skip the sparse matrices (LexicalModel.direct_logits).
DIRECT_MAX_TEXTS = 8

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_REPEAT = re.compile(r"(.)\1{3,}")


def normalize_for_ngrams(text: str) -> str:
    """Lower-case, URLs -> "url", @mentions -> "@user", runs of 4+ equal characters cut to 3.

    Platform artifacts (TweetEval writes every mention as "@user"; Gab posts carry links) would otherwise
    become n-grams that tell the dataset, not the harm.
    """
    text = _URL.sub(" url ", text.lower())
    text = _MENTION.sub("@user", text)
    return _REPEAT.sub(r"\1\1\1", text)


@dataclass
class LexicalConfig:
    """Analyzer settings (stored in lexical.json)."""

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    #: Keep n-grams seen in at least this many training posts.
    min_df: int = 3
    #: Most frequent n-grams kept per analyzer (bounds the model directory's size).
    max_word_features: int = 60_000
    max_char_features: int = 120_000
    #: Inverse regularisation strength of each category's logistic regression.
    C: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"word_ngrams": list(self.word_ngrams), "char_ngrams": list(self.char_ngrams), "min_df": self.min_df,
                "max_word_features": self.max_word_features, "max_char_features": self.max_char_features, "C": self.C}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LexicalConfig":
        return cls(word_ngrams=tuple(data["word_ngrams"]), char_ngrams=tuple(data["char_ngrams"]),
                   min_df=int(data["min_df"]), max_word_features=int(data["max_word_features"]),
                   max_char_features=int(data["max_char_features"]), C=float(data["C"]))


def _vectorizers(config: LexicalConfig, vocab_word: dict[str, int] | None = None,
                 vocab_char: dict[str, int] | None = None) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import CountVectorizer

    common = {"lowercase": False, "preprocessor": normalize_for_ngrams, "dtype": np.float32}
    word = CountVectorizer(analyzer="word", ngram_range=tuple(config.word_ngrams), vocabulary=vocab_word,
                           token_pattern=r"(?u)\b\w+\b|[^\w\s]{2,}",
                           **({} if vocab_word else {"min_df": config.min_df, "max_features": config.max_word_features}),
                           **common)
    char = CountVectorizer(analyzer="char_wb", ngram_range=tuple(config.char_ngrams), vocabulary=vocab_char,
                           **({} if vocab_char else {"min_df": config.min_df, "max_features": config.max_char_features}),
                           **common)
    return word, char


def _tfidf(counts: Any, idf: np.ndarray) -> Any:
    """Sublinear tf (1 + log count) times idf, rows L2-normalised: scikit-learn's TfidfVectorizer(sublinear_tf=True)."""
    # sklearn.preprocessing.normalize's own kernel, without the argument validation around it (~0.5 ms a call,
    # two calls a post: a third of the channel's cost on a single-post request); the same arithmetic
    from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2

    x = counts.tocsr().astype(np.float32)
    x.data = (1.0 + np.log(x.data)) * idf[x.indices]  # each stored cell times its column's idf, in place of a
    inplace_csr_row_normalize_l2(x)                   # sparse-by-dense-row product (same float32 arithmetic)
    return x


def _idf(counts: Any) -> np.ndarray:
    """Smoothed idf, as scikit-learn computes it: log((1 + n) / (1 + df)) + 1."""
    n = counts.shape[0]
    df = np.bincount(counts.tocsr().indices, minlength=counts.shape[1])  # CSR indices: the column of each stored cell
    return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)


@dataclass
class LexicalModel:
    """Word + character n-gram TF-IDF and a linear classifier per category. Lists in, (N, C) logits out."""

    categories: list[str]
    config: LexicalConfig
    vocab_word: dict[str, int]
    vocab_char: dict[str, int]
    idf_word: np.ndarray
    idf_char: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_feat = len(self.vocab_word) + len(self.vocab_char)
        if self.idf_word.shape != (len(self.vocab_word),) or self.idf_char.shape != (len(self.vocab_char),):
            raise ValueError("lexical model: idf lengths do not match the vocabularies")
        if self.coef.shape != (len(self.categories), n_feat) or self.intercept.shape != (len(self.categories),):
            raise ValueError(f"lexical model: coef {self.coef.shape} / intercept {self.intercept.shape} do not match "
                             f"{len(self.categories)} categories x {n_feat} features")
        self._vec: tuple[Any, Any] | None = None
        self._analyzers: tuple[tuple[Any, dict[str, int], np.ndarray, int], ...] | None = None
        # (features, C), C-contiguous: `x @ coef.T` would copy the transposed weights on every call (scipy ravels
        # a non-contiguous dense operand), ~1 ms a single-post request
        self._coef_t = np.ascontiguousarray(self.coef.T)

    def features(self, texts: Sequence[str]) -> Any:
        """(N, Vw + Vc) sparse TF-IDF rows of `texts`."""
        from scipy.sparse import hstack

        word, char = self._vectorizers()
        texts = list(texts)
        return hstack([_tfidf(word.transform(texts), self.idf_word), _tfidf(char.transform(texts), self.idf_char)]).tocsr()

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) float32 logits, one column per category, in `categories` order. Batches of at most
        `DIRECT_MAX_TEXTS` texts take `direct_logits` (the same arithmetic without scikit-learn's sparse matrices)."""
        if len(texts) == 0:
            return np.zeros((0, len(self.categories)), dtype=np.float32)
        if len(texts) <= DIRECT_MAX_TEXTS:
            return self.direct_logits(texts)
        return self.sparse_logits(texts)

    def sparse_logits(self, texts: Sequence[str]) -> np.ndarray:
        """`logits` through the sparse TF-IDF rows of `features` (what larger batches take)."""
        return np.asarray(self.features(texts) @ self._coef_t, dtype=np.float32) + self.intercept

    def _vectorizers(self) -> tuple[Any, Any]:
        """The word and character vectorisers over the stored vocabularies, built on first use."""
        if self._vec is None:
            self._vec = _vectorizers(self.config, self.vocab_word, self.vocab_char)
        return self._vec

    def direct_logits(self, texts: Sequence[str]) -> np.ndarray:
        """`logits` one text at a time: its n-grams counted in a dict, TF-IDF weighted and L2-normalised per
        analyzer as `_tfidf` does, then the weighted sum of those n-grams' coefficient rows. Equal to the sparse
        path up to float32 rounding (5.7e-6 at most on 510 test posts); a one-post request pays 0.15 ms instead of
        0.30 (scipy.sparse construction and scikit-learn's checks dominate a single row): `python -m
        benchmarks.lexical_paths`."""
        if self._analyzers is None:
            word, char = self._vectorizers()
            self._analyzers = ((word.build_analyzer(), self.vocab_word, self.idf_word, 0),
                               (char.build_analyzer(), self.vocab_char, self.idf_char, len(self.vocab_word)))
        out = np.empty((len(texts), len(self.categories)), dtype=np.float32)
        for row, text in enumerate(texts):
            acc = self.intercept.astype(np.float32, copy=True)
            for analyze, vocab, idf, offset in self._analyzers:
                counts: dict[int, int] = {}
                for gram in analyze(text):
                    col = vocab.get(gram)
                    if col is not None:
                        counts[col] = counts.get(col, 0) + 1
                if not counts:
                    continue
                cols = np.fromiter(counts, dtype=np.int64, count=len(counts))
                tf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
                weight = (np.float32(1.0) + np.log(tf)) * idf[cols]
                norm = np.sqrt(np.sum(weight * weight, dtype=np.float64))  # float32 squares, a double sum: sklearn's
                weight = (weight / norm).astype(np.float32)                 # inplace_csr_row_normalize_l2
                acc += weight @ self._coef_t[cols + offset]
            out[row] = acc
        return out

    def top_ngrams(self, category: str, k: int = 20) -> list[tuple[str, float]]:
        """The k n-grams with the largest positive weight for `category` (what the channel keys on)."""
        j = self.categories.index(category)
        names = [""] * (len(self.vocab_word) + len(self.vocab_char))
        for t, i in self.vocab_word.items():
            names[i] = t
        for t, i in self.vocab_char.items():
            names[len(self.vocab_word) + i] = f"'{t}'"
        order = np.argsort(-self.coef[j])[:k]
        return [(names[i], float(self.coef[j, i])) for i in order]

    # --- storage ---------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write lexical.json + lexical.safetensors into the folder `path`."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"idf_word": self.idf_word.astype(np.float32), "idf_char": self.idf_char.astype(np.float32),
                   "coef": np.ascontiguousarray(self.coef, dtype=np.float32),
                   "intercept": self.intercept.astype(np.float32)}, str(path / LEXICAL_WEIGHTS))
        blob = {"format_version": FORMAT_VERSION, "categories": self.categories, "config": self.config.to_dict(),
                "meta": self.meta, "vocab_word": self.vocab_word, "vocab_char": self.vocab_char}
        tmp = path / (LEXICAL_JSON + ".tmp")
        tmp.write_text(json.dumps(blob, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        tmp.replace(path / LEXICAL_JSON)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LexicalModel":
        """Read what `save` wrote. Raises ValueError for a missing or inconsistent file."""
        from safetensors.numpy import load_file

        path = Path(path)
        for name in (LEXICAL_JSON, LEXICAL_WEIGHTS):
            if not (path / name).is_file():
                raise ValueError(f"{path} has no {name}: the lexical channel is incomplete")
        blob = json.loads((path / LEXICAL_JSON).read_text(encoding="utf-8"))
        if blob.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path / LEXICAL_JSON} has format_version {blob.get('format_version')!r}; "
                             f"this code reads {FORMAT_VERSION}")
        w = load_file(str(path / LEXICAL_WEIGHTS))
        return cls(categories=list(blob["categories"]), config=LexicalConfig.from_dict(blob["config"]),
                   vocab_word={str(k): int(v) for k, v in blob["vocab_word"].items()},
                   vocab_char={str(k): int(v) for k, v in blob["vocab_char"].items()},
                   idf_word=w["idf_word"], idf_char=w["idf_char"], coef=w["coef"], intercept=w["intercept"],
                   meta=dict(blob.get("meta", {})))


def fit_lexical(texts: Sequence[str], labels: np.ndarray, categories: Sequence[str],
                config: LexicalConfig | None = None, sample_weight: np.ndarray | None = None,
                progress: bool = True) -> LexicalModel:
    """Fit the vocabularies on `texts` and one logistic regression per category on its known labels.

    labels: (N, C) 0/1 with NaN = unknown (that row is left out of that category's fit, never a negative).
    sample_weight: (N,) or (N, C) per-row loss weights (e.g. to balance datasets). Raises ValueError when a
    category lacks positives or negatives.
    """
    from scipy.sparse import hstack
    from sklearn.linear_model import LogisticRegression
    from tqdm.auto import tqdm

    config = config or LexicalConfig()
    labels = np.asarray(labels, dtype=np.float64)
    texts = list(texts)
    if labels.shape != (len(texts), len(categories)):
        raise ValueError(f"labels {labels.shape} must be ({len(texts)}, {len(categories)})")
    word, char = _vectorizers(config)
    cw = word.fit_transform(texts)
    cc = char.fit_transform(texts)
    idf_word, idf_char = _idf(cw), _idf(cc)
    x = hstack([_tfidf(cw, idf_word), _tfidf(cc, idf_char)]).tocsr()
    coef = np.zeros((len(categories), x.shape[1]), dtype=np.float32)
    intercept = np.zeros(len(categories), dtype=np.float32)
    counts = {}
    for j, cat in enumerate(tqdm(list(categories), desc="lexical channel", unit="category", disable=not progress)):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if not 0 < y.sum() < len(y):
            raise ValueError(f"lexical channel: category {cat!r} needs positives and negatives ({int(y.sum())} of {len(y)})")
        sw = None
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            sw = (sw[:, j] if sw.ndim == 2 else sw)[known]
        clf = LogisticRegression(C=config.C, max_iter=3000, solver="liblinear")
        clf.fit(x[known], y, sample_weight=sw)
        coef[j] = clf.coef_[0]
        intercept[j] = clf.intercept_[0]
        counts[cat] = {"known": int(known.sum()), "positive": int(y.sum())}
    vocab_word = {str(k): int(v) for k, v in word.vocabulary_.items()}
    vocab_char = {str(k): int(v) for k, v in char.vocabulary_.items()}
    return LexicalModel(categories=list(categories), config=config, vocab_word=vocab_word, vocab_char=vocab_char,
                        idf_word=idf_word, idf_char=idf_char, coef=coef, intercept=intercept,
                        meta={"train_counts": counts, "n_features": int(x.shape[1]),
                              "nonzero_coef": int(np.count_nonzero(coef)), "log_C": math.log10(config.C)})
