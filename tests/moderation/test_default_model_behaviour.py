"""Behaviours of the shipped default model that issues named (model-dependent: skipped without a default model)."""

from __future__ import annotations

import pytest

from moderation.model_dir import default_model_dir
from moderation.scorer import Scorer

pytestmark = pytest.mark.pretrained


@pytest.fixture(scope="module")
def scorer():
    if default_model_dir() is None:
        pytest.skip("no default model has been trained in this checkout")
    return Scorer.default(num_workers=0)


def test_a_greeting_is_allowed(scorer):
    # Issue 22: "hello, world" went to review (offensive 0.179 against a review threshold of 0.116).
    (r,) = scorer.score([{"id": "hw", "text": "hello, world"}])
    assert r.action == "allow", r.reasons


def test_a_direct_threat_to_a_person_is_not_allowed_and_scores_as_violence(scorer):
    # Issue 18: "I will find you and kill you" scored violence 0.046 (review threshold 0.044).
    (r,) = scorer.score([{"id": "t", "text": "I will find you and kill you"}])
    assert r.action in ("review", "block")
    assert r.categories["violence"].score > 0.5
