"""Quality benchmark: the model on the official test splits, next to the published numbers.

    python -m eval.benchmarks.quality                    # the shipped default model
    python -m eval.benchmarks.quality --model runs/x     # any model directory
    python -m eval.benchmarks.quality --train            # run the default-model recipe first, then measure

Metrics as the anchors define them (../shared/datasets/README.md):
- TweetEval hate / offensive: macro-F1 over both classes;
- MultiOFF: F1 of the offensive class, plus ROC-AUC;
each at the decision threshold that maximises that F1 on the dataset's val split (chosen on val, measured
on test). Separately, the high-precision operating threshold of the model directory (fitted for a target
precision on the val splits) is applied to each test split and its realised precision is reported with a
Clopper-Pearson interval.

Also measured, on the same splits: the MultiOFF ablation (text only vs image only vs fused, by hiding a
modality of the test memes; the F1 threshold is chosen on val under the same ablation) and simple
baselines with a val-chosen threshold: TF-IDF + logistic regression on the text, and frozen MiniLM
mean-pooled / frozen EfficientNet-Lite0 features + logistic regression.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]

#: Published test figures of the anchors (from ../shared/datasets/README.md and DESIGN.md). Not our measurements.
PUBLISHED: dict[str, list[tuple[str, float]]] = {
    "tweeteval_hate": [("BERTweet", 56.4), ("TimeLMs-2021", 55.1), ("RoBERTa-base", 46.6), ("SVM", 36.7)],
    "tweeteval_offensive": [("TimeLMs-2021", 82.2), ("RoBERTa-retrained", 80.5), ("BERTweet", 79.5), ("SVM", 52.3)],
    "multioff": [("best text-only (CNN)", 0.54), ("best multimodal (Stacked LSTM+VGG16)", 0.50),
                 ("image-only (VGG16)", 0.24)],
}
#: The targets of the issue, on the official test splits.
TARGETS: dict[str, dict[str, float]] = {
    "tweeteval_hate": {"macro_f1": 60.0},
    "tweeteval_offensive": {"macro_f1": 83.0},
    "multioff": {"f1": 0.65, "roc_auc": 0.72},
}
#: dataset -> (category, metric of the anchor)
DATASETS: dict[str, tuple[str, str]] = {
    "tweeteval_hate": ("hate", "macro_f1"),
    "tweeteval_offensive": ("offensive", "macro_f1"),
    "multioff": ("offensive", "f1"),
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


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, scores))


def anchor_metrics(y_val: np.ndarray, s_val: np.ndarray, y_test: np.ndarray, s_test: np.ndarray, metric: str) -> dict[str, float]:
    """Test F1 / macro-F1 at the val-chosen threshold (maximising `metric` on val), plus test ROC-AUC.

    TweetEval figures are reported x100 (as published), MultiOFF as fractions.
    """
    t = best_threshold(y_val, s_val, metric)
    f1, macro = f1_scores(y_test, np.asarray(s_test) >= t)
    vf1, vmacro = f1_scores(y_val, np.asarray(s_val) >= t)
    return {"threshold": t, "f1": f1, "macro_f1": macro, "roc_auc": roc_auc(y_test, s_test),
            "n_test": int(len(y_test)), "n_test_positive": int(np.sum(y_test)),
            # On val, where the threshold was chosen (optimistic for F1; ROC-AUC is threshold-free).
            "val": {"f1": vf1, "macro_f1": vmacro, "roc_auc": roc_auc(y_val, s_val), "n": int(len(y_val))}}


def precision_at(y: np.ndarray, probs: np.ndarray, threshold: float | None, confidence: float = 0.95) -> dict[str, Any]:
    """Realised precision and recall at an operating threshold, with a Clopper-Pearson interval on precision."""
    from eval.metrics import clopper_pearson_interval
    y = np.asarray(y, dtype=np.float64)
    n_pos = int(y.sum())
    if threshold is None:
        return {"threshold": None, "flagged": 0, "n_positive": n_pos, "note": "no threshold: flags nothing"}
    flagged = np.asarray(probs) >= threshold
    tp = int((flagged & (y == 1)).sum())
    k = int(flagged.sum())
    out: dict[str, Any] = {"threshold": float(threshold), "flagged": k, "tp": tp, "n_positive": n_pos,
                           "recall": tp / n_pos if n_pos else float("nan")}
    if k:
        lo, hi = clopper_pearson_interval(tp, k, confidence)
        out.update(precision=tp / k, precision_ci=[lo, hi])
    else:
        out.update(precision=float("nan"), precision_ci=[float("nan"), float("nan")])
    return out


# --- the model on the shared datasets ---------------------------------------------------------------

def _rows(pred: Any, name: str) -> np.ndarray:
    return np.asarray([s == name for s in pred.sources]) & pred.ok


def dataset_figures(val_pred: Any, test_pred: Any, calibration: Any, thresholds: dict[str, float | None],
                    confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per shared dataset: the anchor metric at the val-chosen F1 threshold, ROC-AUC, and the realised test
    precision of the model's high-precision operating threshold.

    val_pred / test_pred: eval.predict.PredictionSet of the val / test splits of the datasets (sources = names).
    The F1 threshold is chosen on raw logits (a monotone map of the calibrated score without isotonic ties).
    """
    out: dict[str, dict[str, Any]] = {}
    probs_test = test_pred.probs(calibration)
    for name, (cat, metric) in DATASETS.items():
        rv, rt = _rows(val_pred, name), _rows(test_pred, name)
        if not rv.any() or not rt.any():
            continue
        j = test_pred.categories.index(cat)
        fig = anchor_metrics(val_pred.labels[rv, j], val_pred.logits[rv, j], test_pred.labels[rt, j],
                             test_pred.logits[rt, j], metric)
        fig["category"] = cat
        fig["operating"] = precision_at(test_pred.labels[rt, j], probs_test[rt, j], thresholds.get(cat), confidence)
        fig["n_test_errors"] = int(np.sum([s == name for s in test_pred.sources]) - rt.sum())
        out[name] = fig
    return out


def pooled_operating(test_pred: Any, calibration: Any, thresholds: dict[str, float | None],
                     confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per category over all test rows that label it: realised precision (interval) and recall at the operating threshold."""
    probs = test_pred.probs(calibration)
    out = {}
    for j, cat in enumerate(test_pred.categories):
        rows = test_pred.ok & ~np.isnan(test_pred.labels[:, j])
        out[cat] = precision_at(test_pred.labels[rows, j], probs[rows, j], thresholds.get(cat), confidence)
    return out


def _hide(data: Any, keep: str) -> Any:
    """A copy of a LabelledSet whose posts keep only `keep` ("text" or "image"); posts left empty are dropped."""
    drop = "image" if keep == "text" else "text"
    mask = np.array([bool(p.get(keep)) for p in data.posts])
    sub = data.subset(mask)
    sub.posts = [{**p, drop: None} for p in sub.posts]
    return sub


def multioff_ablation(scorer: Any, specs: Sequence[Any], progress: bool = True) -> dict[str, dict[str, float]]:
    """MultiOFF test F1 (offensive class, val-chosen threshold) and ROC-AUC with text only, image only and both."""
    from eval.predict import predict_logits
    from training.data import load_labelled

    spec = [s for s in specs if s.name == "multioff"]
    if not spec:
        return {}
    cats = list(scorer.categories)
    j = cats.index("offensive")
    val, test = load_labelled(spec, cats, "val"), load_labelled(spec, cats, "test")
    out = {}
    for label, transform in (("text only", lambda d: _hide(d, "text")), ("image only", lambda d: _hide(d, "image")),
                             ("fused", lambda d: d)):
        pv = predict_logits(scorer, transform(val), progress=progress)
        pt = predict_logits(scorer, transform(test), progress=progress)
        fig = anchor_metrics(pv.labels[pv.ok, j], pv.logits[pv.ok, j], pt.labels[pt.ok, j], pt.logits[pt.ok, j], "f1")
        out[label] = {"f1": fig["f1"], "roc_auc": fig["roc_auc"], "n_test": fig["n_test"]}
    return out


# --- baselines -----------------------------------------------------------------------------------------

def _lr(C: float = 1.0) -> Any:
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=C, max_iter=2000, class_weight="balanced")


def baselines(specs: Sequence[Any], *, cache: str | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, float]]]:
    """Simple baselines per dataset, each fitted on train, threshold chosen on val, measured on test:
    TF-IDF (word 1-2 grams + char 2-5 grams) + LR on the text; frozen MiniLM mean-pooled + LR; and for
    MultiOFF frozen EfficientNet-Lite0 + LR and the concatenation of both + LR.

    Frozen features come from the embedding cache (training.embeddings), computed once through the scorer's
    preprocessing. Returns {dataset: {baseline: {"f1", "macro_f1", "roc_auc"}}}.
    """
    import warnings

    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    from moderation.model import ModelConfig, ModerationModel
    from training.data import load_labelled
    from training.embeddings import embed_posts
    from training.train import training_scorer

    model = ModerationModel(ModelConfig())
    scorer = training_scorer(model)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, (cat, metric) in DATASETS.items():
        spec = [s for s in specs if s.name == name]
        if not spec:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped rows are reported by the model's own run
            parts = {sp: load_labelled(spec, [cat], sp) for sp in ("train", "val", "test")}
        emb, y = {}, {}
        for sp, d in parts.items():
            e = embed_posts(model, scorer.prepare, d.posts, cache=cache, progress=progress, desc=f"{name} {sp}")
            keep = e.ok
            emb[sp] = {m: v[keep] for m, v in e.embeddings.items()}
            emb[sp]["texts"] = [p["text"] or "" for p, k in zip(d.posts, keep) if k]
            y[sp] = d.labels[keep, 0]
        res: dict[str, dict[str, float]] = {}
        # The trivial yardstick: flag every post (what a threshold below every score gives).
        f1_all, macro_all = f1_scores(y["test"], np.ones_like(y["test"]))
        res["flag everything"] = {"f1": f1_all, "macro_f1": macro_all, "roc_auc": 0.5}
        log(f"  {name:20s} {'flag everything':34s} {metric} {res['flag everything'][metric]:.4f}")

        def fit(label: str, feats: Callable[[str], Any], C: float = 1.0) -> None:
            clf = _lr(C).fit(feats("train"), y["train"])
            sv = clf.decision_function(feats("val"))
            st = clf.decision_function(feats("test"))
            fig = anchor_metrics(y["val"], sv, y["test"], st, metric)
            res[label] = {"f1": fig["f1"], "macro_f1": fig["macro_f1"], "roc_auc": fig["roc_auc"]}
            log(f"  {name:20s} {label:34s} {metric} {fig[metric]:.4f}  roc_auc {fig['roc_auc']:.4f}")

        word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=200_000)
        word.fit(emb["train"]["texts"])
        char.fit(emb["train"]["texts"])
        tfidf = {sp: hstack([word.transform(emb[sp]["texts"]), char.transform(emb[sp]["texts"])]).tocsr() for sp in emb}
        fit("TF-IDF + LR (text)", lambda sp: tfidf[sp])
        fit("frozen MiniLM + LR (text)", lambda sp: emb[sp]["text"])
        if name == "multioff":
            fit("frozen EfficientNet-Lite0 + LR (image)", lambda sp: emb[sp]["image"], C=0.1)
            fit("frozen MiniLM + EffNet-Lite0 + LR (fused)",
                lambda sp: np.hstack([emb[sp]["text"], emb[sp]["image"]]), C=0.1)
        out[name] = res
    return out


# --- the command ---------------------------------------------------------------------------------------

def measure_model(scorer: Any, specs: Sequence[Any], progress: bool = True) -> dict[str, Any]:
    """The model's figures: per dataset anchors and operating precision, pooled operating precision, ablation."""
    import warnings

    from eval.predict import predict_logits
    from training.data import load_labelled

    cats = list(scorer.categories)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        val, test = load_labelled(list(specs), cats, "val"), load_labelled(list(specs), cats, "test")
    val_pred = predict_logits(scorer, val, progress=progress)
    test_pred = predict_logits(scorer, test, progress=progress)
    calibration = scorer.info.calibration
    thr = scorer.thresholds()
    return {"model_version": scorer.model_version, "trained": scorer.trained,
            "thresholds_version": scorer.thresholds_version,
            "target_precision": scorer.info.thresholds.target_precision if scorer.info.thresholds else None,
            "skipped_rows": [str(w.message) for w in caught],
            "test_errors": test_pred.errors, "val_errors": val_pred.errors,
            "datasets": dataset_figures(val_pred, test_pred, calibration, thr),
            "operating_pooled": pooled_operating(test_pred, calibration, thr),
            "multioff_ablation": multioff_ablation(scorer, specs, progress=progress)}


def _fmt(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}" if name.startswith("tweeteval") else f"{value:.3f}"


def markdown_tables(model: dict[str, Any], base: dict[str, Any] | None) -> str:
    """The benchmark tables in Markdown (what the command prints and docs/benchmarks-quality.md records)."""
    names = ("flag everything", "TF-IDF + LR (text)", "frozen MiniLM + LR (text)")
    lines = ["| dataset (test) | metric | this model | target | " + " | ".join(
        ["flag everything", "TF-IDF + LR", "frozen MiniLM + LR"] if base else []) + (" | " if base else "") + "published |",
        "| --- | --- | --- | --- | " + ("--- | --- | --- | " if base else "") + "--- |"]
    for name, (cat, metric) in DATASETS.items():
        fig = model["datasets"].get(name)
        if fig is None:
            continue
        label = "macro-F1" if metric == "macro_f1" else "F1 (offensive)"
        pub = ", ".join(f"{n} {v:g}" for n, v in PUBLISHED[name])
        b = (base or {}).get(name, {})
        cols = [_fmt(name, b.get(k, {}).get(metric)) for k in names] if base else []
        target = TARGETS[name][metric]
        lines.append(f"| {name} | {label} | **{_fmt(name, fig[metric])}** | >= {target:g} | "
                     + "".join(c + " | " for c in cols) + f"{pub} |")
        cols = [_fmt("x", b.get(k, {}).get("roc_auc")) for k in names] if base else []
        t_auc = TARGETS[name].get("roc_auc")
        lines.append(f"| {name} | ROC-AUC | {_fmt('x', fig['roc_auc'])} | {'>= %g' % t_auc if t_auc else ''} | "
                     + "".join(c + " | " for c in cols) + " |")
    if model.get("multioff_ablation"):
        b = (base or {}).get("multioff", {})
        lines += ["", "MultiOFF ablation (test; F1 of the offensive class at a val-chosen threshold, and ROC-AUC):", "",
                  "| input | this model F1 | this model ROC-AUC | frozen features + LR F1 | frozen features + LR ROC-AUC |",
                  "| --- | --- | --- | --- | --- |"]
        keys = {"text only": "frozen MiniLM + LR (text)", "image only": "frozen EfficientNet-Lite0 + LR (image)",
                "fused": "frozen MiniLM + EffNet-Lite0 + LR (fused)"}
        for label, fig in model["multioff_ablation"].items():
            bb = b.get(keys[label], {})
            lines.append(f"| {label} | {fig['f1']:.3f} | {fig['roc_auc']:.3f} | {_fmt('x', bb.get('f1'))} | "
                         f"{_fmt('x', bb.get('roc_auc'))} |")
        lines.append("| published (paper) | text-only 0.54, multimodal 0.50, image-only 0.24 | | | |")
    target = model.get("target_precision")
    lines += ["", f"High-precision operating threshold (target precision {target}, fitted on the val splits), "
              "realised on test with a 95% Clopper-Pearson interval:", "",
              "| test rows | category | threshold | flagged | true positives | precision [95% CI] | recall |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    rows = [("all datasets", cat, op) for cat, op in model["operating_pooled"].items()]
    rows += [(name, fig["category"], fig["operating"]) for name, fig in model["datasets"].items()]
    for where, cat, op in rows:
        if op.get("threshold") is None:
            lines.append(f"| {where} | {cat} | none | 0 | 0 | - | 0 |")
            continue
        if not op.get("flagged"):
            lines.append(f"| {where} | {cat} | {op['threshold']:.4f} | 0 | 0 | - (nothing flagged) | 0.000 |")
            continue
        lo, hi = op["precision_ci"]
        lines.append(f"| {where} | {cat} | {op['threshold']:.4f} | {op['flagged']} | {op['tp']} | "
                     f"{op['precision']:.3f} [{lo:.3f}, {hi:.3f}] | {op['recall']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.benchmarks.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    p.add_argument("--train", action="store_true", help="first run the default-model recipe (python -m training.recipes.default_model)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--no-baselines", action="store_true", help="skip the TF-IDF / frozen-feature baselines")
    p.add_argument("--baselines-only", action="store_true", help="measure the baselines only (no model)")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    from moderation.cli import _quiet_libraries
    from moderation.scorer import Scorer
    from training.data import default_dataset_specs

    _quiet_libraries()
    specs = default_dataset_specs(args.data_root)
    if args.train:
        from training.recipes.default_model import main as recipe
        recipe_args = ["--data-root", args.data_root] if args.data_root else []
        if args.model:
            recipe_args += ["--out", args.model]
        if recipe(recipe_args) != 0:
            return 1
    if args.baselines_only:
        base = baselines(specs, progress=not args.quiet)
        if args.out:
            from eval.metrics import to_jsonable
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(to_jsonable({"baselines": base}), indent=2) + "\n", encoding="utf-8")
        return 0
    scorer = Scorer.from_dir(args.model) if args.model else Scorer.default()
    if not scorer.trained:
        print("error: the model is untrained (no default model is installed); run "
              "`python -m training.recipes.default_model` or pass --train / --model DIR", file=sys.stderr)
        return 2
    t0 = time.time()
    model = measure_model(scorer, specs, progress=not args.quiet)
    base = None
    if not args.no_baselines:
        print("baselines (fit on train, threshold chosen on val, measured on test):")
        base = baselines(specs, progress=not args.quiet)
    result = {"model": model, "baselines": base, "published": PUBLISHED, "targets": TARGETS,
              "seconds": round(time.time() - t0, 1)}
    print(f"\nmodel {model['model_version']} (thresholds {model['thresholds_version']})\n")
    print(markdown_tables(model, base))
    if model["skipped_rows"]:
        print("\nnote: " + "; ".join(model["skipped_rows"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        from eval.metrics import to_jsonable
        Path(args.out).write_text(json.dumps(to_jsonable(result), indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.out}")
    scorer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
