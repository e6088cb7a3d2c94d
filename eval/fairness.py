"""How the model treats posts about each identity group: the fairness section of the calibration report.

Posts come from the shared datasets that name a post's target, test split by default: CONAN (`target`: MUSLIMS,
MIGRANTS, LGBT+, ... on hate speech *and* on the counter-speech that answers it), Latent Hatred (`targets` of its
hateful posts), ETHOS (its hate rows' target flags: gender, sexual orientation, disability) and HarMeme text (its
`target` is individual / organisation / community / society, not a group: its posts get groups from their text).
A post belongs to the groups its labels name plus those its text mentions (moderation.identity's documented term
list, `identity-terms-1`), so benign posts that merely mention a group count too.

Per group, on the model's own decisions (the scorer's policy) and scores:

    benign not allowed   of the group's benign posts (label 0), the share sent to review or blocked, beside the
                         same share for benign posts that mention no group (background)
    held for hate        of the same posts, the share whose `hate` action is review or block: "benign" means not
                         hateful, and a post that is not hateful may still be rightly held as offensive or violent
    subgroup AUC         ROC-AUC on the group's posts only: can the model tell hateful from benign within the group?
    BPSN AUC             background positives + subgroup negatives: low when benign posts about the group score
                         higher than hateful posts elsewhere (false positives on mentions of the group)
    BNSP AUC             background negatives + subgroup positives: low when hateful posts about the group score
                         lower than benign posts elsewhere (missed attacks on the group)

(Borkan et al. 2019, "Nuanced metrics for measuring unintended bias with real data for text classification", the
Jigsaw Unintended Bias metrics), each with a bootstrap interval (posts resampled) and the number of posts behind it,
and per AUC kind the generalized mean over groups with p = -5 (it leans towards the worst groups). The score is the
`hate` score (HarMeme: the highest category score, its labels being "harmful"); the labels are each dataset's own.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.formatting import esc, html_table, md_table
from eval.metrics import clopper_pearson_interval, roc_auc
from moderation.identity import IDENTITY_TERMS, IDENTITY_TERMS_VERSION, detect_groups, groups_of

#: dataset folder -> the category whose score the AUCs use ("*": the highest category score)
SOURCES: dict[str, str] = {"conan": "hate", "implicit_hate": "hate", "ethos": "hate", "harmeme_text": "*"}
ETHOS_FLAGS: dict[str, str] = {"gender": "women", "sexual_orientation": "lgbtq", "disability": "disabled people"}
POWER = -5.0
MIN_POSTS = 30


def label_groups(dataset: str, row: dict[str, Any]) -> set[str]:
    """The groups a dataset's own fields name for a row (empty when it names none)."""
    if dataset == "conan":
        return groups_of([row.get("target")])
    if dataset == "implicit_hate":
        return groups_of(row.get("targets") or [])
    if dataset == "ethos":
        return {g for flag, g in ETHOS_FLAGS.items() if row.get(flag)}
    return set()


def load_identity_posts(root: str | Path, split: str = "test", datasets: Sequence[str] = tuple(SOURCES)
                        ) -> list[dict[str, Any]]:
    """Posts of `datasets` (folders under `root`, e.g. ../shared/datasets) in `split`: {id, text, label, dataset,
    groups (sorted), labelled_groups (those the dataset's own fields name)}. Raises FileNotFoundError."""
    out = []
    for name in datasets:
        path = Path(root) / name / "data.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"dataset not found: {path}")
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                if row.get("split") != split or not row.get("text"):
                    continue
                named = label_groups(name, row)
                out.append({"id": f"{name}:{row['id']}", "text": row["text"], "label": int(row["label"]),
                            "dataset": name, "labelled_groups": sorted(named),
                            "groups": sorted(named | detect_groups(row["text"]))})
    return out


def sample_posts(posts: Sequence[dict[str, Any]], per_group: int, background: int, seed: int = 0
                 ) -> list[dict[str, Any]]:
    """A smaller set for a quick measure: up to `per_group` posts of each group (taken in a seeded random order, so
    a post counts for every group it belongs to) and up to `background` posts that mention no group."""
    rng = np.random.default_rng(seed)
    order = [posts[i] for i in rng.permutation(len(posts))]
    taken: dict[str, int] = {}
    out, bg = [], 0
    for p in order:
        if not p["groups"]:
            if bg < background:
                out.append(p)
                bg += 1
        elif any(taken.get(g, 0) < per_group for g in p["groups"]):
            out.append(p)
            for g in p["groups"]:
                taken[g] = taken.get(g, 0) + 1
    return out


def score_posts(scorer: Any, posts: Sequence[dict[str, Any]], progress: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, not_allowed, held_for_hate) of `posts` through the scorer: the score of the post's dataset's
    category, whether its action is review or block, and whether its `hate` action is. Posts that fail to score get
    NaN, False and False."""
    results = []
    for start in range(0, len(posts), 256):
        results += scorer.score([{"id": p["id"], "text": p["text"]} for p in posts[start:start + 256]])
        if progress:
            print(f"  scored {len(results)} / {len(posts)}", file=sys.stderr, flush=True)
    scores = np.full(len(posts), np.nan)
    not_allowed = np.zeros(len(posts), dtype=bool)
    for_hate = np.zeros(len(posts), dtype=bool)
    for i, (p, r) in enumerate(zip(posts, results)):
        if not r.ok:
            continue
        cat = SOURCES.get(p["dataset"], "hate")
        scores[i] = max(v.score for v in r.categories.values()) if cat == "*" else r.categories[cat].score
        not_allowed[i] = r.action in ("review", "block")
        for_hate[i] = "hate" in r.categories and r.categories["hate"].action in ("review", "block")
    return scores, not_allowed, for_hate


def power_mean(values: Sequence[float], p: float = POWER) -> float:
    """Generalized mean (sum v^p / n)^(1/p) of the finite values; NaN when there are none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan
    with np.errstate(divide="ignore"):  # a value of 0 gives inf ** (1/p) = 0, the right limit
        return float(np.mean(v ** p) ** (1.0 / p))


@dataclass
class _Masks:
    member: dict[str, np.ndarray]
    background: np.ndarray  # mentions no group


def _point(y: np.ndarray, s: np.ndarray, na: np.ndarray, m: _Masks, groups: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in groups:
        sub = m.member[g]
        out[g] = {"subgroup_auc": roc_auc(y[sub], s[sub]),
                  "bpsn_auc": roc_auc(y[(~sub & y) | (sub & ~y)], s[(~sub & y) | (sub & ~y)]),
                  "bnsp_auc": roc_auc(y[(~sub & ~y) | (sub & y)], s[(~sub & ~y) | (sub & y)]),
                  "benign_not_allowed": float(na[sub & ~y].mean()) if (sub & ~y).any() else math.nan}
    return out


def fairness(labels: np.ndarray, scores: np.ndarray, not_allowed: np.ndarray, groups: Sequence[Sequence[str]], *,
             bootstrap: int = 200, seed: int = 0, confidence: float = 0.95, min_posts: int = MIN_POSTS,
             held_for_hate: np.ndarray | None = None) -> dict[str, Any]:
    """The fairness figures (module docstring) of posts with `labels` (0/1), `scores`, `not_allowed` (the
    policy's action is review or block) and `groups` (each post's identity groups); with `held_for_hate` (the
    `hate` action is review or block), also that share of the benign posts. Groups with fewer than `min_posts`
    posts are listed with their counts only. Posts with a NaN score are left out."""
    keep = np.isfinite(np.asarray(scores, dtype=np.float64))
    y = np.asarray(labels, dtype=bool)[keep]
    s = np.asarray(scores, dtype=np.float64)[keep]
    na = np.asarray(not_allowed, dtype=bool)[keep]
    hh = None if held_for_hate is None else np.asarray(held_for_hate, dtype=bool)[keep]

    def share(mask: np.ndarray, held: np.ndarray) -> dict[str, Any]:
        k, n = int((mask & ~y & held).sum()), int((mask & ~y).sum())
        lo, hi = clopper_pearson_interval(k, n, confidence)
        return {"value": k / n if n else None, "k": k, "n": n, "ci": [lo, hi] if n else None}
    post_groups = [set(g) for g, k in zip(groups, keep) if k]
    names = sorted({g for gs in post_groups for g in gs})
    member = {g: np.array([g in gs for gs in post_groups], dtype=bool) for g in names}
    masks = _Masks(member, np.array([not gs for gs in post_groups], dtype=bool))
    measured = [g for g in names if member[g].sum() >= min_posts]
    point = _point(y, s, na, masks, measured)
    rng = np.random.default_rng(seed)
    boots: list[dict[str, Any]] = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(y), len(y))
        mb = _Masks({g: member[g][idx] for g in measured}, masks.background[idx])
        boots.append(_point(y[idx], s[idx], na[idx], mb, measured))
    alpha = (1.0 - confidence) / 2.0

    def interval(values: list[float]) -> list[float] | None:
        v = np.asarray([x for x in values if np.isfinite(x)])
        return [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] if len(v) >= 10 else None

    rows: dict[str, Any] = {}
    for g in names:
        sub = member[g]
        row: dict[str, Any] = {"posts": int(sub.sum()), "positives": int((sub & y).sum()),
                               "benign": int((sub & ~y).sum())}
        if g in measured:
            row["benign_not_allowed"] = share(sub, na)
            if hh is not None:
                row["benign_held_for_hate"] = share(sub, hh)
            for key in ("subgroup_auc", "bpsn_auc", "bnsp_auc"):
                value = point[g][key]
                row[key] = {"value": None if math.isnan(value) else value,
                            "ci": interval([b[g][key] for b in boots])}
            row["bpsn_posts"] = int(((~sub & y) | (sub & ~y)).sum())
            row["bnsp_posts"] = int(((~sub & ~y) | (sub & y)).sum())
        rows[g] = row
    bg = masks.background
    background = {"posts": int(bg.sum()), "benign": int((bg & ~y).sum()), "benign_not_allowed": share(bg, na)}
    if hh is not None:
        background["benign_held_for_hate"] = share(bg, hh)
    means = {}
    for key in ("subgroup_auc", "bpsn_auc", "bnsp_auc"):
        means[key] = {"value": power_mean([point[g][key] for g in measured]),
                      "ci": interval([power_mean([b[g][key] for g in measured]) for b in boots]),
                      "groups": len(measured)}
    return {"posts": int(len(y)), "positives": int(y.sum()), "overall_auc": roc_auc(y, s),
            "background": background,
            "groups": rows, "generalized_mean": means, "power": POWER, "bootstrap": bootstrap,
            "confidence": confidence, "min_posts": min_posts, "identity_terms": IDENTITY_TERMS_VERSION}


def measure(scorer: Any, root: str | Path, split: str = "test", *, bootstrap: int = 200, min_posts: int = MIN_POSTS,
            per_group: int | None = None, background: int = 500, progress: bool = False) -> dict[str, Any]:
    """Load the identity posts of `root`'s datasets, score them with `scorer` and compute `fairness`, naming the
    model, policy, split and datasets; per_group: measure on `sample_posts(per_group, background)` instead of
    all. Raises FileNotFoundError for a missing dataset."""
    posts = load_identity_posts(root, split)
    total = len(posts)
    if per_group is not None:
        posts = sample_posts(posts, per_group, background)
    scores, not_allowed, for_hate = score_posts(scorer, posts, progress)
    result = fairness([p["label"] for p in posts], scores, not_allowed, [p["groups"] for p in posts],
                      bootstrap=bootstrap, min_posts=min_posts, held_for_hate=for_hate)
    result.update({"model_version": scorer.model_version, "policy_version": scorer.policy.version, "split": split,
                   "datasets": sorted({p["dataset"] for p in posts}),
                   "sample": None if per_group is None else {"per_group": per_group, "background": background,
                                                             "of_posts": total}})
    return result


# --- rendering --------------------------------------------------------------------------------------------

HEADERS = ("group", "posts (hateful / benign)", "benign not allowed", "subgroup AUC", "BPSN AUC", "BNSP AUC")


def headers(result: dict[str, Any]) -> tuple[str, ...]:
    """The table's columns: HEADERS, with "benign held for hate" after "benign not allowed" when measured (results
    written before it was measured lack it)."""
    if "benign_held_for_hate" not in result["background"]:
        return HEADERS
    return HEADERS[:3] + ("benign held for hate",) + HEADERS[3:]


def _fmt(d: dict[str, Any] | None, share: bool = False) -> str:
    if not d or d.get("value") is None:
        return "–"
    v = d["value"]
    txt = f"{v:.1%}" if share else f"{v:.3f}"
    ci = d.get("ci")
    if ci:
        txt += f" [{ci[0]:.1%}–{ci[1]:.1%}]" if share else f" [{ci[0]:.3f}–{ci[1]:.3f}]"
    if share and d.get("n") is not None:
        txt += f" ({d['k']}/{d['n']})"
    return txt


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the fairness table (`headers`): one per group, worst BPSN first, then background and the means."""
    groups = result["groups"]
    order = sorted(groups, key=lambda g: ((groups[g].get("bpsn_auc") or {}).get("value") is None,
                                          (groups[g].get("bpsn_auc") or {}).get("value") or 0.0))
    hate = len(headers(result)) > len(HEADERS)

    def shares(r: dict[str, Any]) -> list[str]:
        out = [_fmt(r.get("benign_not_allowed"), True)]
        return out + [_fmt(r.get("benign_held_for_hate"), True)] if hate else out

    rows = []
    for g in order:
        r = groups[g]
        rows.append([g, f"{r['posts']} ({r['positives']} / {r['benign']})", *shares(r),
                     _fmt(r.get("subgroup_auc")), _fmt(r.get("bpsn_auc")), _fmt(r.get("bnsp_auc"))])
    bg = result["background"]
    rows.append(["(no group mentioned)", f"{bg['posts']} (– / {bg['benign']})", *shares(bg), "–", "–", "–"])
    m = result["generalized_mean"]
    rows.append([f"generalized mean (p = {result['power']:g}, {m['subgroup_auc']['groups']} groups)", "",
                 *([""] * (2 if hate else 1)), _fmt(m["subgroup_auc"]), _fmt(m["bpsn_auc"]), _fmt(m["bnsp_auc"])])
    return rows


def note(result: dict[str, Any], model: str | None = None) -> str:
    """The paragraph that says what the table is."""
    sample = result.get("sample")
    drawn = (f" (a seeded sample of the {sample['of_posts']}: up to {sample['per_group']} per group and "
             f"{sample['background']} that mention none)") if sample else ""
    return (f"{result['posts']} posts{drawn} ({result['positives']} hateful){f' scored by {model}' if model else ''}; "
            f"overall ROC-AUC {result['overall_auc']:.3f}. Groups from the datasets' target labels and the identity "
            f"term list {result['identity_terms']}; groups with fewer than {result['min_posts']} posts are counted only. "
            f"Brackets: {result['confidence']:.0%} intervals (bootstrap of {result['bootstrap']} resamples for the AUCs "
            "and their generalized mean; Clopper-Pearson for the shares). Benign not allowed: the policy's action is "
            "review or block (held for hate: the hate action is). BPSN low: benign posts about the group outscore hateful posts elsewhere (false "
            "positives on mentions); BNSP low: hateful posts about the group score below benign posts elsewhere.")


def html_section(result: dict[str, Any], model: str | None = None) -> str:
    return (f"<h2>Fairness: identity groups</h2><p class='note'>{esc(note(result, model))}</p>"
            + html_table(headers(result), [[esc(c) for c in row] for row in table_rows(result)]))


def markdown_section(result: dict[str, Any], model: str | None = None) -> str:
    return "\n".join(["## Fairness: identity groups", "", note(result, model), "", md_table(headers(result), table_rows(result)), ""])


def identity_term_table() -> list[list[str]]:
    """The identity term list as rows (group, terms), for the docs."""
    return [[g, ", ".join(terms)] for g, terms in IDENTITY_TERMS.items()]
