"""`moderation capacity`: cores / replicas for a post volume, and the review queue it implies, from measured figures.

Light at import (argparse only). The plan's arithmetic and the figures files: operations/capacity.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  moderation capacity --posts-per-day 5000000 --peak-factor 3
  moderation capacity --posts-per-day 5000000 --peak-factor 3 --images-share 0.2 --p99-ms 250 --harmful-share 0.02
  moderation capacity --posts-per-day 200000 --peak-factor 2 --precision bf16 --items-per-hour 90 --json

Every figure comes from a file a benchmark wrote (benchmarks/figures/*.json, `--record`); the plan names each
file, when it was measured and on what machine. A part whose figures are missing (or cannot meet --p99-ms) is
left out and named with the benchmark to run, the rest is printed, and the exit status is 2; else 0.
"""


def register(subparsers: Any) -> None:
    """Add the `capacity` subcommand."""
    p = subparsers.add_parser(
        "capacity", help="cores / replicas and the review queue for a post volume, from the measured benchmark figures",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description=textwrap.dedent("""\
            Plan the hardware for a post volume from the figures the benchmarks measured: cores for batch
            scoring (per input type, per precision), cores and replicas for the real-time endpoint at the
            measured operating point that meets --p99-ms, GPUs where a GPU was measured, and the human review
            queue the current policy implies (items a day, reviewer hours, reviewers)."""))
    p.add_argument("--posts-per-day", type=float, required=True, metavar="N", help="posts to moderate a day")
    p.add_argument("--peak-factor", type=float, required=True, metavar="F",
                   help="peak traffic / average traffic (e.g. 3: the busiest hour runs at 3x the day's mean rate)")
    p.add_argument("--images-share", type=float, default=0.0, metavar="S",
                   help="share of posts that carry an image with their text (default 0: text only)")
    p.add_argument("--p99-ms", type=float, default=None, metavar="L",
                   help="the endpoint's p99 latency budget (ms): plan at the busiest measured operating point within "
                        "it (default: the measured point at half saturation)")
    p.add_argument("--precision", choices=("fp32", "bf16"), action="append", default=None,
                   help="plan for this precision (repeatable; default: every precision the figures hold)")
    p.add_argument("--harmful-share", type=float, default=None, metavar="H",
                   help="share of harmful posts in your traffic, for the review queue (default: the measured test "
                        "sets' own share, far above most platforms')")
    p.add_argument("--items-per-hour", type=float, default=60.0, metavar="R",
                   help="review items one reviewer decides an hour (an assumption to set for your team; default 60)")
    p.add_argument("--shift-hours", type=float, default=8.0, help="reviewing hours per reviewer a day (default 8)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0,
                   help="CPUs per endpoint replica (default 1, as serving/config.yaml and the measured figures)")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="folder of the benchmark figures files (default: the repository's benchmarks/figures)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="model directory whose model and policy versions the figures are checked against "
                        "(default: the shipped default model)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_cmd_capacity)


def _current_versions(model: str | None) -> tuple[str | None, str | None]:
    """(model version, policy version) of `model` or the shipped default, read from its files (no torch)."""
    from importlib.resources import files

    from moderation.policy import Policy

    folder = Path(model) if model else Path(str(files("moderation") / "default_model"))
    config = folder / "config.json"
    if not config.is_file():
        return None, None
    version = json.loads(config.read_text(encoding="utf-8")).get("model_version")
    policy = Policy.load(folder).version if (folder / "policy.json").is_file() else None
    return version, policy


def _cmd_capacity(args: argparse.Namespace) -> int:
    from operations.capacity import DEFAULT_FIGURES_DIR, CapacityError, PlanRequest, load_all, plan

    try:
        found = load_all(args.figures or DEFAULT_FIGURES_DIR)
        precisions = args.precision or sorted({r["precision"] for f in found.get("batch_throughput", [])
                                               for r in f.figures.get("rates", []) if "precision" in r})
        req = PlanRequest(posts_per_day=args.posts_per_day, peak_factor=args.peak_factor, images_share=args.images_share,
                          p99_ms=args.p99_ms, precisions=precisions or ["fp32"], harmful_share=args.harmful_share,
                          items_per_hour=args.items_per_hour, shift_hours=args.shift_hours,
                          cpus_per_replica=args.cpus_per_replica)
        model_version, policy_version = _current_versions(args.model)
        result = plan(req, found, policy_version=policy_version, model_version=model_version)
    except CapacityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render(result.to_dict()))
    for line in result.missing:
        print(f"error: not planned: {line}", file=sys.stderr)
    return 2 if result.missing else 0


def _n(v: float, digits: int = 1) -> str:
    return f"{v:,.{digits}f}"


def render(p: dict[str, Any]) -> str:
    """The plan as text (the JSON of Plan.to_dict)."""
    r, load = p["request"], p["load"]
    lines = [f"Capacity plan: {_n(r['posts_per_day'], 0)} posts a day, peak {r['peak_factor']:g}x the mean, "
             f"{r['images_share']:.0%} with an image" + (f", p99 <= {r['p99_ms']:g} ms" if r["p99_ms"] else ""),
             f"load: {_n(load['average_posts_s'], 2)} posts/s on average, {_n(load['peak_posts_s'], 2)} posts/s at peak",
             "", "figures it rests on:"]
    for s in p["figures"]:
        gpu = s["gpu"]["name"] if s.get("gpu") else "no GPU"
        load_avg = s.get("load_average")
        lines.append(f"  {s['file']}: measured {s['measured']} on {s['cpus']} cores ({s['cpu_model']}), {gpu}, "
                     f"load average {load_avg[0] if load_avg else '?'}; model {s.get('model_version')}")
        lines.append(f"    by `{s['command']}`")
    for precision, e in p["endpoint"].items():
        pt = e["point"]
        onnx = ", lone requests' text encoder in ONNX Runtime" if e.get("onnx_text") else ""
        lines += ["", f"endpoint (CPU, {precision}{onnx}, one post per request):",
                  f"  operating point: {pt['label']}: {_n(pt['throughput_req_s'])} req/s, p99 {_n(pt['p99_ms'] or 0)} ms, "
                  f"{pt['utilisation']:.0%} of the measured saturation ({_n(pt['saturation_req_s'])} req/s)",
                  f"  a text request costs {1000 * pt['core_seconds_per_request_at_saturation']:.1f} ms of CPU "
                  f"({pt['cores_basis']}); at this utilisation one core serves {_n(pt['req_s_per_core'])} req/s",
                  f"  cores at peak: {_n(e['cores_peak'])} -> {e['replicas']} replicas x {e['cpus_per_replica']:g} CPU"]
        if "image+text" in e["core_seconds_per_request"]:
            lines.append(f"  an image+text request: {1000 * e['core_seconds_per_request']['image+text']:.1f} core-ms "
                         "at this utilisation (text request + the batch image+text - text cost per post, / the utilisation)")
    for precision, b in p["batch"].items():
        per = ", ".join(f"{k} {_n(v)}" for k, v in b["per_type_posts_s_per_device"].items())
        lines += ["", f"batch scoring (`moderation score`, CPU, {precision}):",
                  f"  posts/s per core: {per}; this mix {_n(b['posts_s_per_device'])}",
                  f"  {_n(b['device_hours_per_day'])} core-hours a day; {_n(b['devices_average'], 2)} cores to keep pace "
                  f"on average, {_n(b['devices_peak'], 2)} at peak"]
    for precision, b in p["gpu"].items():
        lines += ["", f"batch scoring (GPU, {precision}): {_n(b['posts_s_per_device'])} posts/s per GPU; "
                      f"{_n(b['devices_peak'], 2)} GPUs at peak, {_n(b['device_hours_per_day'])} GPU-hours a day"]
    rv = p["review"] or None
    if rv is None:
        return "\n".join(lines + _tail(p))
    per = "; ".join(f"{k}: review {v['review']:.1%}, block {v['block']:.1%} (harmful share {v['harmful_share']:.1%}, "
                    f"{v['n']:,} test posts)" for k, v in rv["per_type"].items())
    lines += ["", f"review queue at policy {rv['policy_version']} (model {rv['model_version']}):", f"  {per}",
              f"  {_n(rv['review_items_per_day'], 0)} review items a day ({rv['review_share']:.1%} of posts), "
              f"{_n(rv['peak_review_items_per_hour'], 0)} an hour at peak; {_n(rv['blocks_per_day'], 0)} automatic "
              "blocks a day",
              f"  {_n(rv['reviewer_hours_per_day'])} reviewer-hours a day at {r['items_per_hour']:g} items/hour "
              f"(assumed: --items-per-hour) = {_n(rv['reviewers'])} reviewers of {r['shift_hours']:g} h"]
    if r["harmful_share"] is None:
        lines.append("  (at the test sets' harmful share: give --harmful-share for your platform's)")
    return "\n".join(lines + _tail(p))


def _tail(p: dict[str, Any]) -> list[str]:
    """The notes and the parts not planned."""
    out = []
    for title, items in (("not planned (missing figures)", p["missing"]), ("notes", p["notes"])):
        if items:
            out += ["", f"{title}:"] + [textwrap.fill(n, 110, initial_indent="  - ", subsequent_indent="    ")
                                        for n in items]
    return out
