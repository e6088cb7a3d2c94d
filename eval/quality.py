"""What the quality figures are, and the functions that compute them: shared by the default-model recipe
(training.recipes.default_model, which writes them into the model card) and the quality benchmark
(benchmarks.quality, which prints them beside the baselines). Neither imports the other.

Per shared dataset (../shared/datasets/README.md), the category that matches the dataset's label and the metric
its published anchors use:
- the metric (F1 of the harmful class, or macro-F1 over both classes for TweetEval) at the decision threshold
  that maximises it on the dataset's **val** split, applied to test;
- ROC-AUC on test (threshold-free: it does not depend on a threshold that may not transfer);
- the model's own operating point on test: the precision (with a Clopper-Pearson interval) and recall of its
  automatic flags (block), and, where a policy has a review band, of block + review.
"any" is a virtual category: the highest calibrated probability over the model's categories (a post flagged
for anything), used where a dataset labels harm in general (harmful memes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from eval.metrics import clopper_pearson_interval, roc_auc
from eval.predict import predict_logits
from moderation.datasets import load_labelled

ANY = "any"


@dataclass(frozen=True)
class Anchor:
    """A dataset's row in the quality table: its category, the metric of its anchors, the targets of the
    quality issue (ROC-AUC and the metric on test; precision/recall of the model's own flags on test) and the
    published figures (name, value) on the same scale as the metric (macro-F1 x100 for TweetEval)."""

    category: str
    metric: str
    target: float
    target_auc: float
    target_flags: tuple[float, float] | None = None
    published: tuple[tuple[str, float], ...] = ()
    scale: float = 1.0
    #: Other categories the dataset labels (reported by ROC-AUC only), e.g. violence from `cv`.
    also: tuple[str, ...] = field(default_factory=tuple)


#: The shared datasets the default model is measured on. Published figures from ../shared/datasets/README.md:
#: some are for another split or cross-validation (said in `docs/benchmarks-quality.md`); they are context.
ANCHORS: dict[str, Anchor] = {
    "tweeteval_hate": Anchor("hate", "macro_f1", 60.0, 0.76, (0.85, 0.20), scale=100.0,
                             published=(("BERTweet", 56.4), ("TimeLMs-2021", 55.1), ("RoBERTa-base", 46.6), ("SVM", 36.7))),
    "tweeteval_offensive": Anchor("offensive", "macro_f1", 83.0, 0.90, (0.85, 0.40), scale=100.0,
                                  published=(("TimeLMs-2021", 82.2), ("RoBERTa-retrained", 80.5), ("BERTweet", 79.5),
                                             ("SVM", 52.3))),
    "multioff": Anchor("offensive", "f1", 0.65, 0.75,
                       published=(("best text-only (CNN)", 0.54), ("best multimodal (Stacked LSTM+VGG16)", 0.50),
                                  ("image-only (VGG16)", 0.24))),
    "gab_hate_corpus": Anchor("hate", "f1", 0.60, 0.90, (0.85, 0.30), also=("violence", "offensive"),
                              published=(("BERT, 10-fold CV (not this split)", 0.58), ("TF-IDF, 10-fold CV", 0.53))),
    "implicit_hate": Anchor("hate", "f1", 0.72, 0.88, (0.85, 0.30), also=("violence",),
                            published=(("BERT, implicit vs not, own split", 0.689), ("Perspective API", 0.552))),
    "reddit_misogyny": Anchor("hate", "f1", 0.55, 0.90, also=("violence",)),
    "harmeme_text": Anchor(ANY, "macro_f1", 70.0, 0.78, scale=100.0,
                           published=(("MOMENTA Harm-C, multimodal, from memory", 82.8),)),
    "ethos": Anchor("hate", "f1", 0.80, 0.85, also=("violence",),
                    published=(("BERT, 10-fold CV (not this split)", 0.796),)),
}


# --- metrics as the anchors define them ---------------------------------------------------------------

def f1_scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(F1 of the positive class, macro-F1 over both classes) of 0/1 predictions."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    out = []
    for pos in (True, False):
        tp = float(((pred == pos) & (y == pos)).sum())
        fp = float(((pred == pos) & (y != pos)).sum())
        fn = float(((pred != pos) & (y == pos)).sum())
        out.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return out[0], (out[0] + out[1]) / 2


def best_threshold(y: np.ndarray, scores: np.ndarray, metric: str) -> float:
    """The threshold on `scores` (flag if score >= t) that maximises `metric` ("f1" or "macro_f1") on (y, scores).

    Ties go to the threshold in the middle of the best run, so the choice is not pinned to one val score.
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    cand = np.unique(s)
    best_val, best_ts = -1.0, [float(cand[0])]
    for t in cand:
        f1, macro = f1_scores(y, s >= t)
        v = f1 if metric == "f1" else macro
        if v > best_val + 1e-12:
            best_val, best_ts = v, [float(t)]
        elif abs(v - best_val) <= 1e-12:
            best_ts.append(float(t))
    return best_ts[len(best_ts) // 2]


def anchor_metrics(y_val: np.ndarray, s_val: np.ndarray, y_test: np.ndarray, s_test: np.ndarray, metric: str) -> dict[str, Any]:
    """Test F1 / macro-F1 at the val-chosen threshold (maximising `metric` on val), plus test ROC-AUC."""
    t = best_threshold(y_val, s_val, metric)
    f1, macro = f1_scores(y_test, np.asarray(s_test) >= t)
    vf1, vmacro = f1_scores(y_val, np.asarray(s_val) >= t)
    return {"threshold": t, "f1": f1, "macro_f1": macro, "roc_auc": roc_auc(y_test, s_test),
            "n_test": int(len(y_test)), "n_test_positive": int(np.sum(y_test)),
            # On val, where the threshold was chosen (optimistic for F1; ROC-AUC is threshold-free).
            "val": {"f1": vf1, "macro_f1": vmacro, "roc_auc": roc_auc(y_val, s_val), "n": int(len(y_val))}}


def precision_at(y: np.ndarray, flagged: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Realised precision (Clopper-Pearson interval) and recall of 0/1 flags against labels y."""
    y = np.asarray(y, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool)
    n_pos = int(y.sum())
    tp = int((flagged & (y == 1)).sum())
    k = int(flagged.sum())
    out: dict[str, Any] = {"flagged": k, "tp": tp, "n": int(len(y)), "n_positive": n_pos,
                           "recall": tp / n_pos if n_pos else float("nan"), "flag_rate": k / len(y) if len(y) else float("nan")}
    if k:
        lo, hi = clopper_pearson_interval(tp, k, confidence)
        out.update(precision=tp / k, precision_ci=[lo, hi])
    else:
        out.update(precision=float("nan"), precision_ci=[float("nan"), float("nan")])
    return out


# --- the model's scores per dataset --------------------------------------------------------------------

def category_column(pred: Any, probs: np.ndarray, category: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of one category, or of "any" (max calibrated probability over categories, labelled by
    the dataset's own `label` in whatever column it maps to)."""
    if category != ANY:
        j = pred.categories.index(category)
        return probs[:, j], pred.labels[:, j]
    labels = np.full(len(pred.labels), np.nan)
    known = ~np.isnan(pred.labels)
    rows = known.any(axis=1)
    labels[rows] = np.nanmax(np.where(known[rows], pred.labels[rows], -np.inf), axis=1)
    return np.nanmax(probs, axis=1), labels


def _rows(pred: Any, name: str, labels: np.ndarray) -> np.ndarray:
    return np.asarray([s == name for s in pred.sources]) & pred.ok & ~np.isnan(labels)


def dataset_figures(val_pred: Any, test_pred: Any, calibration: Any, decide: Any = None,
                    anchors: dict[str, Anchor] = ANCHORS, confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per dataset of `anchors` present in the predictions: the anchor metric at the val-chosen threshold,
    ROC-AUC, ROC-AUC of the other categories it labels, and the model's own operating point on test.

    val_pred / test_pred: eval.predict.PredictionSet of the val / test splits (sources = dataset names).
    decide: a function (probs (N, C), slices (N,)) -> (N, C) array of "allow" / "review" / "block" (the policy,
    or thresholds as block-only); None skips the operating point. Thresholds for the anchor metric are chosen
    on calibrated probabilities of val.
    """
    out: dict[str, dict[str, Any]] = {}
    pv, pt = val_pred.probs(calibration), test_pred.probs(calibration)
    actions = decide(pt, test_pred.slices) if decide is not None else None
    for name, anchor in anchors.items():
        sv, yv = category_column(val_pred, pv, anchor.category)
        st, yt = category_column(test_pred, pt, anchor.category)
        rv, rt = _rows(val_pred, name, yv), _rows(test_pred, name, yt)
        if not rv.any() or not rt.any():
            continue
        fig = anchor_metrics(yv[rv], sv[rv], yt[rt], st[rt], anchor.metric)
        fig["category"] = anchor.category
        fig["also"] = {}
        for other in anchor.also:
            so, yo = category_column(test_pred, pt, other)
            ro = _rows(test_pred, name, yo)
            if ro.any():
                fig["also"][other] = {"roc_auc": roc_auc(yo[ro], so[ro]), "n": int(ro.sum()), "n_positive": int(yo[ro].sum())}
        if actions is not None:
            act = _column_actions(actions, test_pred, anchor.category)[rt]
            fig["block"] = precision_at(yt[rt], act == "block", confidence)
            fig["block_or_review"] = precision_at(yt[rt], act != "allow", confidence)
        out[name] = fig
    return out


def _column_actions(actions: np.ndarray, pred: Any, category: str) -> np.ndarray:
    if category != ANY:
        return actions[:, pred.categories.index(category)]
    order = np.array(["allow", "review", "block"], dtype=object)
    rank = np.vectorize({"allow": 0, "review": 1, "block": 2}.get)(actions)
    return order[rank.max(axis=1)]


def pooled_operating(test_pred: Any, calibration: Any, decide: Any, confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per category over all test rows that label it: precision (interval) and recall of block, and of
    block + review, plus the share of those posts sent to review."""
    probs = test_pred.probs(calibration)
    actions = decide(probs, test_pred.slices)
    out = {}
    for j, cat in enumerate(test_pred.categories):
        rows = test_pred.ok & ~np.isnan(test_pred.labels[:, j])
        y, act = test_pred.labels[rows, j], actions[rows, j]
        out[cat] = {"block": precision_at(y, act == "block", confidence),
                    "review": precision_at(y, act == "review", confidence),
                    "block_or_review": precision_at(y, act != "allow", confidence),
                    "review_share": float((act == "review").mean()) if len(act) else float("nan")}
    return out


def _hide(data: Any, keep: str) -> Any:
    """A copy of a LabelledSet whose posts keep only `keep` ("text" or "image"); posts left empty are dropped."""
    drop = "image" if keep == "text" else "text"
    mask = np.array([bool(p.get(keep)) for p in data.posts])
    sub = data.subset(mask)
    sub.posts = [{**p, drop: None} for p in sub.posts]
    return sub


def image_only(data: Any) -> Any:
    """The posts of a LabelledSet that have an image, with their text removed (how an image-only post looks)."""
    return _hide(data, "image")


def multioff_ablation(scorer: Any, specs: Sequence[Any], progress: bool = True) -> dict[str, dict[str, float]]:
    """MultiOFF test F1 (offensive class, val-chosen threshold) and ROC-AUC with text only, image only and both.

    Image only is measured with the scorer's OCR switched off (what the image branch itself gives); OCR is
    measured by benchmarks.images.
    """
    spec = [s for s in specs if s.name == "multioff"]
    if not spec or "offensive" not in scorer.categories:
        return {}
    cats = list(scorer.categories)
    j = cats.index("offensive")
    val, test = load_labelled(spec, cats, "val"), load_labelled(spec, cats, "test")
    out = {}
    ocr = getattr(scorer, "ocr", None)
    try:
        for label, transform in (("text only", lambda d: _hide(d, "text")), ("image only", image_only),
                                 ("fused", lambda d: d)):
            if ocr is not None:
                scorer.ocr = "off"
            pv = predict_logits(scorer, transform(val), progress=progress)
            pt = predict_logits(scorer, transform(test), progress=progress)
            fig = anchor_metrics(pv.labels[pv.ok, j], pv.logits[pv.ok, j], pt.labels[pt.ok, j], pt.logits[pt.ok, j], "f1")
            out[label] = {"f1": fig["f1"], "roc_auc": fig["roc_auc"], "n_test": fig["n_test"]}
    finally:
        if ocr is not None:
            scorer.ocr = ocr
    return out


# --- Markdown pieces shared by the model card and the benchmark --------------------------------------------

def fmt_num(x: Any, spec: str = ".3f") -> str:
    """A number formatted by `spec`; "n/a" for None, NaN or anything not a number."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else format(v, spec)


def fmt_flags(op: dict[str, Any] | None) -> str:
    """An operating point (precision_at) as "precision [95% CI] / recall (posts flagged)"."""
    if not op:
        return "-"
    if not op.get("flagged"):
        return f"nothing flagged (recall 0 of {op.get('n_positive')})"
    lo, hi = op.get("precision_ci", [float("nan")] * 2)
    return (f"{fmt_num(op.get('precision'), '.1%')} [{fmt_num(lo, '.1%')}, {fmt_num(hi, '.1%')}] / "
            f"{fmt_num(op.get('recall'), '.1%')} ({op['flagged']})")


def also_table(datasets: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: the other categories each test split labels, by ROC-AUC (empty when none)."""
    rows = [(n, c, v) for n, fig in datasets.items() for c, v in fig.get("also", {}).items()]
    if not rows:
        return []
    return (["| dataset | category | positives | ROC-AUC |", "| --- | --- | --- | --- |"]
            + [f"| {n} | {c} | {v['n_positive']} of {v['n']} | {fmt_num(v['roc_auc'])} |" for n, c, v in rows])


def pooled_table(pooled: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows of pooled_operating: per category block, review share and precision, block + review recall."""
    lines = ["| category | posts (harmful) | block: precision [95% CI] / recall (posts) | review share | review precision | "
             "block + review recall |", "| --- | --- | --- | --- | --- | --- |"]
    for cat, op in pooled.items():
        b = op["block"]
        lines.append(f"| {cat} | {b['n']} ({b['n_positive']}) | {fmt_flags(b)} | {fmt_num(op['review_share'], '.1%')} | "
                     f"{fmt_num(op['review'].get('precision'), '.1%')} | {fmt_num(op['block_or_review'].get('recall'), '.1%')} |")
    return lines
