"""Average the weights of two fine-tuned models of one architecture (a "model soup" / WiSE-FT interpolation).

    python -m training.average MODEL_A MODEL_B --weight 0.5 --out DIR

writes a model directory whose text encoder and head are `(1 - weight) * A + weight * B`, tensor by tensor. Meant
for a model B fine-tuned further from A (`--init-from A`): both lie in one basin of the loss, and their average often
keeps what B learned while losing less of what A knew. Two models trained from different starting points do not
average into anything useful; nothing here can tell, so only average a model with its own descendant.

- Both directories must hold the same `ModelConfig` (same encoder, layers, head, categories).
- The lexical channel (TF-IDF + linear, `moderation.lexical`) has a vocabulary of its own per model and is not
  averaged: it is taken whole from `--lexical-from` (default B). Its blend weight in the head is averaged like every
  other head tensor.
- Integer tensors (counters) are taken from B.
- `config.json` keeps B's training record (datasets, settings, time) but not its early-stopping point, which belongs
  to B (kept as `averaged.second_model_early_stopping`): no early stopping chose the average.
- The result has no calibration, thresholds or policy: run the recipe with `--skip-train --work-dir DIR` (or
  `moderation calibrate`) before using it. `config.json` records both versions, the weight and this command, and the
  recipe prefixes the latter to the command it writes into the metrics.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

AVERAGED_KEY = "averaged"


def _mix(a: dict[str, Any], b: dict[str, Any], weight: float, what: str) -> dict[str, Any]:
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"the two models' {what} tensors differ in name: {only}")
    out = {}
    for key, tb in b.items():
        ta = a[key]
        if ta.shape != tb.shape:
            raise ValueError(f"{what} tensor {key}: shape {tuple(ta.shape)} against {tuple(tb.shape)}")
        if tb.is_floating_point():
            out[key] = ((1.0 - weight) * ta.float() + weight * tb.float()).to(tb.dtype)
        else:
            out[key] = tb.clone()
    return out


def average_models(model_a: str | Path, model_b: str | Path, weight: float, out: str | Path, *,
                   lexical_from: str = "b", name: str = "default") -> str:
    """Write the weight-averaged model into `out`; returns its version. See the module docstring."""
    # deferred: torch and the model stack load only when averaging runs, not at `--help`
    from moderation.model_dir import load_model, save_model

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--weight must lie in [0, 1], got {weight}")
    if lexical_from not in ("a", "b"):
        raise ValueError(f"--lexical-from must be 'a' or 'b', got {lexical_from!r}")
    a, info_a = load_model(model_a)
    b, info_b = load_model(model_b)
    if info_a.config.to_dict() != info_b.config.to_dict():
        raise ValueError(f"{model_a} and {model_b} have different model configs: only one architecture averages")
    if not info_a.trained or not info_b.trained:
        raise ValueError("both models must be trained")
    head = _mix(a.head.state_dict(), b.head.state_dict(), weight, "head")
    encoders = _mix(a.trainable_state_dict(), b.trainable_state_dict(), weight, "encoder")
    b.head.load_state_dict(head, strict=True)
    b.load_trainable_state_dict(encoders)
    if lexical_from == "a":
        b.lexical = a.lexical
    meta = {k: v for k, v in info_b.meta.items() if k not in ("created",)}
    # The early-stopping point is the second run's, not this model's: kept under "averaged", not as the model's own.
    training = dict(meta.get("training") or {})
    best_of_second = training.pop("best", None)
    meta["training"] = training
    meta[AVERAGED_KEY] = {
        "models": [info_a.model_version, info_b.model_version], "weight_of_second": weight,
        "second_model_early_stopping": best_of_second,
        "lexical_from": (info_a if lexical_from == "a" else info_b).model_version,
        "command": f"python -m training.average {shlex.quote(str(model_a))} {shlex.quote(str(model_b))} "
                   f"--weight {weight:g} --lexical-from {lexical_from} --out {shlex.quote(str(out))}",
    }
    return save_model(b, out, trained=True, name=name, meta=meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.average", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Then: python -m training.recipes.default_model --mode full --skip-train "
                                       "--work-dir DIR (with the flags of the run that made MODEL_B) recalibrates, "
                                       "refits the policy and measures.")
    p.add_argument("model_a", help="the earlier model directory (e.g. the shipped default)")
    p.add_argument("model_b", help="a model fine-tuned further from MODEL_A (--init-from)")
    p.add_argument("--weight", type=float, default=0.5, help="weight of MODEL_B, in [0, 1] (default: 0.5)")
    p.add_argument("--lexical-from", choices=("a", "b"), default="b",
                   help="whose lexical channel the average keeps (default: b)")
    p.add_argument("--name", default="default", help="model version prefix (default: default)")
    p.add_argument("--out", required=True, help="output model directory (replaced files: weights and config.json)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} exists and is not empty; choose a new --out", file=sys.stderr)
        return 2
    try:
        version = average_models(args.model_a, args.model_b, args.weight, out, lexical_from=args.lexical_from,
                                 name=args.name)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {version} into {out} (no calibration or policy yet: run the recipe with --skip-train --work-dir {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
