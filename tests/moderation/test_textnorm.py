"""Text normalisation before scoring (issue 22 S3): look-alike letters cannot dodge the model."""

from __future__ import annotations

import pytest

from moderation.textnorm import normalize_text


@pytest.mark.parametrize("text, want", [
    ("ｙｏｕ ａｒｅ ａｎ ｉｄｉｏｔ", "you are an idiot"),          # fullwidth
    ("уоu аrе аn іdіоt", "you are an idiot"),                  # Cyrillic look-alikes mixed with Latin letters
    ("ТНЕ ЕNЕМY", "THE ENEMY"),                                # upper-case look-alikes keep their case
    ("id\u200biot wo\u00adrthless", "idiot worthless"),         # zero-width space, soft hyphen
    ("𝐢𝐝𝐢𝐨𝐭", "idiot"),                                         # mathematical bold
    ("you are an idiot", "you are an idiot"),
])
def test_look_alikes_become_the_plain_text(text, want):
    assert normalize_text(text) == want


@pytest.mark.parametrize("text", ["привет друг, как дела", "Ты идиот сок", "γειά σου κόσμε", "naïve résumé café"])
def test_real_text_in_other_scripts_and_accents_is_left_alone(text):
    assert normalize_text(text) == text


def test_the_scorer_scores_the_normalised_text_and_the_language_of_it(tiny_scorer):
    prepared = tiny_scorer.prepare({"id": "a", "text": "ｙｏｕ ａｒｅ ａｎ ｉｄｉｏｔ"})
    assert prepared.text == "you are an idiot"
    dodged, plain = tiny_scorer.score([{"id": "a", "text": "уоu аrе аn іdіоt"}, {"id": "b", "text": "you are an idiot"}])
    assert dodged.categories["hate"].score == pytest.approx(plain.categories["hate"].score, abs=1e-6)
    assert dodged.language == "en"


@pytest.mark.pretrained
@pytest.mark.parametrize("text", ["ｙｏｕ ａｒｅ ａｎ ｉｄｉｏｔ", "уоu аrе аn іdіоt"])
def test_default_model_does_not_allow_a_disguised_insult(text):
    from moderation.model_dir import default_model_dir
    from moderation.scorer import Scorer

    if default_model_dir() is None:
        pytest.skip("no default model has been trained in this checkout")
    plain, disguised = Scorer.default(num_workers=0).score([{"id": "p", "text": "you are an idiot"},
                                                             {"id": "d", "text": text}])
    assert disguised.action == plain.action != "allow"
    assert disguised.categories["offensive"].score == pytest.approx(plain.categories["offensive"].score, abs=1e-6)
