"""Serving benchmark: latency and throughput of the Ray Serve endpoint against the scorer's bare ceiling.

One command, one run, every ratio measured within it (the machine is shared and noisy):

1. ceiling: the scorer in-process, batches of `--batch-size` text posts, torch on `--num-cpus` threads
   (posts/s), and its single-post latency;
2. the endpoint (local Ray on 127.0.0.1, the same model, one model replica with `--num-cpus` CPUs):
   a closed-loop sweep of concurrency (1, 4, 16, 64), then an open loop (Poisson arrivals) at half the
   saturation rate; p50 / p95 / p99 latency and throughput of each phase;
3. the same endpoint redeployed with max_batch_size=1 (batching off), closed loop at the concurrencies
   where batching was measured at saturation.

Text-only posts (real tweets from ../shared/datasets/tweeteval_offensive when present), one post per
request. Every phase is bounded in time (`--phase-s`) and requests; loopback only. Prints a table and the
targets, and writes the figures as JSON (`--out`).

    .venv/bin/python eval/benchmarks/serve_latency.py --phase-s 12 --out serve_latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def load_texts(datasets: Path, n: int) -> tuple[list[str], str]:
    """Up to n non-empty texts of the TweetEval-offensive test split; a synthetic set (said so) when absent."""
    path = datasets / "tweeteval_offensive" / "data.jsonl"
    texts: list[str] = []
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row.get("split") == "test" and (row.get("text") or "").strip():
                    texts.append(row["text"])
                if len(texts) >= n:
                    break
    if texts:
        return texts, f"{path} (test split, {len(texts)} texts)"
    print(f"WARNING: {path} not found; using synthetic sentences", file=sys.stderr)
    words = "the of people this post is about a and to in that what you think will never be again".split()
    return [" ".join(words[(i + j) % len(words)] for j in range(12 + i % 20)) for i in range(n)], "synthetic"


def bare_ceiling(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """Posts/s of Scorer.score on full batches in this process, and the single-post latency (s)."""
    import torch

    from moderation.scorer import Scorer

    torch.set_num_threads(max(1, int(args.num_cpus)))
    opts = dict(batch_size=args.batch_size, precision=args.precision, num_workers=0)
    scorer = Scorer.from_dir(args.model, **opts) if args.model else Scorer.default(**opts)
    info = {"model_version": scorer.model_version, "trained": scorer.trained, "torch_threads": torch.get_num_threads()}

    def batch(i: int, size: int) -> list[dict]:
        return [{"id": str(j), "text": texts[(i * size + j) % len(texts)]} for j in range(size)]

    for i in range(3):  # warm-up
        scorer.score(batch(i, args.batch_size))
    posts, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < args.phase_s:
        posts += len(scorer.score(batch(i, args.batch_size)))
        i += 1
    elapsed = time.perf_counter() - start
    singles, start, i = [], time.perf_counter(), 0
    while time.perf_counter() - start < min(5.0, args.phase_s):
        t0 = time.perf_counter()
        scorer.score(batch(i, 1))
        singles.append(time.perf_counter() - t0)
        i += 1
    scorer.close()
    del scorer
    gc.collect()
    return {**info, "posts_per_s": posts / elapsed, "posts": posts, "seconds": elapsed,
            "single_post_p50_ms": statistics.median(singles) * 1000, "single_posts": len(singles)}


def serve_args(args: argparse.Namespace, max_batch_size: int, wait_s: float) -> dict[str, Any]:
    return {"model_dir": args.model, "precision": args.precision, "num_cpus": args.num_cpus, "decode_workers": 0,
            "batch": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s},
            # Same replica capacity in both runs; a queue large enough that the sweep sheds nothing.
            "max_ongoing_requests": 2 * args.batch_size, "max_queued_requests": 512}


def deploy(args: argparse.Namespace, max_batch_size: int, wait_s: float) -> float:
    """(Re)deploy the app and wait until it answers; returns seconds taken."""
    from ray import serve

    from serving.app import build_app

    start = time.perf_counter()
    serve.run(build_app(serve_args(args, max_batch_size, wait_s)), name="moderation", route_prefix="/")
    return time.perf_counter() - start


def run_phase(coro) -> Any:
    return asyncio.run(coro)


def metrics_check(ray: Any) -> dict[str, Any]:
    """Read Ray's Prometheus endpoint on this node and report which of our metrics it exports."""
    import httpx

    names = ["ray_moderation_requests_total", "ray_moderation_request_latency_ms", "ray_moderation_items_total",
             "ray_moderation_batch_size", "ray_moderation_batch_latency_ms", "ray_serve_num_http_requests"]
    try:
        port = ray.nodes()[0]["MetricsExportPort"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except Exception as exc:  # noqa: BLE001 - reported, not fatal for the benchmark
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"port": port, "found": {n: (n in text) for n in names}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    parser.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--phase-s", type=float, default=12.0, help="seconds per measured phase")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="seconds of warm-up before each deployment's phases")
    parser.add_argument("--concurrency", default="1,4,16,64", help="closed-loop sweep")
    parser.add_argument("--batch-size", type=int, default=32, help="max_batch_size with batching on")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--num-cpus", type=float, default=float(os.cpu_count() or 1), help="CPUs of the model replica")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--max-requests", type=int, default=20_000, help="cap per phase")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.model:
        args.model = str(Path(args.model).resolve())
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from tqdm import tqdm

    from serving.loadtest import closed_loop, open_loop, text_bodies
    from serving.local_ray import local_ray, start_http

    texts, source = load_texts(Path(args.datasets), 512)
    bodies = text_bodies(texts)
    url = f"http://127.0.0.1:{args.port}/v1/moderations"
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]), "texts": source,
                              "settings": {k: v for k, v in vars(args).items()}, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    n_phases = 1 + len(concurrencies) + 1 + 2  # the batching-off run measures one or two concurrencies
    bar = tqdm(total=n_phases, desc="serve benchmark", unit="phase")

    bar.set_postfix_str("bare ceiling (in-process)")
    report["ceiling"] = bare_ceiling(args, texts)
    bar.update()

    def phase(result) -> dict[str, Any]:
        s = result.summary()
        bar.update()
        return s

    with local_ray(num_cpus=int(max(args.num_cpus, 1))) as ray:
        start_http("127.0.0.1", args.port)
        bar.set_postfix_str("deploying (batching on)")
        report["deploy_s_on"] = deploy(args, args.batch_size, args.batch_wait_ms / 1000.0)
        run_phase(closed_loop(url, bodies, 4, args.warmup_s, name="warm-up"))
        closed = []
        for c in concurrencies:
            bar.set_postfix_str(f"closed loop c={c}")
            closed.append({"concurrency": c, **phase(run_phase(closed_loop(url, bodies, c, args.phase_s, args.max_requests)))})
        report["closed_on"] = closed
        saturation = max(closed, key=lambda s: s["throughput"])
        single = min(closed, key=lambda s: s["concurrency"])  # the lowest concurrency (1): a lone request
        rate = 0.5 * saturation["throughput"]
        bar.set_postfix_str(f"open loop {rate:.1f}/s")
        report["open_half"] = phase(run_phase(open_loop(url, bodies, rate, args.phase_s, args.max_requests)))
        report["metrics"] = metrics_check(ray)

        bar.set_postfix_str("redeploying (max_batch_size=1)")
        report["deploy_s_off"] = deploy(args, 1, 0.0)
        run_phase(closed_loop(url, bodies, 4, args.warmup_s, name="warm-up"))
        closed_off = []
        for c in sorted({saturation["concurrency"], max(concurrencies)}):
            bar.set_postfix_str(f"batching off, closed loop c={c}")
            closed_off.append({"concurrency": c, **phase(run_phase(closed_loop(url, bodies, c, args.phase_s, args.max_requests)))})
        report["closed_off"] = closed_off
    bar.close()

    ceiling = report["ceiling"]["posts_per_s"]
    on_by_name = {s["name"]: s for s in closed}
    best_off = max(closed_off, key=lambda s: s["throughput"])
    same_c_ratio = {s["name"]: on_by_name[s["name"]]["throughput"] / max(s["throughput"], 1e-9) for s in closed_off}
    report["targets"] = {
        "saturation_over_ceiling": {"value": saturation["throughput"] / ceiling, "target": ">= 0.70"},
        "batching_on_over_off": {"value": saturation["throughput"] / max(best_off["throughput"], 1e-9),
                                 "target": ">= 3.0", "same_concurrency": same_c_ratio},
        "p99_half_rate_over_single": {"value": (report["open_half"]["p99_ms"] or float("inf")) / single["p50_ms"],
                                      "target": "<= 3.0", "single_request_p50_ms": single["p50_ms"]},
    }

    print()
    print(f"model {report['ceiling']['model_version']} (trained: {report['ceiling']['trained']}), texts: {source}")
    print(f"ceiling (in-process, batch {args.batch_size}, {report['ceiling']['torch_threads']} threads): "
          f"{ceiling:.1f} posts/s; single post {report['ceiling']['single_post_p50_ms']:.1f} ms")
    header = f"{'phase':<28} {'sent':>6} {'ok':>6} {'503':>5} {'other':>5} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    rows = [("on  " + s["name"], s) for s in closed] + [("on  " + report["open_half"]["name"], report["open_half"])]
    rows += [("off " + s["name"], s) for s in closed_off]
    for label, s in rows:
        print(f"{label:<28} {s['sent']:>6} {s['ok']:>6} {s['shed']:>5} {s['other']:>5} {s['throughput']:>7.1f} "
              f"{_f(s['p50_ms'])} {_f(s['p95_ms'])} {_f(s['p99_ms'])}")
    print()
    for name, t in report["targets"].items():
        print(f"{name:<28} {t['value']:.2f}  (target {t['target']})")
    print(f"metrics endpoint: {report['metrics']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.out}")
    return 0


def _f(v: float | None) -> str:
    return f"{v:>8.1f}" if v is not None else f"{'-':>8}"


if __name__ == "__main__":
    raise SystemExit(main())
