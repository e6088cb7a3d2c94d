"""The ingress's lean hot path gives the same answers as the full one, and `explain: true` returns the words behind
a post's action (issue 19 item 1, issue 21 item 2)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.serving.conftest import validated

# Bodies of every kind: the fast path must take the common ones and hand the rest to pydantic, with the same result.
BODIES = [
    {"posts": [{"id": "a", "text": "hello"}]},
    {"posts": [{"id": 7, "text": "hello", "image": None}, {"id": "b", "image": "aGVsbG8="}]},
    {"posts": [{"id": 10**30, "text": "an id past 64 bits"}]},
    {"input": "one text"},
    {"input": ["two", "texts"], "model": "omni-moderation-latest"},
    {"input": "x", "explain": True},
    {"input": ""},
    # Not fast-path shapes, or invalid: decided by pydantic.
    {"input": [{"type": "text", "text": "a part"}]},
    {"posts": [{"id": "   ", "text": "blank id"}]},
    {"posts": [{"id": True, "text": "a boolean id"}]},
    {"posts": [{"id": 1.5, "text": "a float id"}]},
    {"posts": [{"id": "a", "text": 3}]},
    {"posts": [{"id": "a", "text": "x", "extra": 1}]},
    {"posts": []},
    {"input": []},
    {"input": ["a", 1]},
    {"input": "x", "posts": [{"id": "a", "text": "y"}]},
    {"input": "x", "explain": "yes"},
    {"input": "x", "model": 4},
    {"input": None, "posts": None},
    {"unknown": 1},
]


def _full(data: dict):
    from pydantic import ValidationError

    from serving.schemas import ModerationRequest

    try:
        return ModerationRequest.model_validate(data).model_dump()
    except ValidationError:
        return "invalid"


@pytest.mark.parametrize("data", BODIES, ids=[json.dumps(b)[:40] for b in BODIES])
def test_fast_path_agrees_with_pydantic(data):
    from serving.schemas import ModerationRequest

    fast = ModerationRequest.fast_path(data)
    if fast is not None:  # whatever it takes, pydantic must take the same way
        assert fast.model_dump() == _full(data)


def test_fast_path_takes_the_common_shapes_and_nothing_invalid():
    from serving.schemas import ModerationRequest

    taken = [b for b in BODIES if ModerationRequest.fast_path(b) is not None]
    assert taken == BODIES[:7]
    assert all(_full(b) != "invalid" for b in taken)


def test_parse_request_answers_as_before_on_bodies_the_fast_path_declines():
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
