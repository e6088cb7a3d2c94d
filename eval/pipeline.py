"""Glue used by the CLI and the training recipe: evaluate a scorer on a labelled set, save/load the run, report it.

A run directory (`moderation evaluate --out DIR`) holds evaluation.json (metrics + what model, calibration,
thresholds and data they came from) and predictions.npz/.json (raw logits and labels), from which
`moderation report --from-eval DIR` rebuilds every plot without running the model again.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moderation.calibration import Calibration, Thresholds

from eval.metrics import evaluate, to_jsonable
from eval.predict import PredictionSet, predict_logits
from eval.report import write_report

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_FILE = "predictions.npz"


@dataclass
class EvaluationRun:
    """One model evaluated on one labelled set: the metrics dict and the arrays behind it."""

    evaluation: dict[str, Any]
    predictions: PredictionSet
    calibration: Calibration | None
    thresholds: Thresholds | None

    @property
    def calibrated_probs(self) -> np.ndarray:
        return self.predictions.probs(self.calibration)

    @property
    def raw_probs(self) -> np.ndarray:
        return self.predictions.raw_probs()

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write evaluation.json and predictions.npz/.json into out_dir (created). Returns evaluation.json's path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.predictions.save(out / PREDICTIONS_FILE)
        path = out / EVALUATION_FILE
        path.write_text(json.dumps(self.evaluation, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "EvaluationRun":
        """Read a run directory written by `save`. Raises FileNotFoundError saying how to make one."""
        run_dir = Path(run_dir)
        path = run_dir / EVALUATION_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: write one with `moderation evaluate --out {run_dir}`")
        evaluation = json.loads(path.read_text(encoding="utf-8"))
        predictions = PredictionSet.load(run_dir / PREDICTIONS_FILE)
        cal = evaluation.get("calibration")
        thr = evaluation.get("thresholds_file")
        return cls(evaluation=evaluation, predictions=predictions,
                   calibration=Calibration.from_json(cal) if cal else None,
                   thresholds=Thresholds.from_json(thr) if thr else None)


def describe_data(predictions: PredictionSet) -> dict[str, Any]:
    """Counts per dataset and split, and the errors, for the report's data table."""
    return to_jsonable({
        "datasets": dict(Counter(predictions.sources)) if predictions.sources else None,
        "splits": sorted(set(predictions.splits)) if predictions.splits else None,
        "posts": len(predictions), "scored": int(predictions.ok.sum()),
        "errors": predictions.errors or {},
    })


def evaluate_predictions(predictions: PredictionSet, calibration: Calibration | None,
                         thresholds: dict[str, float | None], *, bootstrap: int = 1000, seed: int = 0,
                         confidence: float = 0.95, progress: bool = False) -> dict[str, Any]:
    """evaluate() on a PredictionSet (calibrated as the scorer would), plus a per-dataset breakdown (no bootstrap)."""
    probs = predictions.probs(calibration)
    result = evaluate(probs, predictions.labels, predictions.categories, thresholds, predictions.slices,
                      bootstrap=bootstrap, seed=seed, confidence=confidence, progress=progress)
    if predictions.sources and len(set(predictions.sources)) > 1:
        result["by_dataset"] = evaluate(probs, predictions.labels, predictions.categories, thresholds,
                                        np.asarray(predictions.sources, dtype=object), bootstrap=0,
                                        confidence=confidence)
    result["errors"] = dict(predictions.errors)
    result["error_examples"] = dict(predictions.error_examples)
    result["data"] = describe_data(predictions)
    return result


def evaluate_scorer(scorer: Any, data: Any, *, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95,
                    progress: bool = True, predictions: PredictionSet | None = None) -> EvaluationRun:
    """Score `data` (a LabelledSet) with `scorer` (its calibration and thresholds) and evaluate every metric.

    The evaluation dict also records the scorer's description, calibration.json and thresholds.json, so a
    saved run says exactly what was measured.
    """
    if predictions is None:
        predictions = predict_logits(scorer, data, progress=progress)
    calibration = scorer.info.calibration
    thresholds = scorer.info.thresholds
    evaluation = evaluate_predictions(predictions, calibration, scorer.thresholds(), bootstrap=bootstrap, seed=seed,
                                      confidence=confidence, progress=progress)
    evaluation["model"] = to_jsonable(scorer.describe())
    evaluation["calibration"] = calibration.to_json() if calibration else None
    evaluation["thresholds_file"] = thresholds.to_json() if thresholds else None
    evaluation["policy"] = scorer.policy.to_json() if getattr(scorer, "policy", None) is not None else None
    return EvaluationRun(evaluation=evaluation, predictions=predictions, calibration=calibration, thresholds=thresholds)


def report_run(run: EvaluationRun, out_dir: str | os.PathLike, *, title: str | None = None, name: str | None = None,
               compare: EvaluationRun | None = None, compare_name: str | None = None,
               fairness: dict[str, Any] | None = None, examples: dict[str, Any] | None = None) -> dict[str, Path]:
    """write_report for an EvaluationRun (and optionally a second one on the same posts, the fairness figures
    of eval.fairness, and the explained example posts of eval.examples.report_examples)."""

    ev = run.evaluation
    model = ev.get("model") or {}
    name = name or str(model.get("model_version") or "model")
    compare_with = None
    if compare is not None:
        if list(compare.predictions.ids) != list(run.predictions.ids):
            raise ValueError("the two runs were not made on the same posts (ids differ); evaluate both models on the "
                             "same --data and --split to compare them")
        cm = compare.evaluation.get("model") or {}
        compare_with = {"name": compare_name or str(cm.get("model_version") or "other"), "evaluation": compare.evaluation,
                        "calibrated_probs": compare.calibrated_probs, "labels": compare.predictions.labels, "model": cm}
    data = dict(ev.get("data") or {})
    return write_report(out_dir, ev, title=title or f"Calibration report: {name}", raw_probs=run.raw_probs,
                        calibrated_probs=run.calibrated_probs, labels=run.predictions.labels, model=model, data=data,
                        calibration=ev.get("calibration"), thresholds=ev.get("thresholds_file"), name=name,
                        compare_with=compare_with, policy=ev.get("policy"), fairness=fairness, examples=examples)
