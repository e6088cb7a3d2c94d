"""The figures files the benchmarks write (`--record`) and `moderation capacity` reads: benchmarks/figures/NAME.json.

    from benchmarks.figures import record
    record("batch_throughput", batch_throughput_figures(report))   # -> benchmarks/figures/batch_throughput.json

A file holds the figures a plan needs in a fixed shape (the extractors below turn each benchmark's own report into
it), when they were measured, the command line, and the machine (cores, CPU model, native bf16, GPU, load
average at the end of the run: the machine is shared, so a high load means low absolute figures). The format
itself (and its reader) is operations.capacity's. Recording a GPU run writes NAME-gpu.json beside the CPU one.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from operations.capacity import DEFAULT_FIGURES_DIR, figures_document

FIGURES_DIR = DEFAULT_FIGURES_DIR


def _cpuinfo(key: str) -> str | None:
    """The first value of `key` in /proc/cpuinfo (None when absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k.strip().lower() == key:
                    return v.strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """Cores, CPU model, native bf16 features, GPU (name and count, or None) and load average of this machine."""
    import torch

    flags = set((_cpuinfo("flags") or _cpuinfo("features") or "").split())
    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"cpus": os.cpu_count(), "cpu_model": _cpuinfo("model name") or platform.processor() or platform.machine(),
            "native_bf16": sorted(flags & {"avx512_bf16", "amx_bf16", "bf16", "sve_bf16"}), "gpu": gpu,
            "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "torch": torch.__version__}


def record(name: str, figures: Mapping[str, Any], command: str | None = None, folder: str | os.PathLike | None = None) -> Path:
    """Write `figures` as folder/NAME.json (NAME-gpu.json for figures measured on a GPU), atomically; returns the path.

    command: the command line that measured them (default: this process's, as typed)."""
    import json

    folder = Path(folder) if folder is not None else FIGURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]  # as typed: "python -m benchmarks.x ..."
    command = command or " ".join(shlex.quote(a) for a in [Path(argv[0]).name, *argv[1:]])
    doc = figures_document(name, figures, command, machine(),
                           datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    path = folder / f"{name}{'-gpu' if figures.get('device') == 'cuda' else ''}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"figures recorded in {path}", file=sys.stderr)
    return path


# --- each benchmark's report -> the figures a plan reads ---------------------------------------------------

def batch_throughput_figures(report: Mapping[str, Any]) -> dict[str, Any]:
    """benchmarks/batch_throughput.py's report -> end-to-end rows/s and CPU ms per row per precision and input type."""
    kinds = {"text": "text", "memes": "image+text"}
    rates = []
    for run in report.get("runs", []):
        e2e = run["end_to_end"]
        rates.append({"precision": run["precision"], "input_type": kinds[run["kind"]], "rows": e2e["rows"],
                      "rows_per_s": e2e["rows_per_s"], "cpu_ms_per_row": run["cpu_ms_per_row"]["end_to_end"],
                      "ceiling_rows_per_s": run["ceiling"]["rows_per_s"]})
    if not rates:
        raise ValueError("the batch benchmark measured no throughput (--skip-throughput?): nothing to record")
    m = report.get("machine", {})
    return {"model_version": report.get("model_version"), "device": "cuda" if m.get("cuda") else "cpu",
            "devices": 1, "torch_threads": m.get("torch_threads"), "rates": rates,
            "what": "moderation.batch.score_dump end to end (read, prepare, model, write Parquet), best round"}


def serve_latency_figures(report: Mapping[str, Any]) -> dict[str, Any]:
    """benchmarks/serve_latency.py's report -> the endpoint's operating points (throughput, p50 / p99, CPU)."""
    s = report["settings"]
    points = []
    for c in sorted({p["concurrency"] for p in report["closed_on"]}):
        group = [p for p in report["closed_on"] if p["concurrency"] == c]
        ok, seconds = sum(p["ok"] for p in group), sum(p["seconds"] for p in group)
        cores = [sum(v for k, v in p["cpu_cores"].items() if k != "load generator") for p in group if p.get("cpu_cores")]
        p99 = [p["p99_ms"] for p in group if p["p99_ms"] is not None]
        p50 = [p["p50_ms"] for p in group if p["p50_ms"] is not None]
        points.append({"label": f"closed loop, {c} clients", "kind": "closed", "concurrency": c,
                       "throughput_req_s": ok / seconds if seconds else 0.0,
                       "p50_ms": statistics.mean(p50) if p50 else None, "p99_ms": statistics.mean(p99) if p99 else None,
                       "serving_cores": statistics.mean(cores) if cores else None})
    half = report.get("open_half")
    if half:
        points.append({"label": f"open loop (Poisson) at {half['rate']:.1f} req/s, half saturation", "kind": "open",
                       "rate": half["rate"], "throughput_req_s": half["throughput"], "p50_ms": half["p50_ms"],
                       "p99_ms": half["p99_ms"], "serving_cores": None})
    device = s.get("device", "cpu")
    return {"model_version": (report.get("model") or {}).get("model_version"), "precision": s["precision"],
            "device": "cuda" if device == "cuda" else "cpu", "posts_per_request": s["posts_per_request"],
            "replicas": s["num_replicas"], "cpus_per_replica": s["num_cpus"], "topology": s.get("topology"),
            "saturation_req_s": max(p["throughput_req_s"] for p in points), "points": points,
            "texts": report.get("texts"), "onnx_text": s.get("onnx_text"), "onnx_text_on": s.get("onnx_text_on"),
            "load_client": s.get("client", "httpx")}
