"""`moderation fairness`: the fairness table of a model on the datasets that name a post's target (argparse only
at import; numpy and the model load in the handler).

    moderation fairness --out reports/fairness                # the default model, test splits
    moderation fairness --model runs/m1 --policy my-policy.json --split val --out reports/m1-fairness
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moderation.cli import add_model_args, build_scorer


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `fairness` subcommand."""
    p = subparsers.add_parser(
        "fairness", help="per identity group: benign posts not allowed, subgroup / BPSN / BNSP ROC-AUC",
        description="Score the posts of the datasets that name a post's target (CONAN, Latent Hatred, ETHOS, "
                    "HarMeme text; groups from their labels and the identity term list) and write, per identity "
                    "group, the share of benign posts the policy does not allow and the subgroup, BPSN and BNSP "
                    "ROC-AUC (Borkan et al. 2019) with intervals and counts, and their generalized mean (p=-5): "
                    "OUT/fairness.json, fairness.md and fairness.html (the calibration report's section).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    add_model_args(p)
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder of the shared datasets (default: $MODERATION_DATA_ROOT, else ../shared/datasets)")
    p.add_argument("--split", default="test", help="split (default: test)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N", help="bootstrap resamples (default: 200)")
    p.add_argument("--min-posts", type=int, default=30, help="groups with fewer posts are counted only (default 30)")
    p.add_argument("--per-group", type=int, default=None, metavar="N",
                   help="a quicker measure on a seeded sample: up to N posts per group and --background posts that "
                        "mention no group (default: every post)")
    p.add_argument("--background", type=int, default=500, metavar="N", help="with --per-group (default: 500)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=_cmd_fairness)


def _cmd_fairness(args: argparse.Namespace) -> int:
    # deferred: numpy and the scorer (torch) load when the command runs, not for every `moderation --help`
    from moderation.datasets import data_root

    from eval.fairness import html_section, markdown_section, measure

    scorer = build_scorer(args)
    print(f"scoring the identity posts with {scorer.model_version} (policy {scorer.policy.version})", file=sys.stderr)
    result = measure(scorer, data_root(args.data_root), args.split, bootstrap=args.bootstrap, min_posts=args.min_posts,
                     per_group=args.per_group, background=args.background, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fairness.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = markdown_section(result, scorer.model_version)
    (out / "fairness.md").write_text(md, encoding="utf-8")
    (out / "fairness.html").write_text("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Fairness"
                                       "</title></head><body>" + html_section(result, scorer.model_version)
                                       + "</body></html>\n", encoding="utf-8")
    print(md)
    print(f"written: {out.resolve()}/fairness.json, fairness.md, fairness.html", file=sys.stderr)
    return 0
