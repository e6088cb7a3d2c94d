"""Monitoring what the model does in production: a current window of decisions against a reference window.

    ref = load_decisions(["logs/2026-11-20/"])            # operations.decisions: logs or batch outputs, files,
    cur = load_decisions(["logs/decisions-20261127*.jsonl"])  # folders, globs
    summary = compare(ref, cur, AlertThresholds())       # JSON-ready; summary["alerts"] lists what crossed
    write_monitor_report("out/", summary, ref, cur)      # operations.monitor_report

What is compared (each set's rows are decisions: operations.monitor reads the columns that decision logs and batch
outputs share, moderation.result_row; reading them is operations.decisions):

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
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from eval.metrics import to_jsonable
from operations.decisions import Decisions, describe, latency_percentiles, value_counts
from operations.drift import ks_test, mix_shift, psi, rate_change

SUMMARY_FORMAT = 1


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
                                  f"codes now: {value_counts(cur.error_code[~cur.ok])}"})
    mixes: dict[str, Any] = {}
    for name, rv, cv in (("input_types", ref.input_types[ref.ok], cur.input_types[cur.ok]),
                         ("languages", ref.language[ref.ok], cur.language[cur.ok])):
        if name == "languages" and not (any(v is not None for v in rv.tolist()) and any(v is not None for v in cv.tolist())):
            continue
        m = mix_shift(value_counts(rv), value_counts(cv))
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
    rv, cv = set(value_counts(ref.model_version)), set(value_counts(cur.model_version))
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
