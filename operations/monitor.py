"""Monitoring what the model does in production: a current window of decisions against a reference window.

    ref = load_decisions(["logs/2026-11-20/"])            # decision logs or batch outputs: files, folders, globs
    cur = load_decisions(["logs/decisions-20261127*.jsonl"])
    summary = compare(ref, cur, AlertThresholds())       # JSON-ready; summary["alerts"] lists what crossed
    write_monitor_report("out/", summary, ref, cur)      # operations.monitor_report

What is compared (each set's rows are decisions: eval/monitor reads the columns that decision logs and batch
outputs share, moderation.decision_log):

- per category: the flag, review and block rates (a category without `<c>_action` columns, e.g. a batch output
  of a model without a policy, counts a flag as "block" and has no review rate), the score distribution (PSI
  over the reference's deciles, two-sample Kolmogorov-Smirnov test), quantiles;
- per post: the action mix (allow / review / block), the error rate and error codes;
- the input-type mix (what the scores used) and the language mix (when present), PSI and chi-square test;
- latency percentiles, per request, when the rows carry `latency_ms`;
- per time window of the current set when its rows carry a time: the same rates and PSI, window by window.

An alert needs a change that is both large (the thresholds) and significant (p-value below `pvalue`), and enough
rows (`min_rows` scored rows in both sets); see AlertThresholds. The CLI (`moderation monitor`) exits 3 when
anything alerts, 0 otherwise.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from moderation.decision_log import categories_in, decision_files

from operations.drift import ks_test, mix_shift, psi, rate_change
from eval.metrics import to_jsonable

SUMMARY_FORMAT = 1
ACTIONS: tuple[str, ...] = ("allow", "review", "block")
LATENCY_PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
SCORE_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class AlertThresholds:
    """When a change between the reference and the current set is an alert. Every rule needs both sets to hold
    at least `min_rows` scored rows (a smaller set is reported, never alerted on)."""

    #: Scored rows each set needs before any drift or rate rule can alert.
    min_rows: int = 500
    #: Significance every rule asks of its test (KS, two-proportion z-test, chi-square): p-value below this.
    pvalue: float = 0.001
    #: Score distribution drift of a category: PSI at least this (0.2 = "major shift" in the usual reading).
    psi: float = 0.2
    #: A flag / review / block rate of a category, or a post action rate, moved by at least this much (absolute
    #: share of scored posts, 0.01 = one percentage point) AND by at least `rate_rel` of its reference value.
    rate_abs: float = 0.01
    rate_rel: float = 0.25
    #: The error rate (rows not scored) rose by at least this much (absolute) ...
    error_rate_abs: float = 0.01
    #: ... or is above this ceiling whatever the reference did.
    error_rate_max: float = 0.05
    #: The input-type or language mix moved: PSI over its values at least this.
    mix_psi: float = 0.2
    #: p95 latency per request rose by this share of the reference's (0.5 = +50%) ...
    latency_p95_rel: float = 0.5
    #: ... or is above this many ms (None: no ceiling).
    latency_p95_max_ms: float | None = None

    def __post_init__(self) -> None:
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {self.min_rows}")
        if not 0 < self.pvalue < 1:
            raise ValueError(f"pvalue must be in (0, 1), got {self.pvalue}")
        for name in ("psi", "rate_abs", "rate_rel", "error_rate_abs", "error_rate_max", "mix_psi", "latency_p95_rel"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AlertThresholds":
        """Build from a dict (a --thresholds JSON file); unknown names raise ValueError listing the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown alert thresholds {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))

    def updated(self, assignments: Sequence[str]) -> "AlertThresholds":
        """A copy with NAME=VALUE assignments applied (the CLI's --threshold); VALUE "none" = None."""
        values = asdict(self)
        for item in assignments:
            name, eq, raw = item.partition("=")
            name = name.strip()
            if not eq or name not in values:
                raise ValueError(f"--threshold {item!r}: expected NAME=VALUE with NAME one of {sorted(values)}")
            try:
                values[name] = None if raw.strip().lower() == "none" else (int(raw) if name == "min_rows" else float(raw))
            except ValueError:
                raise ValueError(f"--threshold {item!r}: {raw!r} is not a number") from None
        return AlertThresholds.from_dict(values)


# --- reading -------------------------------------------------------------------------------------------

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
    from moderation.decision_log import parse_time

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


def load_decisions(inputs: Sequence[str | os.PathLike], *, categories: Sequence[str] | None = None,
                   time_column: str = "time", since: datetime | None = None, until: datetime | None = None,
                   progress: bool = False) -> Decisions:
    """Read decision logs and/or batch outputs into columns (see Decisions).

    categories: those to read (default: every `<c>_score` with a `<c>_flagged` beside it in the files).
    time_column: the column holding each row's time (ISO 8601 text, epoch seconds or a timestamp; batch outputs
    carry your own input columns, e.g. --time-column created_at). since / until: keep rows in [since, until)
    (they need a time column). Raises FileNotFoundError / ValueError when nothing can be read.
    """
    from moderation.decision_log import iter_log_rows, parse_time

    files = decision_files(inputs)
    cols: dict[str, list[Any]] = {k: [] for k in ("ok", "error_code", "time", "action", "input_types", "language",
                                                    "latency_ms", "request_id", "model_version")}
    per_cat: dict[str, dict[str, list[Any]]] = {}
    seen_categories: set[str] = set()
    skipped: list[str] = []
    bad_times = 0
    has_post_action = False
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(files), desc="reading", unit="file", file=sys.stderr)
    for path in files:
        found: list[str] | None = None
        for row in iter_log_rows(path, errors=skipped):
            if found is None:  # a file's columns are those of its first row (one schema per file)
                found = categories_in(list(row.keys()))
                seen_categories.update(found)
                for c in (categories or found):
                    if c not in per_cat:  # rows read before this file did not have it
                        per_cat[c] = {"score": [math.nan] * len(cols["ok"]), "flagged": [-1] * len(cols["ok"]),
                                      "action": [None] * len(cols["ok"])}
            ok = row.get("ok")
            ok = bool(ok) if ok is not None else row.get("error_code") is None
            cols["ok"].append(ok)
            cols["error_code"].append(row.get("error_code"))
            raw_time = row.get(time_column)
            try:
                when = parse_time(raw_time)
            except (ValueError, TypeError, OverflowError):
                when, bad_times = None, bad_times + 1
            cols["time"].append(when.timestamp() if when is not None else math.nan)
            action = row.get("action")
            has_post_action = has_post_action or action is not None
            cols["action"].append(action)
            types = row.get("applied_input_types")
            cols["input_types"].append(_as_types(types) if ok else None)
            cols["language"].append(row.get("language"))
            cols["latency_ms"].append(_as_float(row.get("latency_ms")))
            cols["request_id"].append(row.get("request_id"))
            cols["model_version"].append(row.get("model_version"))
            for c, store in per_cat.items():
                store["score"].append(_as_float(row.get(f"{c}_score")))
                store["flagged"].append(_as_bool(row.get(f"{c}_flagged")))
                store["action"].append(row.get(f"{c}_action"))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    n = len(cols["ok"])
    if n == 0:
        raise ValueError(f"no rows in {', '.join(str(f) for f in files)}")
    if categories:
        missing = [c for c in categories if c not in seen_categories]
        if missing:
            raise ValueError(f"categories {missing} are not in {', '.join(map(str, files))} (found: "
                             f"{sorted(seen_categories) or 'none'})")
    if not per_cat:
        raise ValueError(f"{files[0]}: no category columns (<category>_score with <category>_flagged); "
                         "give decision logs or batch outputs of `moderation score`")
    if bad_times:
        skipped.append(f"{bad_times} rows have a {time_column!r} that is not a time (kept, without a time)")
    ok = np.asarray(cols["ok"], dtype=bool)
    flagged = {c: np.asarray(v["flagged"], dtype=np.int8) for c, v in per_cat.items()}
    actions: dict[str, np.ndarray] = {}
    has_actions: dict[str, bool] = {}
    for c, v in per_cat.items():
        a = np.asarray(v["action"], dtype=object)
        has_actions[c] = any(x is not None for x in v["action"])
        if not has_actions[c]:  # no policy: a flag is an automatic removal
            a = np.where(flagged[c] == 1, "block", np.where(flagged[c] == 0, "allow", None)).astype(object)
        a[~ok] = None
        actions[c] = a
    action = np.asarray(cols["action"], dtype=object)
    if not has_post_action:  # the strongest of the categories' actions
        rank = np.zeros(n, dtype=int)
        for c in per_cat:
            rank = np.maximum(rank, np.where(actions[c] == "block", 2, np.where(actions[c] == "review", 1, 0)))
        action = np.asarray(ACTIONS, dtype=object)[rank]
    action[~ok] = None
    out = Decisions(files=[str(f) for f in files], n=n, ok=ok, error_code=np.asarray(cols["error_code"], dtype=object),
                    time=np.asarray(cols["time"], dtype=np.float64),
                    scores={c: np.asarray(v["score"], dtype=np.float64) for c, v in per_cat.items()},
                    flagged=flagged, actions=actions, has_actions=has_actions, action=action,
                    has_post_action=has_post_action, input_types=np.asarray(cols["input_types"], dtype=object),
                    language=np.asarray(cols["language"], dtype=object),
                    latency_ms=np.asarray(cols["latency_ms"], dtype=np.float64),
                    request_id=np.asarray(cols["request_id"], dtype=object),
                    model_version=np.asarray(cols["model_version"], dtype=object), skipped=skipped)
    if since is not None or until is not None:
        if not out.has_time:
            raise ValueError(f"--since / --until need a time on each row, and no row has a {time_column!r} column "
                             "(batch outputs: name your own time column with --time-column)")
        keep = np.isfinite(out.time)
        if since is not None:
            keep &= out.time >= since.timestamp()
        if until is not None:
            keep &= out.time < until.timestamp()
        out = out.subset(keep)
        if out.n == 0:
            raise ValueError("no rows fall between --since and --until")
    return out


# --- describing one set --------------------------------------------------------------------------------

def _counts(values: np.ndarray) -> dict[str, int]:
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
        "error_codes": _counts(d.error_code[~d.ok]),
        "categories": cats,
        "actions": {a: float((acts == a).mean()) if acts.size else math.nan for a in ACTIONS},
        "actions_from_policy": d.has_post_action,
        "input_types": _counts(d.input_types[scored]),
        "languages": _counts(d.language[scored]) if any(v is not None for v in d.language.tolist()) else None,
        "latency_ms": latency_percentiles(d),
        "model_versions": _counts(d.model_version),
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

def _rate_rule(kind: str, what: str, k_ref: int, n_ref: int, k_cur: int, n_cur: int, th: AlertThresholds,
               category: str | None, enough: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    rc = rate_change(k_ref, n_ref, k_cur, n_cur)
    crossed = (enough and abs(rc["change"]) >= th.rate_abs
               and abs(rc["relative"]) >= th.rate_rel and rc["pvalue"] < th.pvalue)
    rc["alert"] = bool(crossed)
    alert = None
    if crossed:
        where = f"{category}: " if category else ""
        alert = {"kind": kind, "category": category, "metric": what, "reference": rc["reference"],
                 "current": rc["current"], "change": rc["change"], "pvalue": rc["pvalue"],
                 "message": f"{where}{what} {_pct(rc['reference'])} -> {_pct(rc['current'])} "
                            f"({rc['change'] * 100:+.1f} pp, x{_ratio(rc)}; p={rc['pvalue']:.1g})"}
    return rc, alert


def _pct(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _ratio(rc: dict[str, Any]) -> str:
    return "inf" if not rc["reference"] else f"{rc['current'] / rc['reference']:.2f}"


def category_drift(c: str, ref: Decisions, cur: Decisions, th: AlertThresholds, enough: bool
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Rates and score drift of one category; returns (figures, alerts)."""
    alerts: list[dict[str, Any]] = []
    r_ok, c_ok = ref.ok, cur.ok
    rs, cs = ref.scores[c][r_ok], cur.scores[c][c_ok]
    rs, cs = rs[np.isfinite(rs)], cs[np.isfinite(cs)]
    out: dict[str, Any] = {"rates": {}}
    rules = [("flag_rate", ref.flagged[c][r_ok] == 1, cur.flagged[c][c_ok] == 1),
             ("block_rate", ref.actions[c][r_ok] == "block", cur.actions[c][c_ok] == "block")]
    if ref.has_actions[c] and cur.has_actions[c]:
        rules.append(("review_rate", ref.actions[c][r_ok] == "review", cur.actions[c][c_ok] == "review"))
    # Where every flag is a block and every block a flag (no policy, or flagged meaning "blocked"), the two rates
    # are one figure: one alert, on the block rate.
    same_as_block = all(np.array_equal(d.flagged[c][d.ok] == 1, d.actions[c][d.ok] == "block") for d in (ref, cur))
    for name, a, b in rules:
        rc, alert = _rate_rule("rate", name.replace("_", " "), int(a.sum()), int(a.size), int(b.sum()), int(b.size),
                               th, c, enough)
        if alert and name == "flag_rate" and same_as_block:
            alert, rc["alert"] = None, False
        out["rates"][name] = rc
        if alert:
            alerts.append(alert)
    if rs.size and cs.size:
        p = psi(rs, cs)
        ks = ks_test(rs, cs)
        crossed = enough and p["psi"] >= th.psi and ks["pvalue"] < th.pvalue
        out["psi"] = p
        out["ks"] = ks
        out["mean_score"] = {"reference": float(rs.mean()), "current": float(cs.mean())}
        out["score_drift_alert"] = bool(crossed)
        out["psi_level"] = "major" if p["psi"] >= 0.2 else ("moderate" if p["psi"] >= 0.1 else "stable")
        if crossed:
            alerts.append({"kind": "score_drift", "category": c, "metric": "psi", "reference": None,
                           "current": p["psi"], "change": None, "pvalue": ks["pvalue"],
                           "message": f"{c}: score distribution moved: PSI {p['psi']:.3f} (>= {th.psi:g}); mean score "
                                      f"{rs.mean():.3f} -> {cs.mean():.3f}; KS D={ks['statistic']:.3f}, "
                                      f"p={ks['pvalue']:.1g}"})
    return out, alerts


def compare(ref: Decisions, cur: Decisions, thresholds: AlertThresholds | None = None, *,
            window_s: float | None = None) -> dict[str, Any]:
    """Compare the current set with the reference; the JSON-ready summary with its `alerts` and `status`.

    window_s: length of the current set's time windows (None: chosen from its time span, about 24 windows;
    0: no windows). Categories scored in only one set are listed in `notes`, not compared.
    """
    th = thresholds or AlertThresholds()
    alerts: list[dict[str, Any]] = []
    notes: list[str] = []
    n_ref, n_cur = int(ref.ok.sum()), int(cur.ok.sum())
    enough = n_ref >= th.min_rows and n_cur >= th.min_rows
    if not enough:
        notes.append(f"too few scored rows to alert on drift or rates (reference {n_ref:,}, current {n_cur:,}; "
                     f"min_rows {th.min_rows:,})")
    shared = [c for c in ref.categories if c in cur.categories]
    for c in sorted(set(ref.categories) ^ set(cur.categories)):
        notes.append(f"category {c!r} is scored in only one of the two sets: not compared")
    categories: dict[str, Any] = {}
    for c in shared:
        categories[c], found = category_drift(c, ref, cur, th, enough)
        alerts += found
    posts: dict[str, Any] = {}
    ra, ca = ref.action[ref.ok], cur.action[cur.ok]
    for a in ("review", "block"):
        if a == "review" and not (ref.has_post_action and cur.has_post_action) and not any(
                ref.has_actions[c] and cur.has_actions[c] for c in shared):
            continue
        rc, alert = _rate_rule("rate", f"posts: {a} rate", int((ra == a).sum()), int(ra.size), int((ca == a).sum()),
                               int(ca.size), th, None, enough)
        posts[f"{a}_rate"] = rc
        if alert:
            alerts.append(alert)
    err = rate_change(int((~ref.ok).sum()), ref.n, int((~cur.ok).sum()), cur.n)
    err_alert = (err["current"] > th.error_rate_max) or (
        err["change"] >= th.error_rate_abs and err["pvalue"] < th.pvalue and cur.n >= th.min_rows)
    err["alert"] = bool(err_alert)
    if err_alert:
        alerts.append({"kind": "error_rate", "category": None, "metric": "error rate", "reference": err["reference"],
                       "current": err["current"], "change": err["change"], "pvalue": err["pvalue"],
                       "message": f"error rate {_pct(err['reference'])} -> {_pct(err['current'])} "
                                  f"(ceiling {_pct(th.error_rate_max)}, rise limit {th.error_rate_abs * 100:.1f} pp); "
                                  f"codes now: {_counts(cur.error_code[~cur.ok])}"})
    mixes: dict[str, Any] = {}
    for name, rv, cv in (("input_types", ref.input_types[ref.ok], cur.input_types[cur.ok]),
                         ("languages", ref.language[ref.ok], cur.language[cur.ok])):
        if name == "languages" and not (any(v is not None for v in rv.tolist()) and any(v is not None for v in cv.tolist())):
            continue
        m = mix_shift(_counts(rv), _counts(cv))
        m["alert"] = bool(enough and m["psi"] >= th.mix_psi and m["pvalue"] < th.pvalue)
        mixes[name] = m
        if m["alert"]:
            moved = max(m["values"], key=lambda k: abs(m["current"].get(k, 0) - m["reference"].get(k, 0)))
            alerts.append({"kind": "mix", "category": None, "metric": name, "reference": m["reference"].get(moved, 0.0),
                           "current": m["current"].get(moved, 0.0), "change": None, "pvalue": m["pvalue"],
                           "message": f"{name.replace('_', '-')} mix moved: PSI {m['psi']:.3f} (>= {th.mix_psi:g}); "
                                      f"most: {moved!r} {_pct(m['reference'].get(moved, 0.0))} -> "
                                      f"{_pct(m['current'].get(moved, 0.0))}"})
    latency: dict[str, Any] = {"reference": latency_percentiles(ref), "current": latency_percentiles(cur)}
    lr, lc = latency["reference"], latency["current"]
    if lc is not None:
        over = th.latency_p95_max_ms is not None and lc["p95"] > th.latency_p95_max_ms
        rose = lr is not None and lr["p95"] > 0 and lc["p95"] >= lr["p95"] * (1 + th.latency_p95_rel)
        latency["alert"] = bool(over or rose)
        if over or rose:
            ref_txt = f"{lr['p95']:.1f} ms -> " if lr is not None else ""
            alerts.append({"kind": "latency", "category": None, "metric": "p95 latency",
                           "reference": lr["p95"] if lr else None, "current": lc["p95"], "change": None, "pvalue": None,
                           "message": f"p95 latency per request {ref_txt}{lc['p95']:.1f} ms"
                                      + (f" (over the {th.latency_p95_max_ms:g} ms ceiling)" if over else
                                         f" (+{th.latency_p95_rel:.0%} or more)")})
    rv, cv = set(_counts(ref.model_version)), set(_counts(cur.model_version))
    if rv != cv:
        notes.append(f"model versions differ (reference {sorted(rv)}, current {sorted(cv)}): score drift may come "
                     "from the model, not the traffic")
    windows = time_windows(ref, cur, th, window_s, shared)
    summary = {
        "format_version": SUMMARY_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "alert" if alerts else "ok",
        "alerts": alerts,
        "notes": notes,
        "thresholds": asdict(th),
        "reference": {**describe(ref), "inputs": ref.files},
        "current": {**describe(cur), "inputs": cur.files},
        "categories": categories,
        "posts": posts,
        "error_rate": err,
        "mix": mixes,
        "latency": latency,
        "windows": windows,
    }
    return to_jsonable(summary)


def time_windows(ref: Decisions, cur: Decisions, th: AlertThresholds, window_s: float | None,
                 categories: Sequence[str]) -> dict[str, Any] | None:
    """The current set cut into time windows: per window rows, error rate, per category flag / block rate and
    PSI against the whole reference (PSI only where the window holds min_rows / 5 scored rows). None without time."""
    if window_s == 0 or not cur.has_time:
        return None
    t = cur.time
    have = np.isfinite(t)
    start, end = float(t[have].min()), float(t[have].max())
    if window_s is None:
        span = max(end - start, 1.0)
        steps = [60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400]
        window_s = next((s for s in steps if span / s <= 24), 7 * 86400)
    first = math.floor(start / window_s) * window_s
    idx = np.full(cur.n, -1)
    idx[have] = ((t[have] - first) // window_s).astype(int)
    min_window = max(1, th.min_rows // 5)
    rows = []
    for w in range(int(idx.max()) + 1):
        sel = idx == w
        if not sel.any():
            continue
        ok = sel & cur.ok
        entry: dict[str, Any] = {
            "start": datetime.fromtimestamp(first + w * window_s, tz=timezone.utc).isoformat(timespec="seconds"),
            "rows": int(sel.sum()), "scored": int(ok.sum()),
            "error_rate": float((~cur.ok[sel]).mean()), "categories": {}}
        for c in categories:
            f = cur.flagged[c][ok]
            a = cur.actions[c][ok]
            cell: dict[str, Any] = {"flag_rate": float((f == 1).mean()) if f.size else None,
                                    "block_rate": float((a == "block").mean()) if a.size else None,
                                    "review_rate": float((a == "review").mean()) if a.size and cur.has_actions[c] else None}
            rs = ref.scores[c][ref.ok]
            cs = cur.scores[c][ok]
            if cs[np.isfinite(cs)].size >= min_window and rs[np.isfinite(rs)].size:
                cell["psi"] = psi(rs, cs)["psi"]
            entry["categories"][c] = cell
        rows.append(entry)
    return {"window_s": window_s, "windows": rows, "has_reference_time": ref.has_time}


# --- the summary on disk and on the terminal -----------------------------------------------------------

def write_summary(out_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A short terminal summary: one line per set, one per category, then the alerts (or "no alerts")."""
    ref, cur = summary["reference"], summary["current"]
    lines = [f"reference: {ref['rows']:,} rows ({ref['scored']:,} scored, error rate {_pct(ref['error_rate'])}) "
             f"from {ref['files']} file(s)",
             f"current:   {cur['rows']:,} rows ({cur['scored']:,} scored, error rate {_pct(cur['error_rate'])}) "
             f"from {cur['files']} file(s)"]
    for c, d in summary["categories"].items():
        r = d["rates"]
        review = r.get("review_rate")
        review_txt = f", review {_pct(review['reference'])} -> {_pct(review['current'])}" if review else ""
        psi_txt = f", PSI {d['psi']['psi']:.3f}" if d.get("psi") else ""
        lines.append(f"  {c:<12} block {_pct(r['block_rate']['reference'])} -> {_pct(r['block_rate']['current'])}"
                     f"{review_txt}, flag {_pct(r['flag_rate']['reference'])} -> {_pct(r['flag_rate']['current'])}"
                     f"{psi_txt}")
    for note in summary["notes"]:
        lines.append(f"note: {note}")
    if summary["alerts"]:
        lines += [f"ALERT {a['message']}" for a in summary["alerts"]]
    else:
        lines.append("no alerts")
    return lines
