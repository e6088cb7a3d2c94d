"""Fit probability calibration and high-precision thresholds on a calibration split; write them into a model dir.

Calibration (per category, on raw logits z):
    temperature  sigmoid(z / T), T by maximum likelihood
    platt        sigmoid(a z + b), maximum likelihood with Platt's smoothed targets (no overconfidence on
                 separable data)
    isotonic     non-decreasing piecewise-linear map of sigmoid(z) (scikit-learn's IsotonicRegression), kept
                 within [1/(n+2), 1 - 1/(n+2)] so that no score claims certainty
    auto         the one of the three with the lowest cross-validated log-loss (stratified k-fold on the
                 given data); every method's score is recorded in calibration.json
Thresholds (per category, on CALIBRATED probabilities, as the scorer applies them): the lowest threshold,
i.e. the highest recall, whose exact one-sided Clopper-Pearson lower confidence bound on precision reaches
the target. When no threshold reaches it the category gets a null threshold and flags nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from moderation.calibration import Calibration, Thresholds, apply_method, sigmoid
from moderation.model_dir import read_model_info, write_calibration, write_thresholds
from moderation.policy import LanguageRule, from_thresholds, with_not_judged

from eval.metrics import to_jsonable
from eval.policy import DEFAULT_REVIEW, ReviewTarget, fit_policy
from eval.predict import predict_logits
from eval.thresholds import DEFAULT_MIN_POSITIVES, select_threshold

FIT_METHODS: tuple[str, ...] = ("temperature", "platt", "isotonic")
METHOD_CHOICES: tuple[str, ...] = ("auto",) + FIT_METHODS
CV_FOLDS = 5
_EPS = 1e-15


class CalibrationSplitWarning(UserWarning):
    """Calibrating on rows the model was trained on: the thresholds will be optimistic."""


# --- calibration fits -----------------------------------------------------------------------------

def _bce_with_logits(s: np.ndarray, y: np.ndarray) -> float:
    # log(1 + e^s) - y s, overflow-free.
    return float(np.mean(np.logaddexp(0.0, s) - y * s))


def fit_temperature(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """T > 0 minimising the log-loss of sigmoid(z / T). Searched on log T in [-6, 6]."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: _bce_with_logits(z / math.exp(lt), y), bounds=(-6.0, 6.0), method="bounded",
                          options={"xatol": 1e-6})
    return {"temperature": float(math.exp(res.x))}


def fit_platt(z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """a, b minimising the log-loss of sigmoid(a z + b) against Platt's smoothed targets (Platt 1999)."""
    from scipy.optimize import minimize

    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    t = np.where(y > 0.5, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = w[0] * z + w[1]
        g = sigmoid(s) - t
        return float(np.mean(np.logaddexp(0.0, s) - t * s)), np.array([np.mean(g * z), np.mean(g)])

    res = minimize(loss_grad, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return {"a": float(res.x[0]), "b": float(res.x[1])}


def fit_isotonic(z: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """Non-decreasing map of sigmoid(z) to [0, 1]; stored as the knots (x, y) that np.interp reads."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(sigmoid(z), y)
    xs = np.asarray(iso.X_thresholds_, dtype=np.float64)
    ys = np.asarray(iso.y_thresholds_, dtype=np.float64)
    if xs.size < 2:  # one distinct score: a constant map
        xs, ys = np.array([0.0, 1.0]), np.full(2, ys[0] if ys.size else float(y.mean()))
    # Pure end blocks would map to exactly 0 or 1: a certainty no finite sample supports (and an unbounded
    # log-loss on the next post). Keep the map within [1/(n+2), 1 - 1/(n+2)]; it stays non-decreasing.
    eps = 1.0 / (len(y) + 2.0)
    ys = np.clip(ys, eps, 1.0 - eps)
    return {"x": xs.tolist(), "y": ys.tolist()}


_FITTERS = {"temperature": fit_temperature, "platt": fit_platt, "isotonic": fit_isotonic}


def fit_method(method: str, z: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Params of one calibration method fitted on logits z and 0/1 labels y. Raises ValueError for an unknown method."""
    if method == "identity":
        return {}
    if method not in _FITTERS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHOD_CHOICES)}")
    return _FITTERS[method](np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64))


def cv_log_loss(method: str, z: np.ndarray, y: np.ndarray, folds: int = CV_FOLDS, seed: int = 0) -> float:
    """Log-loss of `method` on out-of-fold predictions (stratified k-fold; fit on k-1 folds, predict the last)."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    oof = np.empty(len(y))
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(z, y):
        params = fit_method(method, z[train], y[train])
        oof[test] = apply_method(method, params, z[test])
    return float(log_loss(y, np.clip(oof, _EPS, 1 - _EPS), labels=[0, 1]))


def _content_version(prefix: str, content: Any) -> str:
    blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d}-{hashlib.sha256(blob).hexdigest()[:8]}"


def _check_inputs(values: np.ndarray, labels: np.ndarray, categories: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if values.ndim != 2 or values.shape != labels.shape or values.shape[1] != len(categories):
        raise ValueError(f"{what} {values.shape} and labels {labels.shape} must both be (N, {len(categories)}) "
                         f"for categories {list(categories)}")
    known = labels[~np.isnan(labels)]
    if np.any((known != 0) & (known != 1)):
        raise ValueError("labels must be 0, 1 or NaN (unknown)")
    return values, labels


#: An input type gets a calibration of its own when it has at least this many labelled posts of each class.
MIN_TYPE_CLASS = 20


def fit_calibration(logits: np.ndarray, labels: np.ndarray, categories: Sequence[str], method: str = "auto",
                    seed: int = 0, folds: int = CV_FOLDS, input_types: Sequence[str] | None = None,
                    min_type_class: int = MIN_TYPE_CLASS,
                    same_as_text: Mapping[str, Collection[str]] | None = None) -> Calibration:
    """Fit one calibration per category on held-out (N, C) logits and labels (NaN labels / NaN logits skipped).

    method: "auto" (lowest cross-validated log-loss among temperature, platt, isotonic) or one of them.
    Each category's entry records the cross-validated log-loss of every method (identity included, as the
    baseline). A category with fewer than 2 labelled positives or negatives stays "identity" (plain sigmoid)
    with a note. input_types: per row "text" / "image" / "image+text"; when given, every input type with at
    least `min_type_class` labelled positives and negatives of a category (and not all of its rows) gets a
    Platt calibration of its own for that category (two parameters: safe on a few hundred posts); the
    others use the pooled one. same_as_text: {category: input types whose score for it is computed from the
    text alone} (posts with text and an image, for a category whose score ignores the image): their rows join
    the text rows, and they get the text's map (a map of their own would only learn the base rate of the one
    dataset they come from).
    Raises ValueError for an unknown method or mismatched shapes.
    """
    if method not in METHOD_CHOICES:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHOD_CHOICES)}")
    logits, labels = _check_inputs(logits, labels, categories, "logits")
    entries: dict[str, dict[str, Any]] = {}
    for j, cat in enumerate(categories):
        rows = ~np.isnan(labels[:, j]) & ~np.isnan(logits[:, j])
        z, y = logits[rows, j], labels[rows, j]
        n_pos = int(y.sum())
        n_neg = int(len(y) - n_pos)
        k = min(folds, n_pos, n_neg)
        if k < 2:
            entries[cat] = {"method": "identity", "params": {}, "n": int(len(y)), "n_positive": n_pos,
                            "note": f"not fitted: {n_pos} labelled positives and {n_neg} negatives "
                                    "(need at least 2 of each); scores are the plain sigmoid"}
            continue
        scores = {m: cv_log_loss(m, z, y, k, seed) for m in ("identity",) + FIT_METHODS}
        chosen = min(FIT_METHODS, key=lambda m: scores[m]) if method == "auto" else method
        entries[cat] = {"method": chosen, "params": fit_method(chosen, z, y), "selection": method,
                        "cv_log_loss": scores, "cv_folds": k, "n": int(len(y)), "n_positive": n_pos}
        if input_types is not None:
            types = np.asarray(input_types, dtype=object)[rows].copy()
            aliases = sorted(set((same_as_text or {}).get(cat, ())) & set(types.tolist()))
            for kind in aliases:
                types[types == kind] = "text"
            own = {}
            for kind in sorted(set(types.tolist())):
                sel = types == kind
                yk = y[sel]
                if sel.all() or min(int(yk.sum()), int(len(yk) - yk.sum())) < min_type_class:
                    continue
                own[kind] = {"method": "platt", "params": fit_method("platt", z[sel], yk), "n": int(sel.sum()),
                             "n_positive": int(yk.sum())}
            if "text" in own:
                for kind in aliases:
                    own[kind] = {**own["text"], "as": "text: the image adds nothing to this category's score"}
            if own:
                entries[cat]["input_types"] = own
    entries = to_jsonable(entries)
    meta = {"fitted": {"method": method, "seed": seed,
                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
    return Calibration(version=_content_version("cal", entries), categories=entries, meta=meta)


# --- thresholds -----------------------------------------------------------------------------------

def fit_thresholds(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str], target_precision: float = 0.9,
                   confidence: float = 0.95, min_positives: int = DEFAULT_MIN_POSITIVES) -> Thresholds:
    """Per category, the threshold on calibrated probabilities with the highest recall subject to
    Clopper-Pearson lower bound on precision >= target_precision (at `confidence`).

    NaN labels and NaN probability rows are skipped. A category whose target is unreachable (or which has
    fewer than `min_positives` labelled positives) gets threshold None with its status and reason, and then
    flags nothing. Raises ValueError for targets or confidences outside (0, 1) or mismatched shapes.
    """
    if not 0.0 < target_precision < 1.0:
        raise ValueError(f"target_precision must be in (0, 1), got {target_precision}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    probs, labels = _check_inputs(probs, labels, categories, "probs")
    scored = ~np.isnan(probs).any(axis=1)
    entries = {}
    for j, cat in enumerate(categories):
        rows = scored & ~np.isnan(labels[:, j])
        entries[cat] = select_threshold(labels[rows, j], probs[rows, j], target_precision, confidence, min_positives)
    entries = to_jsonable(entries)
    meta = {"confidence": confidence, "min_positives": min_positives,
            "rule": "highest recall whose one-sided Clopper-Pearson lower bound on precision >= target_precision",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    version = _content_version("thr", {"categories": entries, "target": target_precision})
    return Thresholds(version=version, categories=entries, target_precision=target_precision, meta=meta)


# --- a model directory ------------------------------------------------------------------------------

def training_overlap(model_meta: dict[str, Any], sources: Sequence[str], splits: Sequence[str]) -> int:
    """How many rows (by dataset and split) the model directory's config says it was trained on.

    Reads config.json's optional "training" entry defensively: {"splits": "train" | [...] | {dataset: [...]},
    "datasets": [name | {"name": ...}, ...]}. Unknown shapes count as no overlap.
    """
    training = model_meta.get("training")
    if not isinstance(training, dict) or not splits:
        return 0
    raw = training.get("splits")
    per_dataset: dict[str, set[str]] | None = None
    trained_splits: set[str] = set()
    if isinstance(raw, str):
        trained_splits = {raw}
    elif isinstance(raw, (list, tuple)):
        trained_splits = {str(s) for s in raw}
    elif isinstance(raw, dict):
        per_dataset = {str(k): ({v} if isinstance(v, str) else {str(x) for x in v}) for k, v in raw.items()}
    else:
        return 0
    datasets = training.get("datasets")
    names: set[str] | None = None
    if isinstance(datasets, (list, tuple)):
        names = {str(d.get("name")) if isinstance(d, dict) else str(d) for d in datasets}
    count = 0
    for i, split in enumerate(splits):
        src = sources[i] if i < len(sources) else None
        if per_dataset is not None:
            count += int(src in per_dataset and split in per_dataset[src])
        elif split in trained_splits and (names is None or src in names):
            count += 1
    return count


def calibrate_model_dir(model_dir: str | os.PathLike, data: Any, *, target_precision: float = 0.9,
                        method: str = "auto", confidence: float = 0.95, scorer: Any = None,
                        min_positives: int = DEFAULT_MIN_POSITIVES, seed: int = 0, progress: bool = True,
                        predictions: Any = None, review: Any = "default", languages: Any = None,
                        not_judged: str | None = None,
                        extra_calibration: Any = None, block_rule: str = "pooled") -> tuple[Calibration, Thresholds]:
    """Predict on `data` (a held-out calibration LabelledSet), fit calibration, thresholds and the moderation
    policy, and write them into the model directory.

    Writes calibration.json, thresholds.json (the block thresholds: highest recall at `target_precision`, lower
    confidence bound) and policy.json (eval.policy.fit_policy: block as the thresholds, review from `review`;
    the term lists of the directory's current policy.json are kept),
    each versioned ("cal-/thr-/pol-<date>-<hash8>", changing whenever the content does); Scorer.from_dir uses
    them from then on. review: an eval.policy.ReviewTarget ("default": block + review recall 0.90), or None for
    a block-only policy. languages: the policy's moderation.policy.LanguageRule (default: the languages the
    model's config.json records for its training data, else English). not_judged: the policy's action for a
    category none of a post's inputs can judge ("allow", the default, or "review"). extra_calibration: a PredictionSet used
    for the calibration only, not for thresholds and policy (e.g. image-only copies of posts, so that
    pictures without text get a calibration of their own). block_rule: how the policy's block threshold is fitted
    (eval.policy.BLOCK_RULES): "pooled" (the precision target over every calibration row) or "each_dataset" (and on
    every dataset of `data` on its own; the thresholds.json cut-offs stay pooled).
    scorer: an already loaded Scorer of this directory (loaded here when None); its calibration, thresholds and
    policy are updated in place so that it scores like a freshly loaded one. predictions: a PredictionSet of
    `data` already computed with this model (skips the prediction pass).
    Warns (CalibrationSplitWarning) when config.json says the model was trained on rows of `data`, or when
    `data` holds rows of a "test" split.
    Raises ValueError when no post could be scored.
    """
    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    overlap = training_overlap(info.meta, list(getattr(data, "sources", []) or []), list(getattr(data, "splits", []) or []))
    if overlap:
        warnings.warn(f"{overlap} of {len(data)} calibration rows come from dataset splits this model was trained on "
                      f"(config.json 'training'): calibration and thresholds fitted there are optimistic. "
                      "Calibrate on a held-out split (e.g. --split val).", CalibrationSplitWarning, stacklevel=2)
    n_test = sum(1 for s in (getattr(data, "splits", []) or []) if s == "test")
    if n_test:
        warnings.warn(f"{n_test} of {len(data)} calibration rows come from a 'test' split: every later figure measured "
                      "on that split will be optimistic. Calibrate on a held-out split (e.g. --split val).",
                      CalibrationSplitWarning, stacklevel=2)
    if scorer is None:  # it predicts (unless predictions are given) and says what each score is computed from
        from moderation.scorer import Scorer  # deferred: the scorer (torch) loads only when none is given
        scorer = Scorer.from_dir(model_dir)
    if predictions is None:
        predictions = predict_logits(scorer, data, progress=progress)
    if not predictions.ok.any():
        raise ValueError(f"none of the {len(predictions)} posts could be scored (errors: {predictions.errors}); "
                         "nothing to calibrate on")
    cats = predictions.categories
    ok = predictions.ok
    cal_set = predictions.concat(extra_calibration) if extra_calibration is not None else predictions
    cok = cal_set.ok
    # Calibrate by what a score is computed from: where an image beside text adds nothing to a category's
    # score, a post with both is scored from its text and takes the calibration of text.
    text_scored = {c: {"image+text"} for c in cats if not scorer.image_adds_to_text(c)}
    calibration = fit_calibration(cal_set.logits[cok], cal_set.labels[cok], cats, method=method, seed=seed,
                                  input_types=cal_set.slices[cok], same_as_text=text_scored)
    probs = calibration.apply(predictions.logits[ok], cats, predictions.slices[ok])
    thresholds = fit_thresholds(probs, predictions.labels[ok], cats, target_precision=target_precision,
                                confidence=confidence, min_positives=min_positives)
    fitted_on = to_jsonable({
        "model_version": info.model_version,
        "n_rows": len(predictions), "n_scored": int(ok.sum()), "errors": predictions.errors,
        "datasets": sorted(set(predictions.sources)), "splits": sorted(set(predictions.splits)),
        "training_overlap_rows": overlap,
    })
    calibration.meta["fitted_on"] = {**fitted_on, "extra_rows": 0 if extra_calibration is None else len(extra_calibration)}
    thresholds.meta["fitted_on"] = fitted_on
    thresholds.meta["calibration_version"] = calibration.version
    # Thresholds are on calibrated probabilities: the same cut-offs under another calibration are other thresholds.
    thresholds.version = _content_version("thr", {"categories": thresholds.categories, "target": target_precision,
                                                  "calibration": calibration.version})
    if languages is None:
        trained = (info.meta.get("training") or {}).get("languages", {}).get("trained")
        languages = LanguageRule(trained=trained) if trained else LanguageRule()
    review_target = ReviewTarget(*DEFAULT_REVIEW) if review == "default" else review
    if review_target is not None:
        policy = fit_policy(probs, predictions.labels[ok], cats, block_precision=target_precision, review=review_target,
                            confidence=confidence, languages=languages, min_positives=min_positives,
                            block_rule=block_rule,  # the rows' datasets, where the predictions name them
                            sources=list(np.asarray(predictions.sources, dtype=object)[ok])
                            if len(predictions.sources) == len(predictions) else None)
    else:
        policy = from_thresholds(thresholds, languages)
    if not_judged is not None:
        policy = with_not_judged(policy, not_judged)
    if info.policy is not None and info.policy.term_lists:
        # the lists are rules a team wrote, not something fitted: a refit keeps them (and their version shows)
        policy = replace(policy, term_lists=list(info.policy.term_lists))
    policy.meta["fitted_on"] = {**fitted_on, "calibration_version": calibration.version}
    write_calibration(model_dir, calibration)
    write_thresholds(model_dir, thresholds)
    policy.save(model_dir)
    if getattr(scorer, "info", None) is not None:
        same_dir = scorer.info.path is not None and Path(scorer.info.path).resolve() == model_dir.resolve()
        if same_dir:
            scorer.info = replace(scorer.info, calibration=calibration, thresholds=thresholds, policy=policy)
            scorer.policy = policy
    return calibration, thresholds
