"""Two Ray nodes on 127.0.0.1, one killed mid-work: the batch job and the endpoint keep their promises.

    .venv/bin/python -m benchmarks.two_node --rows 600 --out runs/two_node/result.json

1. A dump of `--rows` text posts (ids unique; plus one malformed row and one repeated id, which both engines must
   report the same way), scored by the local engine: the reference.
2. A loopback cluster (serving.cluster: head node_a + worker node_b, 1 CPU each); the same dump scored with
   `moderation score --engine ray --ray-address ...` by 2 scorer actors (0.5 CPU each: one per node). Once the
   parts hold rows scored on node_b, node_b is killed (its raylet and every process under it, SIGKILL).
   Then: rows lost / duplicated (ids against the input), and the output compared with the local engine's row by
   row (every column; scores to 1e-6).
3. A fresh worker node (node_c); `moderation serve --ray-address ... --num-replicas 2 --num-cpus 1`: one replica
   per node (1 CPU each). A client sends one-post requests to 127.0.0.1 one after another, 50 ms apart; after
   --requests answers node_c is killed; the client goes on until the GCS has marked node_c dead and --requests
   more have been answered. Answers are counted before the kill, until node_c is marked dead, and after.
4. Every TCP socket of the cluster's processes checked to stay on loopback, at the peak of both runs.

Writes a JSON with every figure (--out). Bounded: --rows posts, 2 x --requests requests plus those sent while the
node dies (at most 2 x --requests + 3000); 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from serving.cluster import free_port, LoopbackCluster

REPO = Path(__file__).resolve().parents[1]
MODERATION = [sys.executable, "-c", "from moderation.cli import main; raise SystemExit(main())"]


def make_dump(path: Path, rows: int, seed: int = 0) -> list[str]:
    """A JSONL dump of `rows` text posts built from examples/posts.jsonl (words shuffled, numbered so every text
    differs), then one malformed line and one repeated id. Returns the ids of the good rows, in order."""
    base = [json.loads(line) for line in (REPO / "examples" / "posts.jsonl").read_text().splitlines() if line.strip()]
    texts = [b["text"] for b in base if b.get("text")]
    rng = random.Random(seed)
    ids, lines = [], []
    for i in range(rows):
        words = texts[i % len(texts)].split()
        rng.shuffle(words)
        ids.append(f"p{i:06d}")
        lines.append(json.dumps({"id": ids[-1], "text": " ".join(words) + f" #{i}", "n": i}))
    lines.insert(rows // 3, "{not json")
    lines.insert(2 * rows // 3, json.dumps({"id": ids[0], "text": "the first id again"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def read_out(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq
    return pq.read_table(str(path)).to_pylist()


def compare(local: list[dict[str, Any]], ray: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    """Rows lost / duplicated in `ray` (by id, against the input's ids) and its differences from `local`, row by
    row: columns that differ (scores compared to 1e-6) and the largest score difference."""
    scored = [r["id"] for r in ray if r["ok"]]
    seen: dict[str, int] = {}
    for i in scored:
        seen[i] = seen.get(i, 0) + 1
    lost = sorted(set(ids) - set(seen))
    duplicated = sorted(i for i, n in seen.items() if n > 1)
    differing_rows, differing_columns, max_score_diff = 0, set(), 0.0
    if len(local) == len(ray):
        for a, b in zip(local, ray):
            bad = False
            for k, v in a.items():
                w = b.get(k)
                if k.endswith("_score") and isinstance(v, float) and isinstance(w, float):
                    max_score_diff = max(max_score_diff, abs(v - w))
                    if abs(v - w) > 1e-6:
                        differing_columns.add(k)
                        bad = True
                elif v != w:
                    differing_columns.add(k)
                    bad = True
            differing_rows += bad
    return {"rows_local": len(local), "rows_ray": len(ray), "input_ids": len(ids), "rows_lost": len(lost),
            "rows_duplicated": len(duplicated), "lost_ids": lost[:10], "duplicated_ids": duplicated[:10],
            "same_row_count": len(local) == len(ray), "rows_differing": differing_rows if len(local) == len(ray) else None,
            "columns_differing": sorted(differing_columns), "max_score_diff": max_score_diff,
            "identical": len(local) == len(ray) and differing_rows == 0}


def _parts_nodes(parts: Path) -> set[str]:
    import pyarrow.parquet as pq
    nodes: set[str] = set()
    for p in parts.glob("*.parquet"):
        try:
            nodes |= set(pq.read_table(str(p), columns=["_node"]).column("_node").to_pylist())
        except Exception:  # noqa: BLE001 - a part being written
            pass
    return nodes


def batch_drill(cluster: Any, dump: Path, work: Path, ids: list[str], *, chunk_size: int, model: str | None,
                timeout_s: float) -> dict[str, Any]:
    """The local reference, then the Ray job on the cluster with node_b killed once it has scored rows."""
    common = ["--chunk-size", str(chunk_size), "--no-progress", "--precision", "fp32"] + (["--model", model] if model else [])
    env = {**os.environ, **cluster.env(), "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    local = subprocess.run([*MODERATION, "score", str(dump), "--out", str(work / "local.parquet"), *common],
                           capture_output=True, text=True, env=env, timeout=timeout_s)
    local_s = time.monotonic() - t0
    if local.returncode not in (0, 1):  # 1: some rows errored (the malformed row, the repeated id): expected
        raise RuntimeError(f"local engine failed ({local.returncode}):\n{local.stderr[-2000:]}")
    out = work / "ray.parquet"
    parts = work / "ray.parquet.parts" / "ray-parts"
    node_b = cluster.node("node_b").node_id
    t0 = time.monotonic()
    job = subprocess.Popen([*MODERATION, "score", str(dump), "--out", str(out), *common, "--engine", "ray",
                            "--ray-address", cluster.address, "--ray-actors", "2", "--ray-cpus-per-actor", "0.5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed_at = parts_at_kill = None
    non_loopback: list[str] = []
    while job.poll() is None and time.monotonic() - t0 < timeout_s:
        if killed_at is None and node_b in _parts_nodes(parts):
            non_loopback = cluster.non_loopback_sockets()  # both nodes busy: the peak
            parts_at_kill = len(list(parts.glob("*.parquet")))
            cluster.kill_node("node_b")
            killed_at = time.monotonic() - t0
        time.sleep(0.5)
    if job.poll() is None:
        job.kill()
        raise RuntimeError(f"the Ray job did not finish within {timeout_s:.0f} s")
    stdout, stderr = job.communicate()
    ray_s = time.monotonic() - t0
    result = {"local_exit": local.returncode, "local_s": round(local_s, 1), "ray_exit": job.returncode,
              "ray_s": round(ray_s, 1), "node_b_killed_at_s": None if killed_at is None else round(killed_at, 1),
              "parts_written_at_kill": parts_at_kill, "job_finished_after_kill": killed_at is not None,
              "ray_summary": stdout.strip().splitlines()[-1] if stdout.strip() else None,
              "ray_check_line": next((x for x in stderr.splitlines() if x.startswith("ray: every input row")), None),
              "non_loopback_sockets_at_peak": non_loopback}
    if job.returncode not in (0, 1):
        result["ray_stderr_tail"] = stderr[-3000:]
        return result
    result.update(compare(read_out(work / "local.parquet"), read_out(out), ids))
    return result


def _wait_ready(port: int, timeout_s: float) -> bool:
    import httpx
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(2)
    return False


def replica_nodes(cluster: Any) -> dict[str, int]:
    """Alive Serve replicas of the app per node name (the GCS's actor table, read by a short-lived driver)."""
    code = ("import json, ray\nfrom ray._private import state\n"
            f"ray.init(address={cluster.address!r}, log_to_driver=False, configure_logging=False)\n"
            "acts = state.actors()\n"
            "print(json.dumps([a['Address']['NodeID'] for a in acts.values() if a['State'] == 'ALIVE' and "
            "a['ActorClassName'].startswith('ServeReplica:moderation')]))\n")
    proc = subprocess.run([sys.executable, "-c", "import serving\n" + code], capture_output=True, text=True,
                          env={**os.environ, **cluster.env()}, timeout=300)
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:]}  # type: ignore[dict-item]
    names = {n.node_id: n.name for n in cluster.nodes}
    per: dict[str, int] = {}
    for node_id in json.loads(proc.stdout.strip().splitlines()[-1]):
        per[names.get(node_id, node_id[:12])] = per.get(names.get(node_id, node_id[:12]), 0) + 1
    return per


def endpoint_drill(cluster: Any, work: Path, *, requests: int, model: str | None, timeout_s: float) -> dict[str, Any]:
    """`moderation serve --ray-address` with a replica per node; node_c killed while a client sends requests."""
    import httpx

    cluster.add_node("node_c")
    port = free_port()
    env = {**os.environ, **cluster.env(), "PYTHONPATH": str(REPO)}
    log = open(work / "serve.log", "w")
    serve = subprocess.Popen([*MODERATION, "serve", "--ray-address", cluster.address, "--port", str(port),
                              "--num-replicas", "2", "--num-cpus", "1", "--precision", "fp32"]
                             + (["--model", model] if model else []), stdout=log, stderr=subprocess.STDOUT, env=env)
    result: dict[str, Any] = {"port": port}
    try:
        if not _wait_ready(port, timeout_s):
            result["error"] = "the endpoint was not ready in time"
            return result
        result["replicas_per_node_before"] = replica_nodes(cluster)
        result["non_loopback_sockets_at_peak"] = cluster.non_loopback_sockets()
        answers: list[tuple[float, int | str]] = []
        stop = threading.Event()
        t0 = time.monotonic()

        def client() -> None:  # one request at a time, paced, until told to stop (hard cap: 2 x requests + 3000)
            with httpx.Client(timeout=30) as http:
                for i in range(2 * requests + 3000):
                    if stop.is_set():
                        return
                    try:
                        r = http.post(f"http://127.0.0.1:{port}/v1/moderations", json={"input": f"hello number {i}"})
                        answers.append((time.monotonic() - t0, r.status_code))
                    except httpx.HTTPError as exc:
                        answers.append((time.monotonic() - t0, type(exc).__name__))
                    time.sleep(0.05)

        thread = threading.Thread(target=client)
        thread.start()
        while len(answers) < requests and thread.is_alive():
            time.sleep(0.2)
        kill_sent = time.monotonic() - t0
        cluster.kill_node("node_c")
        killed_at = time.monotonic() - t0
        node_c = cluster.node("node_c").node_id
        deadline = time.monotonic() + 120  # the GCS marks a node dead after missed health checks
        while time.monotonic() < deadline and any(n["alive"] for n in cluster.gcs_nodes() if n["node_id"] == node_c):
            time.sleep(1)
        dead_at = time.monotonic() - t0
        # then `requests` more answers
        wanted = len([a for a in answers if a[0] <= dead_at]) + requests
        while len(answers) < wanted and thread.is_alive() and time.monotonic() - t0 < timeout_s:
            time.sleep(0.2)
        stop.set()
        thread.join(60)
        count = lambda xs: {k: sum(1 for x in xs if str(x) == k) for k in sorted({str(x) for x in xs})}  # noqa: E731
        result.update({"requests": len(answers), "node_c_kill_sent_at_s": round(kill_sent, 1),
                       "node_c_killed_at_s": round(killed_at, 1), "node_c_marked_dead_at_s": round(dead_at, 1),
                       "answers_before_kill": count([s for t, s in answers if t <= kill_sent]),
                       "answers_during_kill_until_marked_dead": count([s for t, s in answers if kill_sent < t <= dead_at]),
                       "answers_after_marked_dead": count([s for t, s in answers if t > dead_at]),
                       "replicas_per_node_after": replica_nodes(cluster)})
        return result
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(120)
        except subprocess.TimeoutExpired:
            serve.kill()
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=600, help="posts in the dump (default: 600)")
    p.add_argument("--chunk-size", type=int, default=32, help="rows per scoring chunk (default: 32)")
    p.add_argument("--requests", type=int, default=50,
                   help="endpoint drill: answers before the kill, and again after the node is marked dead (default: 50)")
    p.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    p.add_argument("--no-endpoint", action="store_true", help="the batch drill only")
    p.add_argument("--timeout-s", type=float, default=3600, help="limit of each step (default: 3600)")
    p.add_argument("--out", default=None, help="write the figures here as JSON")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="two-node-"))
    dump = work / "dump.jsonl"
    ids = make_dump(dump, args.rows)
    cluster = LoopbackCluster.create(cpus_per_node=1)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": args.rows,
                              "chunk_size": args.chunk_size, "model": args.model or "shipped default",
                              "load_average_at_start": os.getloadavg()[0]}
    try:
        t0 = time.monotonic()
        cluster.start(2)
        result["cluster_start_s"] = round(time.monotonic() - t0, 1)
        result["batch"] = batch_drill(cluster, dump, work, ids, chunk_size=args.chunk_size, model=args.model,
                                      timeout_s=args.timeout_s)
        print(json.dumps(result["batch"], indent=1), file=sys.stderr)
        if not args.no_endpoint:
            result["endpoint"] = endpoint_drill(cluster, work, requests=args.requests, model=args.model,
                                                timeout_s=args.timeout_s)
    finally:
        result["cluster_processes_ended"] = cluster.stop()
        result["load_average_at_end"] = os.getloadavg()[0]
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
