"""The deployments under `serve.run(..., _local_testing_mode=True)` (no cluster), and the model deployment's
batching and reconfigure called directly."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time

import pytest
from pydantic import ValidationError

from tests.conftest import png_bytes
from tests.serving.conftest import validated

PNG_B64 = base64.b64encode(png_bytes()).decode()


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module", params=["fused", "split"])
def api(request, tiny_serving_model_dir, local_batching):
    """The ingress handle of the whole app in local testing mode (wait 50 ms so concurrent calls group), in
    both topologies: the model inside the ingress replica, or behind it as its own deployment."""
    from ray import serve

    from serving.app import build_app

    app = build_app({"model_dir": str(tiny_serving_model_dir), "num_cpus": 0, "decode_workers": 0,
                     "topology": request.param,
                     "batch": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
                     "limits": {"max_items": 8, "max_body_bytes": 64 * 1024}})
    return serve.run(app, name=f"local-moderation-{request.param}", route_prefix=None, _local_testing_mode=True)


@pytest.fixture(scope="module")
def direct_scorer(tiny_serving_model_dir):
    from moderation.scorer import Scorer

    scorer = Scorer.from_dir(tiny_serving_model_dir, batch_size=4, num_workers=0)
    yield scorer
    scorer.close()


async def _moderate(api, body: dict | bytes, authorization: str | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validated(*await api.moderate.remote(raw, authorization))


def test_openai_shapes_answer_openai_fields(api):
    status, body = run(_moderate(api, {"model": "omni-moderation-latest", "input": ["hello", "world"]}))
    assert status == 200
    assert body["id"].startswith("modr-") and body["model"] == body["model_version"]
    assert body["trained"] is True and body["errors"] == 0
    assert [r["id"] for r in body["results"]] == ["0", "1"]
    r = body["results"][0]
    assert set(r) >= {"flagged", "categories", "category_scores", "category_applied_input_types"}
    assert set(r["categories"]) == {"hate", "harassment"}
    assert all(0.0 <= s <= 1.0 for s in r["category_scores"].values())
    assert r["category_applied_input_types"]["hate"] == ["text"]
    # The tiny model directory has no thresholds: nothing may flag, and the response says why (null threshold).
    assert r["flagged"] is False and r["category_thresholds"] == {"hate": None, "harassment": None}


def test_multimodal_parts_and_posts(api):
    url = "data:image/png;base64," + PNG_B64
    status, body = run(_moderate(api, {"input": [{"type": "text", "text": "caption"},
                                                 {"type": "image_url", "image_url": {"url": url}}]}))
    assert status == 200 and len(body["results"]) == 1
    assert body["results"][0]["category_applied_input_types"]["harassment"] == ["image", "text"]
    status, body = run(_moderate(api, {"posts": [{"id": "img", "image": PNG_B64}, {"id": "txt", "text": "hi"}]}))
    assert status == 200
    assert [(r["id"], r["category_applied_input_types"]["hate"]) for r in body["results"]] == [
        ("img", ["image"]), ("txt", ["text"])]


def test_bad_items_do_not_poison_the_batch(api, direct_scorer):
    jpeg = png_bytes((64, 48), (10, 120, 240), "JPEG")
    truncated_png = base64.b64encode(jpeg[: len(jpeg) // 2]).decode()
    gif_text = base64.b64encode(b"plain text, not an image").decode()
    posts = [{"id": "good1", "text": "first"}, {"id": "b64", "image": "%%%"},
             {"id": "corrupt", "image": truncated_png}, {"id": "fmt", "image": gif_text},
             {"id": "good2", "text": "second", "image": PNG_B64}]
    status, body = run(_moderate(api, {"posts": posts}))
    assert status == 200 and body["errors"] == 3
    by_id = {r["id"]: r for r in body["results"]}
    assert [r["id"] for r in body["results"]] == [p["id"] for p in posts]
    assert by_id["b64"]["error_code"] == "bad_base64"
    assert by_id["corrupt"]["error_code"] == "image_corrupt"
    assert by_id["fmt"]["error_code"] == "image_unsupported_format"
    for bad in ("b64", "corrupt", "fmt"):
        assert by_id[bad]["flagged"] is None and by_id[bad]["category_scores"]["hate"] is None
    # The good posts get the same scores as the scorer gives them alone.
    [alone1] = direct_scorer.score([{"id": "x", "text": "first"}])
    assert by_id["good1"]["category_scores"]["hate"] == pytest.approx(alone1.categories["hate"].score, abs=1e-5)
    assert by_id["good2"]["error_code"] is None


def test_elongated_image_is_an_item_error_decided_from_its_header(api):
    """Issue 13.1 (endpoint): a 91-byte 1x6000 PNG raised a replica from 1.3 to 2.9 GB while preprocessing scaled it
    to 256 x 1,536,000 pixels. Now it is an item error (here 1x1000: it would have cost ~260 MB)."""
    strip = base64.b64encode(png_bytes((1, 1000))).decode()
    status, body = run(_moderate(api, {"posts": [{"id": "strip", "image": strip}, {"id": "ok", "text": "fine"}]}))
    assert status == 200
    strip_result, ok_result = body["results"]
    assert strip_result["error_code"] == "image_decompression_bomb" and strip_result["flagged"] is None
    assert "aspect ratio of 1000:1, over the limit of 100:1" in strip_result["error"]
    assert ok_result["error_code"] is None


def test_model_description_holds_no_server_paths():
    """Issue 13.6: /v1/model returned the filesystem path of the model (and would of local encoders, hash lists)."""
    from serving.model_core import public_description

    info = {"path": "/srv/models/mine", "model_version": "v1", "categories": ["hate"],
            "text_encoder": {"name": "/srv/hf/minilm", "pooling": "mean"}, "image_encoder": {"name": "efficientnet_lite0"},
            "hash_lists": [{"name": "known", "path": "/srv/lists/known.json", "version": "h1"}]}
    assert public_description(info) == {"model_version": "v1", "categories": ["hate"],
                             "text_encoder": {"name": "minilm", "pooling": "mean"},
                             "image_encoder": {"name": "efficientnet_lite0"},
                             "hash_lists": [{"name": "known", "version": "h1"}]}


def test_request_level_errors_are_4xx_json(api):
    status, body = run(_moderate(api, b"{not json"))
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = run(_moderate(api, {"input": {"text": "a dict"}}))
    assert status == 422 and body["error"]["code"] == "invalid_request"
    status, body = run(_moderate(api, {"input": ["x"] * 9}))
    assert status == 422 and body["error"]["code"] == "too_many_items"
    status, body = run(_moderate(api, b'{"input": "' + b"x" * (64 * 1024) + b'"}'))
    assert status == 413 and body["error"]["code"] == "body_too_large"
    # A request whose only post is bad: 422, with the per-item error in the usual shape.
    status, body = run(_moderate(api, {"posts": [{"id": "a", "image": "not-base64!"}]}))
    assert status == 422 and body["results"][0]["error_code"] == "bad_base64" and body["errors"] == 1


def test_concurrent_requests_are_batched_and_answered_to_the_right_caller(api, direct_scorer):
    before = api.model_info.remote().result()["stats"]
    texts = [[f"request {i} post {j} " + "word " * (i + j) for j in range(i % 3 + 1)] for i in range(8)]

    async def burst():
        return await asyncio.gather(*(_moderate(api, {"posts": [{"id": f"{i}-{j}", "text": t} for j, t in enumerate(ts)]})
                                      for i, ts in enumerate(texts)))

    answers = run(burst())
    after = api.model_info.remote().result()["stats"]
    n_posts = sum(len(ts) for ts in texts)
    assert after["posts"] - before["posts"] == n_posts
    assert after["batches"] - before["batches"] < len(texts)  # grouped across requests
    assert after["largest_batch"] > 3  # more posts than any single request holds
    assert after["rescored"] == 0  # fp32: nothing scored twice
    flat = [t for ts in texts for t in ts]
    expected = direct_scorer.score([{"id": str(k), "text": t} for k, t in enumerate(flat)])
    k = 0
    for i, (status, body) in enumerate(answers):
        assert status == 200
        assert [r["id"] for r in body["results"]] == [f"{i}-{j}" for j in range(len(texts[i]))]
        for r in body["results"]:
            assert r["category_scores"]["harassment"] == pytest.approx(expected[k].categories["offensive"].score, abs=1e-5)
            k += 1


def test_health_ready_and_model_info(api):
    ready, body = api.ready.remote().result()
    assert ready is True and body["ready"] is True and body["trained"] is True
    assert api.healthz.remote().result() == {"status": "ok"}
    info = api.model_info.remote().result()
    assert info["categories"] == ["hate", "offensive"]
    assert info["thresholds"] == {"hate": None, "offensive": None}
    assert info["batch"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.05, "forward_batch_size": None,
                             "policy": None}
    assert info["policy_version"] and set(info["policy"]["categories"]) <= set(info["categories"])
    assert info["limits"]["max_items"] == 8 and info["auth"] is False
    assert info["topology"] in ("fused", "split")


def test_bearer_token_auth(tiny_serving_model_dir, local_batching, monkeypatch):
    from ray import serve

    from serving.app import build_app

    monkeypatch.setenv("MODERATION_TEST_TOKEN", "s3cret-token")
    app = build_app({"model_dir": str(tiny_serving_model_dir), "num_cpus": 0,
                     "auth_token_env": "MODERATION_TEST_TOKEN"})
    handle = serve.run(app, name="local-auth", route_prefix=None, _local_testing_mode=True)
    for header in (None, "Bearer wrong", "s3cret-token", "Basic s3cret-token", "Bearer "):
        status, body = run(_moderate(handle, {"input": "hi"}, header))
        assert status == 401 and body["error"]["code"] == "unauthorized", header
    status, body = run(_moderate(handle, {"input": "hi"}, "Bearer s3cret-token"))
    assert status == 200 and body["results"][0]["error_code"] is None


# --- the model deployment's class, called directly ----------------------------------------------------


@pytest.fixture()
def model_replica(tiny_serving_model_dir, local_batching):
    from serving.app import ModerationModel

    cls = ModerationModel.func_or_class
    replica = cls(str(tiny_serving_model_dir), decode_workers=0)
    replica.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.05})
    return replica


def test_reconfigure_changes_batch_size_and_wait(model_replica):
    async def burst(n: int):
        return await asyncio.gather(*(model_replica.score([{"id": "0", "text": f"post {i}", "image": None}])
                                      for i in range(n)))

    async def scenario():
        results = await burst(10)
        first = (model_replica.batches, model_replica.largest_batch)
        model_replica.reconfigure({"max_batch_size": 2, "batch_wait_timeout_s": 0.2})
        more = await burst(6)
        start = time.perf_counter()
        await burst(1)  # alone: waits the whole new timeout for a second post
        return results, first, more, time.perf_counter() - start

    results, (batches, largest), more, alone_s = run(scenario())
    assert all(r[0].ok and r[0].id == "0" for r in results + more)  # same id in one batch is no duplicate here
    assert largest == 4 and batches == 3  # 10 posts in batches of at most 4
    assert model_replica.largest_batch == 4 and model_replica.batches == 3 + 3 + 1  # then 6 posts in batches of 2, then 1
    assert model_replica.scorer.batch_size == 2
    assert model_replica.describe()["batch"] == {"max_batch_size": 2, "batch_wait_timeout_s": 0.2,
                                                 "forward_batch_size": None, "policy": None}
    model_replica.reconfigure({"max_batch_size": 32, "forward_batch_size": 8})
    assert model_replica.scorer.batch_size == 8  # a batch of 32 runs as length-sorted chunks of 8
    assert alone_s >= 0.19
    with pytest.raises(ValidationError, match="max_batch_size"):
        model_replica.reconfigure({"max_batch_size": 0})
    with pytest.raises(ValidationError, match="batch_wait"):
        model_replica.reconfigure({"max_batch_size": 4, "batch_wait": 1})


def test_reconfigure_applies_a_new_policy_without_a_restart(model_replica):
    from moderation.policy import CategoryPolicy, LanguageRule, Policy, PolicyError

    strict = Policy("pol-strict", {"hate": CategoryPolicy(block=0.0, review=0.0), "offensive": CategoryPolicy()},
                    LanguageRule(), not_judged="review")
    stray = Policy("p", {"spam": CategoryPolicy(block=0.5)})

    async def scenario():  # one event loop: the replica's batch queue belongs to it
        async def one():
            return (await model_replica.score([{"id": "0", "text": "a post about the weather", "image": None}]))[0]

        before = await one()
        version = model_replica.describe()["policy_version"]
        model_replica.reconfigure({"max_batch_size": 4, "policy": strict.to_json()})
        after = await one()
        described = model_replica.describe()["policy"]["categories"]["hate"]
        assert model_replica.describe()["policy"]["not_judged"] == "review"
        # A policy that does not fit the model is refused and the one in force stays.
        with pytest.raises(PolicyError, match="does not score"):
            model_replica.reconfigure({"policy": stray.to_json()})
        kept = await one()
        model_replica.reconfigure({"max_batch_size": 4})  # no policy in the config: the model directory's again
        return before, version, after, described, kept, await one()

    before, version, after, described, kept, back = run(scenario())
    assert before.action == "allow" and before.policy_version == version
    assert after.action == "block" and after.policy_version == "pol-strict"
    assert described == {"block": 0.0, "review": 0.0}
    assert kept.policy_version == "pol-strict"
    assert back.policy_version == version


def test_fused_replica_sheds_beyond_its_admission_bound_with_a_json_503(tiny_serving_model_dir, local_batching):
    """The fused replica admits max_ongoing + max_queued requests to its model at once; any more get 503 at once."""
    from ray import serve

    from serving.app import build_app

    app = build_app({"model_dir": str(tiny_serving_model_dir), "num_cpus": 0, "decode_workers": 0,
                     "max_ongoing_requests": 1, "max_queued_requests": 1,  # admits 2
                     "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 1.0}})  # admitted ones wait in the batch
    handle = serve.run(app, name="local-shed", route_prefix=None, _local_testing_mode=True)

    async def burst():
        async def one():
            start = time.perf_counter()
            status, payload = await _moderate(handle, {"input": "hello"})
            return status, payload, time.perf_counter() - start
        return await asyncio.gather(*(one() for _ in range(5)))

    answers = run(burst())
    assert sorted(a[0] for a in answers) == [200, 200, 503, 503, 503]
    for status, payload, elapsed in answers:
        if status == 503:
            assert payload["error"]["code"] == "overloaded" and elapsed < 0.5  # not after the batch's 1 s wait
        else:
            assert payload["results"][0]["error_code"] is None
    assert run(_moderate(handle, {"input": "hello"}))[0] == 200  # the bound frees once answered



def test_a_replica_is_warmed_before_it_serves_and_forgets_the_warm_up(tiny_serving_model_dir, local_batching):
    """ModelCore scores a post and a full batch at start (its first real request would pay the one-off costs)
    and leaves no trace in the counters that /v1/model reports."""
    from serving.model_core import ModelCore

    gc.unfreeze()
    core = ModelCore(str(tiny_serving_model_dir), decode_workers=0)
    try:
        info = core.describe()
        assert info["warm_up_s"] > 0
        assert info["stats"] == {"batches": 0, "posts": 0, "largest_batch": 0, "rescored": 0, "onnx_text": 0}
        assert core.scorer.forward_stats["posts"] == 0
        assert gc.get_freeze_count() > 10_000  # the model's objects are out of the collector's scans
        results = run(core.score([{"id": "x", "text": "hello there", "image": None}]))
        assert results[0].ok and core.scorer.forward_stats["posts"] == 1
    finally:
        core.scorer.close()
        gc.unfreeze()  # the test process goes on
