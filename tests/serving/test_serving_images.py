"""The endpoint's image extras: ocr / hash_lists in the app's config, and ocr_text / hash_match in its answers
(the whole app in local testing mode, fused topology; OCR itself is tested in tests/moderation)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from pydantic import ValidationError

from moderation.hashes import HashList, pdq_hash
from tests.imagegen import encode, photo
from tests.serving.conftest import validated


def test_serve_args_take_ocr_and_hash_lists():
    from serving.schemas import ServeArgs

    args = ServeArgs.model_validate({"ocr": "both", "hash_lists": ["a.json"]})
    assert args.ocr == "both" and args.hash_lists == ["a.json"] and args.ocr_with_image is False
    assert ServeArgs().ocr == "auto" and ServeArgs().hash_lists == []
    with pytest.raises(ValidationError, match="ocr"):
        ServeArgs.model_validate({"ocr": "sometimes"})


def test_build_app_refuses_a_missing_hash_list(tmp_path):
    from serving.app import build_app

    with pytest.raises(FileNotFoundError, match="hash list not found"):
        build_app({"hash_lists": [str(tmp_path / "missing.json")]})


def test_answers_carry_hash_match_and_ocr_text(tiny_serving_model_dir, local_batching, tmp_path):
    from ray import serve

    from serving.app import build_app

    listed = photo(11)
    hl = HashList(name="known-bad", path=tmp_path / "known-bad.json")
    hl.add(pdq_hash(listed)[0], "hate", id="case-7")
    hl.save()
    app = build_app({"model_dir": str(tiny_serving_model_dir), "num_cpus": 0, "decode_workers": 0, "ocr": "off",
                     "hash_lists": [str(hl.path)], "batch": {"max_batch_size": 4, "batch_wait_timeout_s": 0.0}})
    api = serve.run(app, name="local-moderation-images", route_prefix=None, _local_testing_mode=True)
    b64 = lambda img: base64.b64encode(encode(img, "JPEG", quality=50)).decode()  # noqa: E731
    body = {"posts": [{"id": "copy", "image": b64(listed.resize((240, 180)))}, {"id": "other", "image": b64(photo(12))},
                      {"id": "text", "text": "hello"}]}
    async def call():
        return validated(*await api.moderate.remote(json.dumps(body).encode(), None))

    status, payload = asyncio.run(call())
    assert status == 200
    copy, other, text = payload["results"]
    assert copy["flagged"] is True and copy["categories"]["hate"] is True
    assert copy["hash_match"]["id"] == "case-7" and copy["hash_match"]["list_version"] == hl.version
    assert copy["hash_match"]["distance"] <= copy["hash_match"]["threshold"] == 31
    assert other["hash_match"] is None and text["hash_match"] is None
    assert all(r["ocr_text"] is None for r in payload["results"])  # ocr: off
    info = api.model_info.remote().result()
    assert info["ocr"] == "off" and info["hash_lists"][0]["name"] == "known-bad"


def test_format_results_passes_ocr_text_and_marks_errors_without_it():
    from moderation.schema import CategoryResult, HashMatch, ScoreResult
    from serving.parsing import Item, format_results

    match = HashMatch(list="l", list_version="pdq-1", id="e1", category="child_safety", distance=3, threshold=31)
    ok = ScoreResult(id="a", categories={"hate": CategoryResult(0.1, False, 0.9)}, applied_input_types=["ocr_text"],
                     ocr_text="READ ME", hash_match=match)
    bad = ScoreResult.failure("b", ValueError("boom"))
    out = format_results([Item(id="a", text=None, image=b"x"), Item(id="b", text="t", image=None)], [ok, bad], ["hate"])
    assert out[0]["ocr_text"] == "READ ME" and out[0]["hash_match"]["category"] == "child_safety"
    assert out[0]["flagged"] is True and out[0]["categories"]["hate"] is False  # a list category the model lacks
    assert out[1]["ocr_text"] is None and out[1]["hash_match"] is None and out[1]["flagged"] is None
