"""What a candidate model's val-fitted policy would do to the product, against the shipped model's: block recall and
review share per category, with the checks an adoption rule should carry besides ROC-AUC.

    python -m benchmarks.policy_shift --candidate runs/x/model                     # against moderation/default_model
    python -m benchmarks.policy_shift --shipped A --candidate B --min-block-recall-ratio 0.8 --max-review-share-rise 3

Every trained model directory keeps, in metrics.json, how its policy was fitted on the val splits (training's
calibration step: per category the block threshold for the policy's precision, with its val precision, 95% lower
bound and recall, and the review threshold with the share of val posts it holds and its precision). This reads both
models' fits (val data only: a selection figure, never a test one) and checks, per category:

- block recall: the candidate's >= `--min-block-recall-ratio` x the shipped model's (a category the shipped model
  blocks and the candidate cannot is a failure);
- review share: the candidate's <= the shipped model's + `--max-review-share-rise` percentage points.

Why: two candidates in a row (issue 18, 2026-12-07) passed rules on val ROC-AUC and harm-vs-topic rows while their
policies blocked far less (offensive val block recall 17.7% -> 3.6%) or held far more for review (violence 18.9% ->
33.3% of val posts). Exit status 1 when a check fails, 2 when a model directory lacks the fits. The same checks
(operations.champion.policy_check, the same defaults) gate `moderation retrain` and `moderation compare`, there on
the labelled posts both models score.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from operations.champion import MAX_REVIEW_SHARE_RISE, MIN_BLOCK_RECALL_RATIO, policy_check

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHIPPED = REPO / "moderation" / "default_model"


class MissingFitError(ValueError):
    """A model directory without the val policy fits in its metrics.json."""


def policy_fits(model_dir: Path) -> dict[str, Any]:
    """{"version", "model_version", "categories": {category: {"block", "block_precision", "block_recall",
    "review_share", "review_precision"}}} from the model directory's metrics.json. Raises MissingFitError."""
    path = Path(model_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MissingFitError(f"{path}: cannot read the model's metrics ({exc})") from None
    policy = metrics.get("policy") if isinstance(metrics, Mapping) else None
    per = policy.get("per_category") if isinstance(policy, Mapping) else None
    if not isinstance(per, Mapping) or not per:
        raise MissingFitError(f"{path}: no val policy fits (policy.per_category); was the model calibrated by "
                              "training (python -m training.recipes.default_model or moderation train)?")
    out = {}
    for category, entry in per.items():
        block, review = entry.get("block_fit") or {}, entry.get("review_fit") or {}
        out[category] = {"block": entry.get("block"), "block_precision": block.get("precision"),
                         "block_recall": block.get("recall") if entry.get("block") is not None else None,
                         "review_share": review.get("review_share"), "review_precision": review.get("review_precision")}
    return {"version": policy.get("version"), "model_version": metrics.get("model_version"), "categories": out}


def compare(shipped: Mapping[str, Any], candidate: Mapping[str, Any],
            min_block_recall_ratio: float = MIN_BLOCK_RECALL_RATIO,
            max_review_share_rise: float = MAX_REVIEW_SHARE_RISE) -> list[dict[str, Any]]:
    """One row per category of the shipped model: both fits and the two checks ("ok", "FAIL", or "-" when the shipped
    model has no such figure)."""
    rows = []
    for category, s in shipped["categories"].items():
        c = candidate["categories"].get(category, {})
        block_check, review_check = policy_check(
            s.get("block_recall"), c.get("block_recall"), s.get("review_share"), c.get("review_share"),
            min_block_recall_ratio=min_block_recall_ratio, max_review_share_rise=max_review_share_rise)
        rows.append({"category": category, "shipped": s, "candidate": c, "block_check": block_check,
                     "review_check": review_check})
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shipped", type=Path, default=DEFAULT_SHIPPED, help="the model in use (default: the shipped one)")
    p.add_argument("--candidate", type=Path, required=True, help="the trained model directory to judge")
    p.add_argument("--min-block-recall-ratio", type=float, default=MIN_BLOCK_RECALL_RATIO,
                   help="candidate's val block recall >= this x the shipped model's, per category (default 0.8)")
    p.add_argument("--max-review-share-rise", type=float, default=MAX_REVIEW_SHARE_RISE,
                   help="candidate's val review share <= the shipped model's + this many points (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    args = p.parse_args(argv)
    try:
        shipped, candidate = policy_fits(args.shipped), policy_fits(args.candidate)
    except MissingFitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = compare(shipped, candidate, args.min_block_recall_ratio, args.max_review_share_rise)
    print(f"val policy fits: shipped {shipped['model_version']} ({shipped['version']}) vs candidate "
          f"{candidate['model_version']} ({candidate['version']})")
    print(f"{'category':<10} {'block thr':>17} {'block precision':>17} {'block recall':>17} {'check':>6} "
          f"{'review share':>17} {'review precision':>17} {'check':>6}")
    for r in rows:
        s, c = r["shipped"], r["candidate"]
        print(f"{r['category']:<10} {_num(s.get('block')):>8}/{_num(c.get('block')):<8} "
              f"{_num(s.get('block_precision')):>8}/{_num(c.get('block_precision')):<8} "
              f"{_pct(s.get('block_recall')):>8}/{_pct(c.get('block_recall')):<8} {r['block_check']:>6} "
              f"{_pct(s.get('review_share')):>8}/{_pct(c.get('review_share')):<8} "
              f"{_num(s.get('review_precision')):>8}/{_num(c.get('review_precision')):<8} {r['review_check']:>6}")
    failed = [f"{r['category']} {what}" for r in rows for what, key in (("block recall", "block_check"),
                                                                          ("review share", "review_check"))
              if r[key] == "FAIL"]
    print(f"checks (block recall >= {args.min_block_recall_ratio:g}x shipped, review share <= shipped + "
          f"{args.max_review_share_rise:g} points): " + ("passed" if not failed else "FAILED: " + ", ".join(failed)))
    if args.json:
        args.json.write_text(json.dumps({"shipped": shipped, "candidate": candidate, "rows": rows,
                                         "failed": failed}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
