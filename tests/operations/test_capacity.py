"""`moderation capacity`: the plan's arithmetic, the figures files it reads, the errors when a figure is missing."""

from __future__ import annotations

import json
import re

import pytest

from moderation.cli import main

from operations.capacity import (
    CapacityError,
    PlanRequest,
    figures_document,
    load_all,
    plan,
    read_figures,
    serving_point,
)

MACHINE = {"cpus": 2, "cpu_model": "Test CPU", "gpu": None, "load_average": [1.0, 1.0, 1.0]}
# 864,000 posts a day = 10 posts/s on average
DAY = 864_000


def _batch(device: str = "cpu") -> dict:
    rates = [{"precision": "fp32", "input_type": "text", "rows": 100, "rows_per_s": 100.0, "cpu_ms_per_row": 10.0},
             {"precision": "fp32", "input_type": "image+text", "rows": 50, "rows_per_s": 25.0, "cpu_ms_per_row": 40.0},
             {"precision": "bf16", "input_type": "text", "rows": 100, "rows_per_s": 250.0, "cpu_ms_per_row": 4.0}]
    return {"model_version": "m-1", "device": device, "devices": 1, "torch_threads": 1, "rates": rates}


def _serve() -> dict:
    points = [{"label": "closed loop, 1 clients", "kind": "closed", "throughput_req_s": 40.0, "p99_ms": 30.0,
               "serving_cores": 0.9},
              {"label": "closed loop, 4 clients", "kind": "closed", "throughput_req_s": 80.0, "p99_ms": 60.0,
               "serving_cores": 1.6},
              {"label": "closed loop, 16 clients", "kind": "closed", "throughput_req_s": 100.0, "p99_ms": 200.0,
               "serving_cores": 2.0},
              {"label": "open loop at 50 req/s", "kind": "open", "throughput_req_s": 50.0, "p99_ms": 90.0,
               "serving_cores": None}]
    return {"model_version": "m-1", "precision": "fp32", "device": "cpu", "posts_per_request": 1, "replicas": 2,
            "cpus_per_replica": 1.0, "saturation_req_s": 100.0, "points": points}


def _review() -> dict:
    return {"model_version": "m-1", "policy_version": "pol-1", "precision": "fp32", "input_types": {
        "text": {"n": 1000, "harmful_share": 0.25, "review": 0.3, "block": 0.05, "review_harmful": 0.6,
                 "review_benign": 0.2, "block_harmful": 0.2, "block_benign": 0.0},
        "image+text": {"n": 100, "harmful_share": 0.4, "review": 0.5, "block": 0.0, "review_harmful": 0.7,
                       "review_benign": 0.366, "block_harmful": 0.0, "block_benign": 0.0}}}


def _write(folder, name: str, figures: dict, file: str | None = None, measured: str = "2026-12-04T20:00:00Z") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = figures_document(name, figures, f"python -m benchmarks.{name} --record", MACHINE, measured)
    (folder / (file or f"{name}.json")).write_text(json.dumps(doc))


@pytest.fixture()
def figures(tmp_path):
    folder = tmp_path / "figures"
    _write(folder, "batch_throughput", _batch())
    _write(folder, "serve_latency", _serve())
    _write(folder, "review_rates", _review())
    return folder


def test_load_batch_and_endpoint_arithmetic(figures):
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, precisions=["fp32"]), load_all(figures))
    assert p.load["average_posts_s"] == pytest.approx(10.0) and p.load["peak_posts_s"] == pytest.approx(30.0)
    b = p.batch["fp32"]  # text only: 10 ms of CPU a post
    assert b["posts_s_per_device"] == pytest.approx(100.0)
    assert b["device_hours_per_day"] == pytest.approx(DAY * 0.010 / 3600)
    assert b["devices_peak"] == pytest.approx(0.3) and b["devices_average"] == pytest.approx(0.1)
    e = p.endpoint["fp32"]
    # saturation 100 req/s on 2.0 serving cores: 20 ms of CPU a request; planned at the half-saturation point
    # (50%), so a core serves 25 req/s; 30 posts/s at peak -> 1.2 cores -> 2 replicas of 1 CPU
    assert e["point"]["kind"] == "open" and e["point"]["utilisation"] == pytest.approx(0.5)
    assert e["point"]["req_s_per_core"] == pytest.approx(25.0)
    assert e["cores_peak"] == pytest.approx(1.2) and e["replicas"] == 2


def test_p99_budget_picks_the_busiest_measured_point_within_it(figures):
    found = load_all(figures)
    serve = found["serve_latency"][0]
    assert serving_point(serve, 100)["label"] == "closed loop, 4 clients"  # 80 req/s at p99 60 ms beats 50 at 90
    assert serving_point(serve, 30)["label"] == "closed loop, 1 clients"
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, p99_ms=100, precisions=["fp32"]), found)
    assert p.endpoint["fp32"]["point"]["req_s_per_core"] == pytest.approx(40.0)  # 0.8 / 0.02
    assert p.endpoint["fp32"]["cores_peak"] == pytest.approx(0.75) and p.endpoint["fp32"]["replicas"] == 1
    tight = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, p99_ms=10, precisions=["fp32"]), found)
    assert tight.endpoint == {} and tight.batch and re.search(
        r"endpoint: no measured operating point .* p99 <= 10 ms: the lowest measured is 30 ms", tight.missing[0])


def test_image_posts_cost_more_on_both_paths(figures):
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, images_share=0.25, precisions=["fp32"]), load_all(figures))
    # batch: 0.75 x 10 ms + 0.25 x 40 ms = 17.5 ms a post
    assert p.batch["fp32"]["seconds_per_post"] == pytest.approx(0.0175)
    e = p.endpoint["fp32"]  # an image+text request: the text one (40 ms at half saturation) + the 30 ms an image
    # adds in batch scoring, provisioned at the same half utilisation: 40 + 60 = 100 ms
    assert e["core_seconds_per_request"]["text"] == pytest.approx(0.04)
    assert e["core_seconds_per_request"]["image+text"] == pytest.approx(0.10)
    assert e["cores_peak"] == pytest.approx(30 * (0.75 * 0.04 + 0.25 * 0.10))
    assert any("image+text - text cost" in n for n in p.notes)
    # bf16 has no image+text figure: that part is not planned, and says why
    bf16 = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, images_share=0.25, precisions=["bf16"]), load_all(figures))
    assert bf16.batch == {} and any("batch scoring at bf16: no batch figure for image+text posts" in m
                                    for m in bf16.missing)


def test_review_queue_and_reviewers(figures):
    found = load_all(figures)
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, images_share=0.25, precisions=["fp32"],
                         items_per_hour=60, shift_hours=8), found)
    items = DAY * (0.75 * 0.3 + 0.25 * 0.5)
    assert p.review["review_items_per_day"] == pytest.approx(items)
    assert p.review["blocks_per_day"] == pytest.approx(DAY * 0.75 * 0.05)
    assert p.review["reviewer_hours_per_day"] == pytest.approx(items / 60)
    assert p.review["reviewers"] == pytest.approx(items / 60 / 8)
    assert p.review["peak_review_items_per_hour"] == pytest.approx(items / 24 * 3)
    # at a platform's harmful share of 2%, from the harmful and benign rates
    low = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, precisions=["fp32"], harmful_share=0.02), found)
    assert low.review["per_type"]["text"]["review"] == pytest.approx(0.02 * 0.6 + 0.98 * 0.2)
    assert low.review["review_items_per_day"] == pytest.approx(DAY * (0.02 * 0.6 + 0.98 * 0.2))


def test_versions_are_checked_and_gpu_absence_is_said(figures):
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=2, precisions=["fp32"]), load_all(figures),
             policy_version="pol-2", model_version="m-2")
    assert any("measured with policy pol-1; the model's policy now is pol-2" in n for n in p.notes)
    assert any("batch_throughput was measured with model m-1; the model now is m-2" in n for n in p.notes)
    assert p.gpu == {} and any("no GPU figures" in n for n in p.notes)
    assert [s["name"] for s in p.sources] == ["batch_throughput", "serve_latency", "review_rates"]
    assert all(s["measured"] == "2026-12-04T20:00:00Z" for s in p.sources)


def test_gpu_figures_give_a_gpu_plan(figures):
    gpu = _batch("cuda")
    gpu["devices"] = 2
    gpu["rates"] = [{"precision": "fp32", "input_type": "text", "rows": 1000, "rows_per_s": 4000.0,
                     "cpu_ms_per_row": 1.0}]
    _write(figures, "batch_throughput", gpu, file="batch_throughput-gpu.json")
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, precisions=["fp32"]), load_all(figures))
    assert p.gpu["fp32"]["posts_s_per_device"] == pytest.approx(2000.0)  # 4000 rows/s on 2 GPUs
    assert p.gpu["fp32"]["devices_peak"] == pytest.approx(30 / 2000)
    assert not any("no GPU figures" in n for n in p.notes)


@pytest.mark.parametrize("missing, part, message", [
    ("batch_throughput.json", "batch", r"no batch_throughput figures measured on a CPU: run `python -m benchmarks.batch_throughput"),
    ("serve_latency.json", "endpoint", r"no serve_latency figures .* run `python benchmarks/serve_latency.py --record`"),
    ("review_rates.json", "review", r"no review_rates figures .* run `python -m benchmarks.review_rates --record`"),
])
def test_a_missing_figures_file_leaves_its_part_out_naming_the_benchmark(figures, missing, part, message):
    (figures / missing).unlink()
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, precisions=["fp32"]), load_all(figures))
    assert len(p.missing) == 1 and re.search(message, p.missing[0])
    assert getattr(p, part) == {} and all(getattr(p, other) for other in ("batch", "endpoint", "review") if other != part)
    for name in ("batch_throughput.json", "serve_latency.json", "review_rates.json"):
        (figures / name).unlink(missing_ok=True)
    with pytest.raises(CapacityError, match="nothing could be planned: no batch_throughput figures"):
        plan(PlanRequest(posts_per_day=DAY, peak_factor=3, precisions=["fp32"]), load_all(figures))


def test_missing_or_bad_figures_are_refused_clearly(tmp_path, figures):
    with pytest.raises(CapacityError, match="no benchmark figures folder at .*nowhere.*--record"):
        load_all(tmp_path / "nowhere")
    (figures / "junk.json").write_text("{not json")
    with pytest.raises(CapacityError, match="junk.json: not a readable JSON figures file"):
        load_all(figures)
    (figures / "junk.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CapacityError, match="junk.json: not a benchmark figures file"):
        read_figures(figures / "junk.json")
    (figures / "junk.json").unlink()
    # a precision the figures lack
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, precisions=["bf16"]), load_all(figures))
    assert any("endpoint: " in m and "measured at fp32, not at bf16" in m for m in p.missing)
    # a figure that is not a positive number
    bad = _batch()
    bad["rates"][0]["cpu_ms_per_row"] = 0
    _write(figures, "batch_throughput", bad)
    p = plan(PlanRequest(posts_per_day=DAY, peak_factor=3, precisions=["fp32"]), load_all(figures))
    assert p.batch == {} and "'cpu_ms_per_row' must be a positive number, got 0" in p.missing[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"posts_per_day": 0}, "--posts-per-day must be > 0"),
    ({"peak_factor": 0.5}, "--peak-factor .* must be >= 1"),
    ({"images_share": 1.5}, r"--images-share must be in \[0, 1\]"),
    ({"p99_ms": -1}, "--p99-ms must be > 0"),
])
def test_arguments_out_of_range(figures, kwargs, message):
    req = PlanRequest(**{"posts_per_day": DAY, "peak_factor": 2, "precisions": ["fp32"], **kwargs})
    with pytest.raises(CapacityError, match=message):
        plan(req, load_all(figures))


def test_cli_prints_the_plan_and_its_sources(figures, capsys):
    code = main(["capacity", "--posts-per-day", str(DAY), "--peak-factor", "3", "--images-share", "0.25",
                 "--precision", "fp32", "--figures", str(figures)])
    out = capsys.readouterr().out
    assert code == 0
    assert "10.00 posts/s on average, 30.00 posts/s at peak" in out
    assert "batch_throughput.json: measured 2026-12-04T20:00:00Z on 2 cores (Test CPU)" in out
    assert "`python -m benchmarks.serve_latency --record`" in out
    assert "replicas x 1 CPU" in out and "review queue at policy pol-1" in out and "no GPU figures" in out
    assert "endpoint (CPU, fp32, one post per request)" in out  # figures that recorded no ONNX Runtime say none
    code = main(["capacity", "--posts-per-day", str(DAY), "--peak-factor", "3", "--precision", "fp32",
                 "--figures", str(figures), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["endpoint"]["fp32"]["replicas"] == 2 and data["load"]["peak_posts_s"] == pytest.approx(30)


def test_cli_missing_figure_exits_2_with_the_benchmark_to_run(figures, capsys):
    (figures / "review_rates.json").unlink()
    code = main(["capacity", "--posts-per-day", "1000", "--peak-factor", "2", "--figures", str(figures)])
    out, err = capsys.readouterr()
    assert code == 2 and "error: not planned: no review_rates figures measured on a CPU" in err
    assert "benchmarks.review_rates" in err and "replicas x 1 CPU" in out  # the rest is still planned
    assert "not planned (missing figures):" in out
    code = main(["capacity", "--posts-per-day", "1000", "--peak-factor", "2", "--figures", str(figures / "none")])
    assert code == 2 and "error: no benchmark figures folder" in capsys.readouterr().err


def test_cli_says_when_the_endpoint_was_measured_with_onnx_runtime(tmp_path, capsys):
    folder = tmp_path / "figures"
    _write(folder, "batch_throughput", _batch())
    _write(folder, "serve_latency", dict(_serve(), onnx_text_on=True))
    _write(folder, "review_rates", _review())
    assert main(["capacity", "--posts-per-day", str(DAY), "--peak-factor", "3", "--precision", "fp32",
                 "--figures", str(folder)]) == 0
    assert "endpoint (CPU, fp32, lone requests' text encoder in ONNX Runtime, one post per request)" in capsys.readouterr().out
    _write(folder, "serve_latency", dict(_serve(), onnx_text_on=False))
    assert main(["capacity", "--posts-per-day", str(DAY), "--peak-factor", "3", "--precision", "fp32",
                 "--figures", str(folder)]) == 0
    assert "endpoint (CPU, fp32, one post per request)" in capsys.readouterr().out
