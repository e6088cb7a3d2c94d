"""The text encoder through ONNX Runtime for small batches: the same scores as PyTorch fp32, a shared export."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from moderation import onnx_text
from moderation.scorer import Scorer

POSTS = [{"id": "a", "text": "you people are the worst"}, {"id": "b", "text": "lovely weather in the park"},
         {"id": "c", "text": "I will find you"}]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODERATION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def test_small_batches_run_in_onnx_runtime_with_fp32_scores(tiny_model_dir, cache):
    plain = Scorer.from_dir(tiny_model_dir, num_workers=0)
    fast = Scorer.from_dir(tiny_model_dir, num_workers=0, onnx_text="on", onnx_max_posts=2)
    assert fast.onnx_text is not None and plain.onnx_text is None
    assert len(list(cache.glob("text-*.onnx"))) == 1
    for posts in (POSTS[:1], POSTS[:2]):
        want, got = plain.score(posts), fast.score(posts)
        for w, g in zip(want, got):
            for c in w.categories:
                assert g.categories[c].score == pytest.approx(w.categories[c].score, abs=1e-5)
            assert g.action == w.action
    assert fast.forward_stats["onnx"] == 3
    fast.score(POSTS)  # three posts: over onnx_max_posts, PyTorch runs them
    assert fast.forward_stats["onnx"] == 3 and fast.forward_stats["posts"] == 6
    assert fast.describe()["onnx_text"]["max_posts"] == 2
    assert fast.onnx_text_choice.startswith("on: batches of at most 2 posts run fp32 in ONNX Runtime")
    assert plain.describe()["onnx_text"] == {"choice": "off", "max_posts": 0}


def test_bf16_guarded_rescores_near_posts_through_onnx_runtime(tiny_model_dir, cache):
    """The posts bf16-guarded scores twice get fp32 logits from ONNX Runtime when the scorer has it (cheaper than
    PyTorch fp32 on a CPU), equal to PyTorch fp32's within float rounding."""
    from tests.moderation.test_precision import _guarded_scorers

    texts = [{"id": str(i), "text": f"post {i} {'awful ' * (i % 3)}{'hello ' * (i % 4)}"} for i in range(12)]
    fp32, _, guarded = _guarded_scorers(tiny_model_dir, texts, {"hate": 1e3, "offensive": 1e3})  # every post near
    guarded.onnx_text, guarded.onnx_max_posts = onnx_text.OnnxTextEncoder(guarded.model.encoders["text"], threads=1), 2
    seen = []
    runtime = guarded.onnx_text

    class Counting:
        def __call__(self, **inputs):
            seen.append(int(inputs["input_ids"].shape[0]))
            return runtime(**inputs)

    guarded.onnx_text = Counting()
    prepared = fp32.prepare_many(texts)
    want, got = fp32.logits(prepared)[0], guarded.logits(prepared)[0]
    assert sum(seen) == len(texts) and guarded.forward_stats["rescored"] == len(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert guarded.forward_stats["onnx"] == 0  # 12 posts: over onnx_max_posts, the bf16 pass ran in PyTorch
    # a guarded scorer's ONNX Runtime threads do not spin (they would take the cores from the next bf16 batch)
    assert runtime.spin and onnx_text.OnnxTextEncoder(guarded.model.encoders["text"], threads=1, spin=False).spin is False
    built = Scorer.from_dir(tiny_model_dir, precision="bf16-guarded", guard_margin={"hate": 0.1, "offensive": 0.1},
                            onnx_text="on", ocr="off", detect_language=False)
    assert built.onnx_text.spin is False
    assert Scorer.from_dir(tiny_model_dir, onnx_text="on", ocr="off").onnx_text.spin is True


def test_the_export_is_shared_and_keyed_by_the_weights(tiny_model, cache):
    encoder = tiny_model.encoders["text"]
    first = onnx_text.OnnxTextEncoder(encoder, threads=1)
    stamp = first.path.stat().st_mtime_ns
    second = onnx_text.OnnxTextEncoder(encoder, threads=1)
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp  # not exported again
    with torch.no_grad():
        next(encoder.parameters()).add_(0.01)
    assert onnx_text.OnnxTextEncoder(encoder, threads=1).path != first.path
    assert not list(cache.glob("*.tmp"))
    tokens = encoder.tokenize(["one post", "and a longer second post"])
    tokens.pop("truncated")
    with torch.inference_mode():
        want = encoder(**tokens).numpy()
    got = onnx_text.OnnxTextEncoder(encoder, threads=1)(**tokens).numpy()
    assert np.abs(want - got).max() < 1e-5
    # A graph file given as such (the benchmark's quantised copy) runs the same way, with no export.
    again = onnx_text.OnnxTextEncoder(graph=first.path, threads=1)(**tokens).numpy()
    assert np.abs(want - again).max() < 1e-5
    with pytest.raises(ValueError, match="an encoder or a graph"):
        onnx_text.OnnxTextEncoder()


def test_modes_and_a_missing_package(tiny_model, cache, monkeypatch):
    with pytest.raises(ValueError, match="onnx_text must be one of"):
        onnx_text.text_runtime("fast", tiny_model, torch.device("cpu"))
    assert onnx_text.text_runtime("off", tiny_model, torch.device("cpu")) == (None, "off")
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError("no onnx here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    session, why = onnx_text.text_runtime("auto", tiny_model, torch.device("cpu"))
    assert session is None and "pip install onnx" in why
    with pytest.raises(onnx_text.OnnxUnavailableError, match="'onnx' is not installed"):
        onnx_text.text_runtime("on", tiny_model, torch.device("cpu"))
    assert "CPU-only" in onnx_text.unavailable_reason(torch.device("cuda"))


def test_batch_jobs_build_onnx_runtime_only_to_rescore(tiny_model_dir, cache):
    """`moderation score` asks for "auto" with no small-batch path (onnx_max_posts=0): ONNX Runtime is built only
    where something runs in it, bf16-guarded's re-scored posts."""
    margin = {"hate": 0.1, "offensive": 0.1}
    opts = dict(onnx_text="auto", onnx_max_posts=0, ocr="off", detect_language=False)
    for precision in ("fp32", "bf16"):
        plain = Scorer.from_dir(tiny_model_dir, precision=precision, **opts)
        assert plain.onnx_text is None and plain.onnx_text_choice.startswith("auto: off (no batch goes through it")
    guarded = Scorer.from_dir(tiny_model_dir, precision="bf16-guarded", guard_margin=margin, **opts)
    assert guarded.onnx_text is not None and guarded.onnx_text.spin is False
    assert guarded.onnx_text_choice.startswith("auto: re-scored posts run fp32 in ONNX Runtime")
    served = Scorer.from_dir(tiny_model_dir, precision="bf16-guarded", guard_margin=margin, onnx_text="auto",
                             onnx_max_posts=4, ocr="off", detect_language=False)
    assert served.onnx_text_choice.startswith("auto: batches of at most 4 posts and re-scored posts run fp32")
    guarded.score([{"id": str(i), "text": f"post {i}"} for i in range(12)])  # bf16 in PyTorch, no small-batch path
    assert guarded.forward_stats["onnx"] == 0 and guarded.forward_stats["posts"] == 12


def test_the_score_command_passes_onnx_text_to_both_engines(monkeypatch, tmp_path):
    """`moderation score --onnx-text` reaches the local engine's scorer and the Ray engine's actors."""
    import argparse

    from moderation import batch_cli
    from serving import batch_engine

    parser = argparse.ArgumentParser()
    batch_cli.register(parser.add_subparsers())
    args = parser.parse_args(["score", "in.jsonl", "--out", str(tmp_path / "o.jsonl")])
    assert args.onnx_text == "auto"

    class Built(Exception):
        pass

    def build(args, **kwargs):
        raise Built(kwargs)

    monkeypatch.setattr(batch_cli, "build_scorer", build)
    with pytest.raises(Built) as built:
        batch_cli._score(args)
    assert built.value.args[0] == {"onnx_text": "auto", "onnx_max_posts": 0}
    seen = {}
    monkeypatch.setattr("serving.batch_ray.score_dump_ray", lambda *a, **kw: seen.update(kw))
    batch_engine.score(parser.parse_args(["score", "in.jsonl", "--out", "o.jsonl", "--onnx-text", "off"]), 1024)
    assert seen["onnx_text"] == "off"
