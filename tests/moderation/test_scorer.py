"""Scorer: list in, list out, in order; per-item errors; batching does not change scores; thresholds applied."""

from __future__ import annotations

import numpy as np
import pytest

from moderation.calibration import Calibration, Thresholds
from moderation.model_dir import write_calibration, write_thresholds
from moderation.scorer import Scorer
from tests.conftest import png_bytes


def _posts():
    return [
        {"id": "t1", "text": "have a lovely day"},
        {"id": "i1", "image": "red.png"},
        {"id": "b1", "text": "a caption", "image": "blue.jpg"},
        {"id": "t2", "text": "another much longer text with many more words in it than the first"},
        {"id": "e1"},
        {"id": "bad-img", "text": "text is fine", "image": "truncated.jpg"},
        {"id": "raw", "image": png_bytes((20, 20), (0, 255, 0))},
    ]


def test_one_result_per_post_in_order_with_errors(tiny_scorer, image_dir):
    results = tiny_scorer.score(_posts(), image_root=image_dir)
    assert [r.id for r in results] == ["t1", "i1", "b1", "t2", "e1", "bad-img", "raw"]
    by_id = {r.id: r for r in results}
    assert by_id["t1"].applied_input_types == ["text"]
    assert by_id["i1"].applied_input_types == ["image"]
    assert by_id["b1"].applied_input_types == ["image", "text"]
    assert by_id["e1"].error_code == "empty_post" and not by_id["e1"].categories
    # A post with a broken image is an error, never silently scored on its text alone.
    assert by_id["bad-img"].error_code == "image_corrupt" and not by_id["bad-img"].categories
    for r in results:
        if r.ok:
            assert set(r.categories) == {"hate", "offensive"}
            assert all(0.0 <= c.score <= 1.0 for c in r.categories.values())
            assert r.model_version.startswith("tiny-")


def test_scores_do_not_depend_on_batching_or_order(tiny_model_dir, image_dir):
    posts = [p for p in _posts() if p["id"] not in ("e1", "bad-img")]
    big = Scorer.from_dir(tiny_model_dir, batch_size=64, num_workers=0).score(posts, image_root=image_dir)
    small = Scorer.from_dir(tiny_model_dir, batch_size=1, num_workers=3).score(posts[::-1], image_root=image_dir)[::-1]
    for a, b in zip(big, small):
        assert a.id == b.id
        for c in a.categories:
            assert a.categories[c].score == pytest.approx(b.categories[c].score, abs=1e-5)


def test_duplicate_ids_are_reported(tiny_scorer):
    results = tiny_scorer.score([{"id": "x", "text": "one"}, {"id": "x", "text": "two"}])
    assert results[0].ok and results[1].error_code == "duplicate_id"


def test_score_takes_a_list(tiny_scorer):
    with pytest.raises(TypeError, match="takes a list of posts"):
        tiny_scorer.score({"id": "1", "text": "x"})
    assert tiny_scorer.score([]) == []


def test_thresholds_and_calibration_are_applied(tiny_model_dir):
    posts = [{"id": str(i), "text": f"post number {i}"} for i in range(6)]
    plain = Scorer.from_dir(tiny_model_dir).score(posts)
    assert all(not r.flagged and r.categories["hate"].threshold is None for r in plain)
    hate = sorted(r.categories["hate"].score for r in plain)
    cut = (hate[2] + hate[3]) / 2
    write_thresholds(tiny_model_dir, Thresholds("thr-test", {"hate": {"threshold": cut}, "offensive": {"threshold": None}}, 0.9))
    scorer = Scorer.from_dir(tiny_model_dir)
    results = scorer.score(posts)
    assert sum(r.categories["hate"].flagged for r in results) == 3
    assert not any(r.categories["offensive"].flagged for r in results)  # no threshold: never flags
    assert results[0].thresholds_version == "thr-test"
    write_calibration(tiny_model_dir, Calibration("cal-test", {"hate": {"method": "temperature", "params": {"temperature": 1000.0}}}))
    flat = Scorer.from_dir(tiny_model_dir).score(posts)
    assert all(abs(r.categories["hate"].score - 0.5) < 1e-2 for r in flat)


def test_logits_match_model_forward(tiny_scorer):
    items = [p for p in tiny_scorer.prepare_many([{"id": "a", "text": "x y z"}, {"id": "b", "text": "w"}])]
    logits, truncated = tiny_scorer.logits(items)
    assert logits.shape == (2, 2) and truncated.tolist() == [False, False]
    results = tiny_scorer.results(items, logits, truncated)
    np.testing.assert_allclose([r.categories["hate"].score for r in results], 1 / (1 + np.exp(-logits[:, 0])))


def test_text_only_model_reports_image_only_posts(tiny_config, tmp_path):
    import torch
    from moderation.model import ModerationModel
    from moderation.model_dir import save_model
    tiny_config.image_encoder = None
    save_model(ModerationModel(tiny_config), tmp_path / "m", trained=True)
    scorer = Scorer.from_dir(tmp_path / "m")
    both, image_only = scorer.score([{"id": "a", "text": "hi", "image": png_bytes()}, {"id": "b", "image": png_bytes()}])
    assert both.ok and both.applied_input_types == ["text"]
    assert image_only.error_code == "modality_unsupported"
    del torch


def test_bad_options():
    from moderation.model_dir import ModelDirError
    with pytest.raises(ModelDirError, match="not found"):
        Scorer.from_dir("/nonexistent/model")


def test_untrained_default_says_so_and_flags_nothing(monkeypatch):
    # As on a checkout where no default model has been trained yet.
    monkeypatch.setattr("moderation.scorer.default_model_dir", lambda: None)
    scorer = Scorer.default(batch_size=8)
    assert not scorer.trained and scorer.model_version == "default-untrained"
    result = scorer.score([{"id": "1", "text": "you are an idiot"}])[0]
    assert result.ok and not result.flagged and result.categories["hate"].threshold is None


def test_shipped_default_model_is_trained_and_calibrated():
    from moderation.model_dir import default_model_dir
    if default_model_dir() is None:
        pytest.skip("no default model has been trained in this checkout")
    scorer = Scorer.default(batch_size=8)
    assert scorer.trained and scorer.info.calibration is not None and scorer.info.thresholds is not None
    assert scorer.info.policy is not None and scorer.policy.version == scorer.info.policy.version
    assert scorer.categories == ["hate", "offensive", "violence"]
    calm, insult, threat = scorer.score([
        {"id": "calm", "text": "Good morning everyone, have a lovely day!"},
        {"id": "insult", "text": "Shut up you stupid idiot, nobody wants to hear your pathetic whining, loser."},
        {"id": "threat", "text": "I will find where you live and kill you and your whole family."}])
    assert insult.categories["offensive"].score > 0.5 > 0.2 > calm.categories["offensive"].score
    assert calm.action == "allow" and insult.action in ("review", "block") and threat.action in ("review", "block")
    assert threat.categories["violence"].score > 10 * calm.categories["violence"].score


def test_policy_decides_every_result_and_a_policy_file_overrides_the_models(tiny_model_dir, tmp_path):
    from moderation.policy import CategoryPolicy, LanguageRule, Policy
    posts = [{"id": str(i), "text": f"post number {i} about the weather today"} for i in range(6)]
    hate = sorted(r.categories["hate"].score for r in Scorer.from_dir(tiny_model_dir).score(posts))
    policy = Policy("pol-test", {"hate": CategoryPolicy(block=(hate[4] + hate[5]) / 2, review=(hate[1] + hate[2]) / 2),
                                 "offensive": CategoryPolicy()}, LanguageRule(trained=["en"]))
    policy.save(tmp_path / "policy.json")
    scorer = Scorer.from_dir(tiny_model_dir, policy=tmp_path / "policy.json", num_workers=0)
    results = scorer.score(posts + [{"id": "empty", "text": "   "}])
    actions = [r.action for r in results[:6]]
    assert sorted(actions) == ["allow"] * 2 + ["block"] + ["review"] * 3
    for r in results[:6]:
        assert r.policy_version == "pol-test" and r.flagged == (r.action == "block")
        assert r.categories["hate"].review_threshold == policy.categories["hate"].review
        assert r.categories["offensive"].action == "allow"  # no thresholds: never actioned
        assert r.language == "en"
        assert (r.reasons[0]["category"] == "hate") if r.action != "allow" else not r.reasons
    assert results[6].error_code == "empty_post" and results[6].action is None  # errors are never allowed
    assert results[6].policy_version == "pol-test"
    # The same policy in the model directory is what Scorer.from_dir uses by default.
    policy.save(tiny_model_dir)
    assert [r.action for r in Scorer.from_dir(tiny_model_dir, num_workers=0).score(posts)] == actions
    assert Scorer.from_dir(tiny_model_dir).describe()["policy_version"] == "pol-test"


def test_a_post_in_an_untrained_language_goes_to_review(tiny_model_dir):
    scorer = Scorer.from_dir(tiny_model_dir, num_workers=0)  # no thresholds: nothing else actions
    de, en, short = scorer.score([{"id": "de", "text": "Du bist ein wertloser Idiot und niemand mag dich."},
                                  {"id": "en", "text": "You are welcome to join us for dinner tonight."},
                                  {"id": "short", "text": "ok"}])
    assert de.language == "de" and de.action == "review" and de.reasons[0]["rule"] == "language"
    assert en.language == "en" and en.action == "allow"
    assert short.action == "allow"  # two letters tell no language


def test_a_policy_for_categories_the_model_lacks_is_refused(tiny_model_dir):
    from moderation.policy import CategoryPolicy, Policy, PolicyError
    with pytest.raises(PolicyError, match="does not score"):
        Scorer.from_dir(tiny_model_dir, policy=Policy("p", {"violence": CategoryPolicy(block=0.9)}))


def test_late_fusion_image_only_posts_are_judged_only_for_image_categories(tiny_config, tmp_path):
    import torch
    from moderation.model import ModerationModel
    from moderation.model_dir import save_model
    cfg = tiny_config.from_dict({**tiny_config.to_dict(), "fusion": "late"})
    torch.manual_seed(0)
    model = ModerationModel(cfg)
    model.head.image_categories.copy_(torch.tensor([0.0, 1.0]))  # the image classifier knows offensive only
    save_model(model, tmp_path / "m", trained=True)
    scorer = Scorer.from_dir(tmp_path / "m", num_workers=0, ocr="off")
    image_only, both = scorer.score([{"id": "i", "image": png_bytes()}, {"id": "b", "text": "hello", "image": png_bytes()}])
    assert image_only.categories["hate"].applied_input_types == [] and image_only.categories["hate"].score == 0.0
    assert image_only.categories["offensive"].applied_input_types == ["image"]
    # image weight 0 (the default): the image adds nothing where there is text, and the result says so.
    assert both.categories["offensive"].applied_input_types == ["text"]
    assert both.applied_input_types == ["image", "text"]
    # A deployment can send what no input can judge to review instead (policy.json's not_judged rule).
    from moderation.policy import with_not_judged
    strict = Scorer.from_dir(tmp_path / "m", num_workers=0, ocr="off", policy=with_not_judged(scorer.policy, "review"))
    image_only, both = strict.score([{"id": "i", "image": png_bytes()}, {"id": "b", "text": "hello", "image": png_bytes()}])
    assert image_only.action == "review" and image_only.categories["hate"].action == "review"
    assert [r["rule"] for r in image_only.reasons if r["category"] == "hate"] == ["not_judged"]
    assert all(r["rule"] != "not_judged" for r in both.reasons)
