"""Harm, not topic: what `moderation score` does with benign posts that discuss hate or violence, and with the hate
they answer (issue 18's targets), for one or more model directories in one run.

    python -m benchmarks.harm_vs_topic                                   # the shipped default model
    python -m benchmarks.harm_vs_topic --model runs/a --model runs/b     # A/B, same posts
    python -m benchmarks.harm_vs_topic --split val --out runs/hvt.json --markdown runs/hvt.md

Each model scores the split's posts of four shared datasets through the `moderation score` command itself (a
JSONL dump in, result rows out), and the figures are read from its actions:

- `conan` counter-narratives (label 0): share whose `hate` action is allow (target >= 90%);
- `conan` hate speech (label 1): share reviewed or blocked (target >= 90%);
- `qian_interventions` (all counter-speech): share allowed, every category (the post's action; target >= 97%);
- `crisislex_violence_news` (all news about attacks): share allowed, every category (target >= 97%);
- `hatexplain` normal posts: share allowed (context: lower-cased Twitter/Gab posts, not a target).

A row the command could not score counts against the model (it is neither allowed nor flagged) and is reported.
Each figure is also given for the posts the policy's language rule left to the model: a post in a language the
model was not trained on goes to review whatever its scores (docs/evaluation.md, "language rule"), a policy choice,
not a judgement of the post; the second table says how much of each figure that rule accounts for.
Beside them, threshold-free: ROC-AUC of `hate` on CONAN (hate speech vs the counter-narratives answering it) and
on HateXplain, and of `offensive` on HateXplain (hate speech or offensive vs normal).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.metrics import roc_auc
from moderation.datasets import data_root

#: (figure name, dataset, which rows (label value or None = all), what passes, target)
FIGURES: tuple[tuple[str, str, int | None, str, float | None], ...] = (
    ("CONAN counter-narratives allowed for hate", "conan", 0, "hate_allow", 0.90),
    ("CONAN hate speech reviewed or blocked", "conan", 1, "flagged", 0.90),
    ("Qian interventions allowed (every category)", "qian_interventions", None, "allow", 0.97),
    ("CrisisLex violence news allowed (every category)", "crisislex_violence_news", None, "allow", 0.97),
    ("HateXplain normal posts allowed (context)", "hatexplain", 0, "allow", None),
)


#: (name, dataset, label field, category) of the ROC-AUC figures.
AUCS = (("CONAN hate ROC-AUC (hate speech vs counter-narratives)", "conan", "label", "hate"),
        ("HateXplain hate ROC-AUC", "hatexplain", "label", "hate"),
        ("HateXplain offensive ROC-AUC", "hatexplain", "offensive", "offensive"))


def _rows(root: Path, dataset: str, split: str) -> list[dict[str, Any]]:
    path = root / dataset / "data.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point --data-root (or $MODERATION_DATA_ROOT) at the shared datasets")
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("split") == split:
                out.append(row)
    return out


def score_with_cli(posts: list[dict[str, Any]], model: str | None, work: Path) -> dict[str, dict[str, Any]]:
    """Run `moderation score` on the posts; {id: result row}."""
    dump, out = work / "posts.jsonl", work / "results.jsonl"
    with dump.open("w", encoding="utf-8") as fh:
        for p in posts:
            fh.write(json.dumps({"id": p["id"], "text": p["text"]}, ensure_ascii=False) + "\n")
    exe = Path(sys.executable).with_name("moderation")
    cmd = [str(exe), "score", str(dump), "--out", str(out), "--overwrite"] + (["--model", model] if model else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    results = {}
    with out.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            results[str(r["id"])] = r
    return results


def language_routed(result: dict[str, Any] | None) -> bool:
    """Whether the policy's language rule fired for this post (it reviews posts in languages the model does not
    judge, whatever their scores)."""
    if not result or not result.get("ok"):
        return False
    reasons = result.get("action_reasons") or "[]"
    if isinstance(reasons, str):
        reasons = json.loads(reasons)
    return any(r.get("rule") == "language" for r in reasons)


def passes(result: dict[str, Any] | None, kind: str) -> bool:
    if not result or not result.get("ok"):
        return False
    if kind == "hate_allow":
        return result.get("hate_action") == "allow"
    if kind == "flagged":
        return result.get("action") in ("review", "block")
    return result.get("action") == "allow"


def measure(model: str | None, root: Path, split: str) -> dict[str, Any]:
    posts: list[dict[str, Any]] = []
    for dataset in sorted({f[1] for f in FIGURES}):
        for row in _rows(root, dataset, split):
            posts.append({**row, "id": f"{dataset}/{row['id']}", "dataset": dataset})
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="hvt-") as tmp:
        results = score_with_cli(posts, model, Path(tmp))
    figures = {}
    for name, dataset, label, kind, target in FIGURES:
        rows = [p for p in posts if p["dataset"] == dataset and (label is None or p.get("label") == label)]
        ok = [passes(results.get(p["id"]), kind) for p in rows]
        errors = sum(1 for p in rows if not (results.get(p["id"]) or {}).get("ok"))
        share = sum(ok) / len(rows) if rows else float("nan")
        routed = [language_routed(results.get(p["id"])) for p in rows]
        judged_ok = [o for o, r in zip(ok, routed) if not r]
        figures[name] = {"n": len(rows), "passed": sum(ok), "share": share, "errors": errors, "target": target,
                         "met": None if target is None else share >= target,
                         "language_rule": sum(routed), "n_judged": len(judged_ok), "passed_judged": sum(judged_ok),
                         "share_judged": sum(judged_ok) / len(judged_ok) if judged_ok else float("nan")}
    aucs = {}
    for name, dataset, field, category in AUCS:
        rows = [p for p in posts if p["dataset"] == dataset and (results.get(p["id"]) or {}).get("ok")]
        y = np.array([float(p[field]) for p in rows])
        s = np.array([float(results[p["id"]][f"{category}_score"]) for p in rows])
        aucs[name] = {"roc_auc": roc_auc(y, s), "n": len(rows), "n_positive": int(y.sum())}
    version = next((r.get("model_version") for r in results.values() if r.get("model_version")), None)
    return {"model": model or "default", "model_version": version, "split": split, "figures": figures, "auc": aucs,
            "seconds": round(time.time() - t0, 1)}


def markdown(runs: list[dict[str, Any]]) -> str:
    head = "| figure | target | " + " | ".join(f"{r['model_version']}" for r in runs) + " |"
    lines = [head, "| --- | --- | " + " | ".join("---" for _ in runs) + " |"]
    for name, *_rest in FIGURES:
        target = runs[0]["figures"][name]["target"]
        cells = []
        for r in runs:
            f = r["figures"][name]
            cells.append(f"{100 * f['share']:.1f}% ({f['passed']}/{f['n']}" + (f", {f['errors']} errors" if f["errors"] else "") + ")")
        lines.append(f"| {name} | {'>= ' + format(100 * target, '.0f') + '%' if target else '-'} | " + " | ".join(cells) + " |")
    for name, *_rest in AUCS:
        lines.append(f"| {name} | - | " + " | ".join(f"{r['auc'][name]['roc_auc']:.3f} (n={r['auc'][name]['n']})" for r in runs) + " |")
    lines += ["", "The same figures without the posts the language rule sent to review (a language the model does not "
              "judge), and how many those were:", "",
              "| figure | " + " | ".join(f"{r['model_version']}: posts the model judged | language rule" for r in runs) + " |",
              "| --- | " + " | ".join("--- | ---" for _ in runs) + " |"]
    for name, *_rest in FIGURES:
        cells = []
        for r in runs:
            f = r["figures"][name]
            cells.append(f"{100 * f['share_judged']:.1f}% ({f['passed_judged']}/{f['n_judged']}) | {f['language_rule']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.harm_vs_topic", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="model directory (repeatable; default: the shipped model)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the table as Markdown here")
    args = p.parse_args(argv)
    root = data_root(args.data_root)
    runs = [measure(m, root, args.split) for m in (args.model or [None])]
    table = markdown(runs)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(runs, indent=2), encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
