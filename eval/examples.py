"""The calibration report's example tables: posts the policy blocks or sends to review, with the words that drove
their score (moderation.explain), so that a reader sees what the model reacts to, not only how often.

For each category, posts from four cells are drawn at random (seeded): blocked and harmful, blocked but benign
(by the label), reviewed and harmful, reviewed but benign; one from each cell in turn until `limit` posts (a post
once). Only those are explained: explaining costs about one more encoder pass per post ("pooled"), so the tables
stay cheap whatever the size of the evaluated split, and the report says how many posts each cell held.

    examples = report_examples(scorer, data, probs, labels, limit=20)      # JSON-ready dict
    examples_html(examples), examples_markdown(examples)                 # the report's section
"""

from __future__ import annotations

import html
import time
from collections import deque
from typing import Any, Sequence

import numpy as np

from moderation.explain import METHODS, explain

from eval.formatting import esc, html_table, md_table
from eval.policy import policy_actions

#: Posts explained at most (the report's section says so).
DEFAULT_LIMIT = 20
#: The cells drawn from, per category, in this order: (the score's action for the category, the label).
CELLS: tuple[tuple[str, str], ...] = (("block", "harmful"), ("block", "benign"), ("review", "harmful"),
                                      ("review", "benign"))
HEADERS = ("category", "action (label)", "score", "dataset / id", "text (the words that raised the score marked)",
           "words (probability points each adds)")


def select_examples(probs: np.ndarray, labels: np.ndarray, categories: Sequence[str], policy: Any, *,
                    limit: int = DEFAULT_LIMIT, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Rows to explain: [{"row", "category", "action", "truth"}] (at most `limit`, a row once), and how many posts
    each cell held ({category: {"block harmful": n, ...}}). probs / labels: (N, C) calibrated probabilities (NaN
    row: unscored) and labels (NaN: unknown); policy: a moderation.policy.Policy (its thresholds)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    scored = ~np.isnan(probs).any(axis=1)
    actions = policy_actions(policy, np.nan_to_num(probs, nan=0.0), categories)
    rng = np.random.default_rng(seed)
    cells: list[deque] = []
    counts: dict[str, dict[str, int]] = {}
    for j, cat in enumerate(categories):
        counts[cat] = {}
        for action, truth in CELLS:
            want = 1.0 if truth == "harmful" else 0.0
            rows = np.nonzero(scored & (actions[:, j] == action) & (labels[:, j] == want))[0]
            counts[cat][f"{action} {truth}"] = int(len(rows))
            rng.shuffle(rows)
            cells.append(deque((int(r), cat, action, truth) for r in rows))
    picked: list[dict[str, Any]] = []
    seen: set[int] = set()
    while len(picked) < limit and any(cells):
        for cell in cells:
            while cell and cell[0][0] in seen:
                cell.popleft()
            if cell and len(picked) < limit:
                row, cat, action, truth = cell.popleft()
                seen.add(row)
                picked.append({"row": row, "category": cat, "action": action, "truth": truth})
    return picked, counts


def report_examples(scorer: Any, data: Any, probs: np.ndarray, labels: np.ndarray, *, limit: int = DEFAULT_LIMIT,
                    seed: int = 0, method: str = METHODS[0]) -> dict[str, Any]:
    """Select (select_examples) and explain example posts of `data` (the LabelledSet `probs` and `labels` are
    row-aligned with) with `scorer`, its policy deciding the cells. Returns the report's JSON-ready section."""
    picked, counts = select_examples(probs, labels, scorer.categories, scorer.policy, limit=limit, seed=seed)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for cat in scorer.categories:
        mine = [p for p in picked if p["category"] == cat]
        if not mine:
            continue
        posts = [data.posts[p["row"]] for p in mine]
        # the set's image paths are absolute (checked when it was loaded), hence the root "/"
        for p, e in zip(mine, explain(scorer, posts, categories=[cat], only_actioned=False, method=method,
                                      image_root="/")):
            r = e.result
            rows.append({"id": data.posts[p["row"]]["id"], "dataset": data.sources[p["row"]], "category": cat,
                         "action": p["action"], "truth": p["truth"], "post_action": r.action,
                         "score": r.categories[cat].score if r.ok else None, "text": e.text,
                         "image": data.posts[p["row"]].get("image") is not None,
                         "words": [w.to_dict() for w in e.categories.get(cat, [])], "error": r.error})
    rows.sort(key=lambda r: (list(scorer.categories).index(r["category"]), [a for a, _ in CELLS].index(r["action"]),
                             r["truth"] != "harmful", -(r["score"] or 0.0)))
    return {"limit": limit, "method": method, "seed": seed, "seconds": time.perf_counter() - start,
            "cells": counts, "rows": rows}


# --- rendering ----------------------------------------------------------------------------------------------

def marked(text: str | None, words: Sequence[dict[str, Any]], *, markup: bool) -> str:
    """The text with the explained words marked: <mark> with the weight as a title (HTML, escaped), or the plain
    text (markup False; the Markdown table lists the words beside it)."""
    if not text:
        return "(no text: image only)" if markup else "(no text)"
    if not markup:
        return text
    out, pos = [], 0
    for w in sorted(words, key=lambda w: w["span"][0]):
        s, e = w["span"]
        if s < pos or e > len(text):
            continue
        out += [html.escape(text[pos:s]), f"<mark title='{w['weight']:+.3f}'>{html.escape(text[s:e])}</mark>"]
        pos = e
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _words(words: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{w['word']} {100 * w['weight']:+.1f}" for w in words) or "–"


def _note(examples: dict[str, Any]) -> str:
    cells = "; ".join(f"{c}: " + ", ".join(f"{k} {v:,}" for k, v in n.items()) for c, n in examples["cells"].items())
    return (f"At most {examples['limit']} posts are explained (method {examples['method']!r}: each word left out of "
            f"the text encoder's pooling and the lexical channel, about one more encoder pass per post; "
            f"{examples['seconds']:.1f} s for these), drawn at random (seed {examples['seed']}) from the posts each "
            f"category's score blocks or sends to review, harmful and benign by the label, in turn. Posts in each "
            f"cell: {cells}. A word's figure is how far the category's calibrated probability falls when it is "
            "masked. Content warning: real posts, some of them hateful.")


def _row(r: dict[str, Any], markup: bool) -> list[str]:
    score = "–" if r["score"] is None else f"{r['score']:.3f}"
    action = f"{r['action']} ({r['truth']})"
    text = marked(r["text"], r["words"], markup=markup) if not r.get("error") else f"error: {r['error']}"
    if markup:
        return [esc(r["category"]), esc(action), score, esc(f"{r['dataset']} / {r['id']}"), text, esc(_words(r["words"]))]
    # md_table strips tags and escapes pipes: give it escaped text on one line (a post's own "<" stays text)
    return [esc(r["category"]), esc(action), score, esc(f"{r['dataset']} / {r['id']}"), esc(" ".join(text.split())),
            esc(_words(r["words"]))]


def examples_html(examples: dict[str, Any]) -> str:
    """The report's HTML section: a note (cost, cells) and one table, highlighted spans in the text column."""
    return ("<h2>Examples: what drove the score</h2>"
            f"<p class='note'>{esc(_note(examples))}</p>"
            + html_table(HEADERS, [_row(r, True) for r in examples["rows"]], "examples"))


def examples_markdown(examples: dict[str, Any]) -> str:
    """The report's Markdown section: the same table, the text plain and the words listed beside it."""
    return "\n".join(["## Examples: what drove the score", "", _note(examples), "",
                      md_table(HEADERS, [_row(r, False) for r in examples["rows"]]), ""])
