"""Posts per forward pass: the model's forward alone at several batch sizes, interleaved in one run.

    python -m benchmarks.forward_batch                                   # 16 vs 32 (and 8, 64), bf16 and fp32
    python -m benchmarks.forward_batch --batch-sizes 16 32 --precisions fp32 --posts 512

Test posts of TweetEval (tweets) and of CONAN, Latent Hatred, Gab and Qian (longer posts) are prepared and
tokenized before the clock starts, cut into length-sorted windows of --window posts (as `moderation score` sorts
each chunk) and batched at each size; every round times each (precision, batch size) once, in turn, and the best
round is kept. It picks moderation.precision.DEFAULT_BATCH_SIZE (the default of `moderation score` and of the
Scorer): on the 2-core AVX512-BF16 CPU, 16 ran 1.08-1.13x the posts/s of 32 in bf16 and in fp32, tweets and longer
posts alike, and 1.4-1.6x that of 64; 8 was 0.94-0.96x of 16 in bf16 (docs/benchmarks.md). Ratios are within one run;
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = {"tweets": ("tweeteval_hate", "tweeteval_offensive"),
           "longer": ("conan", "implicit_hate", "gab_hate_corpus", "qian_interventions")}


def test_texts(datasets: Path, names: tuple[str, ...], limit: int) -> list[str]:
    texts = []
    for name in names:
        with open(datasets / name / "data.jsonl", encoding="utf-8") as f:
            texts += [r["text"] for r in map(json.loads, f) if r.get("split") == "test" and r.get("text")]
    step = max(1, len(texts) // limit)
    return texts[::step][:limit]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 8, 64])
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["bf16", "fp32"])
    p.add_argument("--posts", type=int, default=1024, help="posts of each kind (default: 1024)")
    p.add_argument("--window", type=int, default=128, help="length-sorted window (moderation score's --chunk-size)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if not (args.datasets / "tweeteval_hate" / "data.jsonl").is_file():
        print(f"error: datasets not found under {args.datasets} (give --datasets)", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from benchmarks.batch_throughput import ceiling  # the forward on windows built as the job builds them
    from moderation.cli import _quiet_libraries
    from moderation.scorer import Scorer

    _quiet_libraries()
    base = Scorer.from_dir(args.model, precision="fp32") if args.model else Scorer.default(precision="fp32")
    print(f"model {base.model_version}  torch threads {torch.get_num_threads()}  window {args.window}", flush=True)
    scorers = {(p, b): Scorer(base.model, base.info, batch_size=b, precision=p, device=str(base.device), ocr="off",
                              num_workers=0) for p in args.precisions for b in args.batch_sizes}
    best: dict[tuple[str, str, int], float] = {}
    for kind, names in SOURCES.items():
        posts = [{"id": str(i), "text": t} for i, t in enumerate(test_texts(args.datasets, names, args.posts))]
        for _ in range(args.rounds):
            for (precision, size), scorer in scorers.items():
                key = (kind, precision, size)
                best[key] = max(best.get(key, 0.0), ceiling(scorer, posts, None, args.window)["rows_per_s"])
    first = args.batch_sizes[0]
    print(f"{'posts':<7} {'precision':<9} {'batch':>5} {'posts/s':>9} {f'vs {first}':>7}")
    for (kind, precision, size), rate in best.items():
        print(f"{kind:<7} {precision:<9} {size:>5} {rate:>9.1f} {rate / best[(kind, precision, first)]:>6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
