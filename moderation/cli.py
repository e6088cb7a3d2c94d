"""The `moderation` command line: one front door, one subcommand per job.

Core subcommands (demo, info) live here. The others are registered by a small light module each
(`register(subparsers)`), found through the `moderation.subcommands` entry point group (pyproject.toml) and
listed in the order of their entry point names, so the core never names the packages above it. Their heavy
imports (ray, matplotlib, ...) happen inside the handler, so `moderation --help` stays fast. A package that
is not installed simply has no subcommand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Sequence

from moderation.dumps import read_jsonl
from moderation.schema import ScoreResult

#: Entry point group of the modules that add subcommands: each exposes register(subparsers).
SUBCOMMAND_GROUP = "moderation.subcommands"

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def _quiet_libraries() -> None:
    # Library chatter (weight-loading bars, advisory warnings) drowns the output users came for.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - transformers missing is reported where it is needed
        pass


def add_model_args(parser: argparse.ArgumentParser,
                   model_help: str = "model directory (default: the shipped default model)",
                   precision: str = "fp32") -> None:
    """--model, --batch-size, --device, --precision: shared by every subcommand that scores.

    precision: the default of --precision: "auto" where the command serves decisions (score, serve, demo, info),
    "fp32" where it measures or fits (evaluate, calibrate: the reference precision of the thresholds)."""
    from moderation.precision import DEFAULT_BATCH_SIZE, PRECISION_MODES

    parser.add_argument("--model", metavar="DIR", default=None, help=model_help)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"posts per forward pass (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--precision", choices=PRECISION_MODES, default=precision,
                        help="auto (bf16 where the device has native bf16 and the model's precision.json validates "
                             "it, else fp32; docs/serving.md), fp32, or bf16 autocast: faster, scores differ "
                             f"slightly (default: {precision})")
    parser.add_argument("--policy", metavar="FILE", default=None,
                        help="moderation policy file (block / review thresholds, language rule) to use instead of "
                             "the model directory's policy.json (see `moderation calibrate`, docs/evaluation.md)")


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """--ocr, --ocr-with-image, --hash-list: what happens to images besides the model (demo, score)."""
    from moderation.ocr import OCR_MODES  # deferred: numpy, PIL

    parser.add_argument("--ocr", choices=OCR_MODES, default="auto",
                        help="read the text printed in images and score it with the text side: auto (every image "
                             "post: the given text then the OCR text; both is the same), ocr (the OCR text instead of "
                             "the given text), off (default: auto)")
    parser.add_argument("--ocr-with-image", action="store_true",
                        help="when a post's text comes from OCR alone, score it together with the image "
                             "(default: the OCR text alone)")
    parser.add_argument("--hash-list", action="append", default=[], metavar="FILE", dest="hash_lists",
                        help="hash list of known violating images (repeatable; see `moderation hashes`): an image "
                             "within its distance threshold is flagged for the listed category, with hash_match")


def build_scorer(args: argparse.Namespace, **kwargs: Any):
    """The Scorer the arguments describe (model dir or default), loaded once."""
    _quiet_libraries()
    from moderation.scorer import Scorer  # deferred: torch
    opts = dict(batch_size=args.batch_size, device=args.device, precision=args.precision, **kwargs)
    for name in ("ocr", "ocr_with_image", "hash_lists", "policy"):
        if hasattr(args, name):
            opts.setdefault(name, getattr(args, name))
    return Scorer.from_dir(args.model, **opts) if args.model else Scorer.default(**opts)


def print_precision(scorer, file=None) -> None:
    """Say at start-up which precision runs and why (stderr by default): "auto" may pick bf16 or fp32."""
    choice = scorer.precision_choice
    print(choice.line(), file=file if file is not None else sys.stderr)


def untrained_banner(scorer) -> str | None:
    if scorer.trained:
        return None
    return ("WARNING: the classifier head of this model is UNTRAINED (random weights). Its scores are NOT "
            "judgements and nothing is flagged. Train one with `moderation train`, or use a trained model directory.")


def threshold_lines(scorer) -> list[str]:
    """One line per category: what its score leads to (block / review thresholds of the policy, or why not),
    then the policy's language rule."""
    policy = scorer.policy
    lines = []
    for category in scorer.categories:
        entry = policy.categories.get(category)
        if entry is None:
            lines.append(f"{category}: no policy for this category: never actioned (run `moderation calibrate`)")
            continue
        fit = entry.meta.get("block_fit") or {}
        if entry.block is not None:
            target = fit.get("target_precision")
            block = f"block at >= {entry.block:.4f}" + (f" (fitted for precision {target:.2f})" if target else "")
        else:
            why = f"precision {fit['target_precision']:.2f} not reachable on the calibration data" \
                if fit.get("status") == "unreachable" and fit.get("target_precision") else "no block threshold"
            block = f"never blocked automatically ({why})"
        review = f"review at >= {entry.review:.4f}" if entry.review is not None else "no review band"
        lines.append(f"{category}: {block}; {review}")
    rule = policy.languages
    lines.append(f"languages: trained on {', '.join(rule.trained)}; a post in another language goes to {rule.action}")
    if policy.not_judged != "allow":
        lines.append(f"a category none of a post's inputs can judge (e.g. a picture without text): {policy.not_judged}")
    return lines


# --- demo -------------------------------------------------------------------------------------------

def action_text(result, trained: bool = True) -> str:
    """"BLOCK: hate", "REVIEW: offensive, language de", "allow": the post's action and its reasons, short."""
    if not trained:
        return "(untrained)"
    if result.action in (None, "allow"):
        return str(result.action or "-")
    why, unjudged = [], []
    for r in result.reasons:
        if r["action"] != result.action:
            continue
        if r["rule"] == "language":
            why.append(f"language {result.language}")
        elif r["rule"] == "hash_match":
            why.append(f"{r['category']} (hash)")
        elif r["rule"] == "term_list":
            why.append(f"{r['category']} (list {r['list']})")
        elif r["rule"] == "not_judged":
            unjudged.append(str(r["category"]))
        else:
            why.append(str(r["category"]))
    if unjudged:
        why.append(f"not judged ({', '.join(unjudged)})" if why else f"not judged: {', '.join(unjudged)}")
    return f"{result.action.upper()}: {', '.join(why)}"


def _cmd_demo(args: argparse.Namespace) -> int:
    input_path = Path(args.input)
    if not input_path.is_file():
        print(f"error: example dump not found: {input_path}", file=sys.stderr)
        return 2
    scorer = build_scorer(args)
    print_precision(scorer)
    rows = list(read_jsonl(input_path))
    posts = [r for r in rows if not isinstance(r, Exception)]
    results: list[ScoreResult] = scorer.score(posts, image_root=input_path.parent)
    bad_lines = [r for r in rows if isinstance(r, Exception)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for post, result in zip(posts, results):
            fh.write(json.dumps({**result.to_dict(), "text": post.get("text"), "image": post.get("image")}) + "\n")

    banner = untrained_banner(scorer)
    if banner:
        print("\n" + textwrap.fill(banner, 100) + "\n")
    print(f"model {scorer.model_version}  categories {', '.join(scorer.categories)}  policy {scorer.policy.version}")
    for line in threshold_lines(scorer):
        print("  " + line)
    lists = ", ".join(f"{d['name']} ({d['entries']} hashes, {d['version']})" for d in scorer.describe()["hash_lists"])
    print(f"  images: OCR {scorer.ocr}; hash lists: {lists or 'none (--hash-list FILE)'}")
    cats = scorer.categories
    header = f"{'id':<14} {'input':<14} " + " ".join(f"{c[:9]:>9}" for c in cats) + f"  {'action':<30} text"
    print(header)
    print("-" * len(header))
    for post, r in zip(posts, results):
        snippet = (post.get("text") or "").replace("\n", " ")
        if r.ocr_text and "ocr_text" in r.applied_input_types:
            snippet = f"[OCR] {r.ocr_text}"
        snippet = snippet if len(snippet) <= 48 else snippet[:45] + "..."
        if not r.ok:
            print(f"{str(r.id):<14} {'-':<14} " + " ".join(f"{'-':>9}" for _ in cats) + f"  ERROR {r.error_code}: {r.error}")
            continue
        scores = " ".join(f"{r.categories[c].score:>9.3f}" for c in cats)
        print(f"{str(r.id):<14} {'+'.join(r.applied_input_types):<14} {scores}  {action_text(r, scorer.trained):<30} {snippet}")
    n_err = sum(not r.ok for r in results) + len(bad_lines)
    counts = {a: sum(r.ok and r.action == a for r in results) for a in ("block", "review", "allow")}
    print(f"\n{len(rows)} posts read, {len(results) - sum(not r.ok for r in results)} scored, {n_err} errors; "
          f"{counts['block']} blocked, {counts['review']} to review, {counts['allow']} allowed. Results: {out.resolve()}")
    return 0


# --- info -------------------------------------------------------------------------------------------

def _cmd_info(args: argparse.Namespace) -> int:
    scorer = build_scorer(args)
    print(json.dumps(scorer.describe(), indent=2))
    print_precision(scorer)
    banner = untrained_banner(scorer)
    if banner:
        print(banner, file=sys.stderr)
    return 0


# --- parser -----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moderation",
        description="Multimodal harmful-content moderation: score posts (text, image or both) per harm category "
                    "with calibrated, high-precision thresholds.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `moderation SUBCOMMAND --help` for the options of each subcommand.",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")

    demo = sub.add_parser("demo", help="score the example content dump shipped in examples/ and print a summary",
                          description="Score the example dump (text-only, image-only and image+text posts) with the "
                                      "default model (or --model), print a table and a summary, write results as JSONL.")
    add_model_args(demo, precision="auto")
    add_image_args(demo)
    demo.add_argument("--input", default=str(EXAMPLES_DIR / "posts.jsonl"), help="JSONL dump (default: examples/posts.jsonl)")
    demo.add_argument("--out", default="moderation-demo-results.jsonl", help="results file (default: %(default)s)")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="show a model's version, categories, thresholds and calibration",
                          description="Print a JSON description of a model directory (or the default model).")
    add_model_args(info, precision="auto")
    info.set_defaults(func=_cmd_info)

    for ep in sorted(entry_points(group=SUBCOMMAND_GROUP), key=lambda e: e.name):
        try:
            mod = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and (ep.value == exc.name or ep.value.startswith(exc.name + ".")):
                continue  # that package is not part of this installation
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    _quiet_libraries()
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        # User errors (bad paths, bad model directories, bad options) get one clear line, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
