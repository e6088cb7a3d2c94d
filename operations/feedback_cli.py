"""`moderation feedback add|stats|simulate` and `moderation retrain`: reviewers' verdicts into labels, and a
challenger trained on them that is promoted only when it is measured not worse.

Light at import (argparse and the light parts of the core); the work is in operations.feedback,
operations.online_metrics and operations.retrain, imported by the handlers (numpy, torch) so that `moderation --help`
does not load them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from moderation.decision_log import categories_in, decision_files, iter_log_rows
from operations.retrain_cli import add_compare_parser, add_retrain_parser

#: Exit statuses (docs/operations.md).
EXIT_OK, EXIT_SOME_REJECTED, EXIT_BAD_ARGS, EXIT_NOT_PROMOTABLE = 0, 1, 2, 3


def register(subparsers: Any) -> None:
    """Add the `feedback` and `retrain` subcommands."""
    fb = subparsers.add_parser(
        "feedback", help="reviewers' verdicts: add them to a labelled store, show the online metrics",
        description="A feedback store holds reviewers' verdicts (post id, category, harmful or not, reviewer, time, "
                    "optional appeal outcome) and the dataset training reads from them (STORE/data.jsonl).")
    sub = fb.add_subparsers(dest="feedback_command", metavar="ACTION")
    fb.set_defaults(func=lambda args: (fb.print_help(), EXIT_BAD_ARGS)[1])

    add = sub.add_parser(
        "add", help="add verdicts (one on the command line, or files of them) to a store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Add verdicts to the store (created on first use: give --categories, or --decisions to take the
            categories of the decision log). A verdict file is JSONL or CSV with the fields post_id, category,
            harmful (true/false, 1/0, yes/no), reviewer, and optionally time (ISO 8601; default now), appeal
            (upheld / overturned), origin (model / report), text, image (a file path), note.
            The post's content and what the model decided come from the decision log or batch outputs
            (--decisions) when the verdict does not carry them. Exact repeats of stored verdicts are skipped."""),
        epilog="examples:\n"
               "  moderation feedback add --store feedback/ --decisions logs/ --post-id p81 --category hate \\\n"
               "      --harmful yes --reviewer alice\n"
               "  moderation feedback add --store feedback/ --decisions logs/ --from reviews-2026-11-27.csv\n"
               "exit status: 0 every verdict stored (or skipped as a repeat); 1 some were rejected (reasons "
               "printed); 2 bad arguments")
    add.add_argument("--store", required=True, metavar="DIR", help="feedback store folder")
    add.add_argument("--categories", default=None, help="comma-separated categories of a new store")
    add.add_argument("--from", dest="from_files", action="append", default=[], metavar="FILE",
                     help="JSONL or CSV file of verdicts (repeatable)")
    add.add_argument("--decisions", nargs="+", default=None, metavar="LOG",
                     help="decision logs / batch outputs (files, folders, globs) to join content and decisions from")
    add.add_argument("--image-root", default=None, metavar="DIR", help="folder relative image paths resolve under")
    one = add.add_argument_group("one verdict")
    one.add_argument("--post-id", default=None)
    one.add_argument("--category", default=None)
    one.add_argument("--harmful", default=None, help="yes / no")
    one.add_argument("--reviewer", default=None)
    one.add_argument("--time", default=None, help="ISO 8601 (default: now)")
    one.add_argument("--appeal", choices=("upheld", "overturned"), default=None, help="appeal outcome, if any")
    one.add_argument("--kind", choices=("verdict", "appeal"), default="verdict",
                     help="appeal: an appeal of a decision and its outcome (--appeal); no --harmful needed, the "
                          "appealed decision's judgement is taken (default: verdict)")
    one.add_argument("--action", choices=("allow", "review", "block"), default=None,
                     help="the decision appealed (default: the category's action in the decision log)")
    one.add_argument("--origin", choices=("model", "report"), default=None,
                     help="how the post reached review: the model (review / block) or a user report "
                          "(default: from the decision log)")
    one.add_argument("--text", default=None, help="the post's text, when the decision log does not hold it")
    one.add_argument("--image", default=None, help="the post's image file, when the decision log does not hold it")
    add.set_defaults(func=_cmd_add)

    st = sub.add_parser("stats", help="the store's size and the online metrics (review precision, appeal "
                                      "overturn rate, proactive rate)")
    st.add_argument("--store", required=True, metavar="DIR")
    st.add_argument("--decisions", nargs="+", default=None, metavar="LOG",
                    help="decision logs: adds the model's automatic blocks to the proactive rate")
    st.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    st.set_defaults(func=_cmd_stats)

    sim = sub.add_parser(
        "simulate", help="SIMULATED reviewers: verdicts from a labelled dataset's labels on the posts the model "
                         "sent to review (for tests and demonstrations)",
        description="A simulation, not real feedback: for the posts of a labelled dataset that the current model "
                    "sent to review (per its decisions in --decisions: the policy's review action, else a score of "
                    "at least --review-min-score that was not flagged), and a random share of the others as user "
                    "reports, write one verdict per labelled category with the dataset's label as the verdict.")
    sim.add_argument("--decisions", nargs="+", required=True, metavar="LOG",
                     help="batch outputs (or logs) of the current model over the dataset's posts, same ids")
    sim.add_argument("--data", required=True, metavar="SPEC", help="labelled dataset PATH[:FIELD=CATEGORY,...][@NAME]")
    sim.add_argument("--split", default="train", help="its split(s) the posts come from (default: train)")
    sim.add_argument("--categories", required=True, help="comma-separated categories of the verdicts")
    sim.add_argument("--review-min-score", type=float, default=0.5,
                     help="when no decision carries a review action (no policy, or no review band): the score from which "
                          "an unblocked post goes to review (default 0.5)")
    sim.add_argument("--budget", type=int, default=None, help="at most this many reviewed posts (highest scores)")
    sim.add_argument("--report-rate", type=float, default=0.0,
                     help="share of the other posts that users report (default 0)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", required=True, metavar="FILE", help="verdicts JSONL to write")
    sim.set_defaults(func=_cmd_simulate)

    add_retrain_parser(subparsers)
    add_compare_parser(subparsers)


def _read_verdict_file(path: str) -> Iterator[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"verdict file not found: {p}")
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield {**{k: (v if v != "" else None) for k, v in row.items() if k is not None},
                       "_where": f"{p}:{reader.line_num}"}
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        with open(p, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        verdict = json.loads(line)
                        # rejections name the file and line (numbering verdicts drifted after a bad line)
                        yield {**verdict, "_where": f"{p}:{n}"} if isinstance(verdict, dict) else verdict
                    except json.JSONDecodeError as exc:
                        yield {"_error": f"{p}:{n}: not JSON ({exc.msg})"}
    else:
        raise ValueError(f"{p}: verdict files are .jsonl or .csv")


def _store(args: argparse.Namespace, decision_inputs: list[str] | None):
    from operations.feedback import STORE_FILE, FeedbackStore  # deferred: numpy, PIL

    if (Path(args.store) / STORE_FILE).exists():
        store = FeedbackStore.open(args.store)
        if args.categories:
            given = [c.strip() for c in args.categories.split(",") if c.strip()]
            if given != store.categories:
                raise ValueError(f"--categories {given} differ from the store's {store.categories}")
        return store
    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    if categories is None and decision_inputs:
        first = next(iter_log_rows(decision_files(decision_inputs)[0]), {})
        categories = categories_in(list(first.keys()))
    if not categories:
        raise ValueError(f"{args.store} holds no feedback store yet: give --categories (e.g. hate,offensive)")
    print(f"created feedback store {args.store} (categories {', '.join(categories)})", file=sys.stderr)
    return FeedbackStore.create(args.store, categories)


def _cmd_add(args: argparse.Namespace) -> int:
    from operations.feedback import load_decision_index  # deferred: numpy, PIL

    verdicts: list[dict[str, Any]] = []
    for path in args.from_files:
        verdicts += list(_read_verdict_file(path))
    appeal = args.kind == "appeal"
    single = [args.post_id, args.category, args.reviewer] + ([args.appeal] if appeal else [args.harmful])
    if any(v is not None for v in single) or appeal:
        if any(v is None for v in single):
            raise ValueError("an appeal needs --post-id, --category, --appeal and --reviewer" if appeal else
                             "one verdict needs --post-id, --category, --harmful and --reviewer")
        verdicts.append({"post_id": args.post_id, "category": args.category, "harmful": args.harmful,
                         "reviewer": args.reviewer, "time": args.time, "appeal": args.appeal, "origin": args.origin,
                         "text": args.text, "image": args.image, "kind": args.kind, "action": args.action})
    if not verdicts:
        raise ValueError("no verdicts: give --from FILE or one verdict (--post-id, --category, --harmful, --reviewer)")
    store = _store(args, args.decisions)
    bad = [v["_error"] for v in verdicts if "_error" in v]
    good = [v for v in verdicts if "_error" not in v]
    index = None
    if args.decisions:
        ids = [str(v.get("post_id", v.get("id"))) for v in good]
        index = load_decision_index(args.decisions, ids)
    summary = store.add(good, decisions=index, image_root=args.image_root)
    summary.rejected = bad + summary.rejected
    for reason in summary.rejected[:50]:
        print(f"rejected: {reason}", file=sys.stderr)
    if len(summary.rejected) > 50:
        print(f"... and {len(summary.rejected) - 50} more rejected", file=sys.stderr)
    print(summary.line())
    return EXIT_SOME_REJECTED if summary.rejected else EXIT_OK


def _cmd_stats(args: argparse.Namespace) -> int:
    # deferred: numpy, PIL
    from operations.feedback import FeedbackStore, load_decision_index, split_of
    from operations.online_metrics import online_metrics

    store = FeedbackStore.open(args.store)
    verdicts = store.verdicts()
    index = load_decision_index(args.decisions, None) if args.decisions else None
    figures = online_metrics(verdicts, index)
    labels = store.labels()
    splits = Counter()
    per_cat: dict[str, Counter] = {c: Counter() for c in store.categories}
    for pid, p in labels.items():
        if p["text"] is None and p["image"] is None:
            splits["no content"] += 1
            continue
        splits[split_of(pid, store.splits)] += 1
        for c, y in (p.get("labels") or {}).items():
            per_cat[c]["harmful" if y else "not harmful"] += 1
    figures["store"] = {"posts": dict(splits), "labels": {c: dict(v) for c, v in per_cat.items()},
                        "fingerprint": store.fingerprint()}
    share = format_share

    print(f"store {args.store}: {figures['verdicts']} verdicts on {figures['posts']} posts; dataset rows by split "
          f"{dict(splits)}")
    for c in store.categories:
        print(f"  {c:<12} labels {dict(per_cat[c])}; review precision {share(figures['review_precision'].get(c))}; "
              f"block precision {share(figures['block_precision'].get(c))}; appeal overturn rate "
              f"{share(figures['appeal_overturn_rate'].get(c))}")
    pro = figures["proactive_rate"]
    note = "" if pro["decision_log"] else " (without --decisions: actioned posts known from verdicts only)"
    print(f"  appeal overturn rate (all) {share(figures['appeal_overturn_rate']['all'])}")
    for line in overturn_lines(figures["appeal_overturn_by_action"]):
        print("  " + line)
    print(f"  proactive rate {share(pro)}{note}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK


def format_share(d: dict[str, Any] | None) -> str:
    """"0.250 (1/4; 95% 0.006-0.806)" for an online metric's {value, k, n, ci95}; "-" without data."""
    if not d or not d.get("n"):
        return "-"
    lo, hi = d["ci95"]
    return f"{d['value']:.3f} ({d['k']}/{d['n']}; 95% {lo:.3f}-{hi:.3f})"


def overturn_lines(by_action: dict[str, dict[str, Any]]) -> list[str]:
    """One line per category: the appeal overturn rate per decision appealed (block / review / allow)."""
    return [f"appeals on {c}: " + "; ".join(f"{a} overturned {format_share(d)}" for a, d in actions.items())
            for c, actions in by_action.items()]


def _cmd_simulate(args: argparse.Namespace) -> int:
    # deferred: numpy, PIL
    from moderation.datasets import parse_dataset_arg
    from operations.simulate import simulate_verdicts

    if not 0.0 <= args.report_rate <= 1.0:
        raise ValueError(f"--report-rate must be in [0, 1], got {args.report_rate}")
    spec = parse_dataset_arg(args.data)
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    splits = {s.strip() for s in args.split.split(",") if s.strip()}
    verdicts, counts = simulate_verdicts(args.decisions, spec, split=splits, categories=categories,
                                         review_min_score=args.review_min_score, budget=args.budget,
                                         report_rate=args.report_rate, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(v) + "\n" for v in verdicts), encoding="utf-8")
    print(f"SIMULATED reviewers: {counts['sent_to_review']} posts sent to review ({counts['review_by']}) and "
          f"{counts['reported']} reported "
          f"of {counts['posts_in_split']} in {spec.name} ({', '.join(sorted(splits))}); {counts['verdicts']} verdicts "
          f"(the dataset's labels) -> {out}")
    return EXIT_OK
