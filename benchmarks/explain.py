"""Cost and agreement of the two explanation methods on real tweets (issue 21).

Scores the first N tweets of the TweetEval hate test split with the default model (or --model), explains the posts
it sends to review or blocks with "pooled" (one encoder pass, words left out of the pooling) and "occlusion"
(exact: one encoder pass per word), and prints the time per explained tweet of each (beside the time to score
alone), how often the two agree on a category's top word and top-3 words, and sample explanations.

    python -m benchmarks.explain [--posts 60] [--model DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from moderation.explain import explain
from moderation.scorer import Scorer

DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "tweeteval_hate" / "data.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=60)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--samples", type=int, default=6)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    scorer = Scorer.from_dir(args.model, num_workers=0) if args.model else Scorer.default(num_workers=0)
    rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
    posts = [{"id": r["id"], "text": r["text"]} for r in rows if r["split"] == "test"]
    results = scorer.score(posts[: args.posts * 3])
    chosen = [p for p, r in zip(posts, results) if r.action in ("review", "block")][: args.posts]
    explain(scorer, chosen[:4])  # warm up
    times = {}
    t = time.perf_counter()
    scorer.score(chosen)
    times["score only"] = (time.perf_counter() - t) / len(chosen)
    out = {}
    for method in ("pooled", "occlusion"):
        t = time.perf_counter()
        out[method] = explain(scorer, chosen, method=method, top_k=50)
        times[method] = (time.perf_counter() - t) / len(chosen)
    words = statistics.mean(len(e.text.split()) for e in out["pooled"])
    print(f"model {scorer.model_version}, {len(chosen)} tweets sent to review or blocked ({words:.0f} words on "
          f"average), torch threads {torch.get_num_threads()}")
    for name, sec in times.items():
        print(f"  {name:<12} {sec * 1000:7.0f} ms per tweet (scoring included)")
    top1, top3 = [], []
    for a, b in zip(out["pooled"], out["occlusion"]):
        for c, exact in b.categories.items():
            fast = a.categories.get(c, [])
            if exact and fast:
                top1.append(fast[0].span == exact[0].span)
                top3.append(len({w.span for w in fast[:3]} & {w.span for w in exact[:3]}) / min(3, len(exact)))
    print(f"  pooled vs exact: top word the same in {statistics.mean(top1):.0%} of {len(top1)} (post, category) "
          f"pairs, top-3 overlap {statistics.mean(top3):.0%}")
    for a, b in list(zip(out["pooled"], out["occlusion"]))[: args.samples]:
        for c in a.categories:
            score = a.result.categories[c].score
            print(f"\n{a.id} {a.result.action} {c} {score:.3f}")
            for name, e in (("pooled", a), ("exact", b)):
                top = ", ".join(f"{w.word} {w.weight:+.3f}" for w in e.categories.get(c, [])[:3])
                print(f"  {name:<7} {top}")
            print("  " + a.highlighted(c).replace("\n", " ")[:200])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
