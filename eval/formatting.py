"""Formatting shared by the HTML / Markdown reports (calibration report, policy section, monitor, champion).

Numbers become short strings ("–" for missing), tables become HTML or Markdown, matplotlib figures become
base64 PNG for self-contained HTML, and `CSS` is the one stylesheet every report inlines.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import Any, Sequence

import numpy as np


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell: integers with thousands separators, floats with `digits` decimals, "–" if missing."""
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{float(v):.{digits}f}"


def pct(v: Any, digits: int = 1) -> str:
    """A share (0-1) as a percentage, "–" if missing."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.{digits}f}%"


def esc(v: Any) -> str:
    """Any value as escaped HTML text."""
    return html.escape(str(v), quote=True)


def png(fig: Any) -> str:
    """A matplotlib Figure as base64 PNG (for a data: URL), drawn on the Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib is the optional eval extra

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No metadata: the default "Software" chunk carries a URL, and the file must hold none.
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def status_badge(status: str | None) -> str:
    """A threshold's status ("ok", "unreachable", ...) as a coloured HTML badge."""
    cls = "ok" if status == "ok" else "bad"
    return f'<span class="badge {cls}">{esc(status or "–")}</span>'


def html_table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table of already formatted cells; headers None: a key-value table without a header row."""
    if headers is None:
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        return f'<table class="{cls}"><tbody>{body}</tbody></table>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of the same cells (HTML tags stripped, pipes escaped)."""
    def clean(s: str) -> str:
        text = html.unescape(re.sub(r"<[^>]+>", "", str(s).replace("<br>", " ")))
        return text.replace("<", "&lt;").replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(clean(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;color:#1b1b1b;padding:0 16px}
h1{font-size:26px;margin-bottom:4px} h2{font-size:21px;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
h3{font-size:17px;margin-top:22px} .sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px} th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f2f4f7;text-align:left} td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto} small.ci{color:#666} td:first-child{text-align:left;font-weight:600}
table.kv td{text-align:left} table.kv td:first-child{width:220px;color:#444}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600}
.badge.ok{background:#dff3e4;color:#1e6b34} .badge.bad{background:#fde2e1;color:#a4161a}
.warn{background:#fff4ce;border-left:4px solid #e0a800;padding:8px 12px;margin:10px 0}
.note{color:#555;font-size:13px} img{max-width:100%;border:1px solid #eee}
.grid{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start} .grid>div{flex:1 1 560px}
table.examples td{white-space:normal;text-align:left;vertical-align:top} table.examples td:nth-child(5){min-width:380px}
mark{background:#ffd54f;padding:0 1px}
"""
