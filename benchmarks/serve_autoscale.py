"""Autoscaling, live: the endpoint with `autoscaling` set, loaded then left idle, its replica count over time.

Starts a loopback-only Ray, deploys the app (fused topology by default) with
`autoscaling: {min_replicas, max_replicas, target_ongoing_requests, upscale_delay_s, downscale_delay_s}`,
then runs three phases: idle, a closed loop of `--concurrency` one-post requests, idle again. Every
`--every-s` seconds it prints the running replica count (serve.status()) and the requests sent per second
over the last interval (closed loop: about the rate answered). Bounded in time and requests; 127.0.0.1 only.

    .venv/bin/python benchmarks/serve_autoscale.py --load-s 60 --idle-s 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run by path: the repository root holds the benchmarks package

from benchmarks.serve_latency import load_texts  # noqa: E402
from serving.cli import read_config  # noqa: E402
from serving.loadtest import closed_loop, text_bodies  # noqa: E402
from serving.local_ray import local_ray, start_http  # noqa: E402


def running_replicas(serve: Any, app: str, deployment: str) -> int:
    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    parser.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--topology", choices=("fused", "split"), default="fused")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--target-ongoing", type=float, default=4.0, help="target_ongoing_requests per replica")
    parser.add_argument("--upscale-delay-s", type=float, default=5.0)
    parser.add_argument("--downscale-delay-s", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warm-s", type=float, default=10.0, help="idle seconds before the load")
    parser.add_argument("--load-s", type=float, default=60.0)
    parser.add_argument("--idle-s", type=float, default=40.0, help="idle seconds after the load")
    parser.add_argument("--every-s", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--out", default=None, help="write the timeline as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts, source = load_texts(Path(args.datasets), 512)
    bodies = text_bodies(texts, 1)
    deployment = "ModerationAPI" if args.topology == "fused" else "ModerationModel"
    autoscaling = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
                   "target_ongoing_requests": args.target_ongoing, "upscale_delay_s": args.upscale_delay_s,
                   "downscale_delay_s": args.downscale_delay_s}
    timeline: list[dict[str, Any]] = []
    with local_ray(num_cpus=max(2, args.max_replicas)) as ray:  # noqa: F841 - Ray stays up for the block
        from ray import serve

        from serving.app import build_app  # deferred: Ray, imported once its loopback environment is set

        start_http("127.0.0.1", args.port)
        serve.run(build_app({"model_dir": args.model, "topology": args.topology, "num_cpus": 1, "decode_workers": 0,
                             "autoscaling": autoscaling,
                             "batch": read_config()[0]["batch"]}),  # the sample config's CPU batch settings
                  name="auto", route_prefix="/auto")
        url = f"http://127.0.0.1:{args.port}/auto/v1/moderations"
        done: dict[str, Any] = {}
        counter = {"sent": 0}

        def counting(i: int) -> bytes:  # the body maker, called once per request sent: the per-interval rate
            counter["sent"] += 1
            return bodies(i)

        start = time.perf_counter()
        phases = [("idle", args.warm_s), ("load", args.load_s), ("idle", args.idle_s)]
        print(f"autoscaling {json.dumps(autoscaling)}; {args.concurrency} clients during the load; texts: {source}")
        print(f"{'t (s)':>6} {'phase':<5} {'replicas':>8} {'req/s':>7}")
        for name, seconds in phases:
            thread = None
            if name == "load":
                thread = threading.Thread(target=lambda: done.update(load=asyncio.run(closed_loop(
                    url, counting, args.concurrency, args.load_s, 100_000)).summary()))
                thread.start()
            phase_end = time.perf_counter() + seconds
            last_n, last_t = counter["sent"], time.perf_counter()
            while time.perf_counter() < phase_end:
                time.sleep(min(args.every_s, max(0.0, phase_end - time.perf_counter())))
                now = time.perf_counter()
                rate = (counter["sent"] - last_n) / max(now - last_t, 1e-9)
                last_n, last_t = counter["sent"], now
                point = {"t": round(now - start, 1), "phase": name,
                         "replicas": running_replicas(serve, "auto", deployment), "req_per_s": round(rate, 1)}
                timeline.append(point)
                print(f"{point['t']:>6.1f} {name:<5} {point['replicas']:>8} {rate:>7.1f}")
            if thread is not None:
                thread.join()
        peak = max(p["replicas"] for p in timeline if p["phase"] == "load")
        final = timeline[-1]["replicas"]
        print(f"\nreplicas: {timeline[0]['replicas']} idle -> {peak} under load -> {final} after {args.idle_s:.0f} s idle")
        if "load" in done:
            s = done["load"]
            print(f"load phase: {s['ok']} ok, {s['shed']} shed, {s['other']} other, p50 {s['p50_ms']:.0f} ms, "
                  f"p99 {s['p99_ms']:.0f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps({"autoscaling": autoscaling, "timeline": timeline,
                                              "load": done.get("load")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
