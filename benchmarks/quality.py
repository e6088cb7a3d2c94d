"""Quality benchmark: the model on every shared dataset's official test split, beside simple baselines and the
published numbers, plus a check of plainly harmful and plainly benign sentences.

    python -m benchmarks.quality                    # the shipped default model
    python -m benchmarks.quality --model runs/x     # any model directory
    python -m benchmarks.quality --no-baselines     # the model only

What is measured is defined in eval.quality (shared with the default-model recipe, which writes the same figures
into the model card): per dataset, its anchor metric at a val-chosen threshold, ROC-AUC, and the precision and
recall of the model's own decisions (block, and block + review) at its policy; per category, the same pooled.

Baselines, for every dataset, fitted on the train splits of all the datasets that label the dataset's category
(as the model is), threshold chosen on the dataset's val split: "flag everything" (the trivial yardstick),
TF-IDF (word 1-2 grams + char 2-5 grams) + logistic regression, frozen MiniLM mean-pooled + LR, and the average
of those two's probabilities; for MultiOFF also frozen EfficientNet-Lite0 + LR (image) and both features + LR.

Plain sentences (`eval/probes/plain_posts.jsonl`, written for this check, never trained or tuned on): insults,
slurs, dehumanising statements, threats, which must end in review or block; ordinary posts, strong opinions,
news about hate and counter-speech, which must be allowed; and insults in German, Spanish and French.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from eval.functional.suite import markdown_table as functional_table
from eval.metrics import to_jsonable
from eval.policy import policy_actions
from eval.predict import predict_logits
from eval.quality import (ANCHORS, ANY, also_table, anchor_metrics, dataset_figures, f1_scores, fmt_num,
                          multioff_ablation, pooled_operating, pooled_table)
from moderation.cli import _quiet_libraries
from moderation.datasets import ALL_DATASETS, default_dataset_specs, load_labelled
from moderation.model import ModelConfig, ModerationModel
from moderation.scorer import Scorer
from training.embeddings import embed_posts
from training.recipes.default_model import functional_summary
from training.train import training_scorer

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "eval" / "probes" / "plain_posts.jsonl"
BASELINES = ("flag everything", "TF-IDF + LR", "frozen MiniLM + LR", "TF-IDF and frozen, averaged")


# --- baselines -----------------------------------------------------------------------------------------

def _lr(C: float = 1.0) -> Any:
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=C, max_iter=2000, class_weight="balanced")


def baselines(specs: Sequence[Any], *, cache: str | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, float]]]:
    """{dataset: {baseline: {"f1", "macro_f1", "roc_auc"}}} for every dataset of eval.quality.ANCHORS present.

    Per category, TF-IDF + LR and frozen MiniLM + LR are fitted on the train rows of every dataset that labels
    it; a dataset's figures use its own val split for the threshold and its test split for the figure. "any"
    (harmful memes) is judged by the highest of the three categories' probabilities. Frozen features come from
    the embedding cache (training.embeddings), through the scorer's preprocessing.
    """
    import warnings

    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    cats = ["hate", "offensive", "violence"]
    model = ModerationModel(ModelConfig(categories=cats))
    scorer = training_scorer(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped rows are reported by the model's own run
        parts = {sp: load_labelled(list(specs), cats, sp) for sp in ("train", "val", "test")}
    feats: dict[str, dict[str, Any]] = {}
    for sp, d in parts.items():
        e = embed_posts(model, scorer.prepare, d.posts, cache=cache, progress=progress, desc=f"frozen features ({sp})")
        feats[sp] = {"ok": e.ok, "text": e.embeddings["text"], "image": e.embeddings["image"],
                     "has_image": e.present[:, model.modalities.index("image")],
                     "texts": [p["text"] or "" for p in d.posts], "y": d.labels, "src": np.asarray(d.sources)}
    word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True, max_features=300_000)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=300_000)
    word.fit(feats["train"]["texts"])
    char.fit(feats["train"]["texts"])
    tfidf = {sp: hstack([word.transform(f["texts"]), char.transform(f["texts"])]).tocsr() for sp, f in feats.items()}
    # Probabilities per split: {baseline: (N, C)}
    probs = {sp: {b: np.full((len(f["y"]), len(cats)), np.nan) for b in BASELINES[1:3]} for sp, f in feats.items()}
    for j, cat in enumerate(cats):
        tr = feats["train"]
        rows = tr["ok"] & ~np.isnan(tr["y"][:, j])
        for name, x in (("TF-IDF + LR", tfidf), ("frozen MiniLM + LR", {sp: f["text"] for sp, f in feats.items()})):
            clf = _lr().fit(x["train"][rows], tr["y"][rows, j])
            for sp in feats:
                probs[sp][name][:, j] = clf.predict_proba(x[sp])[:, 1]
            log(f"  fitted {name} for {cat} on {int(rows.sum())} posts")
    for sp in feats:
        probs[sp][BASELINES[3]] = (probs[sp][BASELINES[1]] + probs[sp][BASELINES[2]]) / 2
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, anchor in ANCHORS.items():
        v, t = feats["val"], feats["test"]
        rv, rt = (v["src"] == name) & v["ok"], (t["src"] == name) & t["ok"]
        if not rv.any() or not rt.any():
            continue

        def column(f: dict[str, Any], p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if anchor.category == ANY:
                known = ~np.isnan(f["y"])
                y = np.where(known.any(1), np.nanmax(np.where(known, f["y"], -1), axis=1), np.nan)
                return np.nanmax(p, axis=1), y
            j = cats.index(anchor.category)
            return p[:, j], f["y"][:, j]

        res: dict[str, dict[str, float]] = {}
        _, yt = column(t, np.zeros((len(t["y"]), len(cats))))
        f1_all, macro_all = f1_scores(yt[rt], np.ones(int(rt.sum())))
        res["flag everything"] = {"f1": f1_all, "macro_f1": macro_all, "roc_auc": 0.5}
        for b in BASELINES[1:]:
            sv, yv = column(v, probs["val"][b])
            st, yt = column(t, probs["test"][b])
            fig = anchor_metrics(yv[rv], sv[rv], yt[rt], st[rt], anchor.metric)
            res[b] = {"f1": fig["f1"], "macro_f1": fig["macro_f1"], "roc_auc": fig["roc_auc"]}
        if name == "multioff":
            j = cats.index("offensive")
            tr = feats["train"]
            rtr = (tr["src"] == name) & tr["ok"]
            for label, x in (("frozen EfficientNet-Lite0 + LR (image)", lambda f: f["image"]),
                             ("frozen MiniLM + EffNet-Lite0 + LR (fused)", lambda f: np.hstack([f["text"], f["image"]]))):
                clf = _lr(0.1).fit(x(tr)[rtr], tr["y"][rtr, j])
                fig = anchor_metrics(v["y"][rv, j], clf.decision_function(x(v)[rv]), t["y"][rt, j],
                                     clf.decision_function(x(t)[rt]), "f1")
                res[label] = {"f1": fig["f1"], "macro_f1": fig["macro_f1"], "roc_auc": fig["roc_auc"]}
        out[name] = res
        log(f"  {name:20s} " + "  ".join(f"{b}: {r[anchor.metric] * anchor.scale:.3f}/{r['roc_auc']:.3f}" for b, r in res.items()))
    return out


# --- plain sentences -------------------------------------------------------------------------------------

def probe_figures(scorer: Any, path: Path = PROBES) -> dict[str, Any]:
    """Score the plain sentences; per kind, how many were blocked / reviewed / allowed, and every post's outcome."""
    posts = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    results = scorer.score([{"id": p["id"], "text": p["text"]} for p in posts])
    rows, kinds = [], {}
    for p, r in zip(posts, results):
        action = getattr(r, "action", None)
        if action is None:  # a scorer without a policy: its flags are its only decision
            action = "block" if r.flagged else "allow"
        top = max(r.categories.items(), key=lambda kv: kv[1].score) if r.categories else (None, None)
        ok = (action != "allow") if p["expect"] == "harmful" else (action == "allow")
        rows.append({"id": p["id"], "kind": p["kind"], "expect": p["expect"], "action": action, "as_expected": ok,
                     "language": getattr(r, "language", None), "top_category": top[0],
                     "top_score": top[1].score if top[1] else None,
                     "scores": {c: v.score for c, v in r.categories.items()}, "text": p["text"]})
        k = kinds.setdefault(p["kind"], {"n": 0, "as_expected": 0, "block": 0, "review": 0, "allow": 0})
        k["n"] += 1
        k["as_expected"] += int(ok)
        k[action] = k.get(action, 0) + 1
    harmful = [r for r in rows if r["expect"] == "harmful"]
    benign = [r for r in rows if r["expect"] == "benign"]
    return {"n": len(rows), "harmful_caught": sum(r["as_expected"] for r in harmful), "n_harmful": len(harmful),
            "benign_allowed": sum(r["as_expected"] for r in benign), "n_benign": len(benign),
            "kinds": kinds, "posts": rows}


# --- the command ---------------------------------------------------------------------------------------

def measure_model(scorer: Any, specs: Sequence[Any], progress: bool = True,
                  save_predictions: Path | None = None) -> dict[str, Any]:
    """The model's figures: per dataset and pooled per category (eval.quality), MultiOFF ablation, plain sentences.

    save_predictions: a folder to keep the raw val and test predictions in (val.npz/.json, test.npz/.json;
    eval.predict.PredictionSet.load reads them back), e.g. for benchmarks.block_rules."""
    import warnings

    cats = list(scorer.categories)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        val, test = load_labelled(list(specs), cats, "val"), load_labelled(list(specs), cats, "test")
    val_pred = predict_logits(scorer, val, progress=progress)
    test_pred = predict_logits(scorer, test, progress=progress)
    if save_predictions is not None:
        Path(save_predictions).mkdir(parents=True, exist_ok=True)
        val_pred.save(Path(save_predictions) / "val")
        test_pred.save(Path(save_predictions) / "test")
    calibration = scorer.info.calibration
    policy = scorer.policy

    def decide(p: np.ndarray, _slices: Any) -> np.ndarray:
        return policy_actions(policy, p, cats)

    return {"model_version": scorer.model_version, "trained": scorer.trained, "policy_version": policy.version,
            "policy": {c: {"block": e.block, "review": e.review} for c, e in policy.categories.items()},
            "skipped_rows": [str(w.message) for w in caught],
            "test_errors": test_pred.errors, "val_errors": val_pred.errors,
            "datasets": dataset_figures(val_pred, test_pred, calibration, decide),
            "operating_pooled": pooled_operating(test_pred, calibration, decide),
            "multioff_ablation": multioff_ablation(scorer, specs, progress=progress),
            "plain_sentences": probe_figures(scorer),
            "functional": functional_summary(scorer)}


def _pr(op: dict[str, Any] | None) -> str:
    if not op or not op.get("flagged"):
        return "- / 0"
    lo, hi = op["precision_ci"]
    return f"{op['precision']:.2f} [{lo:.2f}, {hi:.2f}] / {op['recall']:.2f}"


def markdown_tables(model: dict[str, Any], base: dict[str, Any] | None) -> str:
    """The benchmark tables in Markdown (what the command prints and docs/benchmarks-quality.md records)."""
    lines = ["| dataset (test) | category | metric | this model | target | " + " | ".join(BASELINES if base else []) + (" | " if base else "")
             + "published |", "| --- | --- | --- | --- | --- | " + ("--- | " * len(BASELINES) if base else "") + "--- |"]
    for name, fig in model["datasets"].items():
        a = ANCHORS[name]
        d = ".1f" if a.scale == 100 else ".3f"
        b = (base or {}).get(name, {})
        label = "macro-F1" if a.metric == "macro_f1" else "F1"
        pub = ", ".join(f"{n} {v:g}" for n, v in a.published) or "-"
        cols = [fmt_num(b.get(k, {}).get(a.metric, float("nan")) * a.scale, d) for k in BASELINES] if base else []
        lines.append(f"| {name} | {a.category} | {label} | **{fmt_num(fig[a.metric] * a.scale, d)}** | >= {a.target:g} | "
                     + "".join(c + " | " for c in cols) + f"{pub} |")
        cols = [fmt_num(b.get(k, {}).get("roc_auc")) for k in BASELINES] if base else []
        lines.append(f"| {name} | {a.category} | ROC-AUC | **{fmt_num(fig['roc_auc'])}** | >= {a.target_auc:g} | "
                     + "".join(c + " | " for c in cols) + " |")
    lines += ["", "The model's own decisions at its policy (" + model.get("policy_version", "?") + "), per dataset: "
              "precision [95% CI] / recall of automatic blocks, and of block + review (targets: block precision and recall "
              "of the quality issue where it sets them):", "",
              "| dataset (test) | category | block | target | block + review |", "| --- | --- | --- | --- | --- |"]
    for name, fig in model["datasets"].items():
        a = ANCHORS[name]
        tgt = f"P >= {a.target_flags[0]:g}, R >= {a.target_flags[1]:g}" if a.target_flags else ""
        lines.append(f"| {name} | {a.category} | {_pr(fig.get('block'))} | {tgt} | {_pr(fig.get('block_or_review'))} |")
    also = also_table(model["datasets"])
    if also:
        lines += ["", "Other categories the test splits label (ROC-AUC):", "", *also]
    lines += ["", "Pooled per category over every test post that labels it:", "", *pooled_table(model["operating_pooled"])]
    if model.get("multioff_ablation"):
        b = (base or {}).get("multioff", {})
        keys = {"text only": "frozen MiniLM + LR", "image only": "frozen EfficientNet-Lite0 + LR (image)",
                "fused": "frozen MiniLM + EffNet-Lite0 + LR (fused)"}
        lines += ["", "MultiOFF ablation (test; F1 of the offensive class at a val-chosen threshold, and ROC-AUC; image "
                  "only without OCR):", "", "| input | this model F1 | ROC-AUC | frozen features + LR F1 | ROC-AUC |",
                  "| --- | --- | --- | --- | --- |"]
        for label, fig in model["multioff_ablation"].items():
            bb = b.get(keys[label], {})
            lines.append(f"| {label} | {fig['f1']:.3f} | {fig['roc_auc']:.3f} | {fmt_num(bb.get('f1'))} | {fmt_num(bb.get('roc_auc'))} |")
    ps = model.get("plain_sentences")
    if ps:
        lines += ["", f"Plain sentences (`eval/probes/plain_posts.jsonl`): harmful ones sent to review or block "
                  f"{ps['harmful_caught']} of {ps['n_harmful']}; benign ones allowed {ps['benign_allowed']} of {ps['n_benign']}.", "",
                  "| kind | posts | as expected | block | review | allow |", "| --- | --- | --- | --- | --- | --- |"]
        for kind, k in ps["kinds"].items():
            lines.append(f"| {kind} | {k['n']} | {k['as_expected']} | {k.get('block', 0)} | {k.get('review', 0)} | {k.get('allow', 0)} |")
        missed = [r for r in ps["posts"] if not r["as_expected"]]
        if missed:
            lines += ["", "Not as expected: " + "; ".join(
                f"{r['id']} ({r['action']}, {r['top_category']} {fmt_num(r['top_score'], '.2f')})" for r in missed)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model directory (default: the shipped default model)")
    p.add_argument("--data-root", default=None, help="shared datasets folder (default: $MODERATION_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--no-baselines", action="store_true", help="skip the TF-IDF / frozen-feature baselines")
    p.add_argument("--baselines-only", action="store_true", help="measure the baselines only (no model)")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--save-predictions", metavar="DIR", type=Path, default=None,
                   help="keep the model's raw val and test predictions in DIR (val.npz, test.npz + .json sidecars)")
    p.add_argument("--all-datasets", action="store_true",
                   help="measure on all twelve shared datasets (moderation.datasets.ALL_DATASETS: the default eight "
                        "plus CONAN, Qian interventions, CrisisLex and HateXplain, as the default model's recipe "
                        "calibrates on); the baselines stay fitted on the eight")
    args = p.parse_args(argv)

    _quiet_libraries()
    baseline_specs = default_dataset_specs(args.data_root)  # the baselines are fitted on the default eight
    specs = default_dataset_specs(args.data_root, names=ALL_DATASETS) if args.all_datasets else baseline_specs

    def write(result: dict[str, Any]) -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(to_jsonable(result), indent=2) + "\n", encoding="utf-8")
            print(f"\nfigures written to {args.out}")

    if args.baselines_only:
        write({"baselines": baselines(baseline_specs, progress=not args.quiet)})
        return 0
    scorer = Scorer.from_dir(args.model) if args.model else Scorer.default()
    if not scorer.trained:
        print("error: the model is untrained (no default model is installed); run "
              "`python -m training.recipes.default_model` or pass --model DIR", file=sys.stderr)
        return 2
    t0 = time.time()
    model = measure_model(scorer, specs, progress=not args.quiet, save_predictions=args.save_predictions)
    base = None
    if not args.no_baselines:
        print("baselines (fit on the train splits, threshold chosen on val, measured on test):")
        base = baselines(baseline_specs, progress=not args.quiet)
    result = {"model": model, "baselines": base, "anchors": {n: a.__dict__ for n, a in ANCHORS.items()},
              "seconds": round(time.time() - t0, 1)}
    print(f"\nmodel {model['model_version']} (policy {model['policy_version']})\n")
    print(markdown_tables(model, base))
    print("\nfunctional suite (eval/functional/cases.jsonl, never trained on):\n")
    print(functional_table(model["functional"]))
    if model["skipped_rows"]:
        print("\nnote: " + "; ".join(model["skipped_rows"]))
    write(result)
    scorer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
