"""The selection figure for comparing trained models: per category, the ROC-AUC of each real shared dataset's val split
that labels it with both classes, averaged over those datasets, for one or more model directories on the same posts.

    python -m benchmarks.val_macro_auc --model moderation/default_model --model runs/x/model
    python -m benchmarks.val_macro_auc --model A --model B --exclude multioff --out runs/sel.json

It is the early-stopping figure training reports (training.selection.macro_aucs), measured after training through
the Scorer (calibrated scores, lexical channel blended, OCR off, fp32 by default) and on the real datasets only: the
synthetic threat and stance posts that training adds to its early-stopping set are left out (they are trivially
easy for every model, and another seed draws other ones, so they do not compare models). A dataset enters a
category's average only with at least --min-positives positives and as many negatives (default 1: every dataset
labelling both classes, as early stopping does). Val splits only: a model-selection figure, never a test one.

A post the Scorer cannot score is reported and left out of that model's figures (counted, never scored as safe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.metrics import roc_auc


def macro_table(scores: np.ndarray, labels: np.ndarray, sources: Sequence[str], categories: Sequence[str],
                min_positives: int = 1) -> dict[str, Any]:
    """{category: {"macro": mean over datasets, "datasets": {name: {"roc_auc", "positives", "negatives"}}},
    "mean": mean of the categories' macros}. Rows whose score or label is NaN are left out per category."""
    src = np.asarray(sources)
    out: dict[str, Any] = {}
    for j, c in enumerate(categories):
        per: dict[str, dict[str, float | int]] = {}
        for name in sorted(set(src.tolist())):
            rows = (src == name) & ~np.isnan(labels[:, j]) & ~np.isnan(scores[:, j])
            y = labels[rows, j]
            pos, neg = int((y == 1).sum()), int((y == 0).sum())
            if pos >= max(1, min_positives) and neg >= max(1, min_positives):
                per[name] = {"roc_auc": float(roc_auc(y, scores[rows, j])), "positives": pos, "negatives": neg}
        macro = float(np.mean([v["roc_auc"] for v in per.values()])) if per else float("nan")
        out[c] = {"macro": macro, "datasets": per}
    out["mean"] = float(np.nanmean([out[c]["macro"] for c in categories]))
    return out


def score_model(model_dir: str, posts: list[dict], categories: Sequence[str], image_root: str, precision: str,
                threads: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(scores (N, C) with NaN where a post failed or a category was not scored, info) for one model directory."""
    import torch

    from moderation.scorer import Scorer

    torch.set_num_threads(threads)
    scorer = Scorer.from_dir(model_dir, precision=precision, num_workers=threads, batch_size=64, ocr="off",
                             image_root=image_root)
    t0 = time.time()
    results = scorer.score(posts)
    scores = np.array([[r.categories[c].score if r.ok and c in r.categories else np.nan for c in categories]
                       for r in results], dtype=np.float64)
    failed = [r for r in results if not r.ok]
    info = {"dir": model_dir, "model_version": scorer.info.model_version, "posts": len(posts), "failed": len(failed),
            "first_error": failed[0].error if failed else None, "seconds": round(time.time() - t0, 1)}
    scorer.close()
    return scores, info


def main(argv: Sequence[str] | None = None) -> int:
    from moderation.cli import _quiet_libraries
    from moderation.datasets import ALL_DATASETS, data_root, default_dataset_specs, load_labelled

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="model directory (repeat to compare on the same posts)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--exclude", nargs="*", default=[], metavar="DATASET", help="real datasets to leave out")
    p.add_argument("--categories", nargs="+", default=["hate", "offensive", "violence"])
    p.add_argument("--min-positives", type=int, default=1,
                   help="a dataset enters a category's average with at least this many positives and negatives (default: %(default)s)")
    p.add_argument("--precision", default="fp32", help="Scorer precision (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    _quiet_libraries()
    unknown = sorted(set(args.exclude) - set(ALL_DATASETS))
    if unknown:
        p.error(f"--exclude: unknown datasets {unknown}; known: {', '.join(ALL_DATASETS)}")
    root = data_root(args.data_root)
    specs = default_dataset_specs(root, names=[n for n in ALL_DATASETS if n not in args.exclude])
    val = load_labelled(specs, list(args.categories), "val")
    print(f"{len(val)} val posts of {len(specs)} real datasets: "
          + ", ".join(f"{s} {val.sources.count(s)}" for s in sorted(set(val.sources))), file=sys.stderr, flush=True)
    report: dict[str, Any] = {"split": "val", "categories": list(args.categories), "excluded": list(args.exclude),
                              "min_positives": args.min_positives, "precision": args.precision, "models": []}
    for model_dir in args.model:
        scores, info = score_model(model_dir, val.posts, args.categories, str(root), args.precision, args.threads)
        ok = ~np.isnan(scores).all(axis=1)
        table = macro_table(scores[ok], val.labels[ok], np.asarray(val.sources)[ok], args.categories, args.min_positives)
        report["models"].append({**info, "figures": table})
        cats = " / ".join(f"{c} {table[c]['macro']:.4f}" for c in args.categories)
        print(f"{info['model_version']} ({model_dir}): {cats}; mean {table['mean']:.4f} "
              f"({info['failed']} of {info['posts']} posts failed{': ' + str(info['first_error']) if info['failed'] else ''})",
              flush=True)
        for c in args.categories:
            print(f"  {c:<10} " + ", ".join(f"{n} {v['roc_auc']:.3f} ({v['positives']}+)"
                                           for n, v in table[c]["datasets"].items()), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
