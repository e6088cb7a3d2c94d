"""Retraining from reviewers' verdicts without shipping a worse model: `moderation retrain`.

    result = retrain("models/current", "feedback/", "models/challenger", RetrainConfig(mode="frozen"))
    result.comparison["decision"]["promotable"]

1. The challenger is trained (training.train.train) on the current model's training datasets (config.json
   "training" -> "datasets"; a path missing on this machine is looked up as DATA_ROOT/NAME/data.jsonl) plus the
   feedback store's train part, with the current model's architecture and training settings (or --mode etc.).
2. It is calibrated and its thresholds fitted (eval.calibrate.calibrate_model_dir) on the datasets' val splits
   plus the feedback's val part, for the current model's target precision; when the current model has a
   policy.json, the challenger gets one fitted the same way (eval.policy).
3. Both models are measured on the same fixed evaluation sets (each training dataset's test split, --eval-data,
   and the feedback's test part, which neither model trained on) by operations.champion: paired bootstrap per set and
   category; promotable only if no gating cell is worse, at least one is better and the policy checks pass (the
   challenger's own policy blocks >= 0.8x the champion's recall and holds <= 3 points more for review, per
   category). Posts of the fixed sets whose text is in the feedback's train part are removed from them first (no
   leak into the verdict).
4. NEW/comparison.json, comparison.html, comparison.md; NEW/config.json gets a "lineage" entry: the parent model
   (path, version), every dataset (path, labels, sha256 of the file), the feedback store (verdicts fingerprint,
   rows per split), the comparison's decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from eval.calibrate import calibrate_model_dir
from eval.policy import ReviewTarget, fit_policy
from eval.predict import predict_logits
from moderation.datasets import (DATA_FILE, KNOWN_DATASETS, DatasetSpec, data_root as default_root, default_dataset_specs,
                                 load_labelled, parse_dataset_arg)
from moderation.model import ModelConfig
from moderation.model_dir import read_model_info
from moderation.policy import Policy
from moderation.scorer import Scorer
from operations.champion import (MAX_REVIEW_SHARE_RISE, MIN_BLOCK_RECALL_RATIO, EvalSet, compare_models,
                                 write_comparison)
from operations.feedback import FeedbackStore
from training.config import TrainConfig
from training.train import train

FEEDBACK_NAME = "feedback"


@dataclass
class RetrainConfig:
    """Settings of a retraining run (every field None = the current model's own)."""

    #: Training mode of the challenger: "frozen" (head on cached embeddings: CPU minutes), "lora", "full".
    mode: str | None = None
    epochs: int | None = None
    #: Fine-tuning modes: stop after this many seconds, keeping the best state.
    time_budget_s: float | None = None
    seed: int | None = None
    #: Loss weight of the feedback's rows (1: like any dataset's).
    feedback_weight: float = 1.0
    #: Where the current model's datasets are when their recorded paths do not exist here.
    data_root: str | None = None
    #: Extra fixed evaluation sets (dataset arguments PATH[:FIELD=CATEGORY,...][@NAME]); their test split is used.
    eval_data: list[str] = field(default_factory=list)
    #: The split of the training datasets both models are measured on.
    eval_split: str = "test"
    #: Leave the training datasets' own test splits out of the comparison (only --eval-data and the feedback's).
    no_dataset_eval: bool = False
    bootstrap: int = 1000
    confidence: float = 0.95
    margin: float = 0.0
    gate_metrics: tuple[str, ...] = ("roc_auc", "average_precision")
    #: The policy checks (operations.champion): the challenger's block recall >= this x the champion's, and its
    #: review share <= the champion's + that many percentage points, per category; None turns one off.
    min_block_recall_ratio: float | None = MIN_BLOCK_RECALL_RATIO
    max_review_share_rise: float | None = MAX_REVIEW_SHARE_RISE
    #: Target precision of the challenger's thresholds (None: the current model's).
    target_precision: float | None = None
    cache_dir: str | None = None
    batch_size: int = 32


@dataclass
class RetrainResult:
    out_dir: Path
    comparison: dict[str, Any]
    lineage: dict[str, Any]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_datasets(meta: dict[str, Any], data_root: str | None) -> list[Any]:
    """DatasetSpecs of the datasets a model directory says it was trained on. Raises FileNotFoundError naming
    what is missing and where it was looked for."""
    recorded = (meta.get("training") or {}).get("datasets")
    if not isinstance(recorded, list) or not recorded:
        raise ValueError("the current model's config.json records no training datasets (training -> datasets); "
                         "retrain needs them to train the challenger on the same data")
    root = default_root(data_root)
    specs = []
    for d in recorded:
        name, labels = d["name"], d["labels"]
        path = Path(d["path"])
        if not path.is_file():
            alt = root / name / DATA_FILE
            if not alt.is_file():
                raise FileNotFoundError(f"training dataset {name!r} not found at {path} nor at {alt}; point --data-root "
                                        "(or $MODERATION_DATA_ROOT) at the folder holding it")
            path = alt
        specs.append(DatasetSpec(path=path, labels=dict(labels), name=name))
    return specs


def _train_config(meta: dict[str, Any], config: RetrainConfig, feedback_name: str):
    recorded = dict((meta.get("training") or {}).get("config") or {})
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in recorded.items() if k in known}
    for name in ("mode", "epochs", "seed", "cache_dir"):
        if getattr(config, name) is not None:
            values[name] = getattr(config, name)
    if config.time_budget_s is not None:
        values["time_budget_s"] = config.time_budget_s
    weights = dict(values.get("dataset_weights") or {})
    weights[feedback_name] = config.feedback_weight
    values["dataset_weights"] = weights
    return TrainConfig(**values)


def _model_config(info: Any, mode: str):
    cfg = info.config.to_dict()
    if mode == "frozen":
        cfg["finetune"] = {m: "frozen" for m in cfg.get("finetune", {}) or {"text": "frozen", "image": "frozen"}}
        cfg["text_lora"] = None
    return ModelConfig.from_dict(cfg)


def _text_key(text: str) -> str:
    """A post's text up to case and spacing (how a leak is recognised)."""
    return hashlib.sha256(" ".join(text.split()).lower().encode("utf-8")).hexdigest()


def eval_sets(specs: Sequence[Any], feedback_spec: Any, categories: Sequence[str], config: RetrainConfig,
              log: Callable[[str], None] = print) -> tuple[list[Any], dict[str, int]]:
    """The fixed evaluation sets (each dataset's test split, --eval-data) and the feedback's test part, with the
    posts whose text is in the feedback's train part removed from the fixed ones. Returns (sets, removed)."""
    fb_train = load_labelled([feedback_spec], list(categories), "train")
    leaked = {_text_key(p["text"]) for p in fb_train.posts if p.get("text")}
    sets, removed = [], {}
    fixed = [] if config.no_dataset_eval else list(specs)
    fixed += [parse_dataset_arg(a) for a in config.eval_data]
    for spec in fixed:
        if not spec.categories() & set(categories):
            continue
        data = load_labelled([spec], list(categories), config.eval_split)
        if not len(data):
            continue
        keep = np.array([not (p.get("text") and _text_key(p["text"]) in leaked) for p in data.posts])
        if not keep.all():
            removed[spec.name] = int((~keep).sum())
            data = data.subset(keep)
        sets.append(EvalSet(f"{spec.name}/{config.eval_split}", data, "fixed"))
    fb_test = load_labelled([feedback_spec], list(categories), "test")
    if len(fb_test):
        sets.append(EvalSet(f"{feedback_spec.name}/test", fb_test, "feedback"))
    else:
        log("note: the feedback store has no test part yet: the comparison uses the fixed sets only")
    for name, n in removed.items():
        log(f"note: {n} posts of {name}'s {config.eval_split} split are in the feedback's train part: left out of "
            "the comparison")
    return sets, removed


def write_lineage(model_dir: str | os.PathLike, lineage: dict[str, Any]) -> None:
    """Add (or replace) config.json's "lineage" entry, atomically."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["lineage"] = lineage
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def retrain(model_dir: str | os.PathLike, feedback: str | os.PathLike, out_dir: str | os.PathLike,
            config: RetrainConfig | None = None, *, progress: bool = True,
            log: Callable[[str], None] = print) -> RetrainResult:
    """Train, calibrate and compare a challenger (module docstring). Raises ValueError / FileNotFoundError for
    bad inputs (a missing dataset, an empty feedback store, categories the current model does not score)."""
    config = config or RetrainConfig()
    t0 = time.time()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError("--out must be a new folder, not the current model's")
    if (out_dir / "config.json").exists():
        raise ValueError(f"{out_dir} already holds a model directory; give a new --out")
    info = read_model_info(model_dir)
    categories = list(info.config.categories)
    store = FeedbackStore.open(feedback)
    store.verdicts()  # refuse a store that cannot be read (a damaged line) rather than train on its stale data
    unknown = [c for c in store.categories if c not in categories]
    if unknown:
        raise ValueError(f"the feedback store labels {unknown}, which the current model does not score ({categories})")
    specs = resolve_datasets(info.meta, config.data_root)
    names = {s.name for s in specs}
    fb_name = FEEDBACK_NAME if FEEDBACK_NAME not in names else f"{FEEDBACK_NAME}_store"
    fb_spec = store.spec(fb_name)
    fb_counts = {s: len(load_labelled([fb_spec], categories, s)) for s in ("train", "val", "test")}
    if not fb_counts["train"]:
        raise ValueError(f"the feedback store {feedback} has no trainable posts in its train part "
                         f"({fb_counts}); add verdicts with content first")
    train_config = _train_config(info.meta, config, fb_name)
    model_config = _model_config(info, train_config.mode)
    log(f"challenger: {train_config.mode} training on {', '.join(s.name for s in specs)} + {fb_name} "
        f"({fb_counts['train']} train / {fb_counts['val']} val / {fb_counts['test']} test posts)")
    name = info.model_version.rsplit("-", 1)[0] if "-" in info.model_version else info.model_version
    result = train(list(specs) + [fb_spec], out_dir, model_config, train_config, name=name, progress=progress, log=log)

    target = config.target_precision or (info.thresholds.target_precision if info.thresholds is not None else None) or 0.9
    challenger = Scorer.from_dir(out_dir, batch_size=config.batch_size)
    val = load_labelled(list(specs) + [fb_spec], categories, "val")
    log(f"calibrating the challenger on {len(val):,} val posts (target precision {target:g})")
    calibration, thresholds = calibrate_model_dir(out_dir, val, target_precision=target, scorer=challenger,
                                                  progress=progress)
    policy_note = _fit_policy_like(info, out_dir, challenger, val, progress, log)
    challenger = Scorer.from_dir(out_dir, batch_size=config.batch_size)
    champion = Scorer.from_dir(model_dir, batch_size=config.batch_size)

    sets, removed = eval_sets(specs, fb_spec, categories, config, log)
    log(f"comparing on {len(sets)} sets: {', '.join(s.name for s in sets)}")
    comparison = compare_models(champion, challenger, sets, bootstrap=config.bootstrap, confidence=config.confidence,
                                margin=config.margin, gate_metrics=config.gate_metrics, progress=progress,
                                predictions_dir=out_dir / "comparison-predictions",
                                min_block_recall_ratio=config.min_block_recall_ratio,
                                max_review_share_rise=config.max_review_share_rise)
    lineage = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "created_by": "moderation retrain",
        "parent": {"path": str(model_dir.resolve()), "model_version": info.model_version,
                   "thresholds_version": info.thresholds.version if info.thresholds is not None else None},
        "data": [{"name": s.name, "path": str(s.path), "labels": s.labels, "sha256": file_sha256(s.path)} for s in specs],
        "feedback": {"store": str(Path(feedback).resolve()), "name": fb_name, "verdicts_fingerprint": store.fingerprint(),
                     "posts": fb_counts, "weight": config.feedback_weight, "verdicts": len(store.verdicts())},
        "calibration_version": calibration.version, "thresholds_version": thresholds.version,
        "policy": policy_note,
        "comparison": {"file": "comparison.json", "promotable": comparison["decision"]["promotable"],
                       "reason": comparison["decision"]["reason"]},
    }
    write_lineage(out_dir, lineage)
    extra = {"training": {"mode": train_config.mode, "epochs_run": len(result.history), "best": result.best,
                          "seconds": round(time.time() - t0, 1)},
             "lineage": lineage, "removed_from_fixed_sets": removed}
    paths = write_comparison(out_dir, comparison, extra)
    dec = comparison["decision"]
    log(f"{'PROMOTABLE' if dec['promotable'] else 'NOT PROMOTABLE'}: {dec['reason']} -> {paths['html']}")
    return RetrainResult(out_dir=out_dir, comparison=comparison, lineage=lineage)


def _fit_policy_like(info: Any, out_dir: Path, challenger: Any, val: Any, progress: bool,
                     log: Callable[[str], None]) -> str | None:
    """When the current model has a policy.json, fit the challenger one with the same targets (eval.policy)."""
    policy = getattr(info, "policy", None)
    if policy is None:
        if not (Path(info.path) / "policy.json").is_file():
            return None
        policy = Policy.load(info.path)
    fitted = (policy.meta or {}).get("fitted") or {}
    review = fitted.get("review_target") or {}
    pred = predict_logits(challenger, val, progress=progress)
    probs = pred.probs(challenger.info.calibration)
    ok = pred.ok
    kwargs: dict[str, Any] = {"languages": policy.languages}
    if fitted.get("block_precision"):
        kwargs["block_precision"] = float(fitted["block_precision"])
    if review.get("kind") and review.get("value"):
        kwargs["review"] = ReviewTarget(review["kind"], float(review["value"]))
    new = fit_policy(probs[ok], pred.labels[ok], pred.categories, **kwargs)
    new.save(out_dir)
    log(f"policy fitted like the current model's: {new.version}")
    return new.version


def compare_dirs(champion_dir: str | os.PathLike, challenger_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                 data: Sequence[str] = (), data_root: str | None = None, split: str = "test", limit: int | None = None,
                 seed: int = 0, batch_size: int = 32, progress: bool = True, log: Callable[[str], None] = print,
                 **settings: Any) -> dict[str, Any]:
    """`moderation compare`: both existing models on the `split` rows of `data` (shared dataset names or dataset
    arguments; default: the champion's training datasets), at most `limit` posts a set (a seeded sample), compared
    and decided as retrain does (settings: compare_models' keyword arguments). Writes OUT/comparison.*."""
    champion = Scorer.from_dir(champion_dir, batch_size=batch_size)
    challenger = Scorer.from_dir(challenger_dir, batch_size=batch_size)
    categories = [c for c in champion.categories if c in challenger.categories]
    if data:
        specs = [default_dataset_specs(data_root, [d])[0] if d in KNOWN_DATASETS else parse_dataset_arg(d) for d in data]
    else:
        specs = resolve_datasets(champion.info.meta, data_root)
    rng = np.random.default_rng(seed)
    sets = []
    for spec in specs:
        rows = load_labelled([spec], categories, split) if spec.categories() & set(categories) else None
        if rows is None or not len(rows):
            log(f"note: {spec.name} has no {split} rows labelled for {categories}: left out")
            continue
        if limit is not None and len(rows) > limit:
            rows = rows.subset(np.sort(rng.choice(len(rows), size=limit, replace=False)))
        sets.append(EvalSet(f"{spec.name}/{split}", rows, "fixed"))
    if not sets:
        raise ValueError(f"no set has {split} rows labelled for the models' categories {categories}")
    log(f"comparing {champion.model_version} (champion) and {challenger.model_version} (challenger) on "
        f"{', '.join(f'{s.name} ({len(s.data):,})' for s in sets)}")
    comparison = compare_models(champion, challenger, sets, progress=progress, seed=seed, **settings)
    paths = write_comparison(out_dir, comparison, {"compared_by": "moderation compare", "split": split,
                                                   "limit": limit})
    dec = comparison["decision"]
    log(f"{'PROMOTABLE' if dec['promotable'] else 'NOT PROMOTABLE'}: {dec['reason']} -> {paths['html']}")
    return comparison
