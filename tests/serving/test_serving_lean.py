"""The ingress's lean hot path (orjson responses, request ids, the decision log off the request thread) answers as
before, and `explain: true` returns the words behind a post's action (issue 19 item 1, issue 21 item 2)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.serving.conftest import validated


def test_parse_request_reads_explain_and_keeps_its_errors():
    from serving.parsing import RequestRejected, parse_request
    from serving.schemas import RequestLimits

    limits = RequestLimits(max_items=2)
    assert parse_request(b'{"posts": [{"id": 100000000000000000000000000000, "text": "x"}]}', limits).posts[0].id == 10**29
    assert parse_request(b'{"input": "x", "explain": true}', limits).explain is True
    for body, status, code in [(b'{"input": NaN}', 422, "invalid_request"), (b'{"input": ', 400, "invalid_json"),
                               (b'{"input": ["a", "b", "c"]}', 422, "too_many_items"),
                               (b'{"input": "x", "explain": 1}', 422, "invalid_request")]:
        with pytest.raises(RequestRejected) as err:
            parse_request(body, limits)
        assert (err.value.status, err.value.code) == (status, code), body


def test_encode_json_matches_the_standard_library():
    from serving.ingress import encode_json

    body = {"id": "modr-1", "s": [0.1, 1e-05, 0.30000000000000004, None, True, 3], "t": "naïve ✓ \"q\" \\ \n",
            "n": {"nested": []}}
    assert json.loads(encode_json(body)) == body
    # A lone surrogate (an explained text can hold one) is written as its escape, still valid JSON.
    assert json.loads(encode_json({"text": "a \udc00 b"})) == {"text": "a \udc00 b"}


def test_request_ids_are_unique_per_replica_and_across_replicas(tiny_serving_model_dir):
    from serving.ingress import ModerationIngress

    class Core:
        async def score(self, posts):
            return []

    a, b = ModerationIngress(None, core=Core()), ModerationIngress(None, core=Core())
    ids = {a._next_request_id() for _ in range(1000)} | {b._next_request_id() for _ in range(1000)}
    assert len(ids) == 2000 and all(i.startswith("modr-") for i in ids)
    with pytest.raises(ValueError, match="exactly one"):
        ModerationIngress(None)


# --- explain: true ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def review_everything_api(tiny_serving_model_dir, local_batching):
    """The app in local testing mode with a policy that sends every scored post to review for hate."""
    from ray import serve

    from moderation.policy import CategoryPolicy, LanguageRule, Policy
    from serving.app import build_app

    policy = Policy("pol-review-all", {"hate": CategoryPolicy(review=0.0), "offensive": CategoryPolicy()},
                    LanguageRule(), not_judged="review")
    app = build_app({"model_dir": str(tiny_serving_model_dir), "num_cpus": 0, "decode_workers": 0,
                     "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.0, "policy": policy.to_json()}})
    return serve.run(app, name="local-explain", route_prefix=None, _local_testing_mode=True)


def test_explain_returns_the_words_behind_a_review(review_everything_api):
    body = {"posts": [{"id": "p1", "text": "these people are vermin and should leave"}, {"id": "empty", "text": " "}],
            "explain": True}
    status, answer = asyncio.run(_moderate(review_everything_api, body))
    assert status == 200
    reviewed, empty = answer["results"]
    assert reviewed["action"] == "review" and "hate" in reviewed["review_categories"]
    explanation = reviewed["explanation"]
    assert explanation["method"] in ("pooled", "occlusion") and explanation["span_words"] == 1
    assert explanation["text"] == body["posts"][0]["text"]
    assert set(explanation["words"]) == {"hate"}
    words = explanation["words"]["hate"]
    assert 1 <= len(words) <= 5 and all(w["weight"] > 0 for w in words)
    assert [w["weight"] for w in words] == sorted((w["weight"] for w in words), reverse=True)
    for w in words:  # every span points at its word in the text the model read
        start, end = w["span"]
        assert explanation["text"][start:end] == w["word"]
    # An item that could not be scored has nothing to explain.
    assert empty["error_code"] == "empty_post" and empty["explanation"] is None


def test_without_explain_the_answer_has_no_explanation_field(review_everything_api):
    status, answer = asyncio.run(_moderate(review_everything_api, {"input": "these people are vermin"}))
    assert status == 200 and answer["results"][0]["action"] == "review"
    assert "explanation" not in answer["results"][0]


async def _moderate(api, body: dict):
    return validated(*await api.moderate.remote(json.dumps(body).encode(), None))
