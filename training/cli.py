"""`moderation train`: train a model directory from labelled JSONL datasets.

Light at import (argparse and the recipe's argument list); torch, transformers and the training loop load inside
the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.recipes.default_model import __doc__ as recipe_doc, add_arguments, run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    p = subparsers.add_parser(
        "train", help="train a model (frozen encoders on cached embeddings, or LoRA / full fine-tuning)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a moderation model on one or more labelled JSONL datasets and write a model directory.\n\n"
                    "Each --data is PATH[:FIELD=CATEGORY[,FIELD=CATEGORY]][@NAME]: a JSONL file (or a folder holding\n"
                    "data.jsonl) whose rows hold id, text, image (path relative to the file), split and label fields.\n"
                    "A dataset that labels only some categories leaves the others unknown (masked, not negative).",
        epilog="examples:\n"
               "  moderation train --out runs/head                       # the shared datasets, frozen encoders\n"
               "  moderation train --data mine/:toxic=offensive --out runs/mine --calibrate\n"
               "  moderation train --mode lora --max-length 64 --epochs 1 --out runs/lora\n"
               "  python -m training.recipes.default_model                # the shipped default model")
    p.add_argument("--data", action="append", metavar="SPEC",
                   help="dataset PATH[:FIELD=CATEGORY,...][@NAME]; repeat for several (default: the eight shared "
                        "datasets under --data-root, mapped as docs/training.md says)")
    p.add_argument("--data-root", default=None,
                   help="folder of the shared datasets (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--name", default="moderation", help="model name, prefix of the model version (default: %(default)s)")
    arch = p.add_argument_group("architecture")
    arch.add_argument("--categories", default=None,
                      help="comma-separated categories (default: every category the datasets label)")
    arch.add_argument("--text-encoder", default="all-MiniLM-L6-v2",
                      help="registered name or local Hugging Face folder, or 'none' (default: %(default)s)")
    arch.add_argument("--image-encoder", default="efficientnet_lite0",
                      help="registered name or timm architecture, or 'none' (default: %(default)s)")
    arch.add_argument("--max-length", type=int, default=128, help="text tokens read (default: %(default)s)")
    arch.add_argument("--text-layers", default=None, metavar="I,J,...",
                      help="hidden states of the text encoder to mean-pool and concatenate (0: the embeddings; the "
                           "encoder's depth: its last layer), e.g. 3,6 for MiniLM (default: the last layer only)")
    arch.add_argument("--fusion", choices=("late", "gated", "concat"), default="late",
                      help="late: one classifier per modality, capped image weight chosen on val; gated / concat: a "
                           "fused representation (default: %(default)s)")
    arch.add_argument("--no-lexical", action="store_true",
                      help="late fusion: no lexical channel (word + char n-gram TF-IDF, linear, added to the text logits)")
    arch.add_argument("--image-weight-cap", type=float, default=0.5,
                      help="late fusion: the largest weight the image logits may get beside the text's (default: %(default)s)")
    arch.add_argument("--fusion-dim", type=int, default=256, help="fused width (default: %(default)s)")
    arch.add_argument("--dropout", type=float, default=0.1, help="head dropout (default: %(default)s)")
    arch.add_argument("--lora-r", type=int, default=16, help="LoRA rank in --mode lora (default: %(default)s)")
    tr = p.add_argument_group("training")
    tr.add_argument("--mode", choices=("frozen", "lora", "full"), default="frozen",
                    help="frozen: head on cached embeddings (CPU minutes); lora / full: fine-tune the text encoder")
    tr.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: 60 frozen, 2 fine-tuning)")
    tr.add_argument("--batch-size", type=int, default=None, help="posts per step (default: 128 frozen, 32 fine-tuning)")
    tr.add_argument("--lr", type=float, default=1e-3, help="head learning rate (default: %(default)s)")
    tr.add_argument("--encoder-lr", type=float, default=None,
                    help="text encoder learning rate (default: 5e-4 LoRA, 3e-5 full)")
    tr.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: %(default)s)")
    tr.add_argument("--warmup", type=float, default=0.06, help="warm-up share of the steps (default: %(default)s)")
    tr.add_argument("--patience", type=int, default=8, help="evaluations without improvement before stopping (default: %(default)s)")
    tr.add_argument("--modality-dropout", type=float, default=0.3,
                    help="chance of hiding one modality of a two-modality post (default: %(default)s)")
    tr.add_argument("--class-weight", choices=("per_dataset", "balanced", "none"), default="per_dataset",
                    help="per_dataset: positives and negatives weigh the same within each dataset (no base rate is "
                         "learned); balanced: one positive weight per category (default: %(default)s)")
    tr.add_argument("--dataset-weight", action="append", default=[], metavar="NAME=W",
                    help="loss weight of a dataset's rows, e.g. multioff=4 (repeatable)")
    tr.add_argument("--early-stopping", choices=("holdout", "val"), default="val",
                    help="val: the val splits (they also choose the blend weights and calibrate); holdout: 10%% of "
                         "train (default: %(default)s)")
    tr.add_argument("--stop-metric", choices=("macro_auc", "mean_ap"), default="macro_auc",
                    help="macro_auc: ROC-AUC per dataset averaged over the datasets labelling each category; mean_ap: "
                         "average precision per category, pooled (default: %(default)s)")
    tr.add_argument("--lexical-c", type=float, default=1.0,
                    help="inverse regularisation of the lexical channel's logistic regressions (default: %(default)s)")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    tr.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="encoder precision (default: %(default)s)")
    tr.add_argument("--eval-every", type=int, default=0, help="fine-tuning: steps between evaluations (default: once per epoch)")
    tr.add_argument("--time-budget", type=float, default=0.0, metavar="SECONDS",
                    help="fine-tuning: stop after this long, keeping the best state (default: no limit)")
    tr.add_argument("--cache-dir", default=None, help="embedding cache (default: $MODERATION_CACHE_DIR or .cache/embeddings)")
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--grad-accum", type=int, default=1, help="fine-tuning: batches per optimiser step (default: %(default)s)")
    tr.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                    help="fine-tuning: write OUT/checkpoint.pt every this many steps and at every evaluation (default: never)")
    tr.add_argument("--resume", action="store_true", help="fine-tuning: continue from OUT/checkpoint.pt (same data and settings)")
    tr.add_argument("--device", default="cpu", help="fine-tuning: cpu, cuda or cuda:N (default: %(default)s)")
    tr.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                    help="fine-tuning: start from this trained model directory's weights (same architecture) with a "
                         "fresh learning-rate schedule")
    tr.add_argument("--dataset-bias", action="store_true",
                    help="fine-tuning: a logit offset per training dataset and category in the training loss only "
                         "(datasets that label a category more readily move their offset, not the shared head)")
    tr.add_argument("--dataset-heads", action="store_true",
                    help="fine-tuning: a linear head per training dataset over the text embedding, in the training loss "
                         "only (what one dataset alone calls harm is learnt by its own head, not the shared one)")
    tr.add_argument("--freeze-word-embeddings", action="store_true",
                    help="--mode full: keep the word embeddings at their pretrained values (not trained, not saved)")
    cal = p.add_argument_group("calibration (needs the eval extra)")
    cal.add_argument("--calibrate", action="store_true",
                     help="after training, fit calibration and thresholds on the datasets' val splits")
    cal.add_argument("--target-precision", type=float, default=0.9, help="threshold target precision (default: %(default)s)")
    p.set_defaults(func=_cmd_train)

    d = subparsers.add_parser(
        "train-default", help="retrain the shipped default model (the committed recipe)",
        description=recipe_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(d)
    d.set_defaults(func=_cmd_train_default)


def _cmd_train_default(args: argparse.Namespace) -> int:
    return run(args)


def _parse_weights(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--dataset-weight {item!r}: expected NAME=NUMBER, e.g. multioff=4") from None
        if not eq or not name.strip() or out[name.strip()] < 0:
            raise ValueError(f"--dataset-weight {item!r}: expected NAME=NUMBER >= 0, e.g. multioff=4")
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    # deferred: torch, transformers and the training loop load when the command runs, not for `moderation --help`
    import torch

    from moderation.datasets import default_dataset_specs, load_labelled, parse_dataset_arg
    from moderation.encoders.text import parse_layers
    from moderation.model import DEFAULT_LORA, ModelConfig
    from training.config import TrainConfig
    from training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    dataset_weights = _parse_weights(args.dataset_weight)
    layers = parse_layers(args.text_layers) if args.text_layers else None
    specs = [parse_dataset_arg(a) for a in args.data] if args.data else default_dataset_specs(args.data_root)
    if args.categories:
        categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    else:
        categories = sorted({c for s in specs for c in s.categories()})
    text = None if args.text_encoder.lower() == "none" else {"name": args.text_encoder, "pooling": "mean",
                                                              "max_length": args.max_length}
    if text is not None and layers:
        text["layers"] = layers
    image = None if args.image_encoder.lower() == "none" else {"name": args.image_encoder}
    finetune = {"text": "frozen" if args.mode == "frozen" else args.mode, "image": "frozen"}
    lexical = args.fusion == "late" and text is not None and not args.no_lexical
    model_config = ModelConfig(categories=categories, text_encoder=text, image_encoder=image, fusion=args.fusion,
                               fusion_dim=args.fusion_dim, dropout=args.dropout, finetune=finetune, lexical=lexical,
                               image_weight_cap=args.image_weight_cap,
                               text_lora={**DEFAULT_LORA, "r": args.lora_r, "lora_alpha": 2 * args.lora_r}
                               if args.mode == "lora" else None,
                               frozen_encoder_keys=["word_embeddings"] if args.freeze_word_embeddings else [])
    fine = args.mode != "frozen"
    config = TrainConfig(
        mode=args.mode, epochs=args.epochs or (2 if fine else 60), batch_size=args.batch_size or (32 if fine else 128),
        lr=args.lr, encoder_lr=args.encoder_lr or (5e-4 if args.mode == "lora" else 3e-5),
        weight_decay=args.weight_decay, warmup=args.warmup, patience=args.patience,
        modality_dropout=args.modality_dropout, class_weight=args.class_weight,
        dataset_weights=dataset_weights, early_stopping=args.early_stopping, stop_metric=args.stop_metric,
        lexical_c=args.lexical_c, seed=args.seed,
        precision=args.precision, eval_every=args.eval_every, time_budget_s=args.time_budget, cache_dir=args.cache_dir,
        grad_accum=args.grad_accum, checkpoint_every=args.checkpoint_every, resume=args.resume, device=args.device,
        dataset_bias=args.dataset_bias, dataset_heads=args.dataset_heads, init_from=args.init_from)
    result = train(specs, args.out, model_config, config, name=args.name)
    if args.calibrate:
        try:  # deferred: eval is an optional extra here
            from eval.calibrate import calibrate_model_dir
        except ImportError:
            print("error: --calibrate needs the eval package (pip install -e '.[eval]'); the model is saved "
                  f"uncalibrated in {args.out}: calibrate it later with `moderation calibrate`", file=sys.stderr)
            return 1
        val = load_labelled(specs, categories, "val")
        if len(val) == 0:
            print("error: the datasets have no 'val' rows to calibrate on; the model is saved uncalibrated", file=sys.stderr)
            return 1
        _, thresholds = calibrate_model_dir(args.out, val, target_precision=args.target_precision)
        print(json.dumps({c: e.get("threshold") for c, e in thresholds.categories.items()}))
    print(f"model directory: {Path(args.out).resolve()}  version {result.model_version}")
    return 0
