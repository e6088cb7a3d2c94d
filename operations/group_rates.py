"""Not-allowed share per identity group over live windows: `moderation monitor --groups`.

The fairness section of the calibration report (eval.fairness) measures, on labelled data, how often benign posts
about each identity group are sent to review or blocked. Live traffic has no labels, but the same question can be
watched: of the posts that mention a group (moderation.identity's term list, on the text the decision log kept),
the share the policy did not allow, per time window, beside posts that mention no group. A rise for one group
alone is worth a look. Rows without text (logs written without content) cannot be assigned a group and are counted
apart.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Any, Sequence

from moderation.decision_log import decision_files, iter_log_rows, parse_time
from moderation.identity import IDENTITY_TERMS_VERSION, detect_groups

NO_GROUP = "(no group mentioned)"
AUTO_WINDOWS = 24


def _share(k: int, n: int) -> dict[str, Any]:
    return {"value": k / n if n else None, "k": k, "n": n}


def group_rates(inputs: Sequence[Any], *, time_column: str = "time", since: datetime | None = None,
                until: datetime | None = None, window_s: float | None = None) -> dict[str, Any]:
    """Per identity group, the share of scored posts whose action is review or block, overall and per window
    (`window_s` seconds; None: about 24 windows over the rows' time range; 0: none). Raises FileNotFoundError
    when `inputs` name no file."""
    rows: list[tuple[float | None, list[str], bool]] = []
    without_text = 0
    for path in decision_files(inputs):
        for row in iter_log_rows(path):
            if row.get("ok") is False or row.get("error_code"):
                continue
            try:
                when = parse_time(row.get(time_column))
            except (ValueError, TypeError, OverflowError):
                when = None
            if (since is not None or until is not None) and when is None:
                continue
            if (since is not None and when < since) or (until is not None and when >= until):
                continue
            text = row.get("text")
            if not isinstance(text, str) or not text:
                without_text += 1
                continue
            action = row.get("action") or ("block" if row.get("flagged") else "allow")
            rows.append((when.timestamp() if when else None, sorted(detect_groups(text)) or [NO_GROUP],
                         action in ("review", "block")))
    overall: dict[str, Counter] = defaultdict(Counter)
    for _, groups, not_allowed in rows:
        for g in groups:
            overall[g]["n"] += 1
            overall[g]["k"] += int(not_allowed)
    times = [t for t, _, _ in rows if t is not None]
    windows: list[dict[str, Any]] = []
    if times and window_s != 0:
        start, end = min(times), max(times)
        size = window_s or max((end - start) / AUTO_WINDOWS, 1.0)
        per: dict[int, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        for t, groups, not_allowed in rows:
            if t is None:
                continue
            w = int((t - start) // size)
            for g in groups:
                per[w][g]["n"] += 1
                per[w][g]["k"] += int(not_allowed)
        for w in sorted(per):
            windows.append({"start": datetime.fromtimestamp(start + w * size, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "groups": {g: _share(c["k"], c["n"]) for g, c in sorted(per[w].items())}})
    return {"identity_terms": IDENTITY_TERMS_VERSION, "posts": len(rows), "posts_without_text": without_text,
            "groups": {g: _share(c["k"], c["n"]) for g, c in sorted(overall.items(), key=lambda kv: -kv[1]["n"])},
            "window_s": None if not windows else (window_s or size), "windows": windows}


def group_lines(rates: dict[str, Any], min_posts: int = 20) -> list[str]:
    """Readable lines: the not-allowed share of each group with at least `min_posts` posts, beside no group."""
    base = rates["groups"].get(NO_GROUP, {}).get("value")
    lines = [f"not allowed per identity group ({rates['posts']} posts with text, {rates['identity_terms']}; "
             f"{rates['posts_without_text']} without text):"]
    for g, d in rates["groups"].items():
        if d["n"] < min_posts or d["value"] is None:
            continue
        ratio = f", {d['value'] / base:.1f}x no group" if base and g != NO_GROUP else ""
        lines.append(f"  {g:<22} {d['value']:6.1%} ({d['k']}/{d['n']}{ratio})")
    if len(lines) == 1:
        lines.append(f"  no group with {min_posts} posts or more")
    return lines


def worst_window(rates: dict[str, Any], group: str) -> tuple[str, float] | None:
    """The window where `group`'s not-allowed share was highest (start, share); None without windows."""
    best = None
    for w in rates["windows"]:
        d = w["groups"].get(group)
        if d and d["value"] is not None and (best is None or d["value"] > best[1]):
            best = (w["start"], d["value"])
    return best if best is None or not math.isnan(best[1]) else None
