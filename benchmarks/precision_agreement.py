"""Do the thresholds stay valid in bf16 (and int8)? Every shared test split scored in fp32 and in each other
precision by the same model, its calibration and its policy; the decisions compared post by post.

    python -m benchmarks.precision_agreement                         # shipped default model, every test split
    python -m benchmarks.precision_agreement --limit 800 --record    # a sample per dataset; write precision.json
    python -m benchmarks.precision_agreement --model DIR --precisions bf16 --tolerance-blocks 0
    python -m benchmarks.precision_agreement --precisions bf16 bf16-guarded bf16-block-guarded --record

Each dataset's test split is loaded through moderation.datasets (every shared dataset with a test split: the
default model's, the hard negatives and the Jigsaw sample), `--limit` posts drawn from each at random (seed
`--seed`) when given. Posts are prepared once (text checks, image decoding, OCR: precision-independent), then
scored by the model in fp32 (the reference: the thresholds are fitted in it), in bf16 autocast and in int8
(dynamic quantization of the text encoder's Linear layers, torch.ao.quantization.quantize_dynamic), in an order
that rotates per dataset so that a change of the machine's load hits each alike.

bf16-guarded and bf16-block-guarded (moderation.precision) need their margins (one measurement for both) before
the test splits are scored: each dataset's val split (the same `--limit` and seed) is scored in fp32 and bf16
first, and the margin of a category is the largest |bf16 - fp32| logit difference there times `--guard-factor`
(default 2). The test splits then check them: a test
post whose difference exceeds its margin can still flip, and would be counted. Printed per dataset and in
total, per precision against fp32:

- the largest |score difference| per category (calibrated probabilities) and |logit difference|;
- decisions changed: posts whose action (allow / review / block) differs;
- blocks changed: posts whose set of blocked categories differs (a block gained, lost or moved);
- speed: posts/s of the scoring step (tokenizing, lexical channel, forward, calibration, policy) and of the
  model's forward alone, as ratios to fp32 within this run;
- the guarded precisions: the share of posts scored twice (bf16, then fp32: near a threshold, or a block one).

Exit status 1 when a precision named by `--gate` (default: bf16, or the runnable precisions measured when bf16 is
not among them) changes more blocks than
`--tolerance-blocks` (default 0, issue 19's target); 0 otherwise; 2 for bad arguments. `--fail-fast` stops after
the first dataset that takes a gated precision beyond the tolerance (the verdict cannot improve; the datasets
left are not scored, and the report and record say so). `--record` writes the
verdicts into the model directory's precision.json (moderation.precision): `auto` runs bf16 (or a guarded one, with
the margins measured here) only for a model version whose record validates it. int8 is measured, never recorded as runnable: it is not a precision a Scorer
offers (docs/benchmarks.md says why).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.batch_throughput import ForwardClock
from moderation.cli import _quiet_libraries
from moderation.datasets import (ALL_DATASETS, DATA_FILE, KNOWN_DATASETS, data_root, DatasetWarning,
                                 default_dataset_specs, load_labelled)
from moderation.model import PreparedPost
from moderation.precision import (BLOCK_GUARDED, DEFAULT_BATCH_SIZE, GUARDED, GUARDED_MODES, PRECISIONS,
                                  cpu_native_bf16, PrecisionRecord)
from moderation.scorer import Scorer

REFERENCE = "fp32"
MEASURABLE = ("bf16", GUARDED, BLOCK_GUARDED, "int8")
ACTIONS = ("allow", "review", "block")


# --- the posts -------------------------------------------------------------------------------------------

def test_split_datasets(root: Path) -> list[str]:
    """Every known shared dataset under `root` that has rows in a test split, ALL_DATASETS order first."""
    names = [*ALL_DATASETS, *sorted(set(KNOWN_DATASETS) - set(ALL_DATASETS))]
    found = []
    for name in names:
        path = root / name / DATA_FILE
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as fh:  # a cheap scan: the loader reads it again, properly
            if any('"test"' in line for line in fh):
                found.append(name)
    return found


def load_test_posts(root: Path, name: str, categories: Sequence[str], limit: int | None,
                    seed: int, split: str = "test") -> tuple[list[dict[str, Any]], int]:
    """The test split (or `split`) of one shared dataset (moderation.datasets), `limit` posts drawn at random when
    given. Returns (posts, posts in the split)."""
    specs = default_dataset_specs(root, names=[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)  # malformed rows are the dataset's business, counted there
        data = load_labelled(specs, list(categories), split)
    posts, total = data.posts, len(data.posts)
    if limit is not None and total > limit:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
        posts = [posts[i] for i in keep]
    return posts, total


# --- the precisions --------------------------------------------------------------------------------------

def int8_model(model: Any) -> Any:
    """A copy of `model` whose text encoder's Linear layers are dynamically quantized to int8 (weights int8,
    activations quantized per batch), the rest untouched. Raises RuntimeError when this torch cannot."""
    import torch

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:  # pragma: no cover - torch without the ao namespace
        raise RuntimeError(f"int8: torch.ao.quantization is not available ({exc})") from None
    q = copy.deepcopy(model)
    encoder = q.encoders["text"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates the ao path in favour of torchao, which is not installed
        encoder.model = quantize_dynamic(encoder.model, {torch.nn.Linear}, dtype=torch.qint8)
    return q.eval()


def build_scorers(scorer: Any, precisions: Sequence[str],
                  guard_margin: dict[str, float] | None = None) -> dict[str, Any]:
    """One scorer per precision, sharing the reference scorer's model (int8: a quantized copy), calibration and
    policy (bf16-guarded: with `guard_margin`). They only score posts the reference scorer prepared."""
    out = {REFERENCE: scorer}
    opts = dict(batch_size=scorer.batch_size, policy=scorer.policy, ocr="off", num_workers=0,
                detect_language=scorer.detect_language)
    for p in precisions:
        if p == "bf16":
            out[p] = Scorer(scorer.model, scorer.info, precision="bf16", device=str(scorer.device), **opts)
        elif p in GUARDED_MODES:
            out[p] = Scorer(scorer.model, scorer.info, precision=p, device=str(scorer.device),
                            guard_margin=guard_margin, **opts)
        elif p == "int8":
            if scorer.device.type != "cpu":
                raise ValueError("int8 dynamic quantization runs on the CPU only (--device cpu)")
            out[p] = Scorer(int8_model(scorer.model), scorer.info, precision="fp32", device="cpu", **opts)
        else:
            raise ValueError(f"unknown precision {p!r}; measurable: {', '.join(MEASURABLE)}")
    for s in out.values():
        s._clock = ForwardClock(s.model)
    return out


def score_prepared(scorer: Any, prepared: Sequence[Any]) -> tuple[dict[str, Any], float, float]:
    """Score prepared posts. Returns ({"scores" (N, C), "logits" (N, C), "actions" [N], "blocked" [N frozensets],
    "rescored": posts scored twice (bf16-guarded)}, seconds, forward seconds)."""
    clock = scorer._clock
    clock.seconds = 0.0
    twice = scorer.forward_stats["rescored"]
    t = time.perf_counter()
    logits, truncated = scorer.logits(prepared)
    results = scorer.results(prepared, logits, truncated)
    seconds = time.perf_counter() - t
    cats = scorer.categories
    scores = np.array([[r.categories[c].score for c in cats] for r in results], dtype=np.float64).reshape(-1, len(cats))
    return ({"scores": scores, "logits": logits, "rescored": scorer.forward_stats["rescored"] - twice,
             "actions": [r.action for r in results],
             "blocked": [frozenset(c for c in cats if r.categories[c].action == "block") for r in results]},
            seconds, clock.seconds)


# --- the comparison --------------------------------------------------------------------------------------

def compare(reference: dict[str, Any], other: dict[str, Any], categories: Sequence[str],
            ids: Sequence[str]) -> dict[str, Any]:
    """What changed from `reference` to `other` (outputs of score_prepared for the same posts, same order).

    Returns posts, max_abs_diff / mean_abs_diff per category, decisions_changed (action differs), transitions
    {"fp32 action->other action": count}, blocks_changed (blocked categories differ), blocks_gained / _lost
    (post blocked in one only), and `changed`: the changed posts (id, both actions, both blocked sets, scores)."""
    a, b = reference["scores"], other["scores"]
    if a.shape != b.shape or len(reference["actions"]) != len(ids):
        raise ValueError("the two outputs are not of the same posts")
    diff = np.abs(a - b)
    transitions: dict[str, int] = {}
    changed = []
    decisions = blocks = gained = lost = 0
    for i, pid in enumerate(ids):
        ra, oa = reference["actions"][i], other["actions"][i]
        rb, ob = reference["blocked"][i], other["blocked"][i]
        if ra != oa:
            decisions += 1
            key = f"{ra}->{oa}"
            transitions[key] = transitions.get(key, 0) + 1
        if rb != ob:
            blocks += 1
            gained += (oa == "block") and (ra != "block")
            lost += (ra == "block") and (oa != "block")
        if ra != oa or rb != ob:
            changed.append({"id": pid, "reference": ra, "other": oa, "reference_blocked": sorted(rb),
                            "other_blocked": sorted(ob),
                            "reference_scores": {c: round(float(a[i, j]), 6) for j, c in enumerate(categories)},
                            "other_scores": {c: round(float(b[i, j]), 6) for j, c in enumerate(categories)}})
    n = len(ids)
    logit_diff = (np.abs(reference["logits"] - other["logits"]) if "logits" in reference and "logits" in other
                  else np.zeros_like(diff))
    return {"posts": n,
            "max_abs_diff": {c: float(diff[:, j].max()) if n else 0.0 for j, c in enumerate(categories)},
            "max_abs_logit_diff": {c: float(logit_diff[:, j].max()) if n else 0.0 for j, c in enumerate(categories)},
            "rescored": int(other.get("rescored", 0)),
            "mean_abs_diff": {c: float(diff[:, j].mean()) if n else 0.0 for j, c in enumerate(categories)},
            "decisions_changed": decisions, "transitions": transitions, "blocks_changed": blocks,
            "blocks_gained": int(gained), "blocks_lost": int(lost), "changed": changed}


def merge(parts: Sequence[dict[str, Any]], categories: Sequence[str]) -> dict[str, Any]:
    """The total over datasets of compare() outputs (largest differences, summed counts, weighted means)."""
    n = sum(p["posts"] for p in parts)
    transitions: dict[str, int] = {}
    for p in parts:
        for k, v in p["transitions"].items():
            transitions[k] = transitions.get(k, 0) + v
    return {"posts": n,
            "max_abs_diff": {c: max((p["max_abs_diff"][c] for p in parts), default=0.0) for c in categories},
            "max_abs_logit_diff": {c: max((p["max_abs_logit_diff"][c] for p in parts), default=0.0) for c in categories},
            "rescored": sum(p["rescored"] for p in parts),
            "mean_abs_diff": {c: (sum(p["mean_abs_diff"][c] * p["posts"] for p in parts) / n if n else 0.0)
                              for c in categories},
            "decisions_changed": sum(p["decisions_changed"] for p in parts), "transitions": transitions,
            "blocks_changed": sum(p["blocks_changed"] for p in parts),
            "blocks_gained": sum(p["blocks_gained"] for p in parts),
            "blocks_lost": sum(p["blocks_lost"] for p in parts),
            "changed": [c for p in parts for c in p["changed"]]}


# --- the margins of bf16-guarded ---------------------------------------------------------------------------

def guard_margins(scorer: Any, root: Path, names: Sequence[str], limit: int | None, seed: int, factor: float,
                  quiet: bool = False) -> dict[str, Any]:
    """The logit margins of bf16-guarded, from the val splits: per category, the largest |bf16 - fp32| logit
    difference over each dataset's val posts (`limit` drawn at random, as the test splits), times `factor`."""
    from tqdm.auto import tqdm

    cats = scorer.categories
    largest = np.zeros(len(cats))
    counted: dict[str, int] = {}
    for name in tqdm(names, desc="bf16-guarded margins (val splits)", unit="dataset", disable=quiet, dynamic_ncols=True):
        posts, _ = load_test_posts(root, name, cats, limit, seed, split="val")
        prepared = [p for p in scorer.prepare_many(posts, root / name) if isinstance(p, PreparedPost)]
        if not prepared:
            continue
        ref = scorer._forward(prepared, bf16=False)[0]
        low = scorer._forward(prepared, bf16=True)[0]
        largest = np.maximum(largest, np.abs(ref - low).max(axis=0))
        counted[name] = len(prepared)
    if not counted:
        raise ValueError("bf16-guarded: no val split to measure its margins on (the datasets have none)")
    return {"posts": sum(counted.values()), "datasets": counted, "factor": factor,
            "max_abs_logit_diff": {c: round(float(largest[j]), 6) for j, c in enumerate(cats)},
            # rounded up: a margin never below the measured difference times the factor
            "margin_logit": {c: math.ceil(float(largest[j]) * factor * 1e6) / 1e6 for j, c in enumerate(cats)}}


# --- the run ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score every test split in every precision; the report (see the module docstring)."""
    import torch
    from tqdm.auto import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    opts = dict(batch_size=args.batch_size, precision=REFERENCE, device=args.device, ocr=args.ocr,
                policy=args.policy)
    scorer = Scorer.from_dir(args.model, **opts) if args.model else Scorer.default(**opts)
    if not scorer.trained or scorer.info.path is None:
        raise ValueError("the model is untrained (no thresholds): there are no decisions to compare")
    precisions = list(dict.fromkeys(args.precisions))
    cats = scorer.categories
    names = args.datasets or test_split_datasets(args.data_root)
    if not names:
        raise FileNotFoundError(f"no shared dataset with a test split under {args.data_root} (give --data-root)")
    margins = (guard_margins(scorer, args.data_root, names, args.limit, args.seed, args.guard_factor, args.quiet)
               if set(GUARDED_MODES) & set(precisions) else None)
    scorers = build_scorers(scorer, precisions, margins["margin_logit"] if margins else None)
    order = [REFERENCE, *precisions]
    report: dict[str, Any] = {
        "model_version": scorer.model_version, "model_dir": str(scorer.info.path),
        "thresholds_version": scorer.thresholds_version, "policy_version": scorer.policy.version,
        "categories": cats, "reference": REFERENCE, "precisions": precisions, "limit": args.limit, "seed": args.seed,
        "tolerance_blocks": args.tolerance_blocks, "gate": list(args.gate),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine(), "native_bf16": cpu_native_bf16(),
                    "device": str(scorer.device)},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "datasets": {},
        **({"guard_margins": margins} if margins else {})}
    seconds = {p: 0.0 for p in order}
    forward = {p: 0.0 for p in order}
    per_precision: dict[str, list[dict[str, Any]]] = {p: [] for p in precisions}
    total_posts = sum_errors = 0
    for k, name in enumerate(names):
        posts, in_split = load_test_posts(args.data_root, name, cats, args.limit, args.seed)
        image_root = args.data_root / name
        prepared_all = []
        bar = tqdm(total=len(posts), desc=f"{name}: preparing", unit="post", disable=args.quiet, dynamic_ncols=True)
        for start in range(0, len(posts), 256):
            prepared_all += scorer.prepare_many(posts[start:start + 256], image_root)
            bar.update(min(256, len(posts) - start))
        bar.close()
        prepared = [p for p in prepared_all if isinstance(p, PreparedPost)]
        errors = len(prepared_all) - len(prepared)
        ids = [p.id for p in prepared]
        outputs: dict[str, dict[str, Any]] = {}
        rotation = order[k % len(order):] + order[:k % len(order)]  # a drifting load hits every precision alike
        for p in tqdm(rotation, desc=f"{name}: scoring", unit="precision", disable=args.quiet, dynamic_ncols=True):
            outputs[p], s, f = score_prepared(scorers[p], prepared)
            seconds[p] += s
            forward[p] += f
        entry: dict[str, Any] = {"posts": len(prepared), "test_split_posts": in_split, "sampled": len(posts),
                                 "unscorable": errors,
                                 "actions": {a: outputs[REFERENCE]["actions"].count(a) for a in ACTIONS},
                                 "against_fp32": {}}
        for p in precisions:
            cmp = compare(outputs[REFERENCE], outputs[p], cats, ids)
            per_precision[p].append(cmp)
            entry["against_fp32"][p] = {k2: v for k2, v in cmp.items() if k2 != "changed"}
        report["datasets"][name] = entry
        total_posts += len(prepared)
        sum_errors += errors
        gated = [g for g in args.gate if sum(c["blocks_changed"] for c in per_precision[g]) > args.tolerance_blocks]
        if args.fail_fast and gated and k + 1 < len(names):
            report["stopped_early"] = {"after": name, "not_scored": names[k + 1:],
                                       "reason": f"{', '.join(gated)} beyond the tolerance of {args.tolerance_blocks} blocks"}
        if not args.quiet:
            line = ", ".join(f"{p}: {entry['against_fp32'][p]['decisions_changed']} decisions / "
                             f"{entry['against_fp32'][p]['blocks_changed']} blocks changed" for p in precisions)
            print(f"[{name}] {len(prepared)} posts; {line}", file=sys.stderr, flush=True)
        if "stopped_early" in report:
            print(f"--fail-fast: stopped after {name} ({report['stopped_early']['reason']}); not scored: "
                  f"{', '.join(report['stopped_early']['not_scored'])}", file=sys.stderr, flush=True)
            break
    report["total"] = {"posts": total_posts, "unscorable": sum_errors, "against_fp32": {}}
    for p in precisions:
        report["total"]["against_fp32"][p] = merge(per_precision[p], cats)
    report["speed"] = {p: {"seconds": seconds[p], "forward_seconds": forward[p],
                           "posts_per_s": total_posts / seconds[p] if seconds[p] else float("nan"),
                           "forward_posts_per_s": total_posts / forward[p] if forward[p] else float("nan"),
                           "vs_fp32": seconds[REFERENCE] / seconds[p] if seconds[p] else float("nan"),
                           "forward_vs_fp32": forward[REFERENCE] / forward[p] if forward[p] else float("nan")}
                       for p in order}
    report["verdicts"] = verdicts(report)
    return report


def verdicts(report: dict[str, Any]) -> dict[str, Any]:
    """Per measured precision: within the block tolerance or not; and whether int8 beats bf16 (faster at no fewer
    decisions kept), the rule for adopting it."""
    tol = report["tolerance_blocks"]
    out: dict[str, Any] = {}
    for p, t in report["total"]["against_fp32"].items():
        out[p] = {"blocks_changed": t["blocks_changed"], "within_tolerance": t["blocks_changed"] <= tol,
                  "decision_agreement": 1 - t["decisions_changed"] / t["posts"] if t["posts"] else 1.0}
    if "int8" in out and "bf16" in out:
        speed = report["speed"]
        faster = speed["int8"]["posts_per_s"] > speed["bf16"]["posts_per_s"]
        agrees = out["int8"]["decision_agreement"] >= out["bf16"]["decision_agreement"]
        out["int8_beats_bf16"] = bool(faster and agrees and out["int8"]["within_tolerance"])
        out["int8_over_bf16_speed"] = speed["int8"]["posts_per_s"] / speed["bf16"]["posts_per_s"]
    return out


def record(report: dict[str, Any], command: str) -> Path:
    """Write the run's verdicts for the precisions a Scorer can run (bf16) into the model's precision.json."""
    precisions = {}
    for p, t in report["total"]["against_fp32"].items():
        if p not in PRECISIONS:
            continue
        precisions[p] = {"status": "validated" if t["blocks_changed"] <= report["tolerance_blocks"] else "refused",
                         "posts": t["posts"], "blocks_changed": t["blocks_changed"],
                         "decisions_changed": t["decisions_changed"],
                         "max_abs_diff": {c: round(v, 6) for c, v in t["max_abs_diff"].items()},
                         "max_abs_logit_diff": {c: round(v, 6) for c, v in t["max_abs_logit_diff"].items()},
                         "speed_vs_fp32": round(report["speed"][p]["vs_fp32"], 3)}
        if p in GUARDED_MODES:
            m = report["guard_margins"]
            precisions[p].update(
                margin_logit=m["margin_logit"], rescored_share=round(t["rescored"] / t["posts"], 4) if t["posts"] else 0.0,
                margin_from=(f"val splits ({m['posts']:,} posts): largest |bf16 - fp32| logit difference "
                             f"{m['max_abs_logit_diff']} x {m['factor']:g}"))
    measured_only = {p: {"posts": t["posts"], "blocks_changed": t["blocks_changed"],
                         "decisions_changed": t["decisions_changed"],
                         "speed_vs_fp32": round(report["speed"][p]["vs_fp32"], 3)}
                     for p, t in report["total"]["against_fp32"].items() if p not in PRECISIONS}
    rec = PrecisionRecord(
        model_version=report["model_version"], precisions=precisions,
        tolerance={"blocks_changed": report["tolerance_blocks"]},
        meta={"measured": report["date"], "command": command, "policy_version": report["policy_version"],
              "thresholds_version": report["thresholds_version"],
              "datasets": {n: d["posts"] for n, d in report["datasets"].items()},
              "sample": (f"{report['limit']} posts drawn at random (seed {report['seed']}) from each test split"
                         if report["limit"] else "every post of every test split"),
              **({"stopped_early": report["stopped_early"]} if "stopped_early" in report else {}),
              "machine": report["machine"], **({"measured_only": measured_only} if measured_only else {})})
    return rec.save(report["model_dir"])


def print_report(report: dict[str, Any]) -> None:
    cats = report["categories"]
    precisions = report["precisions"]
    if "stopped_early" in report:
        s = report["stopped_early"]
        print(f"\nstopped early after {s['after']} ({s['reason']}); not scored: {', '.join(s['not_scored'])}")
    print(f"\nmodel {report['model_version']}  policy {report['policy_version']}  reference fp32  "
          f"sample: {report['limit'] or 'all'} per test split  torch threads {report['machine']['torch_threads']}  "
          f"native bf16: {', '.join(report['machine']['native_bf16']) or 'none'}")
    head = f"{'dataset':<26} {'posts':>6}"
    for p in precisions:
        head += f" | {p + ' max|d| ' + '/'.join(c[:4] for c in cats):>28} {'dec.':>5} {'blocks':>6}"
    print(head)
    print("-" * len(head))
    rows = [(n, d["posts"], d["against_fp32"]) for n, d in report["datasets"].items()]
    rows.append(("TOTAL", report["total"]["posts"], report["total"]["against_fp32"]))
    for name, n, against in rows:
        line = f"{name:<26} {n:>6}"
        for p in precisions:
            a = against[p]
            diffs = "/".join(f"{a['max_abs_diff'][c]:.4f}" for c in cats)
            line += f" | {diffs:>28} {a['decisions_changed']:>5} {a['blocks_changed']:>6}"
        print(line)
    for p in precisions:
        t = report["total"]["against_fp32"][p]
        tr = ", ".join(f"{k} {v}" for k, v in sorted(t["transitions"].items())) or "none"
        print(f"{p}: decisions changed {t['decisions_changed']} of {t['posts']} ({tr}); blocks changed "
              f"{t['blocks_changed']} (gained {t['blocks_gained']}, lost {t['blocks_lost']}); mean |d| "
              + "/".join(f"{t['mean_abs_diff'][c]:.5f}" for c in cats) + "; max |d logit| "
              + "/".join(f"{t['max_abs_logit_diff'][c]:.4f}" for c in cats)
              + (f"; scored twice {t['rescored']} ({t['rescored'] / max(t['posts'], 1):.1%})" if p in GUARDED_MODES
                 else ""))
    if "guard_margins" in report:
        m = report["guard_margins"]
        print(f"guard margins (logit, from {m['posts']:,} val posts: largest difference x {m['factor']:g}): "
              + ", ".join(f"{c} {m['margin_logit'][c]:.4f}" for c in cats))
    sp = report["speed"]
    print("speed (same run): " + "; ".join(
        f"{p} {sp[p]['posts_per_s']:.1f} posts/s ({sp[p]['vs_fp32']:.2f}x fp32), forward {sp[p]['forward_posts_per_s']:.1f}"
        f"/s ({sp[p]['forward_vs_fp32']:.2f}x)" for p in sp))
    v = report["verdicts"]
    for p in precisions:
        ok = "within" if v[p]["within_tolerance"] else "BEYOND"
        print(f"{p}: {v[p]['blocks_changed']} blocks changed: {ok} the tolerance of {report['tolerance_blocks']}; "
              f"decision agreement {v[p]['decision_agreement']:.4%}")
    if "int8_beats_bf16" in v:
        print(f"int8 vs bf16: {v['int8_over_bf16_speed']:.2f}x the speed; "
              + ("int8 beats bf16 (faster at no lower agreement)" if v["int8_beats_bf16"]
                 else "int8 does not beat bf16 (slower, or fewer decisions kept): not adopted"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="the shared datasets folder (default: $MODERATION_DATA_ROOT, else ../shared/datasets)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                   help="dataset folders to score (default: every known one with a test split)")
    p.add_argument("--limit", type=int, default=None, help="posts drawn at random from each test split (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", nargs="+", default=list(MEASURABLE), choices=MEASURABLE,
                   help="precisions compared with fp32 (default: all: bf16 bf16-guarded int8)")
    p.add_argument("--gate", nargs="*", default=None, choices=MEASURABLE,
                   help="precisions whose blocks changed decide the exit status (default: bf16 when measured, else "
                        "the measured precisions a Scorer runs)")
    p.add_argument("--guard-factor", type=float, default=2.0,
                   help="bf16-guarded: its margin is the val splits' largest logit difference times this (default: 2)")
    p.add_argument("--tolerance-blocks", type=int, default=0,
                   help="blocks a gated precision may change, in total (default: 0)")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop after the first dataset that takes a gated precision beyond the tolerance")
    p.add_argument("--policy", default=None, help="policy file to use instead of the model directory's")
    p.add_argument("--ocr", choices=("auto", "off"), default="auto", help="OCR of image posts (default: auto, as served)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="as scoring's default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--record", action="store_true",
                   help="write the verdicts into the model directory's precision.json (what `auto` reads)")
    p.add_argument("--json", type=Path, default=None, help="write the full report (with every changed post) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-dataset lines")
    args = p.parse_args(argv)
    args.data_root = data_root(args.data_root)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.gate is None:
        args.gate = ["bf16"] if "bf16" in args.precisions else [x for x in args.precisions if x in PRECISIONS]
    if args.guard_factor < 1:
        p.error("--guard-factor must be >= 1 (a margin below the measured difference guards nothing)")
    missing = [g for g in args.gate if g not in args.precisions]
    if missing:
        p.error(f"--gate {' '.join(missing)}: not among --precisions")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    try:
        report = run(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.record:
        command = "python -m benchmarks.precision_agreement " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"recorded: {record(report, command.strip())}")
    beyond = [g for g in args.gate if report["total"]["against_fp32"][g]["blocks_changed"] > args.tolerance_blocks]
    if beyond:
        print(f"FAIL: {', '.join(beyond)} changed more blocks than the tolerance ({args.tolerance_blocks})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
