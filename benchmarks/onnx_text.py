"""Small batches through ONNX Runtime: does `--onnx-text` make a lone post faster without changing a decision?

    python -m benchmarks.onnx_text                      # shipped default model, 200 test posts, 1 thread
    python -m benchmarks.onnx_text --posts 400 --threads 2 --int8

The same Scorer code path the endpoint uses (`Scorer.score([post])`: checks, language, lexical channel, forward,
calibration, policy), one post per call, for each post in turn under each runtime (the order rotates per post, so
a change of the machine's load hits each alike). Runtimes:

- `torch`: the model's PyTorch text encoder at the precision `--precision` resolves to (what serving runs with
  `--onnx-text off`);
- `onnx`: the same encoder exported to fp32 ONNX and run by ONNX Runtime (`--onnx-text auto`, the default);
- `onnx-int8` (`--int8`): that graph with its MatMuls quantised to int8 by onnxruntime's dynamic quantisation
  (measured only: not a runtime the Scorer offers). Also printed: how far its raw logits lie from fp32's per
  category (largest, p99, mean |difference|), and what an "int8-guarded" runtime would cost, built like
  bf16-guarded: its margin per category the largest |difference| over the first half of the posts, the share of
  the second half's posts whose int8 logits lie within that margin of a threshold (scored twice, the second time in
  fp32) and the decisions that still differ outside it.

With `--guarded`, also bf16-guarded scoring's posts/s with its fp32 re-scoring of the posts near a threshold in
PyTorch vs ONNX Runtime, in chunks of 128 and 8 posts (plain bf16 beside them): moderation.onnx_text.OnnxTextEncoder's
`spin`.

With `--batch-sizes 1,2,4,8`, also the time per post of batches of each size under torch and ONNX (the same
posts, the runtimes alternating per batch): where ONNX Runtime stops paying, which sets the Scorer's
`onnx_max_posts` (moderation.onnx_text.DEFAULT_MAX_POSTS).

Printed: per runtime the p50 / p90 / p99 latency of one post (ms) and its ratio to torch's p50 in this run; the
largest |calibrated score difference| against PyTorch fp32, and how many decisions (allow / review / block) and
blocks differ from PyTorch fp32's. Posts are drawn from the test splits of five shared text datasets (their real
length mix). Exit status 1 when the fp32 ONNX runtime changes a decision (it must not: it is the same fp32 graph).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _int8_runtime(fp32: Any, threads: int, folder: Path) -> Any:
    """An OnnxTextEncoder over the int8 dynamic quantisation of `fp32`'s graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from moderation.onnx_text import OnnxTextEncoder

    path = folder / (fp32.path.stem + "-int8.onnx")
    quantize_dynamic(str(fp32.path), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return OnnxTextEncoder(graph=path, threads=threads)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_text", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the shipped default model)")
    parser.add_argument("--data-dir", help="shared datasets folder (default: $MODERATION_DATA_DIR or ../shared/datasets)")
    parser.add_argument("--posts", type=int, default=200, help="test posts to score one at a time (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads (default 1, "
                        "as one serving replica per core)")
    parser.add_argument("--precision", default="auto", help="torch's precision (default auto, as serving)")
    parser.add_argument("--int8", action="store_true", help="also measure the int8 quantised graph")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", default=None, metavar="N,N,...",
                        help="also time batches of these sizes under torch and ONNX (per post), e.g. 1,2,4,8")
    parser.add_argument("--guarded", action="store_true",
                        help="also time bf16-guarded scoring with its fp32 re-scoring in PyTorch vs ONNX Runtime")
    args = parser.parse_args(argv)
    if args.posts < 1 or args.threads < 1:
        parser.error("--posts and --threads must be >= 1")

    import torch

    from benchmarks.model_cost import sample_posts
    from moderation.cli import _quiet_libraries
    from moderation.datasets import data_root
    from moderation.model_dir import default_model_dir
    from moderation.scorer import Scorer

    _quiet_libraries()
    torch.set_num_threads(args.threads)
    root = Path(args.data_dir) if args.data_dir else data_root()
    posts = sample_posts(root, args.posts, seed=args.seed)
    model_dir = Path(args.model) if args.model else default_model_dir()
    common = dict(batch_size=32, num_workers=0, ocr="off")
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as tmp:
        os.environ.setdefault("MODERATION_CACHE_DIR", tmp)
        scorers = {
            "reference fp32": Scorer.from_dir(model_dir, precision="fp32", onnx_text="off", **common),
            "torch": Scorer.from_dir(model_dir, precision=args.precision, onnx_text="off", **common),
            "onnx": Scorer.from_dir(model_dir, precision=args.precision, onnx_text="on", **common),
        }
        print(f"model {scorers['torch'].info.model_version}; torch precision {scorers['torch'].precision} "
              f"({scorers['torch'].precision_choice.reason}); {args.threads} thread(s); {len(posts)} posts; "
              f"onnx: {scorers['onnx'].onnx_text_choice}", flush=True)
        if args.int8:
            int8 = Scorer.from_dir(model_dir, precision="fp32", onnx_text="on", **common)
            int8.onnx_text = _int8_runtime(int8.onnx_text, args.threads, Path(tmp))
            scorers["onnx-int8"] = int8
        names = list(scorers)
        for scorer in scorers.values():  # warm-up: first calls allocate and (ONNX) optimise the graph
            for post in posts[:5]:
                scorer.score([post])
        latency: dict[str, list[float]] = {n: [] for n in names}
        results: dict[str, list[Any]] = {n: [] for n in names}
        for i, post in enumerate(posts):
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                start = time.perf_counter()
                result = scorers[name].score([post])[0]
                latency[name].append((time.perf_counter() - start) * 1000)
                results[name].append(result)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(posts)} posts", file=sys.stderr, flush=True)

        if args.int8:
            int8_guard_table(scorers["reference fp32"], scorers["onnx-int8"], posts)
        if args.guarded:
            guarded_table(model_dir, posts, args.threads, common)
        if args.batch_sizes:
            sizes = [int(x) for x in args.batch_sizes.split(",")]
            scorers["onnx"].onnx_max_posts = max(sizes)  # every batch measured through ONNX Runtime
            batch_table(scorers["torch"], scorers["onnx"], posts, sizes)

    reference = results["reference fp32"]
    failed = [r.error for r in reference if not r.ok]
    if failed:
        print(f"{len(failed)} posts failed to score, e.g. {failed[0]}", file=sys.stderr)
        return 2
    base = statistics.median(latency["torch"])
    print("\n| runtime | p50 ms | p90 ms | p99 ms | p50 vs torch | max abs score diff vs fp32 | decisions changed "
          "| blocks changed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    changed_onnx = 0
    for name in names:
        diffs, decisions, blocks = 0.0, 0, 0
        for ref, got in zip(reference, results[name]):
            for cat, c in ref.categories.items():
                diffs = max(diffs, abs(c.score - got.categories[cat].score))
            decisions += ref.action != got.action
            blocks += ({k for k, c in ref.categories.items() if c.flagged}
                       != {k for k, c in got.categories.items() if c.flagged})
        if name == "onnx":
            changed_onnx = decisions
        lat = latency[name]
        print(f"| {name} | {statistics.median(lat):.2f} | {_percentile(lat, 90):.2f} | {_percentile(lat, 99):.2f} "
              f"| {statistics.median(lat) / base:.2f}x | {diffs:.2e} | {decisions} | {blocks} |")
    return 1 if changed_onnx else 0


def int8_guard_table(reference: Any, int8: Any, posts: Sequence[Any]) -> None:
    """Print the int8 graph's logit differences from fp32 and the cost of guarding them (see the module docstring)."""
    from moderation.model import PreparedPost

    items = [it for it in reference.prepare_many(list(posts)) if isinstance(it, PreparedPost)]
    keep_max, int8.onnx_max_posts = int8.onnx_max_posts, len(items)  # every post through the int8 graph
    try:
        ref, truncated = reference.logits(items)
        low, _ = int8.logits(items)
    finally:
        int8.onnx_max_posts = keep_max
    diff = np.abs(ref - low)
    half = len(items) // 2
    print("\n| category | largest abs logit diff int8 vs fp32 | p99 | mean | guard margin (first half's largest) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    margin = {c: float(diff[:half, j].max()) for j, c in enumerate(reference.categories)}
    for j, c in enumerate(reference.categories):
        print(f"| {c} | {diff[:, j].max():.3f} | {np.quantile(diff[:, j], 0.99):.3f} | {diff[:, j].mean():.3f} "
              f"| {margin[c]:.3f} |")
    tail = items[half:]
    near = reference.near_thresholds(tail, low[half:], margin)
    exact = reference.results(tail, ref[half:], truncated[half:])
    quick = reference.results(tail, low[half:], truncated[half:])
    changed = sum(a.action != b.action for a, b, n in zip(exact, quick, near) if not n)
    print(f"int8-guarded on the second half ({len(tail)} posts): {near.mean():.1%} scored twice; "
          f"{changed} decisions changed outside the margin", flush=True)


def guarded_table(model_dir: Path, posts: Sequence[Any], threads: int, common: dict[str, Any]) -> None:
    """Print bf16-guarded posts/s in chunks of 128 (batch scoring) and of 8 (a serving batch) with the posts near a
    threshold re-scored in PyTorch fp32 (onnx_text off) or ONNX Runtime (on; its threads not spinning), plain bf16
    beside them; each scorer runs every chunk size twice, in alternating order, and the faster pass counts."""
    from moderation.scorer import Scorer

    sides = {"bf16": ("bf16", "off"), "guarded, re-scored in PyTorch": ("bf16-guarded", "off"),
             "guarded, re-scored in ONNX Runtime": ("bf16-guarded", "on")}
    scorers = {k: Scorer.from_dir(model_dir, precision=p, onnx_text=o, **common) for k, (p, o) in sides.items()}
    items = scorers["bf16"].prepare_many(list(posts))
    for scorer in scorers.values():
        scorer.logits(items[:16])
    print(f"\n| posts per call ({threads} threads) | " + " | ".join(f"{k} posts/s" for k in scorers) + " | ONNX / PyTorch |")
    print("| ---: |" + " ---: |" * (len(scorers) + 1))
    for chunk in (128, 8):
        best = {k: float("inf") for k in scorers}
        for rnd in range(2):
            for name in (list(scorers) if rnd == 0 else list(scorers)[::-1]):
                t0 = time.perf_counter()
                for i in range(0, len(items), chunk):
                    scorers[name].logits(items[i:i + chunk])
                best[name] = min(best[name], time.perf_counter() - t0)
        rate = {k: len(items) / v for k, v in best.items()}
        names = list(scorers)
        print(f"| {chunk} | " + " | ".join(f"{rate[k]:.1f}" for k in names)
              + f" | {rate[names[2]] / rate[names[1]]:.2f}x |", flush=True)
    stats = scorers["guarded, re-scored in ONNX Runtime"].forward_stats
    print(f"re-scored in fp32: {stats['rescored'] / max(stats['posts'], 1):.1%} of the posts", flush=True)


def batch_table(torch_scorer: Any, onnx_scorer: Any, posts: Sequence[Any], sizes: Sequence[int]) -> None:
    """Print the median ms per post of batches of each size under each runtime (alternating per batch)."""
    print("\n| posts per batch | torch ms / post | ONNX ms / post | ONNX / torch |")
    print("| ---: | ---: | ---: | ---: |")
    for size in sizes:
        per_post: dict[str, list[float]] = {"torch": [], "onnx": []}
        for k, start in enumerate(range(0, len(posts) - size + 1, size)):
            batch = list(posts[start:start + size])
            for name in (("torch", "onnx") if k % 2 == 0 else ("onnx", "torch")):
                scorer = torch_scorer if name == "torch" else onnx_scorer
                t0 = time.perf_counter()
                scorer.score(batch)
                per_post[name].append((time.perf_counter() - t0) * 1000 / size)
        t, o = statistics.median(per_post["torch"]), statistics.median(per_post["onnx"])
        print(f"| {size} | {t:.2f} | {o:.2f} | {o / t:.2f}x |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
