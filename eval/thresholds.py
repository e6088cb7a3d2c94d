"""Threshold selection on one score column: the highest-recall cut whose precision lower bound reaches a target.

`select_threshold` is the rule behind thresholds.json (`eval.calibrate.fit_thresholds`), the policy's block
thresholds (`eval.policy`) and the report's threshold table (`eval.report`); `threshold_candidates` lists every
cut with its exact one-sided Clopper-Pearson lower confidence bound on precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eval.metrics import clopper_pearson_lower

#: Fewer labelled positives than this: no threshold is fitted (the category flags nothing automatically).
DEFAULT_MIN_POSITIVES = 20


def threshold_candidates(y: np.ndarray, p: np.ndarray, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Every distinct cut p >= t, from the highest score down: threshold, tp, flagged, precision and its lower bound."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    flagged = np.arange(1, len(ps) + 1, dtype=np.float64)
    last = np.r_[ps[1:] != ps[:-1], True]  # cut only after the last of a group of tied scores
    tp, flagged, thr = tp[last], flagged[last], ps[last]
    return {"threshold": thr, "tp": tp, "flagged": flagged, "precision": tp / flagged,
            "lower": np.asarray(clopper_pearson_lower(tp, flagged, confidence), dtype=np.float64)}


def select_threshold(y: np.ndarray, p: np.ndarray, target_precision: float, confidence: float = 0.95,
                     min_positives: int = DEFAULT_MIN_POSITIVES, n_traffic: int | None = None) -> dict[str, Any]:
    """The highest-recall threshold on p whose precision lower bound reaches `target_precision`, with diagnostics.

    Returns {"threshold": float | None, "status": "ok" | "unreachable" | "too_few_positives", "reason", ...}.
    n_traffic: number of scored posts the flag rate is a share of (default: len(y)).
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n_pos = int(y.sum())
    base: dict[str, Any] = {"target_precision": target_precision, "confidence": confidence, "n": int(len(y)),
                            "n_positive": n_pos}
    if n_pos < max(1, min_positives):
        return {**base, "threshold": None, "status": "too_few_positives",
                "reason": f"only {n_pos} labelled positives (need {max(1, min_positives)}): no threshold is fitted "
                          "and this category flags nothing automatically"}
    c = threshold_candidates(y, p, confidence)
    ok = c["lower"] >= target_precision
    best = int(np.nanargmax(c["lower"]))
    if not ok.any():
        return {**base, "threshold": None, "status": "unreachable",
                "best_lower_bound": float(c["lower"][best]), "best_lower_bound_threshold": float(c["threshold"][best]),
                "reason": f"target precision {target_precision:g} is unreachable: no threshold has a {confidence:.0%} "
                          f"lower bound on precision >= {target_precision:g} (best: {c['lower'][best]:.3f} at "
                          f"threshold {c['threshold'][best]:.4f}); this category flags nothing automatically"}
    # tp never decreases down the list, so the first passing cut with the largest tp has the highest recall
    # at the highest threshold (fewest false positives) among equals.
    idx = np.nonzero(ok)[0]
    i = int(idx[np.argmax(c["tp"][idx])])
    tp, flagged = int(c["tp"][i]), int(c["flagged"][i])
    return {**base, "threshold": float(c["threshold"][i]), "status": "ok",
            "precision": float(c["precision"][i]), "precision_lower_bound": float(c["lower"][i]),
            "recall": tp / n_pos, "tp": tp, "fp": flagged - tp,
            "flag_rate": flagged / (n_traffic if n_traffic else len(y))}
