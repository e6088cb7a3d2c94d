"""Explanations: occlusion weights are exactly the scorer's score drops, the pooled method re-pools faithfully,
image posts name their hash list, allowed posts are left alone, errors carry through."""

from __future__ import annotations

import pytest

from moderation.explain import _masked, _pooled_probabilities, _spans, explain, words_of
from moderation.policy import CategoryPolicy, LanguageRule, Policy
from moderation.scorer import Scorer


def _review_everything() -> Policy:
    return Policy(version="test-review-all", languages=LanguageRule(trained=["en"], min_chars=10_000),
                  categories={"hate": CategoryPolicy(block=None, review=0.0),
                              "offensive": CategoryPolicy(block=None, review=0.0)})


@pytest.fixture()
def scorer(tiny_model_dir):
    s = Scorer.from_dir(tiny_model_dir, num_workers=0, policy=_review_everything(), batch_size=4)
    yield s
    s.close()


POSTS = [{"id": "a", "text": "these people are awful vermin"}, {"id": "b", "text": "lovely weather today friends"}]


def test_occlusion_weight_is_the_score_drop_without_the_word(scorer):
    [e, _] = explain(scorer, POSTS, method="occlusion", top_k=100, categories=["hate"])
    assert e.method == "occlusion" and e.text == POSTS[0]["text"]
    for w in e.categories["hate"]:
        again = scorer.score([{"id": "x", "text": _masked(e.text, w.span)}])[0].categories["hate"].score
        assert w.weight == pytest.approx(e.result.categories["hate"].score - again, abs=1e-5)
        assert w.weight > 0 and e.text[w.span[0]:w.span[1]] == w.word
    assert [w.weight for w in e.categories["hate"]] == sorted((w.weight for w in e.categories["hate"]), reverse=True)


def test_pooled_without_a_mask_reproduces_the_model_score(scorer):
    items = scorer.prepare_many(POSTS)
    owners = [(0, (0, 0)), (1, (0, 0)), (0, words_of(POSTS[0]["text"])[0])]
    probs = _pooled_probabilities(scorer, items, owners, [items[0], items[1], items[0]])
    results = scorer.score(POSTS)
    for k, (i, _) in enumerate(owners[:2]):
        for j, c in enumerate(scorer.categories):
            assert probs[k][j] == pytest.approx(results[i].categories[c].score, abs=1e-5)
    assert not all(probs[2][j] == pytest.approx(probs[0][j], abs=1e-9) for j in range(2))  # a mask changes it


def test_pooled_is_the_default_and_explains_only_actioned_posts(tiny_model_dir):
    policy = _review_everything()
    policy.categories["offensive"] = CategoryPolicy(block=None, review=1.0)
    policy.categories["hate"] = CategoryPolicy(block=None, review=1.0)
    s = Scorer.from_dir(tiny_model_dir, num_workers=0, policy=policy)
    [e, _] = explain(s, POSTS)
    assert e.method == "pooled" and e.result.action == "allow" and e.categories == {} and e.text == POSTS[0]["text"]
    [e, _] = explain(s, POSTS, only_actioned=False, top_k=2)
    assert len(e.categories) == 1 and len(next(iter(e.categories.values()))) <= 2


def test_highlighted_marks_the_words(scorer):
    [e, _] = explain(scorer, POSTS, top_k=2, categories=["hate"])
    marked = e.highlighted("hate")
    assert marked.count("[") == len(e.categories["hate"]) and marked.replace("[", "").replace("]", "") == e.text
    assert e.highlighted_html("hate").count("<mark title='+") == len(e.categories["hate"])
    from moderation.explain import explanations_html
    page = explanations_html([e], "t <1>")
    assert "<mark" in page and "t &lt;1&gt;" in page and e.result.action in page
    d = e.to_dict()
    assert d["words"]["hate"][0]["word"] == e.categories["hate"][0].word and d["action"] == "review"


def test_long_texts_are_masked_in_spans():
    text = " ".join(f"w{i}" for i in range(100))
    spans, size = _spans(text, 10)
    assert size == 10 and len(spans) == 10 and text[spans[0][0]:spans[0][1]] == " ".join(f"w{i}" for i in range(10))
    assert _masked("a b c", (2, 3)) == "a c" and _masked("abc", (0, 3)) == ""


def test_image_post_names_its_hash_list_and_errors_carry_through(tiny_model_dir, tmp_path):
    from PIL import Image

    from moderation.hashes import HashList, pdq_hash

    img = Image.effect_noise((64, 64), 80).convert("RGB")
    img.save(tmp_path / "noise.png")
    hl = HashList(name="known-bad", threshold=31)
    hl.add(pdq_hash(img)[0], "hate", id="n1")
    s = Scorer.from_dir(tiny_model_dir, num_workers=0, policy=_review_everything(), ocr="off", hash_lists=[hl])
    e, bad = explain(s, [{"id": "i", "image": "noise.png"}, {"id": "x"}], image_root=tmp_path)
    assert e.result.hash_match.list == "known-bad" and e.to_dict()["hash_match"]["id"] == "n1"
    assert e.categories == {} and e.text is None  # no text: nothing to mask
    assert bad.result.error_code == "empty_post" and bad.to_dict()["error_code"] == "empty_post"


def test_unknown_method_is_refused(scorer):
    with pytest.raises(ValueError, match="method must be one of"):
        explain(scorer, POSTS, method="shap")
