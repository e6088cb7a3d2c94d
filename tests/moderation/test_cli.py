"""The `moderation` command line: help texts and the demo on the example dump."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moderation.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_describes_every_subcommand(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"demo", "info"} <= set(sub.choices)
    for name, subparser in sub.choices.items():
        help_text = subparser.format_help()
        assert subparser.description, f"{name} has no description"
        assert "usage: moderation " + name in help_text
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_no_subcommand_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "SUBCOMMAND" in capsys.readouterr().out


def test_demo_on_tiny_model_scores_every_example(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "res.jsonl"
    assert main(["demo", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    examples = [json.loads(line) for line in (ROOT / "examples" / "posts.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [e["id"] for e in examples]
    assert [(r["id"], r["error"]) for r in rows if not r["ok"]] == []
    kinds = {tuple(r["applied_input_types"]) for r in rows}
    # i-meme-insult: its words read by OCR; the captioned memes' printed words are read too (issue 22)
    assert kinds == {("text",), ("image",), ("image", "ocr_text", "text"), ("ocr_text",)}
    assert {r["id"]: r["ocr_text"] for r in rows}["i-meme-insult"] == "LOOK AT THIS UGLY RETARD GO KILL YOURSELF"
    printed = capsys.readouterr().out
    assert f"{len(examples)} posts read, {len(examples)} scored, 0 errors" in printed


def test_bad_model_dir_is_one_clear_line(tmp_path, capsys):
    assert main(["info", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a model directory" in err and "Traceback" not in err


def test_console_script_help_runs():
    exe = Path(sys.executable).parent / "moderation"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Multimodal harmful-content moderation" in out.stdout


def test_action_text_names_the_rule_behind_the_action():
    from types import SimpleNamespace

    from moderation.cli import action_text

    def result(action, *reasons, language=None):
        return SimpleNamespace(action=action, language=language,
                               reasons=[{"action": a, "category": c, "rule": r} for a, c, r in reasons])

    assert action_text(result("allow")) == "allow" and action_text(result(None)) == "-"
    assert action_text(result("block", ("block", "hate", "block_threshold"), ("review", "violence", "review_threshold"))) \
        == "BLOCK: hate"
    assert action_text(result("review", ("review", None, "language"), language="de")) == "REVIEW: language de"
    assert action_text(result("block", ("block", "hate", "hash_match"))) == "BLOCK: hate (hash)"
    assert action_text(result("review", ("review", "hate", "not_judged"), ("review", "violence", "not_judged"))) \
        == "REVIEW: not judged: hate, violence"
    assert action_text(result("review", ("review", "offensive", "review_threshold"), ("review", "hate", "not_judged"))) \
        == "REVIEW: offensive, not judged (hate)"
    assert action_text(result("review"), trained=False) == "(untrained)"


def test_an_unwritable_out_folder_is_one_line_and_exit_3(tmp_path, capsys, monkeypatch):
    """Issue 22: an --out folder that cannot be written gave a traceback and exit 1 (documented: one line, 3).
    (The tests run as root, which a read-only folder does not stop: the lock file's creation is refused here.)"""
    import moderation.batch.job as job

    def refused(path, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(job, "file_lock", refused)
    dump = tmp_path / "in.jsonl"
    dump.write_text('{"id": "a", "text": "hi"}\n')
    assert main(["score", str(dump), "--out", str(tmp_path / "res.jsonl")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write --out") and "Traceback" not in err and err.count("\n") == 1


def test_endpoint_errors_say_what_to_do(tmp_path):
    """Issue 22: an image path sent to the endpoint was refused as "bad_base64"; a malformed thresholds.json did
    not name the file."""
    from moderation.model_dir import ModelDirError, read_model_info
    from moderation.schema import InputError
    from serving.parsing import _image_bytes
    from serving.schemas import RequestLimits

    with pytest.raises(InputError, match="image paths are not read by the endpoint") as info:
        _image_bytes("memes/cat.jpg", RequestLimits(), image_is_url=False)
    assert info.value.code.value == "image_path_refused"
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"format_version": 1, "model": {}}))
    (model / "thresholds.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="thresholds.json"):
        read_model_info(model)


def test_subcommand_modules_are_light_at_import():
    """Every `moderation` command imports all the subcommand modules (entry points): none may load numpy or torch
    at import; their handlers do (docs/architecture.md)."""
    from importlib.metadata import entry_points

    modules = sorted(ep.value for ep in entry_points(group="moderation.subcommands"))
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(h for h in ('numpy', 'torch', 'scipy', 'sklearn', 'matplotlib', 'ray') if h in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(modules) >= 8 and out.stdout.strip() == "[]", out.stdout


def test_help_loads_no_torch():
    """`moderation --help` (every subcommand's parser built) loads neither torch nor Ray: a second, not several."""
    code = ("import sys\nfrom moderation.cli import build_parser\nbuild_parser()\n"
            "print(sorted(h for h in ('torch', 'transformers', 'ray', 'sklearn') if h in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
