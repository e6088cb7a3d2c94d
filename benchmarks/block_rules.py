"""How the block threshold is fitted, compared on the same predictions: the pooled rule (the precision lower bound
over every val row that labels the category) against the each-dataset rule (that, and every dataset's own val
precision at the threshold; eval.policy.BLOCK_RULES). Both policies are fitted on the val split only; the test
split says what each would have done.

    python -m benchmarks.quality --model DIR --no-baselines --save-predictions PRED   # scores val and test once
    python -m benchmarks.block_rules --model DIR --predictions PRED [--out F.json] [--markdown F.md]

Prints, per rule and category: the thresholds, the val fit (pooled lower bound, the dataset that raised the
threshold), and on test, per dataset and pooled, block precision [95% CI] / recall (posts blocked), the review
share and the block + review recall.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.metrics import to_jsonable
from eval.policy import BLOCK_RULES, DEFAULT_BLOCK_PRECISION, DEFAULT_REVIEW, ReviewTarget, fit_policy, policy_actions
from eval.predict import PredictionSet
from eval.quality import precision_at
from moderation.model_dir import read_model_info


def compare_rules(val: PredictionSet, test: PredictionSet, calibration: Any, *,
                  block_precision: float = DEFAULT_BLOCK_PRECISION,
                  rules: Sequence[str] = BLOCK_RULES) -> dict[str, Any]:
    """{rule: {"policy": {cat: {block, review, fit}}, "test": {cat: {dataset | "pooled": figures}}}}."""
    cats = list(val.categories)
    vp, tp = val.probs(calibration), test.probs(calibration)
    vok, tok = val.ok, test.ok
    out: dict[str, Any] = {}
    for rule in rules:
        policy = fit_policy(vp[vok], val.labels[vok], cats, block_precision=block_precision,
                            review=ReviewTarget(*DEFAULT_REVIEW), sources=np.asarray(val.sources)[vok],
                            block_rule=rule, alternatives=False)
        actions = policy_actions(policy, tp[tok], cats)
        labels, sources = test.labels[tok], np.asarray(test.sources)[tok]
        per_cat: dict[str, Any] = {}
        for j, cat in enumerate(cats):
            entry = policy.categories[cat]
            fit = entry.meta.get("block_fit", {})
            rows_all = ~np.isnan(labels[:, j])
            figures: dict[str, Any] = {}
            for name in sorted(set(sources[rows_all].tolist())) + ["pooled"]:
                rows = rows_all if name == "pooled" else rows_all & (sources == name)
                y, act = labels[rows, j], actions[rows, j]
                if y.sum() == 0:
                    continue
                figures[name] = {"block": precision_at(y, act == "block"),
                                 "block_or_review": precision_at(y, act != "allow"),
                                 "review_share": float((act == "review").mean())}
            per_cat[cat] = {"block": entry.block, "review": entry.review,
                            "fit": {k: fit.get(k) for k in ("status", "precision", "precision_lower_bound", "recall",
                                                            "binding_dataset")},
                            "test": figures}
        out[rule] = per_cat
    return out


def _pr(fig: dict[str, Any]) -> str:
    if not fig["flagged"]:
        return "- / 0"
    lo, hi = fig["precision_ci"]
    return f"{fig['precision']:.1%} [{lo:.0%}, {hi:.0%}] / {fig['recall']:.1%} ({fig['flagged']})"


def markdown(result: dict[str, Any]) -> str:
    lines = []
    for rule, per_cat in result.items():
        lines.append(f"\n**block rule: {rule}**\n")
        lines.append("| category | block / review thresholds | val fit: precision (95% LB) / recall | dataset (test) | "
                     "block precision [95% CI] / recall (blocked) | review share | block + review recall |")
        lines.append("| --- | --- | --- | --- | --- | ---: | ---: |")
        for cat, c in per_cat.items():
            fit = c["fit"]
            thr = (f"{c['block']:.3f}" if c["block"] is not None else "none") + " / " + \
                  (f"{c['review']:.3f}" if c["review"] is not None else "none")
            if fit.get("precision") is not None:
                fit_s = f"{fit['precision']:.1%} ({fit['precision_lower_bound']:.1%}) / {fit['recall']:.1%}"
                if fit.get("binding_dataset"):
                    fit_s += f", raised by {fit['binding_dataset']}"
            else:
                fit_s = str(fit.get("status"))
            for i, (name, f) in enumerate(c["test"].items()):
                lines.append(f"| {cat if i == 0 else ''} | {thr if i == 0 else ''} | {fit_s if i == 0 else ''} | "
                             f"{'**pooled**' if name == 'pooled' else name} | {_pr(f['block'])} | "
                             f"{f['review_share']:.1%} | {f['block_or_review']['recall']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.block_rules", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (its calibration.json calibrates the scores)")
    p.add_argument("--predictions", required=True, type=Path,
                   help="folder with val.npz and test.npz (benchmarks.quality --save-predictions)")
    p.add_argument("--block-precision", type=float, default=DEFAULT_BLOCK_PRECISION)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown here")
    args = p.parse_args(argv)
    try:
        val, test = PredictionSet.load(args.predictions / "val"), PredictionSet.load(args.predictions / "test")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = read_model_info(args.model)
    if val.model_version != info.model_version:
        print(f"error: the predictions are of {val.model_version}, the model directory is {info.model_version}",
              file=sys.stderr)
        return 2
    result = compare_rules(val, test, info.calibration, block_precision=args.block_precision)
    md = f"Model {info.model_version}; policies fitted on val, figures on test.\n" + markdown(result)
    print(md)
    if args.out:
        args.out.write_text(json.dumps(to_jsonable(result), indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
