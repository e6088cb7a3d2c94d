"""How many posts the policy sends to review (and blocks), per input type: the review queue `moderation capacity`
plans with.

Scores a sample of the shared datasets' test splits (up to --per-dataset posts of each of the twelve datasets the
default model is measured on, seeded) with the model and its policy, through `Scorer.score` (every rule: thresholds,
language, term lists, hashes), and counts each post's action per input type (text; image+text: MultiOFF memes with
their text), split into harmful posts (a known label is positive) and benign ones (every known label negative), so
that a plan can give the queue at a platform's own harmful share instead of these datasets'.

    python -m benchmarks.review_rates --record                    # writes benchmarks/figures/review_rates.json
    python -m benchmarks.review_rates --per-dataset 100 --threads 1 --json /tmp/rates.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.figures import record
from moderation.cli import _quiet_libraries
from moderation.datasets import ALL_DATASETS, data_root, default_dataset_specs, load_labelled
from moderation.scorer import Scorer


def sample(data: Any, per_dataset: int, seed: int) -> Any:
    """Up to `per_dataset` rows of each dataset of a LabelledSet, drawn without replacement (seeded)."""
    rng = np.random.default_rng(seed)
    sources = np.asarray(data.sources)
    keep = []
    for name in sorted(set(data.sources)):
        rows = np.nonzero(sources == name)[0]
        keep.extend(sorted(rng.choice(rows, size=min(per_dataset, len(rows)), replace=False).tolist()))
    return data.subset(np.asarray(sorted(keep), dtype=int))


def rates(actions: Sequence[str], labels: np.ndarray, kinds: Sequence[str], sources: Sequence[str]) -> dict[str, Any]:
    """Per input type: posts, harmful / benign counts, review and block shares overall, among harmful and benign
    posts; and per dataset. `labels`: (N, C), NaN unknown. Posts without any known label count in the overall
    shares only."""
    actions = np.asarray(actions, dtype=object)
    known = ~np.isnan(labels)
    harmful = (np.nan_to_num(labels, nan=0.0) > 0.5).any(axis=1)
    benign = known.any(axis=1) & ~harmful
    out: dict[str, Any] = {}
    for kind in sorted(set(kinds)):
        m = np.asarray(kinds) == kind
        scored = m & (actions != None)  # noqa: E711 - None: the post could not be scored

        def share(mask: np.ndarray, action: str) -> float | None:
            return float((actions[mask] == action).mean()) if mask.any() else None

        out[kind] = {"n": int(m.sum()), "n_scored": int(scored.sum()), "n_harmful": int((scored & harmful).sum()),
                     "n_benign": int((scored & benign).sum()),
                     "harmful_share": float(harmful[scored].mean()) if scored.any() else None,
                     "review": share(scored, "review"), "block": share(scored, "block"),
                     "review_harmful": share(scored & harmful, "review"), "review_benign": share(scored & benign, "review"),
                     "block_harmful": share(scored & harmful, "block"), "block_benign": share(scored & benign, "block"),
                     "by_dataset": {name: {"n": int((scored & (np.asarray(sources) == name)).sum()),
                                           "review": share(scored & (np.asarray(sources) == name), "review"),
                                           "block": share(scored & (np.asarray(sources) == name), "block")}
                                    for name in sorted(set(np.asarray(sources)[m]))}}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.review_rates", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: ../shared/datasets)")
    p.add_argument("--per-dataset", type=int, default=300, help="test posts per dataset (default: %(default)s)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="default: %(default)s")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--record", action="store_true", help="record them in benchmarks/figures/ for `moderation capacity`")
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    _quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = dict(precision=args.precision, num_workers=0)
    scorer = Scorer.from_dir(args.model, **opts) if args.model else Scorer.default(**opts)
    specs = default_dataset_specs(data_root(args.data_root), ALL_DATASETS)
    data = sample(load_labelled(specs, list(scorer.categories), {"test"}), args.per_dataset, args.seed)
    kinds = [str(k) for k in data.slices()]
    if "image" in kinds:
        print(f"note: {kinds.count('image')} image-only posts are left out (OCR: not what the plan covers)", file=sys.stderr)
    keep = [i for i, k in enumerate(kinds) if k != "image"]
    data = data.subset(np.asarray(keep, dtype=int))
    kinds = [kinds[i] for i in keep]
    actions: list[str | None] = []
    errors: Counter = Counter()
    chunk = 64
    for start in tqdm(range(0, len(data), chunk), desc="scoring test posts", unit="chunk"):
        # the set's image paths are absolute (checked at load), hence the root "/"
        for r in scorer.score(data.posts[start:start + chunk], image_root="/"):
            actions.append(r.action if r.ok else None)
            if not r.ok:
                errors[r.error_code] += 1
    figures = {"model_version": scorer.model_version, "policy_version": scorer.policy.version,
               "precision": args.precision, "device": "cpu" if str(scorer.device) == "cpu" else "cuda",
               "split": "test", "per_dataset": args.per_dataset, "seed": args.seed, "errors": dict(errors),
               "datasets": sorted(set(data.sources)), "input_types": rates(actions, data.labels, kinds, data.sources)}
    print(f"model {scorer.model_version}, policy {scorer.policy.version}, {len(data)} test posts "
          f"({args.per_dataset} per dataset at most), errors {dict(errors) or 0}")
    print("| input type | posts | harmful share | review | block | review, harmful | review, benign | block, benign |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def pc(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    for kind, t in figures["input_types"].items():
        print(f"| {kind} | {t['n_scored']:,} | {pc(t['harmful_share'])} | {pc(t['review'])} | {pc(t['block'])} | "
              f"{pc(t['review_harmful'])} | {pc(t['review_benign'])} | {pc(t['block_benign'])} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.record:
        record("review_rates", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
