"""Capacity planning from measured figures: cores / replicas for a post volume, and the review queue it implies.

Every throughput and rate here comes from a figures file that a benchmark wrote (`benchmarks/figures/*.json`,
written with `--record` by `benchmarks/batch_throughput.py`, `benchmarks/serve_latency.py` and
`benchmarks/review_rates.py`; `benchmarks/figures.py` writes them). None is typed into this code: a figure the
files lack is an error that names the benchmark to run.

A figures file:

    {"format": "moderation-benchmark-figures", "format_version": 1, "name": "batch_throughput",
     "measured": "2026-12-04T21:03:11Z", "command": "python -m benchmarks.batch_throughput ... --record",
     "machine": {"cpus": 2, "cpu_model": "...", "gpu": null, "load_average": [3.1, 2.9, 2.5]},
     "figures": {...}}                     # the benchmark's own figures (schemas below)

The arithmetic (`plan`):

- load: posts/day / 86,400 = average posts/s; x the peak factor = the rate to provision for;
- batch scoring (`moderation score`): CPU seconds per row of each input type (batch_throughput's end-to-end
  CPU time per row, all threads of the job counted) -> core-hours a day and cores to keep up at peak;
- the endpoint: the measured operating points (closed-loop concurrency phases and the open-loop phase at half
  saturation) with their p99 latency; the busiest point whose p99 is within `--p99-ms` (default: the half-
  saturation point) sets the utilisation to plan at; a request costs the CPU time of replicas, proxy and Ray per
  request at saturation (the load generator left out) / that utilisation; an image post costs a text request plus
  what an image adds in batch scoring (batch_throughput's image+text minus text CPU time per row: OCR and the
  image encoder), / the same utilisation (no image serving figure exists; said in the plan);
- the review queue: per input type the share of posts the policy sends to review (and blocks), measured by
  review_rates on the shipped model's test splits, split into harmful and benign posts so that the queue can be
  given at a platform's own harmful share (`--harmful-share`); x posts/day = reviewer items a day; / items per
  reviewer-hour / shift hours = reviewers.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

FIGURES_FORMAT = "moderation-benchmark-figures"
FIGURES_FORMAT_VERSION = 1
#: Where the benchmarks write their figures (a source checkout; `--figures DIR` elsewhere).
DEFAULT_FIGURES_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "figures"
INPUT_TYPES: tuple[str, ...] = ("text", "image+text")
SECONDS_PER_DAY = 86_400

#: The benchmark that writes each figures file, and how to run it (quoted in errors).
BENCHMARKS: dict[str, str] = {
    "batch_throughput": "python -m benchmarks.batch_throughput --skip-memory --record",
    "serve_latency": "python benchmarks/serve_latency.py --record",
    "review_rates": "python -m benchmarks.review_rates --record",
}


class CapacityError(ValueError):
    """A figure the plan needs is missing or unreadable, or an argument is out of range (the message says which)."""


# --- figures files -------------------------------------------------------------------------------------------

@dataclass
class Figures:
    """One figures file: what was measured, when, where, by which command."""

    name: str
    measured: str
    command: str
    machine: dict[str, Any]
    figures: dict[str, Any]
    path: Path | None = None

    def device(self) -> str:
        """"gpu" when the benchmark ran on a GPU, else "cpu"."""
        return "gpu" if self.figures.get("device") == "cuda" else "cpu"

    def describe(self) -> dict[str, Any]:
        """Where a plan's figures come from: file, date, machine, command."""
        m = self.machine
        return {"file": str(self.path) if self.path else self.name, "name": self.name, "measured": self.measured,
                "command": self.command, "cpus": m.get("cpus"), "cpu_model": m.get("cpu_model"),
                "gpu": m.get("gpu"), "load_average": m.get("load_average"),
                "model_version": self.figures.get("model_version")}


def figures_document(name: str, figures: Mapping[str, Any], command: str, machine: Mapping[str, Any],
                     measured: str) -> dict[str, Any]:
    """The JSON a figures file holds (benchmarks/figures.py `record` writes it)."""
    return {"format": FIGURES_FORMAT, "format_version": FIGURES_FORMAT_VERSION, "name": name, "measured": measured,
            "command": command, "machine": dict(machine), "figures": dict(figures)}


def read_figures(path: str | os.PathLike) -> Figures:
    """Read and check one figures file. Raises CapacityError naming the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CapacityError(f"figures file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CapacityError(f"{path}: not a readable JSON figures file: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FIGURES_FORMAT:
        raise CapacityError(f"{path}: not a benchmark figures file (\"format\": \"{FIGURES_FORMAT}\")")
    if data.get("format_version") != FIGURES_FORMAT_VERSION:
        raise CapacityError(f"{path}: format_version {data.get('format_version')!r}; this code reads "
                            f"{FIGURES_FORMAT_VERSION}")
    for key, kind in (("name", str), ("measured", str), ("command", str), ("machine", dict), ("figures", dict)):
        if not isinstance(data.get(key), kind):
            raise CapacityError(f"{path}: '{key}' must be a {kind.__name__}")
    return Figures(name=data["name"], measured=data["measured"], command=data["command"], machine=data["machine"],
                   figures=data["figures"], path=path)


def load_all(folder: str | os.PathLike) -> dict[str, list[Figures]]:
    """Every figures file in `folder`, by benchmark name. Raises CapacityError for a missing folder or a bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CapacityError(f"no benchmark figures folder at {folder}: run the benchmarks with --record "
                            f"({'; '.join(BENCHMARKS.values())}) or give --figures DIR")
    out: dict[str, list[Figures]] = {}
    for path in sorted(folder.glob("*.json")):
        f = read_figures(path)
        out.setdefault(f.name, []).append(f)
    return out


def need(found: Mapping[str, list[Figures]], name: str, device: str = "cpu") -> Figures:
    """The figures of benchmark `name` measured on `device` (the latest when several). Raises CapacityError."""
    cands = [f for f in found.get(name, []) if f.device() == device]
    if not cands:
        raise CapacityError(f"no {name} figures measured on a {device.upper()}: run `{BENCHMARKS[name]}`"
                            + (" on a machine with a GPU" if device == "gpu" else ""))
    return max(cands, key=lambda f: f.measured)


def _number(d: Mapping[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise CapacityError(f"{where}: '{key}' must be a positive number, got {v!r}")
    return float(v)


# --- the pieces of a plan ------------------------------------------------------------------------------------

def batch_cost(f: Figures, precision: str) -> dict[str, float]:
    """Device seconds per row of each input type at `precision`, from batch_throughput figures (CPU: process CPU
    time per row over the whole job; GPU: wall time per row per GPU). Raises CapacityError when absent."""
    out: dict[str, float] = {}
    for row in f.figures.get("rates", []):
        if row.get("precision") != precision or row.get("input_type") not in INPUT_TYPES:
            continue
        where = f"{f.path}: {precision} {row['input_type']}"
        if f.device() == "cpu":
            out[row["input_type"]] = _number(row, "cpu_ms_per_row", where) / 1000.0
        else:
            out[row["input_type"]] = _number(f.figures, "devices", str(f.path)) / _number(row, "rows_per_s", where)
    if not out:
        have = sorted({str(r.get("precision")) for r in f.figures.get("rates", [])})
        raise CapacityError(f"{f.path}: no batch figures at precision {precision} (measured: {', '.join(have) or 'none'}); "
                            f"run `{BENCHMARKS['batch_throughput']} --precision {precision}`")
    return out


def serving_point(f: Figures, p99_ms: float | None) -> dict[str, Any]:
    """The measured endpoint operating point to plan at, and what a request costs there.

    The point: the busiest one whose p99 is within `p99_ms`, or, when no latency is asked for, the open-loop point
    at half saturation. The cost: core seconds per request at saturation (CPU time of the replicas, proxy and Ray in
    the busiest phase, which a shared machine does not inflate the way wall time does; the cores Ray was given when
    CPU time was not measured), divided by the point's utilisation (its throughput / saturation): running at half
    saturation for the latency means provisioning twice the cores. Raises CapacityError when no point qualifies.
    """
    points = [p for p in f.figures.get("points", []) if isinstance(p, dict)]
    if not points:
        raise CapacityError(f"{f.path}: no serving operating points; run `{BENCHMARKS['serve_latency']}`")
    for p in points:
        _number(p, "throughput_req_s", f"{f.path}: point {p.get('label')}")
    if p99_ms is None:
        half = [p for p in points if p.get("kind") == "open"]
        if not half:
            raise CapacityError(f"{f.path}: no open-loop point at half saturation; give --p99-ms to pick among "
                                "the closed-loop points")
        point = half[0]
    else:
        ok = [p for p in points if isinstance(p.get("p99_ms"), (int, float)) and p["p99_ms"] <= p99_ms]
        if not ok:
            best = min((p for p in points if isinstance(p.get("p99_ms"), (int, float))), key=lambda p: p["p99_ms"],
                       default=None)
            lowest = f"the lowest measured is {best['p99_ms']:.0f} ms ({best.get('label')})" if best else "none has a p99"
            raise CapacityError(f"no measured operating point of the endpoint has p99 <= {p99_ms:g} ms: {lowest}. "
                                "Measure the endpoint at lower load or with other settings, or accept a higher p99")
        point = max(ok, key=lambda p: p["throughput_req_s"])
    busiest = max(points, key=lambda p: p["throughput_req_s"])
    saturation = busiest["throughput_req_s"]
    cores = busiest.get("serving_cores")
    if isinstance(cores, (int, float)) and not isinstance(cores, bool) and cores > 0:
        basis = f"CPU time of the replicas, proxy and Ray at saturation ({busiest.get('label')})"
    else:
        cores = _number(f.figures, "replicas", str(f.path)) * _number(f.figures, "cpus_per_replica", str(f.path))
        basis = "the CPUs Ray gave the replicas (CPU time not measured)"
    cost_at_saturation = float(cores) / saturation  # core seconds per request, cores fully busy
    utilisation = min(1.0, point["throughput_req_s"] / saturation)
    return {**point, "saturation_req_s": saturation, "utilisation": utilisation,
            "core_seconds_per_request_at_saturation": cost_at_saturation,
            "req_s_per_core": utilisation / cost_at_saturation, "cores_basis": basis}


def review_rates(f: Figures, input_type: str, harmful_share: float | None) -> dict[str, float]:
    """Review and block shares of posts of `input_type`: as measured, or at a platform's harmful share. Raises
    CapacityError when the type was not measured."""
    types = f.figures.get("input_types") or {}
    if input_type not in types:
        raise CapacityError(f"{f.path}: no review rates for {input_type} posts (measured: {', '.join(types) or 'none'}); "
                            f"run `{BENCHMARKS['review_rates']}`")
    t = types[input_type]
    where = f"{f.path}: {input_type}"
    if harmful_share is None:
        return {"review": float(t["review"]), "block": float(t["block"]), "harmful_share": float(t["harmful_share"]),
                "n": int(t["n"])}
    for key in ("review_harmful", "review_benign", "block_harmful", "block_benign"):
        if not isinstance(t.get(key), (int, float)):
            raise CapacityError(f"{where}: '{key}' missing: the rates cannot be given at another harmful share")
    h = harmful_share
    return {"review": h * t["review_harmful"] + (1 - h) * t["review_benign"],
            "block": h * t["block_harmful"] + (1 - h) * t["block_benign"], "harmful_share": h, "n": int(t["n"])}


# --- the plan ------------------------------------------------------------------------------------------------

@dataclass
class PlanRequest:
    """What the plan is for (the command's arguments)."""

    posts_per_day: float
    peak_factor: float
    images_share: float = 0.0
    p99_ms: float | None = None
    precisions: Sequence[str] = ("fp32", "bf16")
    harmful_share: float | None = None
    items_per_hour: float = 60.0
    shift_hours: float = 8.0
    cpus_per_replica: float = 1.0

    def check(self) -> None:
        """Raise CapacityError for a value out of range."""
        if not self.posts_per_day > 0:
            raise CapacityError(f"--posts-per-day must be > 0, got {self.posts_per_day:g}")
        if not self.peak_factor >= 1:
            raise CapacityError(f"--peak-factor is peak / average traffic and must be >= 1, got {self.peak_factor:g}")
        for name, v in (("--images-share", self.images_share), ("--harmful-share", self.harmful_share)):
            if v is not None and not 0 <= v <= 1:
                raise CapacityError(f"{name} must be in [0, 1], got {v:g}")
        for name, v in (("--p99-ms", self.p99_ms), ("--items-per-hour", self.items_per_hour),
                        ("--shift-hours", self.shift_hours), ("--cpus-per-replica", self.cpus_per_replica)):
            if v is not None and not v > 0:
                raise CapacityError(f"{name} must be > 0, got {v:g}")

    def mix(self) -> dict[str, float]:
        """Share of each input type in the traffic."""
        return {"text": 1.0 - self.images_share, "image+text": self.images_share}


@dataclass
class Plan:
    request: PlanRequest
    load: dict[str, float]
    sources: list[dict[str, Any]] = field(default_factory=list)
    batch: dict[str, Any] = field(default_factory=dict)
    endpoint: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)
    review: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the parts that could not be planned, each with the figure it lacks and the benchmark to run
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        r = self.request
        return {"request": {"posts_per_day": r.posts_per_day, "peak_factor": r.peak_factor,
                            "images_share": r.images_share, "p99_ms": r.p99_ms, "precisions": list(r.precisions),
                            "harmful_share": r.harmful_share, "items_per_hour": r.items_per_hour,
                            "shift_hours": r.shift_hours, "cpus_per_replica": r.cpus_per_replica},
                "load": self.load, "figures": self.sources, "batch": self.batch, "endpoint": self.endpoint,
                "gpu": self.gpu, "review": self.review, "notes": self.notes, "missing": self.missing}


def load_rates(req: PlanRequest) -> dict[str, float]:
    """Average and peak posts/s, per input type at peak."""
    avg = req.posts_per_day / SECONDS_PER_DAY
    peak = avg * req.peak_factor
    return {"average_posts_s": avg, "peak_posts_s": peak, **{f"peak_{k}_posts_s": peak * s for k, s in req.mix().items()}}


def plan_batch(req: PlanRequest, cost: Mapping[str, float]) -> dict[str, Any]:
    """Cores (or GPUs) for batch scoring: device-hours a day, and devices to keep pace with the peak rate."""
    mix = {k: s for k, s in req.mix().items() if s > 0}
    missing = [k for k in mix if k not in cost]
    if missing:
        raise CapacityError(f"no batch figure for {', '.join(missing)} posts at this precision")
    per_post = sum(s * cost[k] for k, s in mix.items())  # device seconds per post of the mix
    peak = req.posts_per_day / SECONDS_PER_DAY * req.peak_factor
    return {"seconds_per_post": per_post, "posts_s_per_device": 1.0 / per_post,
            "device_hours_per_day": req.posts_per_day * per_post / 3600.0,
            "devices_average": req.posts_per_day / SECONDS_PER_DAY * per_post, "devices_peak": peak * per_post,
            "per_type_posts_s_per_device": {k: 1.0 / cost[k] for k in cost}}


def plan_endpoint(req: PlanRequest, point: Mapping[str, Any], cost: Mapping[str, float] | None) -> dict[str, Any]:
    """Serving cores and replicas at peak, at the measured operating point `point` (serving_point). An image post
    costs the text request plus what the image adds in batch scoring (`cost`: batch_cost at the same precision,
    image+text minus text per row), provisioned at the same utilisation. Additive, not a ratio: the endpoint's text
    path (lone posts in fp32 ONNX Runtime) and batch scoring's (bf16 or guarded bf16 batches of 16) cost different
    amounts, and a ratio would carry that difference into the image's OCR cost (which neither precision changes)."""
    text_cost = 1.0 / point["req_s_per_core"]  # core seconds per text request at that utilisation
    per_type = {"text": text_cost}
    if req.images_share > 0:
        if cost is None or "image+text" not in cost or "text" not in cost:
            raise CapacityError("image posts on the endpoint need the batch figures of text and image+text posts at "
                                f"the same precision: run `{BENCHMARKS['batch_throughput']}`")
        extra = max(0.0, cost["image+text"] - cost["text"])  # core seconds the image adds (OCR, image encoder)
        per_type["image+text"] = text_cost + extra / point["utilisation"]
    peak = req.posts_per_day / SECONDS_PER_DAY * req.peak_factor
    cores = peak * sum(s * per_type[k] for k, s in req.mix().items() if s > 0)
    return {"point": dict(point), "core_seconds_per_request": per_type, "cores_peak": cores,
            "replicas": max(1, math.ceil(cores / req.cpus_per_replica - 1e-9)), "cpus_per_replica": req.cpus_per_replica}


def plan_review(req: PlanRequest, rates: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Review items and automatic blocks a day, and reviewers, from per-type shares (review_rates)."""
    mix = {k: s for k, s in req.mix().items() if s > 0}
    items = sum(req.posts_per_day * s * rates[k]["review"] for k, s in mix.items())
    blocks = sum(req.posts_per_day * s * rates[k]["block"] for k, s in mix.items())
    hours = items / req.items_per_hour
    return {"per_type": {k: dict(rates[k]) for k in mix}, "review_items_per_day": items,
            "review_share": items / req.posts_per_day, "blocks_per_day": blocks, "reviewer_hours_per_day": hours,
            "reviewers": hours / req.shift_hours, "peak_review_items_per_hour": items / 24.0 * req.peak_factor}


def plan(req: PlanRequest, found: Mapping[str, list[Figures]], *, policy_version: str | None = None,
         model_version: str | None = None) -> Plan:
    """The plan from the figures files `found` (load_all): each part (batch, endpoint, GPU, review queue) from its
    own figures; a part whose figures are missing or cannot meet the request is left out and named in
    `Plan.missing` with what to run. policy_version / model_version: the current model's, checked against the
    figures (a note when they differ). Raises CapacityError for arguments out of range, or when no part can be
    planned."""
    req.check()
    out = Plan(request=req, load=load_rates(req))
    figs: dict[str, Figures] = {}
    for name in BENCHMARKS:
        try:
            figs[name] = need(found, name)
        except CapacityError as exc:
            out.missing.append(str(exc))
    out.sources = [f.describe() for f in figs.values()]
    costs: dict[str, dict[str, float]] = {}
    if "batch_throughput" in figs:
        for precision in req.precisions:
            try:
                costs[precision] = batch_cost(figs["batch_throughput"], precision)
                out.batch[precision] = plan_batch(req, costs[precision])
            except CapacityError as exc:
                out.missing.append(f"batch scoring at {precision}: {exc}")
    if "serve_latency" in figs:
        serve_f = figs["serve_latency"]
        precision = serve_f.figures.get("precision")
        try:
            if precision not in req.precisions:
                raise CapacityError(f"{serve_f.path}: the endpoint was measured at {precision}, not at "
                                    f"{', '.join(req.precisions)}; run `{BENCHMARKS['serve_latency']} --precision "
                                    f"{req.precisions[0]}` or plan with --precision {precision}")
            point = serving_point(serve_f, req.p99_ms)
            if req.images_share > 0 and precision not in costs:
                raise CapacityError("image posts on the endpoint need the batch figures of text and image+text posts "
                                    f"at {precision}: run `{BENCHMARKS['batch_throughput']} --precision {precision}`")
            out.endpoint[precision] = plan_endpoint(req, point, costs.get(precision))
            # Whether lone requests ran their text encoder in ONNX Runtime (moderation.onnx_text): None when unrecorded.
            out.endpoint[precision]["onnx_text"] = serve_f.figures.get("onnx_text_on")
        except CapacityError as exc:
            out.missing.append(f"endpoint: {exc}")
    gpu_batch = [f for f in found.get("batch_throughput", []) if f.device() == "gpu"]
    if gpu_batch:
        f = max(gpu_batch, key=lambda f: f.measured)
        out.sources.append(f.describe())
        out.gpu = {p: plan_batch(req, batch_cost(f, p)) for p in req.precisions
                   if any(r.get("precision") == p for r in f.figures.get("rates", []))}
    else:
        out.notes.append("no GPU figures: none of the figures files was measured on a GPU (none was lent to the "
                         "machine that ran the benchmarks), so there is no GPU plan")
    if "review_rates" in figs:
        review_f = figs["review_rates"]
        try:
            rates = {k: review_rates(review_f, k, req.harmful_share) for k, s in req.mix().items() if s > 0}
            out.review = plan_review(req, rates)
            out.review["policy_version"] = review_f.figures.get("policy_version")
            out.review["model_version"] = review_f.figures.get("model_version")
        except CapacityError as exc:
            out.missing.append(f"review queue: {exc}")
        if policy_version and review_f.figures.get("policy_version") not in (None, policy_version):
            out.notes.append(f"the review rates were measured with policy {review_f.figures.get('policy_version')}; "
                             f"the model's policy now is {policy_version}: re-run `{BENCHMARKS['review_rates']}`")
    for f in figs.values():
        v = f.figures.get("model_version")
        if model_version and v and v != model_version:
            out.notes.append(f"{f.name} was measured with model {v}; the model now is {model_version}")
    if req.images_share > 0 and out.endpoint:
        out.notes.append("image posts on the endpoint are costed as a text request plus the image+text - text cost "
                         "of batch scoring, at the endpoint's utilisation (the endpoint benchmark sends text only); "
                         "image-only posts are in no figure and not planned")
    if not (out.batch or out.endpoint or out.gpu or out.review):
        raise CapacityError("nothing could be planned: " + "; ".join(out.missing))
    return out
