"""Inference cost of two model directories, measured in one run: batch throughput and single-post latency.

    python -m benchmarks.model_cost --baseline DIR                     # the shipped default vs DIR
    python -m benchmarks.model_cost --baseline runs/old --model runs/new --posts 512 --rounds 3

Both models score the same posts (text-only tweets and posts of the other shared datasets, mixed, from
../shared/datasets) through `Scorer.score`, the code path batch scoring and the endpoint use, including
everything a model directory brings (lexical channel, language identification, calibration, policy).
Rounds alternate A/B/A/B so that a machine whose speed drifts (a shared VM) affects both alike; the figures
are medians over rounds:

- batch: posts per second scoring `--posts` posts in one call (batch size 32);
- single post: p50 and p95 latency of one post per call, over `--single` posts.

The ratio (model / baseline) is what to compare; absolute figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from moderation.cli import _quiet_libraries
from moderation.datasets import data_root
from moderation.model_dir import default_model_dir
from moderation.scorer import Scorer

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("tweeteval_hate", "tweeteval_offensive", "gab_hate_corpus", "implicit_hate", "reddit_misogyny")


def sample_posts(root: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` text posts drawn evenly from the test splits of several shared datasets (realistic length mix)."""
    import random

    rng = random.Random(seed)
    per = max(1, n // len(DATASETS))
    posts: list[dict[str, Any]] = []
    for name in DATASETS:
        with open(root / name / "data.jsonl", encoding="utf-8") as fh:  # not splitlines(): texts hold U+2028
            rows = [json.loads(line) for line in fh if line.strip()]
        rows = [r for r in rows if r.get("split") == "test" and (r.get("text") or "").strip()]
        posts += [{"id": f"{name}/{r['id']}", "text": r["text"]} for r in rng.sample(rows, min(per, len(rows)))]
    rng.shuffle(posts)
    return posts[:n]


def measure(scorer: Any, posts: list[dict[str, Any]], single: int) -> dict[str, float]:
    """One round: batch posts/s and single-post latencies (ms)."""
    start = time.perf_counter()
    results = scorer.score(posts)
    batch_s = time.perf_counter() - start
    if any(not r.ok for r in results):
        raise RuntimeError(f"{sum(not r.ok for r in results)} posts failed: {next(r.error for r in results if not r.ok)}")
    latencies = []
    for post in posts[:single]:
        t = time.perf_counter()
        scorer.score([post])
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    return {"posts_per_s": len(posts) / batch_s, "p50_ms": statistics.median(latencies),
            "p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.model_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="model directory to compare against (A)")
    p.add_argument("--model", default=None, help="model directory measured (B; default: the shipped default model)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: ../shared/datasets)")
    p.add_argument("--posts", type=int, default=512, help="posts per batch measurement (default: %(default)s)")
    p.add_argument("--single", type=int, default=100, help="posts scored one at a time per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)

    import torch

    _quiet_libraries()
    torch.set_num_threads(args.threads)
    posts = sample_posts(data_root(args.data_root), args.posts)
    dirs = {"baseline": Path(args.baseline), "model": Path(args.model) if args.model else default_model_dir()}
    scorers = {k: Scorer.from_dir(d, batch_size=32, num_workers=0) for k, d in dirs.items()}
    for s in scorers.values():  # warm-up: lazy loads (tokenizer, language model, analyzers) out of the clock
        s.score(posts[:16])
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in scorers}
    for r in range(args.rounds):
        for k, s in scorers.items():
            rounds[k].append(measure(s, posts, args.single))
            print(f"round {r + 1} {k:8s} {scorers[k].model_version}: " + ", ".join(
                f"{m} {v:.1f}" for m, v in rounds[k][-1].items()), flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in rounds.items()}
    ratio = {m: med["model"][m] / med["baseline"][m] for m in med["model"]}
    print(f"\n{len(posts)} posts, {args.single} single-post calls per round, {args.rounds} rounds, {args.threads} threads")
    print("| model | version | batch posts/s | single post p50 ms | p95 ms |\n| --- | --- | --- | --- | --- |")
    for k in ("baseline", "model"):
        print(f"| {k} | {scorers[k].model_version} | {med[k]['posts_per_s']:.1f} | {med[k]['p50_ms']:.1f} | {med[k]['p95_ms']:.1f} |")
    print(f"| model / baseline | | {ratio['posts_per_s']:.2f}x | {ratio['p50_ms']:.2f}x | {ratio['p95_ms']:.2f}x |")
    if args.out:
        Path(args.out).write_text(json.dumps({"median": med, "ratio": ratio, "rounds": rounds,
                                              "versions": {k: s.model_version for k, s in scorers.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
