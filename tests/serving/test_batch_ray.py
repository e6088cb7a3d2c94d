"""The Ray Data engine of `moderation score` on a local (loopback-only) Ray: the same rows as the local engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from moderation.batch import errors_path_for, score_dump, work_dir_for  # noqa: E402
from moderation.dumps import write_dump  # noqa: E402
from tests.conftest import png_bytes  # noqa: E402


def _read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pylist()
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def mixed_dumps(tmp_path, image_dir) -> Path:
    """Two files (JSONL with bad rows, Parquet with image bytes) sharing a duplicate id across files."""
    d = tmp_path / "in"
    d.mkdir()
    lines = [json.dumps({"id": "a", "text": "hello there", "src": "forum"}),
             json.dumps({"id": "b", "image": "red.png"}),
             "{broken json",
             json.dumps({"text": "no id"}),
             json.dumps({"id": "a", "text": "again"}),
             json.dumps({"id": "c", "image": "truncated.jpg", "text": "cap"}),
             json.dumps({"id": "d", "image": "missing.png"}),
             json.dumps({"id": "e", "image": "../outside.png"}),
             json.dumps({"id": "f"})]
    raw = "\n".join(lines).encode() + b'\n{"id": "g", "text": "bad \xff byte"}\n'
    (d / "1.jsonl").write_bytes(raw)
    write_dump(d / "2.parquet", [{"id": "b", "text": None, "image": png_bytes(), "src": "app"},
                                 {"id": "h", "text": "meme caption", "image": png_bytes((20, 20), (0, 0, 255)), "src": "app"},
                                 {"id": "i", "text": "plain", "image": None, "src": None}])
    return d


@pytest.mark.ray
def test_ray_engine_gives_the_same_rows_as_the_local_engine(ray_local, tiny_model_dir, tiny_scorer, mixed_dumps,
                                                            image_dir, tmp_path):
    from serving.batch_ray import score_dump_ray

    local_out, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    s_local = score_dump([mixed_dumps], local_out, scorer=tiny_scorer, image_root=image_dir, chunk_size=4,
                         progress=False)
    s_ray = score_dump_ray([mixed_dumps], ray_out, model=tiny_model_dir, image_root=image_dir, chunk_size=4,
                           num_actors=1, cpus_per_actor=1, progress=False)
    local_rows, ray_rows = _read(local_out), _read(ray_out)
    assert len(ray_rows) == len(local_rows) == 13 == s_ray.rows_read
    assert (s_ray.rows_scored, s_ray.rows_errored) == (s_local.rows_scored, s_local.rows_errored)
    assert s_ray.error_counts == s_local.error_counts
    assert s_ray.error_counts["duplicate_id"] == 2  # "a" again in the JSONL, "b" again in the Parquet file
    for lr, rr in zip(local_rows, ray_rows):
        for key, value in lr.items():
            if key.endswith("_score") and value is not None:
                assert rr[key] == pytest.approx(value, abs=1e-5), key
            else:
                assert rr[key] == value, (key, lr, rr)
    assert _read(errors_path_for(ray_out)) == _read(errors_path_for(local_out))
    assert not work_dir_for(ray_out).exists()


@pytest.mark.ray
def test_both_engines_rescore_in_onnx_runtime_under_bf16_guarded(ray_local, tiny_model_dir, mixed_dumps, image_dir,
                                                                 tmp_path):
    """Under bf16-guarded with ONNX Runtime re-scoring (`moderation score`'s default --onnx-text auto) and margins wide
    enough to re-score every post, both engines give fp32's scores (the re-scoring ran) and the same rows. (ONNX
    Runtime and PyTorch fp32 agree within 1e-6 here, so that the actors were handed onnx_text is shown by
    tests/moderation/test_onnx_text.py, not by these scores.)"""
    import shutil

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from moderation.model_dir import read_model_info
    from moderation.policy import CategoryPolicy, LanguageRule, Policy, policy_version
    from moderation.precision import GUARDED, PrecisionRecord
    from moderation.scorer import Scorer
    from serving.batch_ray import score_dump_ray

    model = tmp_path / "guarded-model"
    shutil.copytree(tiny_model_dir, model)
    info = read_model_info(model)
    margin = {c: 1e3 for c in info.config.categories}
    PrecisionRecord(model_version=info.model_version, precisions={GUARDED: {
        "status": "validated", "posts": 10, "blocks_changed": 0, "decisions_changed": 0,
        "margin_logit": margin}}).save(model)
    cats = {c: CategoryPolicy(block=0.6, review=0.4) for c in info.config.categories}  # thresholds to be near
    policy = Policy(version=policy_version(cats, LanguageRule()), categories=cats).save(tmp_path / "policy.json")
    outs = {name: tmp_path / f"{name}.parquet" for name in ("fp32", "local", "ray")}
    fp32 = Scorer.from_dir(model, precision="fp32", policy=policy)
    score_dump([mixed_dumps], outs["fp32"], scorer=fp32, image_root=image_dir, chunk_size=4, progress=False)
    scorer = Scorer.from_dir(model, precision=GUARDED, onnx_text="on", onnx_max_posts=0, policy=policy)  # as the CLI
    score_dump([mixed_dumps], outs["local"], scorer=scorer, image_root=image_dir, chunk_size=4, progress=False)
    assert scorer.forward_stats["rescored"] > 0 and scorer.onnx_text is not None
    score_dump_ray([mixed_dumps], outs["ray"], model=model, precision=GUARDED, onnx_text="on", image_root=image_dir,
                   chunk_size=4, num_actors=1, cpus_per_actor=1, progress=False, policy=policy)
    rows = {name: _read(path) for name, path in outs.items()}
    assert len(rows["ray"]) == len(rows["local"]) == len(rows["fp32"]) == 13
    for want, local, ray in zip(rows["fp32"], rows["local"], rows["ray"]):
        assert local["precision"] == ray["precision"] == (GUARDED if want["precision"] else None)
        for key, value in want.items():
            if key.endswith("_score") and value is not None:
                assert local[key] == pytest.approx(value, abs=1e-4), key  # fp32's, through ONNX Runtime
                assert ray[key] == pytest.approx(local[key], abs=1e-6), key
