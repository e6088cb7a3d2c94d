"""`moderation evaluate`, `moderation calibrate` and `moderation report`.

Light at import (argparse and the light parts of the core): numpy, torch, scikit-learn and matplotlib are imported
in the handlers (each such import says so), so `moderation --help` does not load them.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

from moderation.cli import add_model_args, build_scorer, untrained_banner
from moderation.policy import BLOCK_RULES, EACH_DATASET_MIN_FLAGGED, LanguageRule

DATA_HELP = ("labelled dataset: PATH[:FIELD=CATEGORY,...][@NAME], PATH a JSONL file or a folder holding data.jsonl "
             "(rows: id, text, image, label fields, split); repeat for several. Default: the shared datasets "
             "(tweeteval_hate -> hate, tweeteval_offensive and multioff -> offensive) under --data-root")


EXAMPLES_HELP = ("example posts the policy blocks or reviews, explained in the report with the words that drove their "
                 "score (0: none; default 20)")


def _add_data_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--data", action="append", metavar="SPEC", default=None, help=DATA_HELP)
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder of the shared datasets (default: $MODERATION_DATA_ROOT, else ../shared/datasets)")
    p.add_argument("--split", default=split, help=f"split(s) to use, comma-separated (default: {split})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for the confidence intervals of the headline figures (0: none; default 1000)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of intervals and bounds (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


def _load_data(args: argparse.Namespace, categories: list[str]) -> Any:
    from moderation.datasets import default_dataset_specs, load_labelled, parse_dataset_arg  # deferred: numpy

    splits = {s.strip() for s in args.split.split(",") if s.strip()}
    if not splits:
        raise ValueError("--split is empty; give e.g. --split val")
    if args.data:
        specs = [parse_dataset_arg(a) for a in args.data]
    else:
        # The default datasets that label at least one of this model's categories.
        specs = [s for s in default_dataset_specs(args.data_root) if s.categories() & set(categories)]
        if not specs:
            raise ValueError(f"none of the default datasets labels this model's categories {categories}; pass --data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_labelled(specs, categories, splits)
    for w in caught:  # one readable line each (skipped malformed rows are counted, never silent)
        print(f"warning: {w.message}", file=sys.stderr)
    if len(data) == 0:
        raise ValueError(f"no rows of split(s) {sorted(splits)} in {', '.join(s.name for s in specs)}; "
                         "check --split (the shared datasets have train, val and test)")
    counts = data.counts()
    print(f"data: {len(data):,} posts from {', '.join(s.name for s in specs)} (split {', '.join(sorted(splits))}); "
          + "; ".join(f"{c}: {v['known']:,} labelled, {v['positive']:,} positive" for c, v in counts.items()),
          file=sys.stderr)
    return data


def _print_summary(evaluation: dict[str, Any]) -> None:
    cats = evaluation["categories"]
    print(f"\n{'category':<12} {'slice':<11} {'n':>6} {'pos':>6} {'ROC-AUC':>8} {'PR-AUC':>7} {'thresh':>7} "
          f"{'prec':>6} {'(lb)':>6} {'recall':>7} {'F1':>6} {'ECE':>6}")
    for c in cats:
        for g in evaluation["slices"]:
            m = evaluation["metrics"][c].get(g) or {}
            if not m.get("n"):
                continue
            op = m["operating"]

            def f(v: Any, w: int = 6) -> str:
                return f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
            print(f"{c:<12} {g:<11} {m['n']:>6} {m['n_positive']:>6} {f(m.get('roc_auc'), 8)} {f(m.get('average_precision'), 7)} "
                  f"{f(op.get('threshold'), 7)} {f(op.get('precision'))} {f(op.get('precision_lower_bound'))} "
                  f"{f(op.get('recall'), 7)} {f(op.get('f1'))} {f(m.get('ece'))}")
    if evaluation.get("errors"):
        print(f"\nunscored posts (excluded from every metric): {evaluation['errors']}")
    for c in cats:
        if evaluation["thresholds"].get(c) is None:
            print(f"note: {c} has no operating threshold: it flags nothing automatically")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from eval.pipeline import evaluate_scorer, report_run  # deferred: torch

    scorer = build_scorer(args)
    banner = untrained_banner(scorer)
    if banner:
        print(textwrap.fill(banner, 100), file=sys.stderr)
    data = _load_data(args, scorer.categories)
    run = evaluate_scorer(scorer, data, bootstrap=args.bootstrap, seed=args.seed, confidence=args.confidence,
                          progress=not args.no_progress)
    run.evaluation["split"] = args.split
    path = run.save(args.out)
    _print_summary(run.evaluation)
    print(f"\nevaluation: {path.resolve()}")
    if args.report:
        paths = report_run(run, args.out, title=args.title, examples=_examples(args, scorer, data, run))
        print(f"report: {paths['html'].resolve()}")
    return 0


def _examples(args: argparse.Namespace, scorer: Any, data: Any, run: Any) -> dict[str, Any] | None:
    """The report's example posts with the words that drove their score (eval.examples), or None for --examples 0."""
    if args.examples <= 0:
        return None
    from eval.examples import report_examples  # deferred: torch (moderation.explain)

    print(f"explaining up to {args.examples} example posts for the report ...", file=sys.stderr)
    return report_examples(scorer, data, run.calibrated_probs, run.predictions.labels, limit=args.examples)


def _review_target(args: argparse.Namespace) -> Any:
    """The review target the options ask for (eval.policy.ReviewTarget), or None for --no-review."""
    from eval.policy import DEFAULT_REVIEW, ReviewTarget  # deferred: numpy

    given = [(k, v) for k, v in (("recall", args.review_recall), ("budget", args.review_budget),
                                 ("precision", args.review_precision)) if v is not None]
    if args.no_review:
        if given:
            raise ValueError("--no-review cannot go with --review-recall / --review-budget / --review-precision")
        return None
    if len(given) > 1:
        raise ValueError("give one review target: --review-recall, --review-budget or --review-precision")
    kind, value = given[0] if given else DEFAULT_REVIEW
    return ReviewTarget(kind, value)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from eval.calibrate import calibrate_model_dir  # deferred: torch, scipy, scikit-learn

    if not args.model:
        raise ValueError("calibrate needs --model DIR: calibration.json, thresholds.json and policy.json are written "
                         "into that model directory (train one with `moderation train`)")
    if args.policy:
        raise ValueError("calibrate fits the policy: --policy (use a given policy file) does not apply here")
    if not 0 < args.target_precision < 1:
        raise ValueError(f"--target-precision must be between 0 and 1, got {args.target_precision}")
    review = _review_target(args)
    scorer = build_scorer(args)
    languages = None
    if args.languages or args.language_action:
        languages = LanguageRule(trained=[c.strip() for c in args.languages.split(",") if c.strip()] if args.languages
                                 else scorer.policy.languages.trained, action=args.language_action or "review")
    data = _load_data(args, scorer.categories)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal, thr = calibrate_model_dir(args.model, data, target_precision=args.target_precision, method=args.method,
                                       confidence=args.confidence, scorer=scorer, min_positives=args.min_positives,
                                       seed=args.seed, progress=not args.no_progress, review=review,
                                       languages=languages, not_judged=args.not_judged or scorer.policy.not_judged,
                                       block_rule=args.block_rule)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    policy = scorer.policy
    print(f"\ncalibration {cal.version}, thresholds {thr.version}, policy {policy.version} written to "
          f"{Path(args.model).resolve()}")
    review_goal = f"review for {review.kind} {review.value:g}" if review else "no review band"
    rule = "" if args.block_rule == "pooled" else ", on every dataset on its own too"
    print(f"block: precision {args.target_precision:g} ({args.confidence:.0%} Clopper-Pearson lower bound{rule}); {review_goal}; "
          f"languages {', '.join(policy.languages.trained)} (others: {policy.languages.action}); "
          f"categories no input can judge: {policy.not_judged}\n")
    print(f"{'category':<12} {'method':<12} {'block':>7} {'prec':>6} {'(lb)':>6} {'recall':>7} {'review':>7} "
          f"{'rev.share':>9} {'rev.prec':>8} {'b+r recall':>10}  status")
    notes = []

    def f(v: Any, w: int) -> str:
        return f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

    for c in scorer.categories:
        ce = cal.categories.get(c, {})
        te = thr.categories.get(c, {})
        pe = policy.categories.get(c)
        rf = (pe.meta.get("review_fit") if pe is not None else None) or {}
        # the policy's block fit (the same as thresholds.json under the pooled rule; raised under each_dataset)
        bf = {**te, **((pe.meta.get("block_fit") if pe is not None else None) or {}), "threshold": pe.block if pe else None}
        print(f"{c:<12} {ce.get('method', 'identity'):<12} {f(bf.get('threshold'), 7)} {f(bf.get('precision'), 6)} "
              f"{f(bf.get('precision_lower_bound'), 6)} {f(bf.get('recall'), 7)} {f(pe.review if pe else None, 7)} "
              f"{f(rf.get('review_share'), 9)} {f(rf.get('review_precision'), 8)} {f(rf.get('block_or_review_recall'), 10)}  "
              f"{bf.get('status')}")
        if bf.get("threshold") is None:
            notes.append(f"{c}: {bf.get('reason')}")
        elif bf.get("binding_dataset"):
            notes.append(f"{c}: block threshold raised from {te.get('threshold'):.4f} (pooled) to {bf['threshold']:.4f} "
                         f"so that {bf['binding_dataset']} on its own keeps block precision {args.target_precision:g}")
        if rf.get("status") == "unreachable":
            notes.append(f"{c} review: {rf.get('reason')}")
    for line in notes:
        print("\nWARNING " + textwrap.fill(line, 100))
    print("\nOther targets (block precision x review recall) for each category are in policy.json "
          "('alternatives'), and in the report's policy section (`moderation report`).")
    errors = thr.meta.get("fitted_on", {}).get("errors")
    if errors:
        print(f"\nunscored posts (left out of the fit): {errors}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from eval.pipeline import EvaluationRun, evaluate_scorer, report_run  # deferred: torch

    if args.from_eval:
        if args.model or args.compare or args.data:
            raise ValueError("--from-eval reads a saved run; do not combine it with --model, --compare or --data")
        run = EvaluationRun.load(args.from_eval)
        other = EvaluationRun.load(args.compare_eval) if args.compare_eval else None
    else:
        if args.compare_eval:
            raise ValueError("--compare-eval goes with --from-eval; to compare two model directories use --compare DIR")
        scorer = build_scorer(args)
        data = _load_data(args, scorer.categories)
        run = evaluate_scorer(scorer, data, bootstrap=args.bootstrap, seed=args.seed, confidence=args.confidence,
                              progress=not args.no_progress)
        other = None
        if args.compare:
            from moderation.scorer import Scorer  # deferred: torch
            other_scorer = Scorer.from_dir(args.compare, batch_size=args.batch_size, device=args.device,
                                           precision=args.precision)
            if list(other_scorer.categories) != list(scorer.categories):
                print(f"note: the models score different categories ({scorer.categories} vs {other_scorer.categories}); "
                      "only the shared ones are compared", file=sys.stderr)
            other = evaluate_scorer(other_scorer, data, bootstrap=args.bootstrap, seed=args.seed,
                                    confidence=args.confidence, progress=not args.no_progress)
        run.save(Path(args.out) / "run")
        if other is not None:
            other.save(Path(args.out) / "run-compare")
    fairness = None
    if args.fairness == "measure":
        if args.from_eval:
            raise ValueError("--fairness alone measures with --model; with --from-eval give the fairness.json of "
                             "`moderation fairness --out DIR`")
        from eval.fairness import measure  # deferred: numpy
        from moderation.datasets import data_root
        fairness = measure(scorer, data_root(args.data_root), "test", bootstrap=min(args.bootstrap, 200))
    elif args.fairness:
        fairness = json.loads(Path(args.fairness).read_text(encoding="utf-8"))
    examples = None if args.from_eval else _examples(args, scorer, data, run)
    paths = report_run(run, args.out, title=args.title, compare=other, fairness=fairness, examples=examples)
    _print_summary(run.evaluation)
    for kind, p in paths.items():
        print(f"{kind}: {p.resolve()}")
    return 0


def register(subparsers: Any) -> None:
    """Add the evaluate, calibrate and report subcommands."""
    ev = subparsers.add_parser(
        "evaluate", help="measure a model on a labelled split: per category and modality slice, with intervals",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Score a labelled split with the model (its calibration and thresholds, the serving code path) and
            measure, per category and per modality slice (text, image, image+text): ROC-AUC, PR-AUC, precision
            at recall 0.80/0.90/0.95, recall at precision 0.90/0.95, recall at 1% false-positive rate, precision,
            recall, F1 and macro-F1 at the operating threshold, ECE, Brier score and log-loss, with bootstrap
            intervals on the headline figures. Unknown labels are left out, never counted as negatives; posts
            that cannot be scored are counted and left out.

            Writes OUT/evaluation.json and OUT/predictions.npz (raw logits, for `moderation report --from-eval`)."""),
        epilog="example: moderation evaluate --model runs/m1 --split test --out runs/m1/eval-test --report")
    add_model_args(ev)
    _add_data_args(ev, "test")
    _add_eval_args(ev)
    ev.add_argument("--out", required=True, metavar="DIR", help="output folder")
    ev.add_argument("--report", action="store_true", help="also write the HTML/JSON/Markdown report into OUT")
    ev.add_argument("--title", default=None, help="report title")
    ev.add_argument("--examples", type=int, default=20, metavar="N", help=EXAMPLES_HELP)
    ev.set_defaults(func=_cmd_evaluate)

    cal = subparsers.add_parser(
        "calibrate", help="fit probability calibration and high-precision thresholds; write them into the model dir",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            On a held-out calibration split (neither the training nor the test split), fit per category:
              1. probability calibration of the raw logits: temperature, Platt or isotonic; `auto` picks the one
                 with the lowest cross-validated log-loss (all scores are recorded);
              2. the operating threshold on the calibrated probability: the highest-recall threshold whose exact
                 one-sided Clopper-Pearson lower confidence bound on precision reaches --target-precision.
                 When no threshold reaches it, the category gets no threshold and flags nothing automatically.
              3. the moderation policy (policy.json): block at that threshold; a human-review band below it, sized
                 for a target: --review-recall R (block + review catch at least R of the harmful posts, lower
                 confidence bound; default 0.9), --review-budget B (at most B of the posts go to review) or
                 --review-precision P (the review queue is at least P harmful); and the language rule (posts in
                 another language than the training data's go to review).
            All three are written as versioned files (calibration.json, thresholds.json, policy.json) into --model;
            every scorer loaded from that directory uses them from then on. docs/evaluation.md explains how to
            choose the targets."""),
        epilog="examples:\n  moderation calibrate --model runs/m1 --split val --target-precision 0.9\n"
               "  moderation calibrate --model runs/m1 --split val --target-precision 0.95 --review-budget 0.05")
    add_model_args(cal, model_help="model directory to calibrate (required): calibration.json and thresholds.json "
                                   "are written into it. Calibrate with the --precision you serve with.")
    _add_data_args(cal, "val")
    cal.add_argument("--target-precision", "--block-precision", type=float, default=0.9,
                     help="precision automatic blocks must reach (lower confidence bound; default 0.9)")
    cal.add_argument("--block-rule", choices=BLOCK_RULES, default="pooled",
                     help="pooled (default): the block precision target over all calibration rows; each_dataset: "
                          "and on every dataset on its own where it blocks at least "
                          f"{EACH_DATASET_MIN_FLAGGED} posts (a pool is dominated by the easy datasets; "
                          "docs/evaluation.md)")
    cal.add_argument("--method", choices=("auto", "temperature", "platt", "isotonic"), default="auto",
                     help="calibration method (default auto: lowest cross-validated log-loss per category)")
    cal.add_argument("--confidence", type=float, default=0.95,
                     help="confidence of the lower bound on precision (default 0.95)")
    cal.add_argument("--min-positives", type=int, default=20,
                     help="labelled positives a category needs before a threshold is fitted (default 20)")
    cal.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default 0)")
    review = cal.add_argument_group("review band (one of)")
    review.add_argument("--review-recall", type=float, default=None, metavar="R",
                        help="block + review must catch at least R of the harmful posts (lower bound; default 0.9)")
    review.add_argument("--review-budget", type=float, default=None, metavar="B",
                        help="at most this share of the posts goes to review (of the calibration split)")
    review.add_argument("--review-precision", type=float, default=None, metavar="P",
                        help="the review queue must be at least this share harmful")
    review.add_argument("--no-review", action="store_true", help="block only: no review band")
    cal.add_argument("--languages", default=None, metavar="CODES",
                     help="languages the model may allow automatically, comma-separated ISO 639-1 codes "
                          "(default: those of its training data, from config.json)")
    cal.add_argument("--language-action", choices=("review", "block", "allow"), default=None,
                     help="what happens to a post in another language (default: review)")
    cal.add_argument("--not-judged", choices=("allow", "review"), default=None,
                     help="what happens to a category none of a post's inputs can judge, e.g. a picture without "
                          "readable text for a category the model judges from text only (default: allow, with "
                          "score 0, as OpenAI's moderation API does; review: a person sees every such post)")
    cal.set_defaults(func=_cmd_calibrate)

    rep = subparsers.add_parser(
        "report", help="write the calibration report (self-contained HTML with plots, JSON, Markdown)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Write OUT/report.html (one self-contained file, plots embedded), OUT/report.json and OUT/report.md:
            per category the PR curve with the operating point and target precision, the ROC curve, reliability
            diagrams before and after calibration, score histograms per class, a threshold table for several
            target precisions (threshold, expected precision and its lower bound, recall, share of traffic
            flagged), per-slice and per-dataset tables, the anchors' figures (ROC-AUC, precision at recall
            0.80/0.90/0.95, recall at 1% FPR), and a side-by-side comparison with --compare.

            Either evaluate now (--model/--compare, --data, --split), or rebuild from saved runs of
            `moderation evaluate` (--from-eval DIR [--compare-eval DIR2]) without running a model."""),
        epilog="examples:\n  moderation report --model runs/m1 --compare runs/m0 --split test --out reports/m1-vs-m0\n"
               "  moderation report --from-eval runs/m1/eval-test --out reports/m1")
    add_model_args(rep)
    _add_data_args(rep, "test")
    _add_eval_args(rep)
    rep.add_argument("--compare", metavar="DIR2", default=None, help="second model directory to compare side by side")
    rep.add_argument("--from-eval", metavar="DIR", default=None, help="report a saved `moderation evaluate --out DIR` run")
    rep.add_argument("--compare-eval", metavar="DIR2", default=None, help="with --from-eval: a second saved run to compare")
    rep.add_argument("--out", required=True, metavar="DIR", help="output folder")
    rep.add_argument("--title", default=None, help="report title")
    rep.add_argument("--examples", type=int, default=20, metavar="N",
                     help=EXAMPLES_HELP + "; needs the model, so not with --from-eval")
    rep.add_argument("--fairness", nargs="?", const="measure", default=None, metavar="FAIRNESS_JSON",
                     help="add the fairness section (per identity group; eval/fairness.py): alone, measured now on "
                          "the test splits of the datasets that name targets; or the fairness.json of `moderation "
                          "fairness --out DIR`")
    rep.set_defaults(func=_cmd_report)
