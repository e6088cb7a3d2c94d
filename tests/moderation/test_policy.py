"""The moderation policy: file round trip, the action logic (thresholds, hash matches, languages, errors)."""

from __future__ import annotations

import json

import pytest

from moderation.policy import (CategoryPolicy, LanguageRule, Policy, PolicyError, from_thresholds, policy_version,
                               with_not_judged)
from moderation.calibration import Thresholds


def _policy(**lang) -> Policy:
    cats = {"hate": CategoryPolicy(block=0.9, review=0.4), "offensive": CategoryPolicy(block=None, review=0.5)}
    rule = LanguageRule(**lang) if lang else LanguageRule()
    return Policy(version=policy_version(cats, rule), categories=cats, languages=rule)


def test_file_round_trip_keeps_thresholds_rule_and_diagnostics(tmp_path):
    p = _policy(trained=["en", "de"], action="review", min_confidence=0.7, min_chars=5)
    p.categories["hate"].meta["block_fit"] = {"precision": 0.95}
    path = p.save(tmp_path)
    assert path.name == "policy.json"
    again = Policy.load(tmp_path)
    assert again.version == p.version
    assert again.categories["hate"].block == 0.9 and again.categories["offensive"].block is None
    assert again.categories["hate"].meta["block_fit"] == {"precision": 0.95}
    assert again.languages.trained == ["en", "de"] and again.languages.min_confidence == 0.7
    assert again.to_json() == p.to_json()


def test_version_changes_with_the_thresholds():
    a = _policy()
    b = _policy()
    b.categories["hate"] = CategoryPolicy(block=0.95, review=0.4)
    assert a.version == _policy().version
    assert policy_version(b.categories, b.languages) != a.version


@pytest.mark.parametrize("scores, action, cats", [
    ({"hate": 0.95, "offensive": 0.1}, "block", {"hate": "block", "offensive": "allow"}),
    ({"hate": 0.5, "offensive": 0.1}, "review", {"hate": "review", "offensive": "allow"}),
    ({"hate": 0.1, "offensive": 0.99}, "review", {"hate": "allow", "offensive": "review"}),  # no block threshold
    ({"hate": 0.1, "offensive": 0.1}, "allow", {"hate": "allow", "offensive": "allow"}),
])
def test_action_is_the_strongest_over_categories(scores, action, cats):
    d = _policy().decide(scores, language="en", language_confidence=0.99, letters=40)
    assert d.action == action and d.categories == cats
    assert [r["action"] for r in d.reasons] == sorted([r["action"] for r in d.reasons], key=["block", "review"].index)
    if action != "allow":
        assert d.reasons[0]["category"] in scores and "threshold" in d.reasons[0]["detail"]


def test_hash_match_blocks_whatever_the_score():
    d = _policy().decide({"hate": 0.01, "offensive": 0.01}, hash_categories=["offensive"])
    assert d.action == "block" and d.categories["offensive"] == "block"
    assert d.reasons[0]["rule"] == "hash_match"


def test_an_untrained_language_is_never_allowed():
    p = _policy()
    d = p.decide({"hate": 0.01, "offensive": 0.01}, language="de", language_confidence=0.98, letters=25)
    assert d.action == "review" and d.reasons[0]["rule"] == "language" and "'de'" in d.reasons[0]["detail"]
    # Too short to tell: no language rule (an emoji or "lol" is not another language).
    assert p.decide({"hate": 0.01}, language="de", language_confidence=0.98, letters=5).action == "allow"
    # Uncertain is no reason to allow (issue 22 S3: look-alike letters made the detector unsure, below 0.6).
    unsure = p.decide({"hate": 0.01}, language="kn", language_confidence=0.55, letters=13)
    assert unsure.action == "review" and "language uncertain (best guess 'kn'" in unsure.reasons[0]["detail"]
    # A trained language detected unsurely is the model's language: no rule.
    assert p.decide({"hate": 0.01}, language="en", language_confidence=0.3, letters=40).action == "allow"
    # The rule never weakens a stronger decision, and a deployment can choose its own action.
    assert p.decide({"hate": 0.99}, language="de", language_confidence=0.98, letters=25).action == "block"
    strict = _policy(action="block")
    assert strict.decide({"hate": 0.01}, language="fr", language_confidence=0.9, letters=30).action == "block"


def test_categories_no_input_can_judge_follow_the_not_judged_rule(tmp_path):
    p = _policy()
    assert p.not_judged == "allow"
    d = p.decide({"hate": 0.0, "offensive": 0.0}, not_judged=["hate", "offensive"])
    assert d.action == "allow" and d.reasons == []  # the default: as OpenAI's API does
    strict = with_not_judged(p, "review")
    assert strict.version != p.version and with_not_judged(strict, "review") is strict
    d = strict.decide({"hate": 0.0, "offensive": 0.7}, not_judged=["hate"])
    assert d.action == "review" and d.categories == {"hate": "review", "offensive": "review"}
    assert {r["rule"] for r in d.reasons} == {"not_judged", "review_threshold"}
    # A judged category still blocks, and a listed hash blocks a category even when no input could judge it.
    assert strict.decide({"hate": 0.99, "offensive": 0.0}, not_judged=["offensive"]).action == "block"
    d = strict.decide({"hate": 0.0, "offensive": 0.0}, not_judged=["hate", "offensive"], hash_categories=["hate"])
    assert d.categories == {"hate": "block", "offensive": "review"} and d.reasons[0]["rule"] == "hash_match"
    strict.save(tmp_path)
    again = Policy.load(tmp_path)
    assert again.not_judged == "review" and again.version == strict.version and again.to_json() == strict.to_json()
    # A file written before the rule existed reads as "allow".
    old = strict.to_json()
    del old["not_judged"]
    assert Policy.from_json(old).not_judged == "allow"


_OK = {"hate": {"block": 0.9, "review": 0.5}}


@pytest.mark.parametrize("data, message", [
    ({"version": "x", "categories": _OK}, "format_version"),
    ({"format_version": 1, "categories": _OK}, "'version' and 'categories'"),
    ({"format_version": 1, "version": "x", "categories": {"hate": {"block": 1.5}}}, "probability"),
    ({"format_version": 1, "version": "x", "categories": {"hate": {"block": 0.5, "review": 0.8}}}, "must not exceed"),
    ({"format_version": 1, "version": "x", "categories": _OK, "languages": {"action": "allowish"}}, "languages.action"),
    ({"format_version": 1, "version": "x", "categories": _OK, "languages": {"colour": 1}}, "unknown key 'colour'"),
    ({"format_version": 1, "version": "x", "categories": _OK, "not_judged": "block"}, "not_judged must be one of"),
    # issue 22: accepted before, then wrong at scoring time or silently never actioned
    ({"format_version": 1, "version": "x", "categories": _OK, "languages": {"min_chars": "12"}},
     "min_chars must be an integer, got '12'"),
    ({"format_version": 1, "version": "x", "categories": _OK, "languages": {"trained": "en"}},
     "trained must be a list of language codes"),
    ({"format_version": 1, "version": "x", "categories": {}}, "'categories' is empty"),
    ({"format_version": 1, "version": "x", "categories": {"hate": {"blok": 0.9}}}, "unknown key 'blok' \\(did you mean 'block'"),
    ({"format_version": 1, "version": "x", "categories": {"hate": {"block": True}}}, "probability"),
    ({"format_version": 1, "version": "x", "categories": _OK, "langauges": {}}, "unknown key 'langauges' \\(did you mean 'languages'"),
])
def test_invalid_policies_are_refused_with_the_reason(tmp_path, data, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)


def test_missing_or_broken_file_says_so(tmp_path):
    with pytest.raises(PolicyError, match="not found"):
        Policy.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PolicyError, match="not a readable JSON policy"):
        Policy.load(tmp_path / "bad.json")


def test_block_only_policy_from_old_thresholds():
    t = Thresholds(version="thr-1", categories={"hate": {"threshold": None}, "offensive": {"threshold": 0.9}})
    p = from_thresholds(t)
    assert p.categories["offensive"].block == 0.9 and p.categories["offensive"].review is None
    assert p.decide({"hate": 0.99, "offensive": 0.95}).action == "block"
    assert p.decide({"hate": 0.99, "offensive": 0.5}).action == "allow"  # hate never blocks: no threshold


def test_a_policy_must_name_exactly_the_models_categories(tiny_model_dir, tmp_path):
    """Issue 22: a policy missing a category was accepted and the hate sentence allowed; checked against the
    model's config before any weight loads."""
    from unittest import mock

    from moderation.scorer import Scorer

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format_version": 1, "version": "x", "categories": _OK}))
    with mock.patch("moderation.scorer.load_model", side_effect=AssertionError("weights loaded first")):
        with pytest.raises(PolicyError, match=r"lacks \['offensive'"):
            Scorer.from_dir(tiny_model_dir, policy=path)
