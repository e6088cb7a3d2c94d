"""benchmarks/forward_batch.py on a tiny model and tiny test splits: every (kind, precision, batch size) is timed
and printed against the first size; missing datasets are a clear error."""

from __future__ import annotations

import json

from benchmarks import forward_batch as fb


def _datasets(root):
    for names in fb.SOURCES.values():
        for name in names:
            (root / name).mkdir(parents=True)
            rows = [{"id": f"t{i}", "text": "word " * (1 + i), "split": "test"} for i in range(5)]
            rows.append({"id": "x", "text": "a training row, never read", "split": "train"})
            (root / name / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_every_batch_size_is_timed_against_the_first(tiny_model_dir, tmp_path, capsys):
    root = _datasets(tmp_path / "datasets")
    assert fb.test_texts(root, fb.SOURCES["tweets"], 4) == ["word ", "word word word ", "word " * 5, "word " * 2]
    code = fb.main(["--model", str(tiny_model_dir), "--datasets", str(root), "--batch-sizes", "2", "4",
                    "--precisions", "fp32", "--posts", "6", "--window", "4", "--rounds", "1"])
    assert code == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(kind, precision, size) for kind, precision, size, *_ in lines] == [
        ("tweets", "fp32", "2"), ("tweets", "fp32", "4"), ("longer", "fp32", "2"), ("longer", "fp32", "4")]
    assert all(float(rate) > 0 for *_, rate, _ in lines)
    assert lines[0][-1] == "1.00x" and lines[2][-1] == "1.00x"


def test_missing_datasets_are_a_clear_error(tmp_path, capsys):
    assert fb.main(["--datasets", str(tmp_path / "nowhere")]) == 2
    assert "datasets not found" in capsys.readouterr().err
