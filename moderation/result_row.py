"""The flat result row: the columns a batch output and a decision log share, built from one ScoreResult.

    ok, flagged, action, <category>_score / _flagged / _threshold / _action for each category,
    applied_input_types, text_truncated, hash_match, language, language_confidence, action_reasons (JSON text),
    policy_version, precision (what the scores were computed in: moderation.precision.PRECISIONS; null when not scored)

`moderation.batch.scoring.make_record` (batch output) and `moderation.decision_log.decision_record` (the log)
start from this row and add their own columns (where the row came from, versions, errors, latency, content),
so `moderation monitor` and `moderation feedback` can read either with the same meaning.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from moderation.schema import ScoreResult

#: The columns of each category, `<category>_<suffix>`, in this order.
CATEGORY_SUFFIXES: tuple[str, ...] = ("score", "flagged", "threshold", "action")


def category_columns(categories: Sequence[str]) -> list[str]:
    """`<category>_<suffix>` for every category and suffix, in order."""
    return [f"{c}_{s}" for c in categories for s in CATEGORY_SUFFIXES]


def result_row(result: ScoreResult | None, categories: Sequence[str]) -> dict[str, Any]:
    """The shared columns for one post's result; None (a post refused before scoring) or an error gives the
    row of an unscored post: no scores, no action (an error is never "allow"), empty applied_input_types."""
    ok = result is not None and result.ok
    row: dict[str, Any] = {"ok": ok, "flagged": result.flagged if ok else None,
                           "action": getattr(result, "action", None) if ok else None}
    for c in categories:
        cat = result.categories.get(c) if ok else None
        row[f"{c}_score"] = float(cat.score) if cat is not None else None
        row[f"{c}_flagged"] = bool(cat.flagged) if cat is not None else None
        row[f"{c}_threshold"] = cat.threshold if cat is not None else None
        row[f"{c}_action"] = getattr(cat, "action", None) if cat is not None else None
    confidence = getattr(result, "language_confidence", None) if ok else None
    row.update({
        "applied_input_types": list(result.applied_input_types) if ok else [],
        "text_truncated": bool(result.text_truncated) if ok else False,
        "hash_match": result.hash_match.to_dict() if ok and result.hash_match is not None else None,
        "language": getattr(result, "language", None) if ok else None,
        "language_confidence": float(confidence) if confidence is not None else None,
        "action_reasons": json.dumps(getattr(result, "reasons", []), ensure_ascii=False) if ok else None,
        "policy_version": getattr(result, "policy_version", None) if result is not None else None,
        "precision": getattr(result, "precision", None) if ok else None,
    })
    return row
