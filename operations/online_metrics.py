"""The online metrics of the moderation loop, from reviewers' verdicts (operations.feedback) and the decision log.

    from operations.feedback import FeedbackStore, load_decision_index
    store = FeedbackStore.open("feedback/")
    online_metrics(store.verdicts(), load_decision_index(["logs/"]))

These are the figures a trust-and-safety team watches beside the offline metrics: how often what the model sends
to review is really harmful (review precision), how often its automatic removals are overturned on appeal, and how
much of the harmful content it finds before users report it (proactive rate).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Mapping, Sequence

from eval.metrics import clopper_pearson_interval


def _share(k: int, n: int) -> dict[str, Any]:
    lo, hi = clopper_pearson_interval(k, n) if n else (None, None)
    return {"value": k / n if n else None, "k": k, "n": n, "ci95": [lo, hi]}


def online_metrics(verdicts: Sequence[Mapping[str, Any]], decisions: Any = None) -> dict[str, Any]:
    """The online metrics of the moderation loop, from verdicts (and optionally the decision log):

    review_precision  per category: of the verdicts on posts the model sent to review for that category
                      (model_action "review"), the share judged harmful (after appeals)
    block_precision   per category: the same for posts the model blocked automatically (audits and appeals)
    appeal_overturn_rate  of the verdicts with an appeal outcome, the share overturned
    appeal_overturn_by_action  the same per category and per the decision appealed (block / review / allow;
                      "unknown" for a verdict that names none and found none in the decision log)
    proactive_rate    of the actioned posts (judged harmful for some category after appeals, or blocked by the
                      model with no overturned appeal, found in `decisions`, a operations.feedback.DecisionIndex), the share the model caught itself
                      (it sent them to review or blocked them) rather than a user report
    Each figure: value, k of n, and the exact 95% interval.
    """
    by_cat: dict[str, Counter] = defaultdict(Counter)
    appeals: dict[str, Counter] = defaultdict(Counter)
    by_action: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    actioned: dict[str, bool] = {}   # post -> caught by the model
    overturned_posts: set[str] = set()
    for v in verdicts:
        label = bool(v["harmful"]) != (v.get("appeal") == "overturned")
        cat, action = v["category"], v.get("model_action")
        if action in ("review", "block"):
            by_cat[cat][f"{action}_n"] += 1
            by_cat[cat][f"{action}_k"] += int(label)
        if v.get("appeal"):
            appeals[cat]["n"] += 1
            appeals[cat]["k"] += int(v["appeal"] == "overturned")
            decided = by_action[cat][v.get("decision_action") or action or "unknown"]
            decided["n"] += 1
            decided["k"] += int(v["appeal"] == "overturned")
            if v["appeal"] == "overturned" and v.get("harmful"):
                overturned_posts.add(v["post_id"])
        caught = v.get("origin") == "model" or action in ("review", "block") or v.get("post_action") in ("review", "block")
        if label:
            actioned[v["post_id"]] = actioned.get(v["post_id"], False) or caught
    auto_blocks = 0
    if decisions is not None:
        for key, row in decisions.rows.items():
            if row.get("action") == "block" or (row.get("action") is None and row.get("flagged") is True):
                pid = row.get("id") or key
                if pid in overturned_posts or pid in actioned:
                    continue
                actioned[pid] = True
                auto_blocks += 1
    cats = sorted(set(by_cat) | set(appeals))
    total_appeals = sum(c["n"] for c in appeals.values())
    return {
        "verdicts": len(verdicts),
        "posts": len({v["post_id"] for v in verdicts}),
        "review_precision": {c: _share(by_cat[c]["review_k"], by_cat[c]["review_n"]) for c in cats},
        "block_precision": {c: _share(by_cat[c]["block_k"], by_cat[c]["block_n"]) for c in cats},
        "appeal_overturn_rate": {"all": _share(sum(c["k"] for c in appeals.values()), total_appeals),
                                 **{c: _share(appeals[c]["k"], appeals[c]["n"]) for c in cats}},
        "appeal_overturn_by_action": {c: {a: _share(n["k"], n["n"]) for a, n in sorted(by_action[c].items())}
                                      for c in cats if c in by_action},
        "proactive_rate": {**_share(sum(actioned.values()), len(actioned)),
                           "automatic_blocks_from_log": auto_blocks, "decision_log": decisions is not None},
    }
