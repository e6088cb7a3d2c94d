"""`moderation explain`: the words that drove the scores of posts sent to review or blocked (argparse only at import).

    moderation explain --text "these people are vermin" --text "have a nice day"
    moderation explain posts.jsonl --out explanations.jsonl          # a JSONL dump: id, text, image
    moderation explain posts.jsonl --method occlusion --all           # exact, every post
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moderation.cli import add_image_args, add_model_args, build_scorer
from moderation.dumps import read_jsonl


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `explain` subcommand."""
    from moderation.explain import METHODS  # deferred: numpy (modules stay light at import; --help loads no torch)

    p = subparsers.add_parser(
        "explain", help="the words that drove the score of posts sent to review or blocked",
        description="Score posts and, for those sent to review or blocked, show the words that drove each actioned "
                    "category's score: how far its calibrated probability falls when the word is masked (pooled: "
                    "the word left out of the text encoder's pooling, one encoder pass per post; occlusion: the "
                    "word deleted and the post re-scored, one pass per word). Image posts: the OCR text is "
                    "explained and the hash list that matched is named.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("input", nargs="?", default=None, help="JSONL dump of posts (id, text, image)")
    p.add_argument("--text", action="append", default=[], help="a post's text (repeatable)")
    p.add_argument("--method", choices=METHODS, default=METHODS[0], help="default: %(default)s")
    p.add_argument("--top-k", type=int, default=5, help="words shown per category (default: 5)")
    p.add_argument("--all", action="store_true", help="explain allowed posts too (their top category)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the explanations as JSONL")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="also write an HTML table with the words that drove each score highlighted")
    add_model_args(p)
    add_image_args(p)
    p.set_defaults(func=_cmd_explain)


def _cmd_explain(args: argparse.Namespace) -> int:
    from moderation.explain import explain, explanations_html  # deferred: numpy; torch when posts are scored

    posts: list = [{"id": f"text-{i + 1}", "text": t} for i, t in enumerate(args.text)]
    root = None
    if args.input:
        path = Path(args.input)
        if not path.is_file():
            print(f"error: input not found: {path}", file=sys.stderr)
            return 2
        root = path.parent
        rows = list(read_jsonl(path))
        for row in rows:
            if isinstance(row, Exception):
                print(f"warning: skipped a bad line: {row}", file=sys.stderr)
        posts += [r for r in rows if not isinstance(r, Exception)]
    if not posts:
        print("error: nothing to explain: give a JSONL file or --text", file=sys.stderr)
        return 2
    scorer = build_scorer(args)
    explanations = explain(scorer, posts, top_k=args.top_k, only_actioned=not args.all, method=args.method,
                           image_root=root)
    for e in explanations:
        print(format_explanation(e))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for e in explanations:
                fh.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
        print(f"explanations: {Path(args.out).resolve()}")
    if args.html:
        Path(args.html).write_text(explanations_html(explanations), encoding="utf-8")
        print(f"html: {Path(args.html).resolve()}")
    return 0


def format_explanation(e) -> str:
    """A few readable lines: the post's action, then per explained category its score, words and marked text."""
    r = e.result
    if not r.ok:
        return f"{e.id}: ERROR {r.error_code}: {r.error}"
    lines = [f"{e.id}: {str(r.action).upper()}" + (f"  ({e.method}, spans of {e.span_words} words)"
                                                   if e.span_words > 1 else "")]
    if r.hash_match is not None:
        h = r.hash_match
        lines.append(f"  image matches hash list {h.list} ({h.list_version}) entry {h.id}: {h.category}, "
                     f"distance {h.distance} <= {h.threshold}")
    if r.ocr_text is not None:
        lines.append(f"  OCR text: {r.ocr_text!r}")
    for m in r.term_matches:
        lines.append(f"  {m.action} list {m.list} ({m.list_version}): {m.kind} {m.rule!r} matched {m.text!r}")
    for c, words in e.categories.items():
        top = ", ".join(f"{w.word} {w.weight:+.3f}" for w in words) or "no single word raises it"
        lines.append(f"  {c} {r.categories[c].score:.3f} ({r.categories[c].action}): {top}")
        lines.append(f"    {e.highlighted(c)}".replace("\n", " "))
    return "\n".join(lines)
