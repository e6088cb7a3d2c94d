"""Request parsing, per-item errors, response shape and builder arguments: no Ray, no HTTP."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from moderation.schema import CategoryResult, ErrorCode, InputError, ScoreResult
from serving.parsing import (
    Item,
    RequestRejected,
    format_results,
    parse_request,
    request_items,
    response_status,
)
from serving.schemas import ServeArgs, RequestLimits
from tests.conftest import png_bytes

LIMITS = RequestLimits(max_body_bytes=64 * 1024, max_items=4, max_text_chars=100, max_image_bytes=2000)
PNG = png_bytes()
PNG_B64 = base64.b64encode(PNG).decode()
PNG_URL = "data:image/png;base64," + PNG_B64


def items_of(body: dict, limits: RequestLimits = LIMITS) -> list[Item]:
    return request_items(parse_request(json.dumps(body).encode(), limits), limits)


def rejected(body: bytes, limits: RequestLimits = LIMITS) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        parse_request(body, limits)
    return info.value


def test_openai_string_and_list_of_strings():
    [one] = items_of({"model": "omni-moderation-latest", "input": "hello"})
    assert (one.id, one.text, one.image, one.ok) == ("0", "hello", None, True)
    many = items_of({"input": ["a", "b", "c"]})
    assert [(i.id, i.text) for i in many] == [("0", "a"), ("1", "b"), ("2", "c")]


def test_openai_content_parts_are_one_multimodal_input():
    [item] = items_of({"input": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]})
    assert item.ok and item.text == "look" and item.image == PNG


def test_our_posts_keep_ids_and_accept_base64_or_data_url():
    items = items_of({"posts": [{"id": "a", "text": "hi"}, {"id": 7, "image": PNG_B64}, {"id": "c", "image": PNG_URL}]})
    assert [i.id for i in items] == ["a", "7", "c"]
    assert items[1].image == PNG and items[2].image == PNG and all(i.ok for i in items)


def test_bad_items_get_their_own_errors_and_the_others_stay_good():
    items = items_of({"posts": [
        {"id": "ok", "text": "fine"},
        {"id": "b64", "image": "not base64!!"},
        {"id": "url", "image": "https://example.com/cat.png"},
        {"id": "long", "text": "x" * 101},
    ]})
    assert [(i.id, i.error_code) for i in items] == [
        ("ok", None), ("b64", "bad_base64"), ("url", "image_url_refused"), ("long", "text_too_long")]
    assert "data URL" in items[2].error


@pytest.mark.parametrize("post, code", [
    ({"id": "e"}, "empty_post"),
    ({"id": "e", "text": "   "}, "empty_post"),
    ({"id": "big", "image": base64.b64encode(b"\x89PNG" + b"0" * 4000).decode()}, "image_too_large"),
    ({"id": "empty-img", "image": "data:image/png;base64,"}, "image_corrupt"),
    ({"id": "bad-url", "image": "data:image/png,rawbytes"}, "bad_base64"),
])
def test_per_item_content_errors(post, code):
    [item] = items_of({"posts": [post]})
    assert item.error_code == code


def test_openai_image_url_other_than_data_is_refused_per_item():
    [item] = items_of({"input": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}]})
    assert item.error_code == "image_url_refused"


def test_two_images_in_one_input_is_an_item_error():
    part = {"type": "image_url", "image_url": {"url": PNG_URL}}
    [item] = items_of({"input": [part, part]})
    assert item.error_code == "invalid_field" and "at most one image" in item.error


def test_duplicate_ids_flag_the_later_occurrence():
    items = items_of({"posts": [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]})
    assert [i.error_code for i in items] == [None, "duplicate_id"]


def test_invalid_json_is_400():
    exc = rejected(b'{"input": "unterminated')
    assert (exc.status, exc.code) == (400, "invalid_json")
    assert "not valid JSON" in exc.message
    assert rejected(b"").code == "invalid_json"
    assert rejected(b'{"input": "\xff\xfe"}').status == 400


@pytest.mark.parametrize("body", [
    b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"posts": [{"id": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}]}",
    b"[" * 60_000,
])
def test_deeply_nested_json_is_400_not_500(body):
    """Issue 13.5: json.loads raised RecursionError, which the endpoint answered 500 internal_error."""
    exc = rejected(body, RequestLimits(max_body_bytes=1024 * 1024))
    assert (exc.status, exc.code) == (400, "invalid_json")
    assert "nested too deeply" in exc.message


def test_number_too_long_to_read_is_400():
    exc = rejected(b'{"input": "hi", "model": ' + b"7" * 5000 + b"}")
    assert (exc.status, exc.code) == (400, "invalid_json") and "4300 digits" in exc.message


@pytest.mark.parametrize("body, where", [
    ({"input": 5}, "must be a string, a list of strings"),
    ({"input": ["a", 1]}, "only strings or only content parts"),
    ({"input": [{"type": "video", "url": "x"}]}, "part 0"),
    ({"input": [{"type": "text"}]}, "part 0.text: Field required"),
    ({"posts": [{"id": "a", "text": 5}]}, "posts.0.text"),
    ({"posts": [{"text": "no id"}]}, "posts.0.id"),
    ({"posts": [{"id": True, "text": "bool id"}]}, "posts.0.id"),
    ({"posts": [{"id": "a", "txt": "typo"}]}, "posts.0.txt"),
    ({"input": "x", "posts": [{"id": "a", "text": "b"}]}, "exactly one of"),
    ({}, "exactly one of"),
    ({"input": []}, "empty list"),
])
def test_wrong_structure_or_types_is_422_with_the_field(body, where):
    exc = rejected(json.dumps(body).encode())
    assert (exc.status, exc.code) == (422, "invalid_request")
    assert where in exc.message
    assert exc.body()["error"]["details"]


def test_body_and_item_count_limits():
    exc = rejected(b" " * (LIMITS.max_body_bytes + 1))
    assert (exc.status, exc.code) == (413, "body_too_large")
    exc = rejected(json.dumps({"input": ["a"] * 5}).encode())
    assert (exc.status, exc.code) == (422, "too_many_items")
    assert "over the limit of 4" in exc.message
    assert rejected(b"[1, 2]").status == 422


def _ok(post_id: str, score: float, threshold: float | None = 0.5) -> ScoreResult:
    cats = {c: CategoryResult(score=score, flagged=threshold is not None and score >= threshold, threshold=threshold)
            for c in ("hate", "offensive")}
    return ScoreResult(id=post_id, categories=cats, applied_input_types=["image", "text"], model_version="m")


def test_format_results_merges_in_order_and_errors_are_never_safe():
    items = [Item(id="a", text="x"), Item(id="b", error_code="bad_base64", error="nope"), Item(id="c", text="y")]
    failed = ScoreResult(id="c", error="corrupt", error_code="image_corrupt")
    results = format_results(items, [_ok("a", 0.9), failed], ["hate", "offensive"])
    assert [r["id"] for r in results] == ["a", "b", "c"]
    a, b, c = results
    assert a["flagged"] is True and a["categories"] == {"hate": True, "harassment": True}
    assert a["category_scores"]["hate"] == pytest.approx(0.9)
    assert a["category_applied_input_types"]["hate"] == ["image", "text"]
    assert a["category_thresholds"] == {"hate": 0.5, "harassment": 0.5}
    for bad, code in ((b, "bad_base64"), (c, "image_corrupt")):
        assert bad["flagged"] is None and bad["error_code"] == code
        assert set(bad["categories"].values()) == {None} and set(bad["category_scores"].values()) == {None}
    assert response_status(results) == 200


def test_format_results_refuses_a_count_mismatch():
    with pytest.raises(RuntimeError, match="fewer results"):
        format_results([Item(id="a", text="x")], [], ["hate"])
    with pytest.raises(RuntimeError, match="more results"):
        format_results([Item(id="a", text="x")], [_ok("a", 0.1), _ok("b", 0.1)], ["hate"])


def test_unthresholded_categories_never_flag():
    [r] = format_results([Item(id="a", text="x")], [_ok("a", 0.99, threshold=None)], ["hate", "offensive"])
    assert r["flagged"] is False and r["category_thresholds"]["hate"] is None


def test_response_status_all_failed():
    bad = [Item(id="a", error_code="bad_base64", error="x")]
    assert response_status(format_results(bad, [], ["hate"])) == 422
    internal = ScoreResult(id="a", error="boom", error_code="internal_error")
    assert response_status(format_results([Item(id="a", text="x")], [internal], ["hate"])) == 500


def test_serve_args_validation():
    args = ServeArgs.model_validate({"batch": {"max_batch_size": 8}})
    assert args.model_max_ongoing_requests() == 16
    assert ServeArgs(max_ongoing_requests=3).model_max_ongoing_requests() == 3
    with pytest.raises(ValidationError, match="environment variable NAME"):
        ServeArgs(auth_token_env="hunter2 secret")
    with pytest.raises(ValidationError, match="max_replicas"):
        ServeArgs.model_validate({"autoscaling": {"min_replicas": 3, "max_replicas": 2}})
    with pytest.raises(ValidationError, match="modle_dir"):
        ServeArgs.model_validate({"modle_dir": "x"})
    with pytest.raises(ValidationError, match="max_batch_size"):
        ServeArgs.model_validate({"batch": {"max_batch_size": 0}})


def test_builder_options_and_refusals(tmp_path, monkeypatch):
    from serving.app import build_app, model_deployment_options

    # The builder only checks that the directory holds a config; the replica loads it (not started here).
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")

    opts = model_deployment_options(ServeArgs(batch={"max_batch_size": 16, "batch_wait_timeout_s": 0.02},
                                              max_queued_requests=5, num_cpus=2))
    assert opts["max_ongoing_requests"] >= 16  # batches can fill
    assert opts["max_queued_requests"] == 5
    assert opts["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.02, "forward_batch_size": None,
                                   "policy": None}
    assert opts["ray_actor_options"]["num_cpus"] == 2 and opts["num_replicas"] == 1
    auto = model_deployment_options(ServeArgs(autoscaling={"min_replicas": 1, "max_replicas": 3}))
    assert auto["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in auto

    with pytest.raises(ValueError, match="not found or has no config.json"):
        build_app({"model_dir": str(tmp_path / "missing")})
    monkeypatch.delenv("MODERATION_TEST_TOKEN", raising=False)
    with pytest.raises(ValueError, match="MODERATION_TEST_TOKEN"):
        build_app({"model_dir": str(model_dir), "auth_token_env": "MODERATION_TEST_TOKEN"})
    build_app({"model_dir": str(model_dir)})  # a dict is validated into ServeArgs


def test_config_file_is_valid_builder_args():
    """The sample config's args validate as ServeArgs, and its user_config as the batching config."""
    from pathlib import Path

    import yaml

    from serving.schemas import BatchConfig

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "serving" / "config.yaml").read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    [app] = config["applications"]
    assert app["import_path"] == "serving.app:build_app"
    args = ServeArgs.model_validate(app["args"])
    assert args.model_max_ongoing_requests() >= args.batch.max_batch_size
    [dep] = app["deployments"]
    # The batching user_config goes to the deployment that holds the model in the file's topology.
    assert dep["name"] == ("ModerationAPI" if args.topology == "fused" else "ModerationModel")
    BatchConfig.model_validate(dep["user_config"])


def test_cli_merges_config_file_and_options(tmp_path):
    """`moderation serve --config FILE` takes the file's args and http_options; explicit options win."""
    from moderation.cli import build_parser
    from serving.cli import _serve_args

    config = tmp_path / "serve.yaml"
    config.write_text(
        "http_options: {host: 127.0.0.1, port: 8123}\n"
        "applications:\n"
        "  - name: moderation\n"
        "    import_path: serving.app:build_app\n"
        "    args: {precision: bf16, num_cpus: 2, batch: {max_batch_size: 8, batch_wait_timeout_s: 0.02}}\n")
    args = build_parser().parse_args(["serve", "--config", str(config), "--batch-size", "4", "--port", "9000"])
    app_args, host, port = _serve_args(args)
    assert (host, port) == ("127.0.0.1", 9000)
    assert app_args["precision"] == "bf16" and app_args["num_cpus"] == 2
    assert app_args["batch"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.02}
    ServeArgs.model_validate(app_args)
    # Without --config: the shipped sample config; with --config none: the builder's defaults.
    app_args, host, port = _serve_args(build_parser().parse_args(["serve"]))
    sample = ServeArgs.model_validate(app_args)
    assert (host, port) == ("127.0.0.1", 8000) and sample.topology == "fused" and sample.num_replicas == 2
    assert sample.batch.max_batch_size == 8 and sample.num_cpus == 1
    app_args, host, port = _serve_args(build_parser().parse_args(["serve", "--config", "none"]))
    assert (host, port) == ("127.0.0.1", 8000) and ServeArgs.model_validate(app_args) == ServeArgs()
    app_args, _, _ = _serve_args(build_parser().parse_args(["serve", "--config", "none", "--policy", "p.json"]))
    assert ServeArgs.model_validate(app_args).policy == "p.json"
    config.write_text("applications: [{name: a, import_path: other.module:app}]\n")
    with pytest.raises(ValueError, match="import_path must be serving.app:build_app"):
        _serve_args(build_parser().parse_args(["serve", "--config", str(config)]))


def test_builder_reads_a_policy_file_into_the_replicas_user_config(tmp_path):
    from moderation.policy import CategoryPolicy, LanguageRule, Policy, PolicyError
    from serving.app import build_app

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    policy = Policy("pol-x", {"hate": CategoryPolicy(block=0.9, review=0.2)}, LanguageRule(trained=["en", "de"]))
    policy.save(tmp_path / "policy.json")
    app = build_app({"model_dir": str(model_dir), "policy": str(tmp_path / "policy.json")})
    user_config = app._bound_deployment._deployment_config.user_config
    assert user_config["policy"]["version"] == "pol-x" and user_config["policy"]["languages"]["trained"] == ["en", "de"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PolicyError, match="not a readable JSON policy"):
        build_app({"model_dir": str(model_dir), "policy": str(tmp_path / "bad.json")})


def test_cli_refuses_a_config_that_is_not_yaml_in_one_line(tmp_path):
    """`moderation serve --config broken.yaml` printed a yaml traceback (exit 1) instead of one line (exit 2)."""
    from moderation.cli import main
    from serving.cli import read_config

    broken = tmp_path / "broken.yaml"
    broken.write_text("applications: [\n")
    with pytest.raises(ValueError, match="broken.yaml: not a valid YAML file"):
        read_config(broken)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert main(["serve", "--config", str(tmp_path / "list.yaml")]) == 2


def test_format_results_carries_the_policy_decision_in_openai_names():
    cats = {"hate": CategoryResult(0.95, True, 0.9, "block", 0.4, ["text"]),
            "offensive": CategoryResult(0.6, False, None, "review", 0.5, ["ocr_text", "image"]),
            "violence": CategoryResult(0.0, False, 0.9, "allow", 0.3, [])}
    reasons = [{"action": "block", "category": "hate", "rule": "block_threshold", "detail": "..."},
               {"action": "review", "category": "offensive", "rule": "review_threshold", "detail": "..."}]
    result = ScoreResult(id="a", categories=cats, applied_input_types=["image", "ocr_text"], action="block",
                         reasons=reasons, language="en", language_confidence=0.97, policy_version="pol-1")
    failed = ScoreResult.failure("b", InputError(ErrorCode.IMAGE_CORRUPT, "corrupt"), policy_version="pol-1")
    a, b = format_results([Item(id="a", text=None, image=b"x"), Item(id="b", text="t")], [result, failed],
                          ["hate", "offensive", "violence"])
    # OpenAI's names where the meaning matches: offensive -> harassment; flagged = the automatic decision.
    assert a["categories"] == {"hate": True, "harassment": False, "violence": False} and a["flagged"] is True
    assert a["action"] == "block" and a["review_categories"] == ["harassment"]
    assert a["category_actions"] == {"hate": "block", "harassment": "review", "violence": "allow"}
    assert [r["category"] for r in a["reasons"]] == ["hate", "harassment"]
    # Text read from the image is an image input in OpenAI's vocabulary; a category nothing could judge has none.
    assert a["category_applied_input_types"] == {"hate": ["text"], "harassment": ["image"], "violence": []}
    assert a["applied_input_types"] == ["image", "ocr_text"] and a["language"] == "en"
    assert a["category_review_thresholds"] == {"hate": 0.4, "harassment": 0.5, "violence": 0.3}
    assert b["action"] is None and b["flagged"] is None and b["policy_version"] == "pol-1"
    assert set(b["category_actions"].values()) == {None}


def test_an_id_with_a_lone_surrogate_is_an_item_error_under_its_escaped_id():
    """Issue 22 D2: "\\udc00" as an id gave a plain-text 500 and kept the whole request out of the decision log."""
    body = b'{"posts": [{"id": "\\udc00", "text": "hi"}, {"id": "ok", "text": "you are all idiots"}]}'
    first, second = request_items(parse_request(body, LIMITS), LIMITS)
    assert first.id == "\\udc00" and first.error_code == "text_not_utf8" and "lone surrogate" in first.error
    first.id.encode("utf-8")  # writable to the response and the log
    assert second.ok and second.id == "ok"


def test_serve_checks_its_port_before_ray_and_its_help_shows_what_runs(capsys):
    """Issue 22: `serve --port 99999` or a port in use gave a traceback after Ray had started; `serve --help` showed
    defaults (batch 32, 10 ms, 1 replica) that were not what runs (8, 0 ms, 2)."""
    import socket

    from moderation.cli import build_parser, main
    from serving.cli import check_port

    with pytest.raises(ValueError, match="99999 is not a TCP port"):
        check_port("127.0.0.1", 99999)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port("127.0.0.1", port)
        assert main(["serve", "--config", "none", "--port", str(port)]) == 2  # one line, before any Ray import
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "8 in the shipped config" in shown and "0 in the shipped config" in shown and "2 in the shipped config" in shown


def test_onnx_text_defaults_to_auto_and_the_cli_sets_it():
    from moderation.cli import build_parser
    from serving.cli import _serve_args

    assert ServeArgs().onnx_text == "auto"
    with pytest.raises(ValidationError, match="onnx_text"):
        ServeArgs.model_validate({"onnx_text": "fast"})
    app_args, _, _ = _serve_args(build_parser().parse_args(["serve", "--config", "none", "--onnx-text", "off"]))
    assert ServeArgs.model_validate(app_args).onnx_text == "off"
    app_args, _, _ = _serve_args(build_parser().parse_args(["serve", "--config", "none"]))
    assert "onnx_text" not in app_args and ServeArgs.model_validate(app_args).onnx_text == "auto"


def test_serve_args_choices_follow_the_library():
    """ServeArgs spells its choices as Literals (for the JSON schema); they must be the library's own lists, so a new
    precision or OCR mode cannot be usable in `moderation score` and refused by the endpoint's config."""
    from typing import get_args

    from moderation.ocr import OCR_MODES
    from moderation.precision import PRECISION_MODES

    fields = ServeArgs.model_fields
    assert set(get_args(fields["precision"].annotation)) == set(PRECISION_MODES)
    assert set(get_args(fields["ocr"].annotation)) == set(OCR_MODES)
    assert fields["precision"].default == "auto"
    assert ServeArgs(precision="bf16-block-guarded").precision == "bf16-block-guarded"
