"""Generalisation benchmark: how the default recipe does on a platform it never saw (leave one dataset out).

    python -m benchmarks.generalization                    # every shared dataset in turn (~30-60 min here)
    python -m benchmarks.generalization --datasets ethos,gab_hate_corpus

For each shared dataset D: train the default recipe's frozen-encoder model (training.recipes.default_model's
MODEL and TRAINING["frozen"], same selection on the val splits) on every dataset but D, then measure it on D's
test split: ROC-AUC of D's category (and of the other categories D labels). Beside it, the same model trained
on every dataset (D included) measured on the same rows: the gap is what a new platform costs. ROC-AUC is
threshold-free, so no threshold of D's own is needed; D's val split is used by nothing.

Frozen encoders: the logits come from the embedding cache (training.embeddings) through the trained head and
lexical channel, which is what the scorer computes for these posts (tests/training/test_train.py checks the
cache against the live encoders); no calibration (ROC-AUC does not depend on it).

`--mode full` runs the fine-tuned recipe instead (MiniLM trained end to end, the twelve shared datasets, no
synthetic posts): a full fold takes ~1 h of fine-tuning here, so each fold trains on at most `--rows-per-dataset`
train rows of every dataset (default 2,500: ~25k posts, ~12 min a fold on 2 CPU cores) and the reference is the
same reduced recipe with every dataset. Logits come from the live model through the scorer's preprocessing. The
figures are those of this reduced recipe, not of the shipped model (which trained four epochs on ~105k posts):
what they measure is the gap a platform the model never saw costs, and how it compares with the frozen recipe's.

    python -m benchmarks.generalization --mode full --datasets gab_hate_corpus,implicit_hate
    python -m benchmarks.generalization --mode full --datasets gab_hate_corpus --dataset-heads --no-reference

`--dataset-heads` / `--dataset-bias` train every fold with per-dataset heads or offsets (issue 18 item 4: keep them
if a platform never seen is judged better); `--no-reference` skips the model trained on every dataset when only the
unseen figures are compared with an earlier run's (the "seen" column is then empty, JSON null).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.metrics import roc_auc
from eval.quality import ANCHORS, ANY
from moderation.cli import _quiet_libraries
from moderation.datasets import ALL_DATASETS, DEFAULT_DATASETS, default_dataset_specs, load_labelled, post_texts
from moderation.model import ModelConfig
from training.config import TrainConfig
from training.embeddings import embed_posts
from training.recipes.default_model import MODEL, TRAINING
from training.train import train, training_scorer


def logits_of(model: Any, data: Any, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) logits of a frozen-encoder model on a LabelledSet, from cached embeddings; (N,) ok."""
    import torch

    emb = embed_posts(model, training_scorer(model).prepare, data.posts, progress=progress)
    present = torch.from_numpy(emb.present)
    with torch.inference_mode():
        tensors = {m: torch.from_numpy(v) for m, v in emb.embeddings.items()}
        lexical = None
        if model.lexical is not None:
            texts = [t or "" for t in post_texts(data.posts)]
            lexical = torch.from_numpy(model.lexical.logits(texts))
        keep = present.any(dim=1)
        out = np.full((len(data), len(model.categories)), np.nan)
        idx = keep.nonzero(as_tuple=True)[0]
        z = model.head({m: t[idx] for m, t in tensors.items()}, present[idx],
                       None if lexical is None else lexical[idx])
        out[idx.numpy()] = z.float().numpy()
    return out, emb.ok & keep.numpy()


def live_logits(model: Any, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) raw logits of a fine-tuned model on a LabelledSet through the scorer's preprocessing; (N,) ok."""
    from eval.predict import predict_logits

    pred = predict_logits(training_scorer(model), data, progress=False)
    return pred.logits, pred.ok


def full_configs(rows_per_dataset: int, names: Sequence[str], seed: int = 0, **options: Any
                 ) -> tuple[ModelConfig, TrainConfig]:
    """The default recipe's fine-tuned model and training settings, each dataset capped at `rows_per_dataset`;
    `options` are further TrainConfig settings (e.g. dataset_heads=True)."""
    if rows_per_dataset < 100:
        raise ValueError(f"--rows-per-dataset must be >= 100, got {rows_per_dataset}")
    train_cfg = {k: v for k, v in TRAINING["full"].items() if k not in ("datasets", "max_train_rows")}
    max_length = train_cfg.pop("max_length", 128)
    model_cfg = {**MODEL, "text_encoder": {**MODEL["text_encoder"], "max_length": max_length},
                 "finetune": {"text": "full", "image": "frozen"}, "frozen_encoder_keys": ["word_embeddings"]}
    train_cfg.update(max_train_rows={n: rows_per_dataset for n in names}, cap_keep_positive=["violence"],
                     checkpoint_every=10**9, eval_every=max(100, rows_per_dataset * len(names) // train_cfg["batch_size"] // 2),
                     seed=seed, **options)
    return ModelConfig(**model_cfg), TrainConfig(**train_cfg)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.generalization", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=None, help="comma-separated datasets to hold out (default: all eight)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: ../shared/datasets)")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    p.add_argument("--mode", choices=("frozen", "full"), default="frozen",
                   help="frozen: the frozen-encoder recipe (default); full: the fine-tuned recipe, reduced (see above)")
    p.add_argument("--rows-per-dataset", type=int, default=2500,
                   help="--mode full: train rows kept of each dataset (default: 2500)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dataset-heads", action="store_true",
                   help="--mode full: train with a head per training dataset (TrainConfig.dataset_heads)")
    p.add_argument("--dataset-bias", action="store_true",
                   help="--mode full: train with a logit offset per training dataset (TrainConfig.dataset_bias)")
    p.add_argument("--seed", type=int, default=0,
                   help="--mode full: the training seed (default 0; another seed measures run-to-run noise)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the model trained on every dataset (no 'seen' column): when only the unseen figures "
                        "are compared with another run's")
    args = p.parse_args(argv)

    _quiet_libraries()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    full_mode = args.mode == "full"
    options = {k: True for k in ("dataset_heads", "dataset_bias") if getattr(args, k)}
    try:  # settings are checked before any data is read
        if options and not full_mode:
            raise ValueError(f"--{next(iter(options)).replace('_', '-')} needs --mode full")
        model_config, config = (full_configs(args.rows_per_dataset, ALL_DATASETS, seed=args.seed, **options) if full_mode
                                else (ModelConfig(**MODEL), TrainConfig(**TRAINING["frozen"])))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    specs = default_dataset_specs(args.data_root, names=ALL_DATASETS if full_mode else DEFAULT_DATASETS)
    held = [d.strip() for d in args.datasets.split(",")] if args.datasets else list(DEFAULT_DATASETS)
    unknown = sorted(set(held) - {s.name for s in specs})
    if unknown:
        print(f"error: unknown datasets {unknown}; known: {', '.join(s.name for s in specs)}", file=sys.stderr)
        return 2
    cats = list(MODEL["categories"])
    score = live_logits if full_mode else logits_of

    def fit(use: list, folder: str) -> Any:
        return train(use, folder, model_config, config, progress=False, log=lambda _: None).model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_labelled(specs, cats, "test")
    test = test.subset(np.isin(np.asarray(test.sources), held))  # only the held-out datasets are measured
    src = np.asarray(test.sources)
    results: dict[str, Any] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        z_full, ok_full = None, np.ones(len(test), dtype=bool)
        if not args.no_reference:
            print(f"training on every dataset (the in-distribution reference; {args.mode}) ...", flush=True)
            full = fit(specs, f"{tmp}/all")
            z_full, ok_full = score(full, test)
            print(f"  reference trained and scored ({time.time() - t0:.0f} s)", flush=True)

        def seen(y: np.ndarray, z_of: Any) -> float | None:  # the reference's ROC-AUC (None without one)
            return None if z_full is None else roc_auc(y, z_of(z_full))
        for name in held:
            rest = [s for s in specs if s.name != name]
            model = fit(rest, f"{tmp}/without-{name}")
            z, ok = score(model, test)
            rows = (src == name) & ok & ok_full
            anchor = ANCHORS.get(name)
            fig: dict[str, Any] = {}
            for j, c in enumerate(cats):
                y = test.labels[rows, j]
                if np.isnan(y).all():
                    continue
                fig[c] = {"unseen": roc_auc(y, z[rows, j]), "seen": seen(y, lambda zz: zz[rows, j]),
                          "n": int((~np.isnan(y)).sum()), "n_positive": int(np.nansum(y))}
            if anchor is not None and anchor.category == ANY:
                known = ~np.isnan(test.labels[rows])
                y = np.where(known.any(1), np.nanmax(np.where(known, test.labels[rows], -1), axis=1), np.nan)
                fig[ANY] = {"unseen": roc_auc(y, np.nanmax(z[rows], axis=1)),
                            "seen": seen(y, lambda zz: np.nanmax(zz[rows], axis=1)),
                            "n": int((~np.isnan(y)).sum()), "n_positive": int(np.nansum(y))}
            results[name] = {"category": anchor.category if anchor else None, "figures": fig}
            main_cat = anchor.category if anchor else next(iter(fig))
            f = fig.get(main_cat, {})
            with_it = "-" if f.get("seen") is None else f"{f['seen']:.3f}"
            print(f"  {name:20s} {main_cat:9s} unseen {f.get('unseen', float('nan')):.3f}  seen {with_it}  "
                  f"({time.time() - t0:.0f} s)", flush=True)
    print("\n| held-out dataset | category | ROC-AUC, trained without it | ROC-AUC, trained with it | gap |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        for c, f in r["figures"].items():
            with_it, gap = ("-", "-") if f["seen"] is None else (f"{f['seen']:.3f}", f"{f['unseen'] - f['seen']:+.3f}")
            print(f"| {name} | {c}{' (its label)' if c == r['category'] else ''} | {f['unseen']:.3f} | {with_it} | {gap} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"held_out": results, "seconds": round(time.time() - t0), "mode": args.mode,
                                              **({"rows_per_dataset": args.rows_per_dataset} if full_mode else {}),
                                              **({"options": sorted(options)} if options else {}),
                                              **({"seed": args.seed} if full_mode else {}),
                                              "reference": not args.no_reference},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
