"""Simulated reviewers, for tests and demonstrations: verdicts taken from a labelled dataset's own labels.

    verdicts, counts = simulate_verdicts(["scored.jsonl"], spec, split="train", categories=["hate"])
    store.add(verdicts, decisions=load_decision_index(["scored.jsonl"]))     # operations.feedback

Kept apart from the feedback store: the store holds what real reviewers said; this only imitates them.
"""

from __future__ import annotations

import os
import random
from typing import Any, Sequence

from moderation.datasets import load_labelled
from operations.feedback import load_decision_index, now_iso


def simulate_verdicts(decisions: Sequence[str | os.PathLike], spec: Any, *, split: str | set[str], categories: Sequence[str],
                      review_min_score: float | None = 0.5, budget: int | None = None, report_rate: float = 0.0,
                      seed: int = 0, reviewer: str = "simulated") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A SIMULATION of reviewers, for tests and demonstrations: verdicts taken from a labelled dataset's labels.

    decisions: batch outputs (or logs) of the current model over the dataset's posts (ids as in the dataset).
    A post goes to "review" for a category when its `<c>_action` is "review" (the policy's review band), or, when no
    row has a review action (no policy, or one without a review band), when its score is at least
    `review_min_score` and it was not flagged (a flag is an automatic block). budget: at most
    this many reviewed posts, highest scores first. report_rate: the share of the other (allowed) posts that a
    user "reports" (drawn at random). Each such post gets one verdict per category the dataset labels, with the
    dataset's label as the verdict, `reviewer` as the reviewer and the decision's time (or now); the verdict on the
    category a post was sent to review for says so (`model_action` "review"). Returns (verdicts, counts).
    """
    data = load_labelled([spec], list(categories), split)
    prefix = f"{spec.name}/"
    labels = {p["id"][len(prefix):]: data.labels[i] for i, p in enumerate(data.posts)}
    index = load_decision_index(decisions, labels.keys())
    rng = random.Random(seed)
    review: list[tuple[float, str, str]] = []
    reported: list[str] = []
    band = any(row.get(f"{c}_action") == "review" for row in index.rows.values() for c in categories)
    for pid in labels:
        row = index.lookup(pid)
        if row is None or not row.get("ok", True):
            continue
        sent = []
        for c in categories:
            score = row.get(f"{c}_score")
            if band:
                to_review = row.get(f"{c}_action") == "review"
            else:
                to_review = (review_min_score is not None and score is not None and score >= review_min_score
                             and not row.get(f"{c}_flagged"))
            if to_review:
                sent.append((score or 0.0, c))
        if sent:
            best = max(sent)
            review.append((best[0], pid, best[1]))
        elif not row.get("flagged") and rng.random() < report_rate:
            reported.append(pid)
    review.sort(reverse=True)
    if budget is not None:
        review = review[:budget]
    sent_for = {pid: c for _, pid, c in review}
    verdicts = []
    for origin, pids in (("model", [pid for _, pid, _ in review]), ("report", reported)):
        for pid in pids:
            row = index.lookup(pid) or {}
            for j, c in enumerate(data.categories):
                y = labels[pid][j]
                if y != y:  # NaN: the dataset says nothing about this category
                    continue
                v = {"post_id": pid, "category": c, "harmful": bool(y), "reviewer": reviewer,
                     "time": row.get("time") or now_iso(), "origin": origin, "note": f"simulated from {spec.name} labels"}
                if origin == "model" and c == sent_for[pid]:
                    v["model_action"] = "review"  # the simulated review band, which the decisions may not encode
                verdicts.append(v)
    counts = {"posts_in_split": len(labels), "decisions_found": len(index), "sent_to_review": len(review),
              "review_by": "policy review action" if band else f"score >= {review_min_score} and not blocked",
              "reported": len(reported), "verdicts": len(verdicts)}
    return verdicts, counts
