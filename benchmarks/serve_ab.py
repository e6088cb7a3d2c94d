"""Two endpoint configurations A/B/A/B in one run (the machine drifts, so only interleaved comparisons hold).

Deploys two copies of the endpoint side by side on one loopback-only Ray, `/a` and `/b`, each from its own
`build_app` arguments (JSON, merged over the CPU settings of serving/config.yaml), and loads them in turn
(a, b, b, a, a, b, ...) with a closed loop of one-post requests. Prints requests/s, p50/p99 and the CPU each
part of the path used, per phase, and the mean ratio b / a.

    # fused vs split topology (the default comparison)
    .venv/bin/python benchmarks/serve_ab.py --rounds 4
    # the shipped layout vs the first session's (split, 1 replica x 2 CPUs, batches of 32 waiting 10 ms)
    .venv/bin/python benchmarks/serve_ab.py --b '{"topology": "split", "num_replicas": 1, "num_cpus": 2,
        "batch": {"max_batch_size": 32, "batch_wait_timeout_s": 0.01, "forward_batch_size": 8}}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serve_latency import load_texts, measure_cpu  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    parser.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--a", default="{}", help="build_app arguments of A (JSON, over the base settings)")
    parser.add_argument("--b", default='{"topology": "split"}', help="build_app arguments of B (JSON, over the base)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--phase-s", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=18200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from serving.cli import read_config
    from serving.loadtest import closed_loop, text_bodies
    from serving.local_ray import local_ray, start_http

    texts, source = load_texts(Path(args.datasets), 512)
    bodies = text_bodies(texts, 1)
    base = {"model_dir": args.model, "topology": "fused", "num_replicas": max(1, os.cpu_count() or 1), "num_cpus": 1,
            "decode_workers": 0, "max_ongoing_requests": 64, "max_queued_requests": 512,
            "batch": read_config()[0]["batch"]}  # the sample config's CPU batch settings
    configs = {name: {**base, **json.loads(text)} for name, text in (("a", args.a), ("b", args.b))}
    cpus = sum(c["num_replicas"] * max(1, c["num_cpus"]) for c in configs.values())
    phases = []
    with local_ray(num_cpus=int(cpus)):
        from ray import serve

        from serving.app import build_app

        start_http("127.0.0.1", args.port)
        for name, config in configs.items():
            serve.run(build_app(config), name=name, route_prefix=f"/{name}")
        urls = {t: f"http://127.0.0.1:{args.port}/{t}/v1/moderations" for t in configs}
        for t in urls:  # warm-up
            asyncio.run(closed_loop(urls[t], bodies, 4, 3.0))
        print(f"texts: {source}; one post per request, c={args.concurrency}")
        for name, config in configs.items():
            print(f"  {name}: {json.dumps({k: v for k, v in config.items() if k != 'model_dir'})}")
        for r in range(args.rounds):
            for t in ("a", "b") if r % 2 == 0 else ("b", "a"):
                result, cpu = measure_cpu(lambda: asyncio.run(closed_loop(urls[t], bodies, args.concurrency,
                                                                          args.phase_s, 100_000)))
                s = result.summary()
                phases.append({"config": t, "round": r, **s, "cpu_cores": cpu})
                parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v >= 0.03)
                print(f"round {r} {t} {s['throughput']:6.1f} req/s  p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms"
                      f"  | CPU cores: {parts}")
    mean = {t: statistics.mean(p["throughput"] for p in phases if p["config"] == t) for t in ("a", "b")}
    print(f"\nmean req/s: a {mean['a']:.1f}, b {mean['b']:.1f}; b / a = {mean['b'] / max(mean['a'], 1e-9):.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"configs": configs, "phases": phases, "mean": mean}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
