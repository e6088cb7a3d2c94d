"""The lexical channel's two scoring paths: small batches skip the sparse matrices and must agree with them."""

from __future__ import annotations

import numpy as np
import pytest

from moderation import lexical
from moderation.lexical import LexicalConfig, LexicalModel, fit_lexical

TRAIN = ["you are an idiot", "what an id1ot, go away", "lovely weather today", "have a nice day friend",
         "f*ck off loser", "the loser lost the match", "@someone check https://example.com/x now",
         "sooooo gooood", "idiots everywhere!!!", "a calm and pleasant post"] * 2
LABELS = np.array([[1, 1], [1, 1], [0, 0], [0, 0], [1, 1], [0, 0], [0, np.nan], [0, 0], [1, 0], [0, 0]] * 2,
                  dtype=np.float64)


@pytest.fixture(scope="module")
def model() -> LexicalModel:
    return fit_lexical(TRAIN, LABELS, ["insult", "offensive"], LexicalConfig(min_df=1), progress=False)


TEXTS = ["you idiot", "", "   ", "!!!!", "zzz qqq nothing known", "what a lovely day, loser",
         "ＦＵＬＬ width Äöü 😀 id1ot", "go away " * 40, "@user https://t.co/abc idiot idiot idiot"]


def test_direct_path_matches_the_sparse_path(model):
    sparse = np.asarray(model.features(TEXTS) @ model._coef_t, dtype=np.float32) + model.intercept
    np.testing.assert_array_equal(model.sparse_logits(TEXTS), sparse)
    direct = model.direct_logits(TEXTS)
    assert direct.shape == (len(TEXTS), 2) and direct.dtype == np.float32
    np.testing.assert_allclose(direct, sparse, rtol=1e-5, atol=1e-6)
    # a text with no known n-gram scores the intercept alone, as a zero TF-IDF row does
    np.testing.assert_array_equal(model.direct_logits(["zzzz"])[0], model.intercept)


def test_logits_switches_path_by_batch_size(model, monkeypatch):
    calls = []
    monkeypatch.setattr(LexicalModel, "direct_logits", lambda self, t: calls.append(len(t)) or np.zeros((len(t), 2)))
    model.logits(TEXTS[:lexical.DIRECT_MAX_TEXTS])
    assert calls == [lexical.DIRECT_MAX_TEXTS]
    big = TEXTS * 2
    assert len(big) > lexical.DIRECT_MAX_TEXTS
    out = model.logits(big)
    assert calls == [lexical.DIRECT_MAX_TEXTS] and out.shape == (len(big), 2)
    assert model.logits([]).shape == (0, 2)
