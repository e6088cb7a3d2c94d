"""The figures files the benchmarks record for `moderation capacity`: written, read back, extracted from reports."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.figures import batch_throughput_figures, record, serve_latency_figures
from benchmarks.review_rates import rates
from operations.capacity import load_all, read_figures


def _batch_report() -> dict:
    def run(precision, kind, rate, cpu_ms):
        return {"precision": precision, "kind": kind, "end_to_end": {"rows": 256, "rows_per_s": rate},
                "ceiling": {"rows_per_s": rate * 1.1}, "cpu_ms_per_row": {"ceiling": cpu_ms * 0.9, "end_to_end": cpu_ms}}
    return {"machine": {"cpus": 2, "torch_threads": 1, "cuda": False}, "model_version": "m-1",
            "runs": [run("fp32", "text", 60.0, 16.0), run("fp32", "memes", 20.0, 50.0)]}


def _serve_report() -> dict:
    def phase(c, repeat, ok, seconds, p99, cores):
        return {"mode": "on", "concurrency": c, "repeat": repeat, "ok": ok, "seconds": seconds, "p50_ms": p99 / 3,
                "p99_ms": p99, "throughput": ok / seconds, "cpu_cores": cores}
    return {"command": "python benchmarks/serve_latency.py --record", "model": {"model_version": "m-1"},
            "settings": {"precision": "fp32", "posts_per_request": 1, "num_replicas": 2, "num_cpus": 1.0,
                         "topology": "fused"},
            "closed_on": [phase(1, 0, 100, 4.0, 40.0, {"ModerationAPI replicas": 0.8, "proxy": 0.1, "load generator": 0.2}),
                          phase(16, 0, 300, 4.0, 300.0, {"ModerationAPI replicas": 1.4, "proxy": 0.3, "load generator": 0.3}),
                          phase(16, 3, 260, 4.0, 340.0, {"ModerationAPI replicas": 1.4, "proxy": 0.4, "load generator": 0.3})],
            "open_half": {"rate": 35.0, "throughput": 34.0, "p50_ms": 30.0, "p99_ms": 120.0}}


def test_record_writes_a_file_the_capacity_command_reads(tmp_path):
    path = record("batch_throughput", batch_throughput_figures(_batch_report()), "python -m benchmarks.x --record",
                  folder=tmp_path)
    assert path == tmp_path / "batch_throughput.json"
    f = read_figures(path)
    assert f.name == "batch_throughput" and f.command == "python -m benchmarks.x --record" and f.device() == "cpu"
    assert f.machine["cpus"] and "cpu_model" in f.machine and len(f.machine["load_average"]) == 3
    assert f.measured.endswith("Z") and f.figures["rates"][1] == {
        "precision": "fp32", "input_type": "image+text", "rows": 256, "rows_per_s": 20.0, "cpu_ms_per_row": 50.0,
        "ceiling_rows_per_s": 22.0}
    gpu = dict(batch_throughput_figures(_batch_report()), device="cuda")
    assert record("batch_throughput", gpu, "cmd", folder=tmp_path).name == "batch_throughput-gpu.json"
    assert [f.device() for f in load_all(tmp_path)["batch_throughput"]] == ["gpu", "cpu"]


def test_a_batch_report_without_throughput_is_not_recorded():
    with pytest.raises(ValueError, match="measured no throughput"):
        batch_throughput_figures({"machine": {}, "runs": []})


def test_serve_points_pool_repeats_and_leave_the_load_generator_out():
    f = serve_latency_figures(_serve_report())
    closed16 = next(p for p in f["points"] if p.get("concurrency") == 16)
    assert closed16["throughput_req_s"] == pytest.approx(560 / 8.0)
    assert closed16["p99_ms"] == pytest.approx(320.0)
    assert closed16["serving_cores"] == pytest.approx((1.7 + 1.8) / 2)  # replicas + proxy, not the load generator
    half = next(p for p in f["points"] if p["kind"] == "open")
    assert half["throughput_req_s"] == 34.0 and half["p99_ms"] == 120.0 and half["serving_cores"] is None
    assert f["saturation_req_s"] == pytest.approx(70.0) and f["replicas"] == 2 and f["precision"] == "fp32"
    assert f["onnx_text"] is None and f["onnx_text_on"] is None  # a report from before --onnx-text
    report = _serve_report()
    report["settings"].update(onnx_text="auto: batches of at most 4 posts run fp32 in ONNX Runtime", onnx_text_on=True)
    f = serve_latency_figures(report)
    assert f["onnx_text"].startswith("auto: batches") and f["onnx_text_on"] is True


def test_review_rates_split_harmful_and_benign_posts():
    nan = np.nan
    labels = np.array([[1, nan], [0, 0], [0, nan], [nan, 1], [nan, nan], [0, 0]], dtype=float)
    actions = ["review", "review", "allow", "block", "allow", None]
    kinds = ["text", "text", "text", "text", "text", "image+text"]
    out = rates(actions, labels, kinds, ["a", "a", "b", "b", "b", "m"])
    t = out["text"]
    assert t["n"] == 5 and t["n_scored"] == 5 and t["n_harmful"] == 2 and t["n_benign"] == 2
    assert t["review"] == pytest.approx(2 / 5) and t["block"] == pytest.approx(1 / 5)
    assert t["review_harmful"] == pytest.approx(0.5) and t["block_harmful"] == pytest.approx(0.5)
    assert t["review_benign"] == pytest.approx(0.5) and t["block_benign"] == 0.0
    assert t["harmful_share"] == pytest.approx(2 / 5)
    assert t["by_dataset"]["a"] == {"n": 2, "review": 1.0, "block": 0.0}
    # an unscored post counts in no share
    assert out["image+text"]["n"] == 1 and out["image+text"]["n_scored"] == 0 and out["image+text"]["review"] is None


def test_onnx_batch_table_times_each_runtime_per_post(capsys):
    """benchmarks.onnx_text --batch-sizes: one row per size, per-post times of each runtime, both runtimes called
    with the same batches."""
    import time as _time

    from benchmarks.onnx_text import batch_table

    class Fake:
        def __init__(self, per_post_s: float) -> None:
            self.per_post_s, self.seen = per_post_s, []

        def score(self, batch):
            self.seen.append(len(batch))
            _time.sleep(self.per_post_s * len(batch))

    slow, fast = Fake(0.002), Fake(0.001)
    batch_table(slow, fast, list(range(8)), [1, 4])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 ") or line.startswith("| 4 ")]
    assert len(rows) == 2
    ratio = float(rows[1].split("|")[4].strip().rstrip("x"))
    assert 0.3 < ratio < 0.8  # ONNX (here: the faster fake) about half torch's time per post
    assert slow.seen == fast.seen == [1] * 8 + [4, 4]
