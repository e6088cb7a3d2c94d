"""`moderation retrain`: its arguments and its handler (argparse only at import: every `moderation --help` adds
this parser; the work, in operations.retrain, loads torch, training and eval when the command runs).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Any


def _steps() -> str:
    """What a retraining run does: the numbered steps of operations.retrain's docstring (read from its source, not
    imported, so that the help text has one source and registering the parser loads nothing heavy)."""
    doc = ast.get_docstring(ast.parse(Path(__file__).with_name("retrain.py").read_text(encoding="utf-8"))) or ""
    return doc.split("\n\n", 1)[1] if "\n\n" in doc else doc


def add_retrain_parser(subparsers: Any) -> None:
    """Add the `retrain` subcommand (registered by operations.feedback_cli)."""
    p = subparsers.add_parser(
        "retrain", help="train a challenger on the training data + reviewers' verdicts, recalibrate, compare it with "
                        "the current model; exit 0 when promotable, 3 when not",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_steps(),
        epilog="example:\n  moderation retrain --model models/current --feedback feedback/ --out models/next --mode frozen\n"
               "exit status: 0 the challenger is promotable; 3 it is not (kept in OUT for inspection); 2 bad arguments")
    p.add_argument("--model", required=True, metavar="CURRENT", help="the current (champion) model directory")
    p.add_argument("--feedback", required=True, metavar="STORE", help="feedback store (moderation feedback add)")
    p.add_argument("--out", required=True, metavar="NEW", help="model directory to write the challenger into")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder of the current model's datasets when their recorded paths do not exist here "
                        "(default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--mode", choices=("frozen", "lora", "full"), default=None,
                   help="the challenger's training mode (default: the current model's)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the current model's)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS", help="fine-tuning time limit")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--feedback-weight", type=float, default=1.0, help="loss weight of the feedback's rows (default 1)")
    p.add_argument("--target-precision", type=float, default=None,
                   help="target precision of the challenger's thresholds (default: the current model's)")
    p.add_argument("--eval-data", action="append", default=[], metavar="SPEC",
                   help="another fixed evaluation set PATH[:FIELD=CATEGORY,...][@NAME] (its --eval-split rows)")
    p.add_argument("--eval-split", default="test", help="split of the fixed evaluation sets (default: test)")
    p.add_argument("--no-dataset-eval", action="store_true",
                   help="do not measure on the training datasets' own test splits (only --eval-data and feedback)")
    add_comparison_options(p)
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: $MODERATION_CACHE_DIR or .cache/embeddings)")
    p.add_argument("--batch-size", type=int, default=32, help="posts per forward pass when scoring (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_retrain)


def add_compare_parser(subparsers: Any) -> None:
    """Add the `compare` subcommand (registered by operations.feedback_cli): two existing model directories."""
    p = subparsers.add_parser(
        "compare", help="champion / challenger comparison of two existing model directories (ranking and policy "
                        "checks); exit 0 when the challenger is promotable, 3 when not",
        description="Both models score the same labelled posts (each dataset's --split rows), each with its own "
                    "calibration and policy; the verdict is retrain's (docs/operations.md, section 4): no gating "
                    "cell worse, at least one better, and the policy checks passed.",
        epilog="example:\n  moderation compare --champion moderation/default_model --challenger runs/x/model "
               "--data tweeteval_offensive --data hatexplain --limit 2000 --out runs/x/compare\n"
               "exit status: 0 promotable; 3 not; 2 bad arguments", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--champion", required=True, metavar="DIR", help="the model in use")
    p.add_argument("--challenger", required=True, metavar="DIR", help="the model that would replace it")
    p.add_argument("--data", action="append", default=[], metavar="NAME|SPEC",
                   help="a labelled set: a shared dataset's name or PATH[:FIELD=CATEGORY,...][@NAME] (repeatable; "
                        "default: the datasets the champion's config.json says it was trained on)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="the shared datasets folder (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--split", default="test", help="which split of each set both models score (default: test)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="at most N posts per set, a seeded random sample (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the sample's and the bootstrap's seed (default 0)")
    add_comparison_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="where comparison.json / .html / .md go")
    p.add_argument("--batch-size", type=int, default=32, help="posts per forward pass when scoring (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_compare)


def add_comparison_options(p: argparse.ArgumentParser) -> None:
    """The options of the champion / challenger comparison (operations.champion), shared by retrain and compare."""
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples (default 1000)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="non-inferiority margin: a cell is worse when its interval lies below -MARGIN (default 0)")
    p.add_argument("--gate", default="roc_auc,average_precision",
                   help="metrics that decide promotion (of roc_auc, average_precision, recall_at_threshold, "
                        "precision_at_threshold; default: roc_auc,average_precision)")
    p.add_argument("--min-block-recall-ratio", type=float, default=0.8, metavar="R",
                   help="policy check: the challenger's block recall >= R x the champion's, per category (default 0.8)")
    p.add_argument("--max-review-share-rise", type=float, default=3.0, metavar="POINTS",
                   help="policy check: the challenger's review share <= the champion's + POINTS, per category (default 3)")
    p.add_argument("--no-policy-checks", action="store_true",
                   help="gate on ranking alone (ROC-AUC / AP), not on what the challenger's policy would block and review")


def comparison_settings(args: argparse.Namespace) -> dict[str, Any]:
    """compare_models' keyword arguments from add_comparison_options' arguments. Raises ValueError on a bad one."""
    from operations.champion import METRICS  # deferred: numpy and eval load when the command runs

    gates = tuple(g.strip() for g in args.gate.split(",") if g.strip())
    bad = [g for g in gates if g not in METRICS]
    if bad or not gates:
        raise ValueError(f"--gate {args.gate!r}: choose from {', '.join(METRICS)}")
    if not 0 < args.confidence < 1:
        raise ValueError(f"--confidence must be in (0, 1), got {args.confidence}")
    if args.bootstrap < 100:
        raise ValueError(f"--bootstrap must be at least 100, got {args.bootstrap}")
    if not 0 < args.min_block_recall_ratio <= 1:
        raise ValueError(f"--min-block-recall-ratio must be in (0, 1], got {args.min_block_recall_ratio}")
    if args.max_review_share_rise < 0:
        raise ValueError(f"--max-review-share-rise must be >= 0 points, got {args.max_review_share_rise}")
    off = args.no_policy_checks
    return {"bootstrap": args.bootstrap, "confidence": args.confidence, "margin": args.margin, "gate_metrics": gates,
            "min_block_recall_ratio": None if off else args.min_block_recall_ratio,
            "max_review_share_rise": None if off else args.max_review_share_rise}


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch  # deferred: as above

        torch.set_num_threads(args.threads)


def _cmd_retrain(args: argparse.Namespace) -> int:
    # deferred: the retraining machinery (torch, training, eval) loads when the command runs
    from operations.retrain import RetrainConfig, retrain

    settings = comparison_settings(args)
    _threads(args)
    config = RetrainConfig(mode=args.mode, epochs=args.epochs, time_budget_s=args.time_budget, seed=args.seed,
                           feedback_weight=args.feedback_weight, data_root=args.data_root, eval_data=args.eval_data,
                           eval_split=args.eval_split, no_dataset_eval=args.no_dataset_eval,
                           target_precision=args.target_precision, cache_dir=args.cache_dir,
                           batch_size=args.batch_size, **settings)
    result = retrain(args.model, args.feedback, args.out, config, progress=not args.no_progress)
    return 0 if result.comparison["decision"]["promotable"] else 3


def _cmd_compare(args: argparse.Namespace) -> int:
    from operations.retrain import compare_dirs  # deferred: as above

    settings = comparison_settings(args)
    if args.limit is not None and args.limit < 10:
        raise ValueError(f"--limit must be at least 10 posts a set, got {args.limit}")
    _threads(args)
    comparison = compare_dirs(args.champion, args.challenger, args.out, data=args.data, data_root=args.data_root,
                              split=args.split, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                              progress=not args.no_progress, **settings)
    return 0 if comparison["decision"]["promotable"] else 3
