"""Reading decisions: decision logs and batch outputs as one set of columns (`Decisions`), and what one set holds.

    ref = load_decisions(["logs/2026-11-20/"])            # decision logs or batch outputs: files, folders, globs
    describe(ref)                                        # rates, mixes, quantiles, latency of one set

Both kinds of file share their columns (moderation.result_row); `operations.monitor` compares two sets.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from moderation.decision_log import categories_in, decision_files, iter_log_rows, parse_time
from moderation.policy import ACTIONS

LATENCY_PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
SCORE_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def strongest_of(actions: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Row by row, the strongest of several (n,) action columns in moderation.policy.ACTIONS order
    (the vectorised moderation.policy.strongest; a missing action counts as "allow")."""
    rank = np.zeros(n, dtype=int)
    for a in actions:
        rank = np.maximum(rank, sum(np.where(a == name, level, 0) for level, name in enumerate(ACTIONS)))
    return np.asarray(ACTIONS, dtype=object)[rank]


@dataclass
class Decisions:
    """Decision rows of one set as columns. Unknown values: NaN (floats), None (objects), -1 (flags)."""

    files: list[str]
    n: int
    ok: np.ndarray                      # (n,) bool: scored
    error_code: np.ndarray              # (n,) object
    time: np.ndarray                    # (n,) float epoch seconds, NaN when the row has none
    scores: dict[str, np.ndarray]       # category -> (n,) float
    flagged: dict[str, np.ndarray]      # category -> (n,) int8: 1, 0, -1 unknown
    actions: dict[str, np.ndarray]      # category -> (n,) object: "allow" / "review" / "block" / None
    has_actions: dict[str, bool]        # category -> whether the rows carry its policy action
    action: np.ndarray                  # (n,) object: the post's action (fallback: flagged -> block)
    has_post_action: bool
    input_types: np.ndarray             # (n,) object: "image+text", ...
    language: np.ndarray                # (n,) object
    latency_ms: np.ndarray              # (n,) float
    request_id: np.ndarray              # (n,) object
    model_version: np.ndarray           # (n,) object
    skipped: list[str] = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return list(self.scores)

    @property
    def has_time(self) -> bool:
        return bool(np.isfinite(self.time).any())

    def subset(self, mask: np.ndarray) -> "Decisions":
        """Rows where `mask` is true."""
        m = np.asarray(mask, dtype=bool)
        pick = lambda a: a[m]  # noqa: E731
        return Decisions(files=self.files, n=int(m.sum()), ok=pick(self.ok), error_code=pick(self.error_code),
                         time=pick(self.time), scores={c: pick(v) for c, v in self.scores.items()},
                         flagged={c: pick(v) for c, v in self.flagged.items()},
                         actions={c: pick(v) for c, v in self.actions.items()}, has_actions=dict(self.has_actions),
                         action=pick(self.action), has_post_action=self.has_post_action,
                         input_types=pick(self.input_types), language=pick(self.language),
                         latency_ms=pick(self.latency_ms), request_id=pick(self.request_id),
                         model_version=pick(self.model_version), skipped=list(self.skipped))


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """A time bound: ISO 8601 ("2026-11-27", "2026-11-27T09:00Z") or a duration before now ("24h", "7d", "30m").
    Raises ValueError."""

    m = _DURATION.match(value)
    if m:
        return (now or datetime.now(timezone.utc)) - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither an ISO 8601 time nor a duration such as 24h, 7d, 30m") from None


def parse_duration(value: str) -> float:
    """"15m", "1h", "1d" -> seconds. Raises ValueError."""
    m = _DURATION.match(value)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a duration such as 15m, 1h, 1d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _as_bool(v: Any) -> int:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return -1
    if isinstance(v, str):
        return 1 if v.strip().lower() in ("true", "1") else 0
    return 1 if bool(v) else 0


def _as_float(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _as_types(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.startswith("[") else v.split("+")
        except json.JSONDecodeError:
            return v
    return "+".join(sorted(str(x) for x in v)) if v else None


#: The per-row columns of a Decisions besides the per-category ones, in the order they are read.
_ROW_COLUMNS: tuple[str, ...] = ("ok", "error_code", "time", "action", "input_types", "language", "latency_ms",
                                 "request_id", "model_version")


@dataclass
class _ColumnBuilder:
    """Rows read so far, as lists per column, while the files are read one after another.

    wanted: the categories to read (None: those each file has). A category first seen in a later file gets
    unknown values (NaN / -1 / None) for the rows read before it."""

    time_column: str
    wanted: Sequence[str] | None
    cols: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in _ROW_COLUMNS})
    per_cat: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    seen_categories: set[str] = field(default_factory=set)
    bad_times: int = 0
    has_post_action: bool = False

    @property
    def n(self) -> int:
        return len(self.cols["ok"])

    def start_file(self, columns: Sequence[str]) -> None:
        """A file's columns are those of its first row (one schema per file)."""
        found = categories_in(list(columns))
        self.seen_categories.update(found)
        for c in (self.wanted or found):
            if c not in self.per_cat:  # rows read before this file did not have it
                self.per_cat[c] = {"score": [math.nan] * self.n, "flagged": [-1] * self.n, "action": [None] * self.n}

    def add(self, row: dict[str, Any]) -> None:
        """Append one decision row (a decision log line or a batch output row)."""
        cols = self.cols
        ok = row.get("ok")
        ok = bool(ok) if ok is not None else row.get("error_code") is None
        cols["ok"].append(ok)
        cols["error_code"].append(row.get("error_code"))
        try:
            when = parse_time(row.get(self.time_column))
        except (ValueError, TypeError, OverflowError):
            when, self.bad_times = None, self.bad_times + 1
        cols["time"].append(when.timestamp() if when is not None else math.nan)
        action = row.get("action")
        self.has_post_action = self.has_post_action or action is not None
        cols["action"].append(action)
        cols["input_types"].append(_as_types(row.get("applied_input_types")) if ok else None)
        cols["language"].append(row.get("language"))
        cols["latency_ms"].append(_as_float(row.get("latency_ms")))
        cols["request_id"].append(row.get("request_id"))
        cols["model_version"].append(row.get("model_version"))
        for c, store in self.per_cat.items():
            store["score"].append(_as_float(row.get(f"{c}_score")))
            store["flagged"].append(_as_bool(row.get(f"{c}_flagged")))
            store["action"].append(row.get(f"{c}_action"))

    def check(self, files: Sequence[Any]) -> None:
        """Raise ValueError when nothing usable was read: no rows, a wanted category no file has, or no category
        columns at all."""
        if self.n == 0:
            raise ValueError(f"no rows in {', '.join(str(f) for f in files)}")
        if self.wanted:
            missing = [c for c in self.wanted if c not in self.seen_categories]
            if missing:
                raise ValueError(f"categories {missing} are not in {', '.join(map(str, files))} (found: "
                                 f"{sorted(self.seen_categories) or 'none'})")
        if not self.per_cat:
            raise ValueError(f"{files[0]}: no category columns (<category>_score with <category>_flagged); "
                             "give decision logs or batch outputs of `moderation score`")

    def build(self, files: Sequence[Any], skipped: list[str]) -> "Decisions":
        """The columns as arrays, with each category's action and the post's action filled in where the rows
        carry none (see category_actions)."""
        cols = self.cols
        ok = np.asarray(cols["ok"], dtype=bool)
        flagged = {c: np.asarray(v["flagged"], dtype=np.int8) for c, v in self.per_cat.items()}
        actions, has_actions = category_actions({c: v["action"] for c, v in self.per_cat.items()}, flagged, ok)
        action = np.asarray(cols["action"], dtype=object)
        if not self.has_post_action:  # the strongest of the categories' actions
            action = strongest_of([actions[c] for c in self.per_cat], self.n)
        action[~ok] = None
        return Decisions(files=[str(f) for f in files], n=self.n, ok=ok,
                         error_code=np.asarray(cols["error_code"], dtype=object),
                         time=np.asarray(cols["time"], dtype=np.float64),
                         scores={c: np.asarray(v["score"], dtype=np.float64) for c, v in self.per_cat.items()},
                         flagged=flagged, actions=actions, has_actions=has_actions, action=action,
                         has_post_action=self.has_post_action,
                         input_types=np.asarray(cols["input_types"], dtype=object),
                         language=np.asarray(cols["language"], dtype=object),
                         latency_ms=np.asarray(cols["latency_ms"], dtype=np.float64),
                         request_id=np.asarray(cols["request_id"], dtype=object),
                         model_version=np.asarray(cols["model_version"], dtype=object), skipped=skipped)


def category_actions(raw: dict[str, list[Any]], flagged: dict[str, np.ndarray], ok: np.ndarray
                     ) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """Each category's (n,) action column, and whether the rows carried it. Rows without policy actions (batch
    outputs of a model without a policy) read a flag as an automatic removal: flagged 1 -> "block", 0 -> "allow",
    unknown -> None. Unscored rows (`ok` false) have no action."""
    actions: dict[str, np.ndarray] = {}
    has_actions: dict[str, bool] = {}
    for c, values in raw.items():
        a = np.asarray(values, dtype=object)
        has_actions[c] = any(x is not None for x in values)
        if not has_actions[c]:  # no policy: a flag is an automatic removal
            a = np.where(flagged[c] == 1, "block", np.where(flagged[c] == 0, "allow", None)).astype(object)
        a[~ok] = None
        actions[c] = a
    return actions, has_actions


def between(d: "Decisions", since: datetime | None, until: datetime | None, time_column: str = "time"
            ) -> "Decisions":
    """The rows of `d` whose time is in [since, until) (either bound may be None). Raises ValueError when no row
    has a time, or none falls in the window."""
    if not d.has_time:
        raise ValueError(f"--since / --until need a time on each row, and no row has a {time_column!r} column "
                         "(batch outputs: name your own time column with --time-column)")
    keep = np.isfinite(d.time)
    if since is not None:
        keep &= d.time >= since.timestamp()
    if until is not None:
        keep &= d.time < until.timestamp()
    out = d.subset(keep)
    if out.n == 0:
        raise ValueError("no rows fall between --since and --until")
    return out


def _read_columns(files: Sequence[Any], categories: Sequence[str] | None, time_column: str, skipped: list[str],
                  progress: bool) -> _ColumnBuilder:
    """Every row of `files` into a _ColumnBuilder (unreadable lines are described in `skipped`)."""
    builder = _ColumnBuilder(time_column=time_column, wanted=categories)
    bar = tqdm(total=len(files), desc="reading", unit="file", file=sys.stderr) if progress else None
    for path in files:
        first = True
        for row in iter_log_rows(path, errors=skipped):
            if first:
                builder.start_file(list(row.keys()))
                first = False
            builder.add(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return builder


def load_decisions(inputs: Sequence[str | os.PathLike], *, categories: Sequence[str] | None = None,
                   time_column: str = "time", since: datetime | None = None, until: datetime | None = None,
                   progress: bool = False) -> Decisions:
    """Read decision logs and/or batch outputs into columns (see Decisions).

    categories: those to read (default: every `<c>_score` with a `<c>_flagged` beside it in the files).
    time_column: the column holding each row's time (ISO 8601 text, epoch seconds or a timestamp; batch outputs
    carry your own input columns, e.g. --time-column created_at). since / until: keep rows in [since, until)
    (they need a time column). Raises FileNotFoundError / ValueError when nothing can be read.
    """
    files = decision_files(inputs)
    skipped: list[str] = []
    builder = _read_columns(files, categories, time_column, skipped, progress)
    builder.check(files)
    if builder.bad_times:
        skipped.append(f"{builder.bad_times} rows have a {time_column!r} that is not a time (kept, without a time)")
    out = builder.build(files, skipped)
    if since is not None or until is not None:
        out = between(out, since, until, time_column)
    return out


# --- describing one set --------------------------------------------------------------------------------

def value_counts(values: np.ndarray) -> dict[str, int]:
    """How often each value occurs (as counted by `Counter`), for the mixes of one set."""
    return dict(Counter("unknown" if v is None else str(v) for v in values.tolist()))


def describe(d: Decisions) -> dict[str, Any]:
    """One set's figures: rows, error rate and codes, per-category rates and score quantiles, action and mix
    shares, latency percentiles, time range and model versions."""
    scored = d.ok
    n_scored = int(scored.sum())
    cats: dict[str, Any] = {}
    for c in d.categories:
        s = d.scores[c][scored]
        s = s[np.isfinite(s)]
        a = d.actions[c][scored]
        f = d.flagged[c][scored]
        cats[c] = {
            "n_scored": int(s.size),
            "flag_rate": float((f == 1).mean()) if f.size else math.nan,
            "review_rate": float((a == "review").mean()) if d.has_actions[c] and a.size else None,
            "block_rate": float((a == "block").mean()) if a.size else math.nan,
            "has_policy_actions": d.has_actions[c],
            "mean_score": float(s.mean()) if s.size else math.nan,
            "quantiles": {f"p{int(q * 100)}": float(np.quantile(s, q)) for q in SCORE_QUANTILES} if s.size else {},
        }
    acts = d.action[scored]
    out: dict[str, Any] = {
        "files": len(d.files), "rows": d.n, "scored": n_scored, "errored": d.n - n_scored,
        "error_rate": (d.n - n_scored) / d.n if d.n else math.nan,
        "error_codes": value_counts(d.error_code[~d.ok]),
        "categories": cats,
        "actions": {a: float((acts == a).mean()) if acts.size else math.nan for a in ACTIONS},
        "actions_from_policy": d.has_post_action,
        "input_types": value_counts(d.input_types[scored]),
        "languages": value_counts(d.language[scored]) if any(v is not None for v in d.language.tolist()) else None,
        "latency_ms": latency_percentiles(d),
        "model_versions": value_counts(d.model_version),
        "time_range": _time_range(d.time),
        "skipped_lines": d.skipped[:20],
    }
    return out


def _time_range(t: np.ndarray) -> list[str] | None:
    t = t[np.isfinite(t)]
    if not t.size:
        return None
    fmt = lambda x: datetime.fromtimestamp(float(x), tz=timezone.utc).isoformat(timespec="seconds")  # noqa: E731
    return [fmt(t.min()), fmt(t.max())]


def latency_percentiles(d: Decisions) -> dict[str, Any] | None:
    """p50/p90/p95/p99 of latency_ms, one value per request (rows sharing a request_id count once)."""
    lat = d.latency_ms
    have = np.isfinite(lat)
    if not have.any():
        return None
    seen: set[Any] = set()
    keep = np.zeros(d.n, dtype=bool)
    for i in np.nonzero(have)[0]:
        rid = d.request_id[i]
        if rid is None or rid not in seen:
            keep[i] = True
            if rid is not None:
                seen.add(rid)
    values = lat[keep]
    return {"requests": int(values.size), **{f"p{p}": float(np.percentile(values, p)) for p in LATENCY_PERCENTILES}}


# --- comparing two sets --------------------------------------------------------------------------------
