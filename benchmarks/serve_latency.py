"""Serving benchmark: latency and throughput of the Ray Serve endpoint against the scorer's bare ceiling.

One command, one run, every ratio measured within it (the machine is shared and noisy):

1. ceiling: the scorer in-process, batches of `--ceiling-batch` text posts (length-sorted chunks of
   `--forward-batch-size` per forward pass), torch on as many threads as the
   replicas have CPUs together (`--num-replicas` x `--num-cpus`) (posts/s), and its single-post latency; measured three times (before, between and after the endpoint
   phases) because the machine's load drifts;
2. two copies of the endpoint side by side on one local Ray (127.0.0.1), the same model, `--num-replicas`
   model replicas each with `--num-cpus` CPUs, in the `--topology` (fused by default: the ingress replica holds
   the model), `/on` batches (max_batch_size `--batch-size`), `/off` has max_batch_size=1.
   Only one is loaded at a time (an idle replica costs nothing), so they can be interleaved: a closed-loop
   sweep of concurrency (1, 4, 16, 64) where each `/on` phase at 16 and 64 is followed by the same phase on
   `/off` (and, with --repeats 2, then `/off` and `/on` again: ABBA, so drift cancels); then an open loop
   (Poisson arrivals) on `/on` at half its saturation rate, and (with --repeats 2, the default) the lone-request
   phase (c=1) once more, pooled with the first (its p50 is the p99 ratio's denominator, and one 10 s phase of it
   read 11.2-15.6 ms on the same code). p50 / p95 / p99 latency and throughput.

Text-only posts (real tweets from ../shared/datasets/tweeteval_offensive when present), one post per
request. Every phase is bounded in time (`--phase-s`) and requests; loopback only. Prints a table, the CPU
each part of the path used at the highest concurrency (replicas, proxy, the rest of Ray, the load generator:
cores and ms of CPU per request), the targets, and writes the figures as JSON (`--out`).

    .venv/bin/python benchmarks/serve_latency.py --phase-s 12 --out serve_latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run by path: the repository root holds the benchmarks package

from benchmarks.figures import record, serve_latency_figures  # noqa: E402
from moderation.scorer import Scorer  # noqa: E402
from serving.cli import DEFAULT_PROXY  # noqa: E402
from serving.haproxy import resolve_proxy  # noqa: E402
from serving.loadtest import CLIENTS, DEFAULT_CLIENT, closed_loop, open_loop, text_bodies  # noqa: E402
from serving.local_ray import local_ray, start_http  # noqa: E402


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


def load_scorer(args: argparse.Namespace):
    import torch

    torch.set_num_threads(max(1, int(args.num_cpus * args.num_replicas)))  # the same cores as all the replicas
    # Batches of --batch-size posts, run in length-sorted chunks of --forward-batch-size, as the replica does.
    opts = dict(batch_size=args.forward_batch_size or args.batch_size, precision=args.precision, num_workers=0,
                onnx_text=args.onnx_text)
    return Scorer.from_dir(args.model, **opts) if args.model else Scorer.default(**opts)


def bare_ceiling(scorer, texts: list[str], seconds: float, size: int) -> dict[str, Any]:
    """Posts/s of Scorer.score on batches of `size` posts in this process, and the single-post latency (ms)."""
    import torch

    def batch(i: int, n: int) -> list[dict]:
        return [{"id": str(j), "text": texts[(i * n + j) % len(texts)]} for j in range(n)]

    scorer.score(batch(0, size))  # warm-up
    posts, start, i = 0, time.perf_counter(), 1
    while time.perf_counter() - start < seconds:
        posts += len(scorer.score(batch(i, size)))
        i += 1
    elapsed = time.perf_counter() - start
    singles, start = [], time.perf_counter()
    while time.perf_counter() - start < min(5.0, seconds):
        t0 = time.perf_counter()
        scorer.score(batch(i, 1))
        singles.append(time.perf_counter() - t0)
        i += 1
    return {"posts_per_s": posts / elapsed, "posts": posts, "seconds": elapsed, "torch_threads": torch.get_num_threads(),
            "single_post_p50_ms": statistics.median(singles) * 1000, "single_posts": len(singles)}


def serve_args(args: argparse.Namespace, max_batch_size: int, wait_s: float) -> dict[str, Any]:
    return {"model_dir": args.model, "precision": args.precision, "onnx_text": args.onnx_text,
            "num_cpus": args.num_cpus, "decode_workers": 0,
            "topology": args.topology, "num_replicas": args.num_replicas,
            "batch": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s,
                      "forward_batch_size": min(args.forward_batch_size or max_batch_size, max_batch_size)},
            # Same replica capacity in both runs; a queue large enough that the sweep sheds nothing.
            "max_ongoing_requests": max(64, 2 * args.batch_size), "max_queued_requests": 512}


def deploy(args: argparse.Namespace, name: str, max_batch_size: int, wait_s: float) -> float:
    """Deploy one copy of the app at /<name> and wait until it answers; returns seconds taken."""
    from ray import serve

    from serving.app import build_app  # deferred: Ray, imported once its loopback environment is set

    start = time.perf_counter()
    serve.run(build_app(serve_args(args, max_batch_size, wait_s)), name=name, route_prefix=f"/{name}")
    return time.perf_counter() - start


def run_phase(coro) -> Any:
    return asyncio.run(coro)


def _role(cmdline: str) -> str | None:
    """Which part of the serving path a process is, from its title (Ray names its workers `ray::...`)."""
    if cmdline.startswith("ray::ServeReplica"):
        # Fused topology: the ModerationAPI replicas hold the model too (no ModerationModel replicas exist).
        return "model replicas" if "ModerationModel" in cmdline else (
            "ModerationAPI replicas" if ":ModerationAPI" in cmdline else "other replicas")
    if cmdline.startswith("ray::ProxyActor"):
        return "proxy"
    if cmdline.split(" ", 1)[0].endswith("haproxy"):
        return "haproxy"
    if cmdline.startswith("ray::") or "raylet" in cmdline or "gcs_server" in cmdline:
        return "ray (other)"
    return None


def measure_cpu(run: Any, session: int | None = None) -> tuple[Any, dict[str, float]]:
    """Run `run()` and return its result with the CPU used meanwhile (cores, i.e. CPU seconds per wall second)
    by each part of the path: replicas, proxy (Ray's, or HAProxy), the rest of Ray, and this process (the load
    generator). session: count only the serving processes of this session id (a server started in its own)."""
    import psutil

    procs: dict[int, tuple[Any, str]] = {os.getpid(): (psutil.Process(), "load generator")}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if session is not None and os.getsid(p.pid) != session:
                continue
        except OSError:
            continue
        role = _role(" ".join(p.info["cmdline"] or []))
        if role:
            procs[p.pid] = (p, role)

    def times() -> dict[int, float]:
        out = {}
        for pid, (p, _) in procs.items():
            try:
                t = p.cpu_times()
                out[pid] = t.user + t.system
            except psutil.Error:  # a process that ended meanwhile is left out
                pass
        return out

    before, start = times(), time.perf_counter()
    result = run()
    after, wall = times(), time.perf_counter() - start
    cores: dict[str, float] = {}
    for pid, t in after.items():
        if pid in before:
            role = procs[pid][1]
            cores[role] = cores.get(role, 0.0) + (t - before[pid]) / wall
    return result, {k: round(v, 3) for k, v in sorted(cores.items())}


def replica_ceiling(texts: list[str], seconds: float, size: int, deployment: str, replicas: int) -> dict[str, Any]:
    """Posts/s of the /on model replicas called through a handle with `size` posts per call, two calls in
    flight per replica: the scorer inside the replicas' processes, without HTTP, proxy or JSON."""
    from collections import deque

    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name="on")

    def posts(i: int) -> list[dict]:
        return [{"id": str(j), "text": texts[(i * size + j) % len(texts)], "image": None} for j in range(size)]

    handle.score.remote(posts(0)).result()
    window: deque = deque(handle.score.remote(posts(i)) for i in range(1, 1 + 2 * replicas))
    n, start, i = 0, time.perf_counter(), 1 + 2 * replicas
    while window:
        n += len(window.popleft().result())
        if time.perf_counter() - start < seconds:
            window.append(handle.score.remote(posts(i)))
            i += 1
    elapsed = time.perf_counter() - start
    return {"posts_per_s": n / elapsed, "posts": n, "seconds": elapsed}


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
    parser.add_argument("--precision", choices=("fp32", "bf16", "bf16-guarded", "auto"), default="fp32")
    parser.add_argument("--onnx-text", choices=("auto", "on", "off"), default="auto",
                        help="small batches' text encoder in ONNX Runtime (as `moderation serve --onnx-text`)")
    parser.add_argument("--phase-s", type=float, default=12.0, help="seconds per measured phase")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="seconds of warm-up before each deployment's phases")
    parser.add_argument("--concurrency", default="1,4,16,64", help="closed-loop sweep")
    # Defaults = serving/config.yaml's CPU settings: on this CPU a forward pass costs as much per post at batch 1
    # as at 8 or 32 (padding even makes it dearer), so batches stay small and never wait for company.
    parser.add_argument("--batch-size", type=int, default=8, help="max_batch_size with batching on")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0, help="batch_wait_timeout_s with batching on, ms")
    parser.add_argument("--ceiling-batch", type=int, default=32, help="posts per call for both ceilings")
    parser.add_argument("--forward-batch-size", type=int, default=8,
                        help="length-sorted chunk per forward pass inside a batch (0: the whole batch)")
    parser.add_argument("--proxy", choices=("python", "haproxy"), default=None,
                        help="HTTP request path (serving.haproxy; default: moderation serve's, serving.cli.DEFAULT_PROXY)")
    parser.add_argument("--topology", choices=("fused", "split"), default="fused",
                        help="fused: the ingress replica holds the model; split: ingress and model deployments")
    parser.add_argument("--num-replicas", type=int, default=max(1, os.cpu_count() or 1),
                        help="model replicas (default: one per core)")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (= torch threads) per model replica")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--max-requests", type=int, default=20_000, help="cap per phase")
    parser.add_argument("--posts-per-request", type=int, default=1,
                        help="text posts per request (throughput columns are requests/s; posts/s = x this)")
    parser.add_argument("--repeats", type=int, choices=(1, 2), default=2,
                        help="2: batching on/off phases in ABBA order so that load drift cancels, and the lone-"
                             "request phase again after the open loop (pooled)")
    parser.add_argument("--client", choices=CLIENTS, default=DEFAULT_CLIENT,
                        help="the load generator's HTTP client (serving.loadtest; default: %(default)s)")
    parser.add_argument("--client-ab", action="store_true",
                        help="also load /on at the saturating concurrency with each client (httpx, raw, raw, httpx), "
                             "with the CPU each process used: what the load generator's own CPU costs the endpoint")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--record", action="store_true",
                        help="also record the operating points in benchmarks/figures/ (read by `moderation capacity`)")
    args = parser.parse_args(argv)
    if args.model:
        args.model = str(Path(args.model).resolve())
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    deployment = "ModerationAPI" if args.topology == "fused" else "ModerationModel"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from tqdm import tqdm

    texts, source = load_texts(Path(args.datasets), 512)
    bodies = text_bodies(texts, args.posts_per_request)
    url = {mode: f"http://127.0.0.1:{args.port}/{mode}/v1/moderations" for mode in ("on", "off")}
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]), "texts": source,
                              "settings": dict(vars(args)), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    off_cs = [c for c in concurrencies if c >= 16] or [max(concurrencies)]
    n_phases = (5 + len(concurrencies) + len(off_cs) * (2 * args.repeats - 1) + 1 + (args.repeats > 1)
                + (4 if args.client_ab else 0))
    bar = tqdm(total=n_phases, desc="serve benchmark", unit="phase")

    def step(label: str) -> None:
        bar.set_postfix_str(label)

    def phase(result, **extra: Any) -> dict[str, Any]:
        bar.update()
        return {**extra, **result.summary()}

    def closed_phase(label: str, mode: str, c: int, client: str = args.client, **extra: Any) -> dict[str, Any]:
        """One closed-loop phase of `c` clients on /mode, with the CPU each part of the path used."""
        step(label)
        result, cpu = measure_cpu(lambda: run_phase(closed_loop(url[mode], bodies, c, args.phase_s, args.max_requests,
                                                                 client=client)))
        return phase(result, mode=mode, concurrency=c, cpu_cores=cpu, **extra)

    step("loading the scorer in-process")
    scorer = load_scorer(args)
    report["model"] = {"model_version": scorer.model_version, "trained": scorer.trained}
    # What runs (the replicas resolve "auto" as this process did, on the same machine and model): the recorded
    # figures name it, so that `moderation capacity` plans for the precision that was measured.
    report["settings"]["precision_asked"] = args.precision
    report["settings"]["precision"] = scorer.precision
    report["settings"]["onnx_text_asked"] = args.onnx_text
    report["settings"]["onnx_text"] = scorer.onnx_text_choice
    report["settings"]["onnx_text_on"] = scorer.onnx_text is not None
    ceilings = []
    step("bare ceiling 1/3")
    ceilings.append(bare_ceiling(scorer, texts, args.phase_s, args.ceiling_batch))
    bar.update()

    # /on and /off both deployed: Ray's CPU count is logical, and only one of them works at a time.
    if args.proxy is None:
        args.proxy = report["settings"]["proxy"] = resolve_proxy(DEFAULT_PROXY)[0]
    with local_ray(num_cpus=int(2 * args.num_replicas * max(args.num_cpus, 1)), proxy=args.proxy) as ray:
        start_http("127.0.0.1", args.port)
        step("deploying /on and /off")
        report["deploy_s"] = {"on": deploy(args, "on", args.batch_size, args.batch_wait_ms / 1000.0),
                              "off": deploy(args, "off", 1, 0.0)}
        for mode in ("on", "off"):
            run_phase(closed_loop(url[mode], bodies, 4, args.warmup_s, name="warm-up", client=args.client))
        step("in-replica ceiling 1/2")
        replica_ceilings = [replica_ceiling(texts, args.phase_s, args.ceiling_batch, deployment, args.num_replicas)]
        bar.update()
        closed_on: list[dict[str, Any]] = []
        closed_off: list[dict[str, Any]] = []
        for c in concurrencies:
            order = ["on"] + (["off", "off", "on"] if args.repeats > 1 else ["off"]) if c in off_cs else ["on"]
            for k, mode in enumerate(order):
                (closed_on if mode == "on" else closed_off).append(
                    closed_phase(f"/{mode} closed loop c={c}", mode, c, repeat=k))
        report["closed_on"], report["closed_off"] = closed_on, closed_off
        step("bare ceiling 2/3")
        ceilings.append(bare_ceiling(scorer, texts, args.phase_s, args.ceiling_batch))
        bar.update()
        step("in-replica ceiling 2/2")
        replica_ceilings.append(replica_ceiling(texts, args.phase_s, args.ceiling_batch, deployment, args.num_replicas))
        bar.update()
        on_by_c = _merge(closed_on)
        saturation = max(on_by_c.values(), key=lambda s: s["throughput"])
        rate = 0.5 * saturation["throughput"]
        step(f"/on open loop {rate:.1f}/s")
        report["open_half"] = phase(run_phase(open_loop(url["on"], bodies, rate, args.phase_s, args.max_requests,
                                                        client=args.client)), mode="on", rate=rate)
        if args.repeats > 1:  # the lone request again, at the end: its p50 is the ratio's denominator, pooled
            c = min(concurrencies)
            closed_on.append(closed_phase(f"/on closed loop c={c} again", "on", c, repeat=1))
            on_by_c = _merge(closed_on)
        single = on_by_c[min(on_by_c)]  # the lowest concurrency (1): a lone request at a time
        if args.client_ab:
            c = saturation["concurrency"]
            report["client_ab"] = [{"client": client, **closed_phase(f"/on c={c} with the {client} client", "on", c,
                                                                      client=client)}
                                   for client in ("httpx", "raw", "raw", "httpx")]
        report["metrics"] = metrics_check(ray)
    step("bare ceiling 3/3")
    ceilings.append(bare_ceiling(scorer, texts, args.phase_s, args.ceiling_batch))
    bar.update()
    bar.close()
    scorer.close()
    report["ceilings"] = ceilings
    report["replica_ceilings"] = replica_ceilings

    ceiling = statistics.median(c["posts_per_s"] for c in ceilings)
    replica_ceiling_mean = statistics.mean(c["posts_per_s"] for c in replica_ceilings)
    off_by_c = _merge(closed_off)
    same_c = {c: on_by_c[c]["throughput"] / max(off_by_c[c]["throughput"], 1e-9) for c in off_by_c}
    best_off = max(off_by_c.values(), key=lambda s: s["throughput"])
    report["summary_on"], report["summary_off"] = list(on_by_c.values()), list(off_by_c.values())
    report["targets"] = {
        "saturation_over_ceiling": {"value": saturation["throughput"] * args.posts_per_request / ceiling, "target": ">= 0.70",
                                    "saturation_req_s": saturation["throughput"], "ceiling_posts_s_median": ceiling},
        "saturation_over_replica_ceiling": {"value": saturation["throughput"] * args.posts_per_request / replica_ceiling_mean,
                                            "target": ">= 0.70", "replica_ceiling_posts_s": replica_ceiling_mean},
        "batching_on_over_off": {"value": saturation["throughput"] / max(best_off["throughput"], 1e-9),
                                 "target": ">= 3.0", "same_concurrency": same_c},
        "p99_half_rate_over_single": {"value": (report["open_half"]["p99_ms"] or float("inf")) / single["p50_ms"],
                                      "target": "<= 3.0", "single_request_p50_ms": single["p50_ms"]},
    }

    print()
    print(f"model {report['model']['model_version']} (trained: {report['model']['trained']}), texts: {source}")
    print("ceiling (in-process, batch %d, %d threads): %s posts/s (median %.1f); single post %s ms" % (
        args.ceiling_batch, ceilings[0]["torch_threads"], " / ".join(f"{c['posts_per_s']:.1f}" for c in ceilings), ceiling,
        " / ".join(f"{c['single_post_p50_ms']:.1f}" for c in ceilings)))
    print("topology %s, %d model replica(s) x %g CPU, request path: %s proxy" % (
        args.topology, args.num_replicas, args.num_cpus, args.proxy))
    print("ceiling in the replicas (handle calls of %d posts, no HTTP): %s posts/s" % (
        args.ceiling_batch, " / ".join(f"{c['posts_per_s']:.1f}" for c in replica_ceilings)))
    header = f"{'phase':<26} {'sent':>6} {'ok':>6} {'503':>5} {'other':>5} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    rows = [(f"/{s['mode']} c={s['concurrency']} #{s['repeat']}", s) for s in closed_on + closed_off]
    rows.sort(key=lambda r: (r[1]["concurrency"], r[1]["mode"] != "on", r[1]["repeat"]))
    rows.append((f"/on open {report['open_half']['rate']:.1f}/s", report["open_half"]))
    for label, s in rows:
        print(f"{label:<26} {s['sent']:>6} {s['ok']:>6} {s['shed']:>5} {s['other']:>5} {s['throughput']:>7.1f} "
              f"{_f(s['p50_ms'])} {_f(s['p95_ms'])} {_f(s['p99_ms'])}")
    print()
    top = max(concurrencies)
    for s in closed_on + closed_off:
        if s["concurrency"] == top and s["throughput"] > 0:
            parts = ", ".join(f"{k} {v:.2f} ({1000 * v / s['throughput']:.1f} ms/req)" for k, v in s["cpu_cores"].items())
            print(f"CPU cores at /{s['mode']} c={top} #{s['repeat']}: {parts}; total {sum(s['cpu_cores'].values()):.2f}")
    print()
    for name, t in report["targets"].items():
        print(f"{name:<28} {t['value']:.2f}  (target {t['target']})")
    if report.get("client_ab"):
        print()
        by = {k: [p for p in report["client_ab"] if p["client"] == k] for k in ("httpx", "raw")}
        for k, group in by.items():
            tput = statistics.mean(p["throughput"] for p in group)
            gen = statistics.mean(p["cpu_cores"].get("load generator", 0.0) for p in group)
            rep_ = statistics.mean(p["cpu_cores"].get("ModerationAPI replicas", 0.0) for p in group)
            print(f"client {k:<5} at c={group[0]['concurrency']}: {tput:.1f} req/s, load generator {gen:.2f} cores "
                  f"({1000 * gen / max(tput, 1e-9):.2f} ms/req), replicas {rep_:.2f} cores (two phases, ABBA)")
        ratio = statistics.mean(p["throughput"] for p in by["raw"]) / max(
            statistics.mean(p["throughput"] for p in by["httpx"]), 1e-9)
        report["client_ab_raw_over_httpx"] = ratio
        print(f"raw / httpx saturation: {ratio:.2f}x")
    print(f"metrics endpoint: {report['metrics']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.out}")
    if args.record:
        record("serve_latency", serve_latency_figures(report), report["command"])
    return 0


def _merge(phases: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per concurrency: repeats pooled (requests and seconds summed, latency percentiles averaged)."""
    out: dict[int, dict[str, Any]] = {}
    for c in sorted({p["concurrency"] for p in phases}):
        group = [p for p in phases if p["concurrency"] == c]
        ok, seconds = sum(p["ok"] for p in group), sum(p["seconds"] for p in group)
        merged = {"concurrency": c, "mode": group[0]["mode"], "repeats": len(group), "ok": ok, "seconds": seconds,
                  "throughput": ok / seconds if seconds else 0.0}
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            values = [p[key] for p in group if p[key] is not None]
            merged[key] = statistics.mean(values) if values else None
        out[c] = merged
    return out


def _f(v: float | None) -> str:
    return f"{v:>8.1f}" if v is not None else f"{'-':>8}"


if __name__ == "__main__":
    raise SystemExit(main())
