"""Two endpoint configurations A/B/B/A in one run (the machine drifts, so only interleaved comparisons hold).

Each side is a `moderation serve` of its own (its own loopback-only Ray, started in a session of its own), so the
two may differ in anything, including what needs a cluster of its own:

- `--a` / `--b`: build_app arguments (JSON, merged over the CPU settings of serving/config.yaml);
- `--a-proxy` / `--b-proxy`: the HTTP request path, Ray Serve's Python proxy or HAProxy (serving.haproxy);
- `--a-tree` / `--b-tree`: a source tree to run that side from (e.g. an export of an earlier commit: before/after
  of a code change in one run); the model directory is the same for both unless the JSON says otherwise;
- `--b-explain`: B's requests ask for `explain: true` (the cost of explanations; B may be the same server as A).

Both servers are up for the whole run, only one is loaded at a time: per round, a lone client (concurrency 1:
the lone request's latency) then `--concurrency` closed-loop clients (saturation), A then B, B then A in the next
round; then an open loop (Poisson arrivals) on each side at half its own saturation rate (p99 under load). One
post per request (real tweets). Prints requests/s, p50/p99 and the CPU each part of the path used, per phase,
and the ratios B / A.

    # Ray Serve's Python proxy vs HAProxy straight to the replicas (same code, same app)
    .venv/bin/python benchmarks/serve_ab.py --b-proxy haproxy --rounds 2
    # the ingress before / after a change: A from an export of the earlier commit
    git archive fe354cd~1 | tar -x -C /tmp/before && .venv/bin/python benchmarks/serve_ab.py --a-tree /tmp/before --b '{}'
    # the cost of explain: true
    .venv/bin/python benchmarks/serve_ab.py --b '{}' --b-explain
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from serving.cli import read_config
from serving.loadtest import CLIENTS, DEFAULT_CLIENT, closed_loop, open_loop, text_bodies

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serve_latency import load_texts, measure_cpu  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`moderation serve` of one side, from its source tree, in a session of its own; stopped by `stop`."""

    def __init__(self, name: str, app_args: dict[str, Any], proxy: str, tree: Path, folder: Path,
                 ready_timeout_s: float) -> None:
        import yaml

        self.name, self.port = name, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / f"serve-{name}.yaml"
        config.write_text(yaml.safe_dump({"http_options": {"host": "127.0.0.1", "port": self.port,
                                                           "keep_alive_timeout_s": 5},
                                          "applications": [{"name": "moderation", "route_prefix": "/",
                                                            "import_path": "serving.app:build_app", "args": app_args}]}))
        command = [sys.executable, "-c", "from moderation.cli import main; raise SystemExit(main())",
                   "serve", "--config", str(config), "--port", str(self.port)]
        if proxy != "python":  # an earlier tree may not know --proxy; python is every tree's request path
            command += ["--proxy", proxy]
        env = {**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false"}
        self.log = folder / f"serve-{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.session = self.proc.pid
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"server {self.name} not ready in {timeout_s:.0f} s:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.session, signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.session, signal.SIGKILL)
                self.proc.wait(timeout=30)


def _start(name: str, side: dict[str, Any], folder: Path, ready_timeout_s: float, attempts: int = 3) -> Server:
    """Start a side's server; on a loaded machine Ray's node can time out while starting, so try again."""
    for attempt in range(1, attempts + 1):
        try:
            return Server(name, side["args"], side["proxy"], Path(side["tree"]), folder, ready_timeout_s)
        except RuntimeError as exc:
            if attempt == attempts:
                raise
            print(f"server {name} failed to start (attempt {attempt}), retrying: {str(exc)[-300:]}", file=sys.stderr)
    raise AssertionError("unreachable")


def explain_bodies(texts: list[str]):
    """Like serving.loadtest.text_bodies (one post per request), with `explain: true`."""
    def make(i: int) -> bytes:
        return json.dumps({"posts": [{"id": f"{i}-0", "text": texts[i % len(texts)]}], "explain": True}).encode()
    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    parser.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--a", default="{}", help="build_app arguments of A (JSON, over the base settings)")
    parser.add_argument("--b", default="{}", help="build_app arguments of B (JSON, over the base settings)")
    parser.add_argument("--a-proxy", choices=("python", "haproxy"), default="python")
    parser.add_argument("--b-proxy", choices=("python", "haproxy"), default="python")
    parser.add_argument("--a-tree", default=str(REPO), help="source tree A runs from")
    parser.add_argument("--b-tree", default=str(REPO), help="source tree B runs from")
    parser.add_argument("--b-explain", action="store_true", help="B's requests ask for explain: true")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients of the saturation phases")
    parser.add_argument("--phase-s", type=float, default=10.0, help="seconds per saturation / open-loop phase")
    parser.add_argument("--lone-s", type=float, default=8.0, help="seconds per lone-client phase")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of A,B (B,A in odd rounds)")
    parser.add_argument("--client", choices=CLIENTS, default=DEFAULT_CLIENT,
                        help="the load generator's HTTP client (serving.loadtest; default: %(default)s)")
    parser.add_argument("--no-open", action="store_true", help="skip the open loops at half saturation")
    parser.add_argument("--ready-timeout-s", type=float, default=900.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    texts, source = load_texts(Path(args.datasets), 512)
    model = str(Path(args.model).resolve()) if args.model else str(REPO / "moderation" / "default_model")
    shipped = read_config()[0]
    base = {"model_dir": model, "topology": "fused", "num_replicas": max(1, os.cpu_count() or 1), "num_cpus": 1,
            "decode_workers": 0, "max_ongoing_requests": 64, "max_queued_requests": 512, "precision": shipped["precision"],
            "batch": shipped["batch"]}  # the sample config's CPU settings
    sides = {name: {"args": {**base, **json.loads(text)}, "proxy": proxy, "tree": str(Path(tree).resolve())}
             for name, text, proxy, tree in (("a", args.a, args.a_proxy, args.a_tree),
                                             ("b", args.b, args.b_proxy, args.b_tree))}
    bodies = {"a": text_bodies(texts, 1), "b": explain_bodies(texts) if args.b_explain else text_bodies(texts, 1)}
    report: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]), "texts": source, "sides": sides,
                              "b_explain": args.b_explain, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "load_before": os.getloadavg()}
    phases: list[dict[str, Any]] = []
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="serve-ab-") as folder:
        try:
            for name, side in sides.items():
                same = [s for n, s in servers.items() if sides[n] == side]
                servers[name] = same[0] if same else _start(name, side, Path(folder), args.ready_timeout_s)
            url = {name: f"{s.url}/v1/moderations" for name, s in servers.items()}
            for name in sides:  # warm-up
                asyncio.run(closed_loop(url[name], bodies[name], 4, 3.0, client=args.client))
            print(f"texts: {source}; one post per request")
            for name, side in sides.items():
                shown = {k: v for k, v in side["args"].items() if k != "model_dir"}
                print(f"  {name}: {side['proxy']} proxy, tree {side['tree']}, {json.dumps(shown)}"
                      + (", explain: true" if name == "b" and args.b_explain else ""))

            def run(name: str, kind: str, r: int, make: Any) -> dict[str, Any]:
                result, cpu = measure_cpu(lambda: asyncio.run(make()), servers[name].session)
                s = {"side": name, "kind": kind, "round": r, **result.summary(), "cpu_cores": cpu}
                phases.append(s)
                parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v >= 0.03)
                print(f"round {r} {name} {kind:<10} {s['throughput']:6.1f} req/s  p50 {_f(s['p50_ms'])} ms  "
                      f"p99 {_f(s['p99_ms'])} ms  503s {s['shed']}  other {s['other']}  | CPU cores: {parts}", flush=True)
                return s

            for r in range(args.rounds):
                for name in ("a", "b") if r % 2 == 0 else ("b", "a"):
                    run(name, "lone", r, lambda: closed_loop(url[name], bodies[name], 1, args.lone_s, 20_000,
                                                                 client=args.client))
                    run(name, "saturation", r, lambda: closed_loop(url[name], bodies[name], args.concurrency,
                                                                   args.phase_s, 100_000, client=args.client))
            summary = {name: _summary(phases, name) for name in sides}
            if not args.no_open:
                for r, name in enumerate(("a", "b", "b", "a")[:2 * min(args.rounds, 2)]):
                    rate = 0.5 * summary[name]["saturation_req_s"]
                    run(name, "open-half", r // 2, lambda: open_loop(url[name], bodies[name], rate, args.phase_s, 20_000,
                                                                            client=args.client))
                summary = {name: _summary(phases, name) for name in sides}
        finally:
            for server in {id(s): s for s in servers.values()}.values():
                server.stop()
    report.update(phases=phases, summary=summary, load_after=os.getloadavg())
    report["b_over_a"] = {k: (summary["b"][k] / summary["a"][k]) if summary["a"].get(k) else None
                          for k in summary["a"] if summary["a"][k] is not None and summary["b"].get(k) is not None}
    print()
    for name in sides:
        print(f"{name}: " + ", ".join(f"{k} {_g(v)}" for k, v in summary[name].items()))
    print("b / a: " + ", ".join(f"{k} {v:.2f}" for k, v in report["b_over_a"].items() if v is not None))
    print(f"load average before / after: {report['load_before'][0]:.1f} / {report['load_after'][0]:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.out}")
    return 0


def _summary(phases: list[dict[str, Any]], side: str) -> dict[str, Any]:
    """A side's pooled figures: lone p50 (mean of its phases), saturation req/s (requests / seconds over its
    phases), CPU ms per request at saturation by part, p99 at half saturation and its ratio to the lone p50."""
    mine = [p for p in phases if p["side"] == side]
    lone = [p for p in mine if p["kind"] == "lone" and p["p50_ms"] is not None]
    sat = [p for p in mine if p["kind"] == "saturation"]
    open_ = [p for p in mine if p["kind"] == "open-half" and p["p99_ms"] is not None]
    ok, seconds = sum(p["ok"] for p in sat), sum(p["seconds"] for p in sat)
    out: dict[str, Any] = {
        "lone_p50_ms": statistics.mean(p["p50_ms"] for p in lone) if lone else None,
        "saturation_req_s": ok / seconds if seconds else 0.0,
        "saturation_p50_ms": statistics.mean(p["p50_ms"] for p in sat if p["p50_ms"] is not None) if sat else None,
        "saturation_503": sum(p["shed"] for p in sat),
    }
    roles = sorted({k for p in sat for k in p["cpu_cores"]})
    for role in roles:  # CPU ms per request: cores x 1000 / req/s, pooled over the saturation phases
        cores = statistics.mean(p["cpu_cores"].get(role, 0.0) for p in sat)
        out[f"cpu_ms_per_req[{role}]"] = 1000 * cores / out["saturation_req_s"] if out["saturation_req_s"] else None
    if open_:
        out["half_rate_p99_ms"] = statistics.mean(p["p99_ms"] for p in open_)
        out["p99_half_over_lone_p50"] = out["half_rate_p99_ms"] / out["lone_p50_ms"] if out["lone_p50_ms"] else None
    return out


def _f(v: float | None) -> str:
    return f"{v:7.1f}" if v is not None else f"{'-':>7}"


def _g(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    raise SystemExit(main())
