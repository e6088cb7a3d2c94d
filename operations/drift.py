"""Drift statistics of two samples: population stability index, two-sample tests, rate changes, mix shifts.

    psi(ref_scores, cur_scores)            -> {"psi", "edges", "reference", "current"}
    ks_test(ref_scores, cur_scores)        -> {"statistic", "pvalue"}
    rate_change(k_ref, n_ref, k_cur, n_cur) -> {"reference", "current", "change", "relative", "pvalue", "ci"}
    mix_shift({"text": 90, ...}, {...})    -> {"psi", "pvalue", "reference", "current"}

PSI (population stability index) = sum over bins of (cur - ref) * ln(cur / ref), with bins at the deciles of
the reference sample, so every reference bin holds about a tenth of it; shares are floored at 1e-4 so that an
empty bin does not make it infinite. Common reading: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 major shift.
PSI is an effect size: on two samples of the same distribution it is about (bins - 1) x (1/n_ref + 1/n_cur),
so small samples inflate it; the monitor therefore also asks the two-sample test to be significant.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

PSI_BINS = 10
PSI_FLOOR = 1e-4


def _finite(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def psi_from_shares(ref: np.ndarray, cur: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """PSI of two share vectors over the same bins (each summing to 1)."""
    r = np.maximum(np.asarray(ref, dtype=np.float64), floor)
    c = np.maximum(np.asarray(cur, dtype=np.float64), floor)
    return float(np.sum((c - r) * np.log(c / r)))


def psi(reference: Any, current: Any, bins: int = PSI_BINS) -> dict[str, Any]:
    """PSI of `current` against `reference` over the reference's quantile bins (NaN values are dropped).

    Bins: the reference's `bins`-quantiles (ties merged, so a score piled on one value makes fewer bins), open
    at both ends. Returns {"psi", "edges" (inner cut points), "reference", "current" (shares per bin), "bins"}.
    Raises ValueError when either sample is empty or bins < 2.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    ref, cur = _finite(reference), _finite(current)
    if not ref.size or not cur.size:
        raise ValueError(f"PSI needs values in both samples (reference {ref.size}, current {cur.size})")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # side="right": a value equal to a cut point falls in the bin above it, as np.histogram would put it.
    r_counts = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1)
    c_counts = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=inner.size + 1)
    r_share, c_share = r_counts / ref.size, c_counts / cur.size
    return {"psi": psi_from_shares(r_share, c_share), "edges": inner.tolist(), "reference": r_share.tolist(),
            "current": c_share.tolist(), "bins": int(inner.size + 1)}


def ks_test(reference: Any, current: Any) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov test (scipy): the largest gap between the two empirical CDFs, and its
    p-value under "same distribution". Raises ValueError when a sample is empty."""
    from scipy.stats import ks_2samp

    ref, cur = _finite(reference), _finite(current)
    if not ref.size or not cur.size:
        raise ValueError(f"the KS test needs values in both samples (reference {ref.size}, current {cur.size})")
    res = ks_2samp(ref, cur)
    return {"statistic": float(res.statistic), "pvalue": float(res.pvalue)}


def rate_change(k_ref: int, n_ref: int, k_cur: int, n_cur: int, confidence: float = 0.95) -> dict[str, Any]:
    """A rate (k of n) in the reference and in the current sample: difference, relative change, the two-sided
    p-value of the pooled two-proportion z-test, and a Wald interval of the difference. NaN where undefined."""
    from scipy.stats import norm

    p1 = k_ref / n_ref if n_ref else math.nan
    p2 = k_cur / n_cur if n_cur else math.nan
    out: dict[str, Any] = {"reference": p1, "current": p2, "change": p2 - p1,
                           "relative": (p2 - p1) / p1 if p1 else (math.inf if p2 > 0 else 0.0),
                           "pvalue": math.nan, "ci": [math.nan, math.nan], "n_reference": n_ref, "n_current": n_cur}
    if not n_ref or not n_cur:
        return out
    pooled = (k_ref + k_cur) / (n_ref + n_cur)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    out["pvalue"] = 1.0 if se0 == 0 else float(2 * norm.sf(abs(p2 - p1) / se0))
    se = math.sqrt(p1 * (1 - p1) / n_ref + p2 * (1 - p2) / n_cur)
    z = float(norm.ppf(0.5 + confidence / 2))
    out["ci"] = [p2 - p1 - z * se, p2 - p1 + z * se]
    return out


def mix_shift(reference: Mapping[str, int], current: Mapping[str, int]) -> dict[str, Any]:
    """How a categorical mix (input types, languages) moved: PSI over the union of the values, and the p-value of
    the chi-square test of homogeneity (scipy). Returns shares too. NaN p-value when a test is undefined."""
    from scipy.stats import chi2_contingency

    keys = sorted(set(reference) | set(current), key=lambda k: (-(reference.get(k, 0) + current.get(k, 0)), str(k)))
    r = np.array([reference.get(k, 0) for k in keys], dtype=np.float64)
    c = np.array([current.get(k, 0) for k in keys], dtype=np.float64)
    out: dict[str, Any] = {"values": keys, "reference": {}, "current": {}, "psi": math.nan, "pvalue": math.nan}
    if not r.sum() or not c.sum():
        return out
    out["reference"] = {k: float(v) for k, v in zip(keys, r / r.sum())}
    out["current"] = {k: float(v) for k, v in zip(keys, c / c.sum())}
    out["psi"] = psi_from_shares(r / r.sum(), c / c.sum())
    table = np.vstack([r, c])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] >= 2:
        out["pvalue"] = float(chi2_contingency(table)[1])
    else:
        out["pvalue"] = 1.0
    return out
