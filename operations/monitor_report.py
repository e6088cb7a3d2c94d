"""The monitoring report: one self-contained HTML page (plots embedded as base64 PNG, no scripts, no external URLs).

Top: the status (alerts, each saying which category moved and by how much) and the notes. Then the two sets
(files, rows, time range, model versions), a table per category (flag / review / block rates, reference ->
current, change with its interval and p-value; PSI and the KS test of the score distribution), per category a
figure (score distributions of both sets; rates per time window against the reference's), the post actions,
errors, input-type and language mixes, latency percentiles, the time windows, and the thresholds used.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from eval.formatting import CSS, esc, fmt, html_table, pct, png
from operations.decisions import Decisions

EXTRA_CSS = """
.status{font-size:20px;font-weight:700;padding:10px 14px;border-radius:6px;margin:12px 0}
.status.ok{background:#dff3e4;color:#1e6b34} .status.alert{background:#fde2e1;color:#a4161a}
.alert{background:#fde2e1;border-left:4px solid #a4161a;padding:6px 12px;margin:6px 0}
.hit{background:#fde2e1;color:#a4161a;font-weight:700;padding:0 3px}
"""
REF_COLOR, CUR_COLOR = "#1f77b4", "#d62728"


def _rate_cell(rc: dict[str, Any] | None) -> list[str]:
    if not rc:
        return ["–", "–", "–"]
    ci = rc.get("ci") or [None, None]
    change = rc.get("change")
    change_txt = "–" if change is None else f"{100 * change:+.2f} pp"
    if ci[0] is not None and change is not None:
        change_txt += f"<br><small class='ci'>[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] p={_p(rc.get('pvalue'))}</small>"
    cls = " class='hit'" if rc.get("alert") else ""
    return [pct(rc.get("reference"), 2), pct(rc.get("current"), 2), f"<span{cls}>{change_txt}</span>" if cls else change_txt]


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.1g}" if v < 0.001 else f"{v:.3f}"


def category_figure(c: str, ref: Decisions, cur: Decisions, summary: dict[str, Any]) -> str:
    """Score distributions of both sets (density over 25 bins of [0, 1]), and the rates per time window."""
    from matplotlib.figure import Figure

    windows = (summary.get("windows") or {}).get("windows") or []
    fig = Figure(figsize=(12.5, 3.6) if windows else (6.5, 3.6))
    axes = fig.subplots(1, 2 if windows else 1)
    ax = axes[0] if windows else axes
    bins = np.linspace(0, 1, 26)
    for d, color, name in ((ref, REF_COLOR, "reference"), (cur, CUR_COLOR, "current")):
        s = d.scores[c][d.ok]
        s = s[np.isfinite(s)]
        if s.size:
            ax.hist(s, bins=bins, density=True, histtype="step", linewidth=2, color=color, label=f"{name} (n={s.size:,})")
    drift = summary["categories"][c]
    psi_txt = f"PSI {drift['psi']['psi']:.3f}, KS p={_p(drift['ks']['pvalue'])}" if drift.get("psi") else ""
    ax.set_title(f"{c}: score distribution  {psi_txt}", fontsize=10)
    ax.set_xlabel("calibrated score")
    ax.set_ylabel("density (log)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    if windows:
        ax2 = axes[1]
        x = np.arange(len(windows))
        rates = drift["rates"]
        for key, style in (("block_rate", "-"), ("review_rate", "--"), ("flag_rate", ":")):
            ys = [w["categories"].get(c, {}).get(key) for w in windows]
            if key not in rates or all(y is None for y in ys):
                continue
            if key == "review_rate" and not rates[key]["reference"] and not any(ys):
                continue  # no review band: nothing to draw
            if key == "flag_rate" and rates.get("block_rate") and all(
                    a == b for a, b in zip(ys, [w["categories"].get(c, {}).get("block_rate") for w in windows])):
                continue  # no policy: block = flag, one line is enough
            ax2.plot(x, [np.nan if y is None else 100 * y for y in ys], style, marker="o", markersize=3,
                     color=CUR_COLOR, label=f"{key.replace('_', ' ')} (current)")
            ax2.axhline(100 * rates[key]["reference"], linestyle=style, color=REF_COLOR, linewidth=1,
                        label=f"{key.replace('_', ' ')} (reference)")
        step = max(1, len(windows) // 8)
        ax2.set_xticks(x[::step])
        ax2.set_xticklabels([w["start"][5:16].replace("T", " ") for w in windows][::step], fontsize=7, rotation=30)
        ax2.set_ylabel("% of scored posts")
        ax2.set_title(f"{c}: rates per window of {_duration(summary['windows']['window_s'])}", fontsize=10)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def mix_figure(summary: dict[str, Any]) -> str | None:
    """Bars of the input-type (and language) shares, reference vs current."""
    from matplotlib.figure import Figure

    mixes = [(k, v) for k, v in summary.get("mix", {}).items() if v.get("values")]
    if not mixes:
        return None
    fig = Figure(figsize=(6.2 * len(mixes), 3.2))
    axes = fig.subplots(1, len(mixes), squeeze=False)[0]
    for ax, (name, m) in zip(axes, mixes):
        values = m["values"][:12]
        x = np.arange(len(values))
        ax.bar(x - 0.2, [100 * m["reference"].get(v, 0) for v in values], 0.4, color=REF_COLOR, label="reference")
        ax.bar(x + 0.2, [100 * m["current"].get(v, 0) for v in values], 0.4, color=CUR_COLOR, label="current")
        ax.set_xticks(x)
        ax.set_xticklabels(values, fontsize=8, rotation=20)
        ax.set_ylabel("% of scored posts")
        ax.set_title(f"{name.replace('_', ' ')}: PSI {m['psi']:.3f}, chi-square p={_p(m['pvalue'])}", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def write_monitor_report(out_dir: str | Path, summary: dict[str, Any], ref: Decisions, cur: Decisions,
                         title: str = "Moderation monitoring report") -> Path:
    """Write OUT/report.html from a `operations.monitor.compare` summary and the two sets it compared. Returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    R, C = summary["reference"], summary["current"]
    h = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
         f"<style>{CSS}{EXTRA_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
         f"<p class='sub'>Generated {esc(summary['created'])}. Current set against the reference set; every rate is a "
         "share of scored posts.</p>"]
    alerts = summary["alerts"]
    if alerts:
        h.append(f"<div class='status alert'>ALERT: {len(alerts)} threshold(s) crossed</div>")
        h += [f"<div class='alert'>{esc(a['message'])}</div>" for a in alerts]
    else:
        h.append("<div class='status ok'>OK: nothing crossed the alert thresholds</div>")
    h += [f"<div class='warn'>{esc(n)}</div>" for n in summary["notes"]]

    h.append("<h2>The two sets</h2>")
    rows = []
    for key, label in (("rows", "rows"), ("scored", "scored"), ("errored", "errored")):
        rows.append([label, fmt(R[key]), fmt(C[key])])
    rows.append(["time range", esc(" – ".join(R["time_range"] or ["no time"])), esc(" – ".join(C["time_range"] or ["no time"]))])
    rows.append(["model versions", esc(", ".join(f"{k} ({v:,})" for k, v in R["model_versions"].items())),
                 esc(", ".join(f"{k} ({v:,})" for k, v in C["model_versions"].items()))])
    rows.append(["files", esc(f"{R['files']}: " + ", ".join(Path(p).name for p in R["inputs"][:6])
                               + (" ..." if len(R["inputs"]) > 6 else "")),
                 esc(f"{C['files']}: " + ", ".join(Path(p).name for p in C["inputs"][:6])
                      + (" ..." if len(C["inputs"]) > 6 else ""))])
    h.append(html_table(("", "reference", "current"), rows))

    h.append("<h2>Per category</h2><p class='note'>Block / review: the policy's actions (without <code>&lt;category&gt;_action"
             "</code> columns a flag counts as block and there is no review rate). Change: current − reference in "
             "percentage points, 95% interval and the two-proportion test's p-value. PSI over the reference's deciles "
             "(&lt; 0.1 stable, 0.1–0.2 moderate, &gt; 0.2 major); KS: two-sample Kolmogorov–Smirnov. Red: crossed a "
             "threshold.</p>")
    cat_rows = []
    for c, d in summary["categories"].items():
        r = d["rates"]
        psi_cell = "–"
        if d.get("psi"):
            psi_cell = f"{d['psi']['psi']:.3f} ({d['psi_level']})"
            if d.get("score_drift_alert"):
                psi_cell = f"<span class='hit'>{psi_cell}</span>"
        ks = d.get("ks") or {}
        ms = d.get("mean_score") or {}
        cat_rows.append([esc(c), *_rate_cell(r.get("block_rate")), *_rate_cell(r.get("review_rate")),
                         *_rate_cell(r.get("flag_rate")), psi_cell,
                         f"{fmt(ks.get('statistic'))} (p={_p(ks.get('pvalue'))})",
                         f"{fmt(ms.get('reference'))} → {fmt(ms.get('current'))}"])
    h.append(html_table(("category", "block ref", "block cur", "block Δ", "review ref", "review cur", "review Δ", "flag ref",
                     "flag cur", "flag Δ", "PSI", "KS D", "mean score"), cat_rows))
    for c in summary["categories"]:
        h.append(f"<h3>{esc(c)}</h3><img alt='{esc(c)}: score distributions and rates per window' "
                 f"src='data:image/png;base64,{category_figure(c, ref, cur, summary)}'>")

    h.append("<h2>Posts: actions and errors</h2>")
    post_rows = [[esc(k.replace('_', ' ')), *_rate_cell(v)] for k, v in summary["posts"].items()]
    post_rows.append(["error rate", *_rate_cell(summary["error_rate"])])
    h.append(html_table(("", "reference", "current", "Δ"), post_rows))
    codes = sorted(set(R["error_codes"]) | set(C["error_codes"]))
    if codes:
        h.append(html_table(("error code", "reference", "current"),
                        [[esc(k), fmt(R["error_codes"].get(k, 0)), fmt(C["error_codes"].get(k, 0))] for k in codes]))

    h.append("<h2>Input types and languages</h2>")
    fig = mix_figure(summary)
    if fig:
        h.append(f"<img alt='input-type and language mix' src='data:image/png;base64,{fig}'>")
    for name, m in summary.get("mix", {}).items():
        hit = " class='hit'" if m.get("alert") else ""
        h.append(f"<p><b>{esc(name.replace('_', ' '))}</b>: PSI <span{hit}>{fmt(m.get('psi'))}</span>, chi-square "
                 f"p={_p(m.get('pvalue'))}</p>")
        h.append(html_table(("value", "reference", "current"), [[esc(v), pct(m["reference"].get(v, 0.0)),
                                                             pct(m["current"].get(v, 0.0))] for v in m["values"][:20]]))

    lat = summary["latency"]
    h.append("<h2>Latency</h2>")
    if lat.get("current") or lat.get("reference"):
        keys = ("requests", "p50", "p90", "p95", "p99")
        h.append("<p class='note'>Per request (rows sharing a request id count once), ms.</p>")
        h.append(html_table(("", *keys), [[name, *[fmt((lat.get(name) or {}).get(k), 1) for k in keys]]
                                      for name in ("reference", "current")]))
    else:
        h.append("<p class='note'>The rows carry no latency (batch outputs do not).</p>")

    win = summary.get("windows")
    if win:
        h.append(f"<h2>Time windows of the current set ({_duration(win['window_s'])})</h2>")
        cats = list(summary["categories"])
        headers = ["start", "rows", "error rate"] + [f"{c} {k}" for c in cats for k in ("block", "PSI")]
        wrows = []
        for w in win["windows"]:
            cells = [esc(w["start"]), fmt(w["rows"]), pct(w["error_rate"])]
            for c in cats:
                cell = w["categories"].get(c, {})
                cells += [pct(cell.get("block_rate")), fmt(cell.get("psi"))]
            wrows.append(cells)
        h.append(html_table(headers, wrows))

    h.append("<h2>Alert thresholds</h2><p class='note'>A rule alerts only when both sets hold min_rows scored rows and "
             "its test's p-value is below pvalue; override with --threshold NAME=VALUE or --thresholds FILE.json.</p>")
    h.append(html_table(("threshold", "value"), [[esc(k), esc(v)] for k, v in summary["thresholds"].items()], "kv"))
    h.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(h), encoding="utf-8")
    return path
