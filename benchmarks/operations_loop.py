"""The operations loop on real data: monitoring windows, simulated reviewers, a retrained challenger.

    nice -n 10 python -m benchmarks.operations_loop --out /tmp/ops          # about 30-60 min on 2 busy CPU cores

Every step runs the `moderation` command line in this process, as an operator would (docs/operations.md), and
the figures are collected into OUT/figures.json:

1. champion: `moderation train --mode frozen --calibrate` on tweeteval_hate (-> hate), tweeteval_offensive and
   multioff (-> offensive): a frozen-encoder model on cached embeddings (minutes), calibrated on their val splits.
2. monitoring: posts of the val + test splits of tweeteval_hate and tweeteval_offensive (never trained on),
   drawn into a reference day and a second day of the same distribution (--base-share harmful, 10%) and a day
   where the share of harmful posts jumps (--jump-share, 40%: a raid), each with a created_at time; scored with
   `moderation score` (batch outputs carry created_at); `moderation monitor --time-column created_at` on
   reference vs same day (expect exit 0) and reference vs shifted day (expect exit 3).
3. feedback, a SIMULATION of reviewers: --traffic posts of gab_hate_corpus's train split (a platform the champion
   never saw: new slang, new targets) are scored by the champion; the posts it would send to review (score >=
   --review-min-score, not blocked) plus a --report-rate share of the others ("user reports") get verdicts taken
   from the dataset's own labels (`moderation feedback simulate`), which `moderation feedback add` stores with
   their content joined from the batch job's input rows.
4. retraining: `moderation retrain --mode frozen` trains the challenger on the champion's three datasets plus the
   feedback's train part, recalibrates it, and compares it with the champion on the fixed test splits, on
   gab_hate_corpus's test split (--eval-data: the new platform's own posts, unbiased by the review selection) and
   on the feedback's hold-out, with paired bootstrap intervals; exit 0 promotable, 3 not.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

from moderation.cli import main as moderation_main

REPO = Path(__file__).resolve().parents[1]


def _rows(path: Path, splits: set[str]) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("split") in splits and r.get("text"):
                out.append(r)
    return out


def _dump(path: Path, rows: Sequence[dict[str, Any]], start: datetime, prefix: str) -> Path:
    """A content dump: id, text, created_at spread over one day (the labels stay out of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i, r in enumerate(rows):
            when = start + timedelta(seconds=86400 * i / len(rows))
            fh.write(json.dumps({"id": f"{prefix}{r['id']}", "text": r["text"],
                                 "created_at": when.isoformat(timespec="seconds").replace("+00:00", "Z")}) + "\n")
    return path


def run(argv: Sequence[str], figures: dict[str, Any], key: str) -> int:
    print(f"\n$ moderation {' '.join(argv)}", flush=True)
    t0 = time.time()
    status = moderation_main(list(argv))
    figures.setdefault("steps", {})[key] = {"exit": status, "seconds": round(time.time() - t0, 1),
                                           "command": "moderation " + " ".join(argv)}
    print(f"[{key}: exit {status}, {time.time() - t0:.0f} s]", flush=True)
    if status == 2 or (status != 0 and not key.startswith(("monitor", "retrain"))):
        raise SystemExit(f"step {key} failed (exit {status}); see above")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    ap.add_argument("--window", type=int, default=1500, help="posts per monitoring day (default 1500)")
    ap.add_argument("--base-share", type=float, default=0.10,
                    help="share of harmful posts on the reference day and the same-distribution day (default 0.10)")
    ap.add_argument("--jump-share", type=float, default=0.40, help="... and on the shifted day (default 0.40)")
    ap.add_argument("--traffic", type=int, default=6000, help="gab posts the champion scores (default 6000)")
    ap.add_argument("--review-min-score", type=float, default=0.5)
    ap.add_argument("--report-rate", type=float, default=0.02)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated steps to skip when their outputs exist: "
                                               "champion,monitor,traffic,feedback,retrain")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    out, root = args.out, args.data_root
    out.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    figures: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    champion = out / "champion"

    # 1. the champion
    if "champion" not in skip or not (champion / "thresholds.json").is_file():
        run(["train", "--data", f"{root}/tweeteval_hate", "--data", f"{root}/tweeteval_offensive",
             "--data", f"{root}/multioff", "--mode", "frozen", "--out", str(champion), "--calibrate",
             "--threads", str(args.threads), "--name", "champion"], figures, "champion")

    # 2. monitoring windows
    rng = random.Random(0)
    pool = [dict(r, _src="h") for r in _rows(root / "tweeteval_hate" / "data.jsonl", {"val", "test"})]
    pool += [dict(r, _src="o") for r in _rows(root / "tweeteval_offensive" / "data.jsonl", {"val", "test"})]
    for r in pool:
        r["id"] = f"{r['_src']}{r['id']}"
    rng.shuffle(pool)
    n = args.window
    pos = [r for r in pool if r["label"] == 1]
    neg = [r for r in pool if r["label"] == 0]

    def window(share: float) -> list[dict[str, Any]]:
        k = round(n * share)
        if k > len(pos) or n - k > len(neg):
            raise SystemExit(f"not enough posts for windows of {n} (--window)")
        rows = [pos.pop() for _ in range(k)] + [neg.pop() for _ in range(n - k)]
        rng.shuffle(rows)
        return rows

    ref_rows, same_rows, shifted_rows = window(args.base_share), window(args.base_share), window(args.jump_share)
    share = lambda rows: sum(r["label"] for r in rows) / len(rows)  # noqa: E731
    figures["windows"] = {name: {"posts": len(rows), "harmful_share": round(share(rows), 3)}
                          for name, rows in (("reference", ref_rows), ("same", same_rows), ("shifted", shifted_rows))}
    day = datetime(2026, 11, 20, tzinfo=timezone.utc)
    scored = out / "scored"
    scored.mkdir(exist_ok=True)
    for i, (name, rows) in enumerate((("reference", ref_rows), ("same", same_rows), ("shifted", shifted_rows))):
        dump = _dump(out / "dumps" / f"{name}.jsonl", rows, day + timedelta(days=i), "")
        if "monitor" not in skip or not (scored / f"{name}.parquet").is_file():
            run(["score", str(dump), "--model", str(champion), "--out", str(scored / f"{name}.parquet"),
                 "--overwrite", "--no-progress"], figures, f"score_{name}")
    for name in ("same", "shifted"):
        run(["monitor", "--reference", str(scored / "reference.parquet"), "--current", str(scored / f"{name}.parquet"),
             "--time-column", "created_at", "--window", "3h", "--out", str(out / f"monitor-{name}")], figures,
            f"monitor_{name}")
        summary = json.loads((out / f"monitor-{name}" / "summary.json").read_text())
        figures[f"monitor_{name}"] = {"status": summary["status"], "alerts": [a["message"] for a in summary["alerts"]],
                                      "categories": {c: {"block": [d["rates"]["block_rate"]["reference"],
                                                                   d["rates"]["block_rate"]["current"]],
                                                         "psi": (d.get("psi") or {}).get("psi"),
                                                         "ks_p": (d.get("ks") or {}).get("pvalue")}
                                                     for c, d in summary["categories"].items()}}

    # 3. simulated reviewers on a platform the champion never saw
    gab = _rows(root / "gab_hate_corpus" / "data.jsonl", {"train"})
    random.Random(1).shuffle(gab)  # its own generator: the same sample whatever the windows drew
    traffic = gab[: args.traffic]
    dump = _dump(out / "dumps" / "gab-traffic.jsonl", traffic, day + timedelta(days=5), "")
    store = out / "feedback"
    if "traffic" not in skip or not (scored / "gab-traffic.parquet").is_file():
        run(["score", str(dump), "--model", str(champion), "--out", str(scored / "gab-traffic.parquet"),
             "--overwrite", "--no-progress"], figures, "score_gab_traffic")
    if "feedback" not in skip or not (store / "store.json").is_file():
        if store.exists():
            import shutil
            shutil.rmtree(store)
        run(["feedback", "simulate", "--decisions", str(scored / "gab-traffic.parquet"),
             "--data", f"{root}/gab_hate_corpus", "--split", "train", "--categories", "hate,offensive",
             "--review-min-score", str(args.review_min_score), "--report-rate", str(args.report_rate),
             "--out", str(out / "verdicts.jsonl")], figures, "simulate")
        run(["feedback", "add", "--store", str(store), "--categories", "hate,offensive",
             "--decisions", str(scored / "gab-traffic.parquet"), "--from", str(out / "verdicts.jsonl")],
            figures, "feedback_add")
    run(["feedback", "stats", "--store", str(store), "--decisions", str(scored / "gab-traffic.parquet"),
         "--json", str(out / "online-metrics.json")], figures, "feedback_stats")
    figures["online_metrics"] = json.loads((out / "online-metrics.json").read_text())

    # 4. the challenger
    new = out / "challenger"
    if not ("retrain" in skip and (new / "comparison.json").is_file()):
        if new.exists():
            import shutil
            shutil.rmtree(new)
        run(["retrain", "--model", str(champion), "--feedback", str(store), "--out", str(new), "--mode", "frozen",
             "--data-root", str(root), "--eval-data", f"{root}/gab_hate_corpus", "--bootstrap", str(args.bootstrap),
             "--threads", str(args.threads), "--no-progress"], figures, "retrain")
    comp = json.loads((new / "comparison.json").read_text())
    figures["comparison"] = {"decision": comp["decision"], "sets": comp["sets"],
                             "cells": [{k: c.get(k) for k in ("set", "category", "n", "n_positive", "note")} |
                                       {m: {k: v for k, v in f.items() if k in ("champion", "challenger", "diff", "ci",
                                                                                "verdict")}
                                            for m, f in (c.get("metrics") or {}).items()} for c in comp["cells"]]}
    figures["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"\nfigures: {out / 'figures.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
