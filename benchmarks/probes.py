"""Probe sets of plain sentences, scored by one or more models in one run: per kind, how many did what was expected.

    python -m benchmarks.probes                                               # both probe files, shipped model
    python -m benchmarks.probes --model runs/a --model runs/b --probes eval/probes/insults_blind.jsonl
    python -m benchmarks.probes --out runs/probes.json --markdown runs/probes.md

A probe file is JSONL with `id`, `text`, `expect` ("harmful": must be reviewed or blocked; "benign": must be
allowed) and `kind`. `eval/probes/plain_posts.jsonl` (50 sentences, insults, threats, slurs, counter-speech, news,
ordinary posts) and `eval/probes/insults_blind.jsonl` (30 insults to a person, 20 harmless look-alikes, written
after the insult templates and kept away from them by tests/training/test_synthetic_insults.py) are shipped.
Each post goes through the model's own policy, as `moderation score` decides it, in fp32 (the precision its
thresholds are fitted in), OCR off.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from benchmarks.quality import probe_figures
from moderation.scorer import Scorer

REPO = Path(__file__).resolve().parents[1]
PROBE_FILES = (REPO / "eval" / "probes" / "plain_posts.jsonl", REPO / "eval" / "probes" / "insults_blind.jsonl")


def measure(model: str | None, probes: Sequence[Path], precision: str = "fp32") -> dict[str, Any]:
    """{model, model_version, files: {name: probe_figures}} for one model directory (None: the shipped model)."""
    kwargs = {"precision": precision, "ocr": "off"}
    missing = [str(p) for p in probes if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"probe file {', '.join(missing)} not found")
    scorer = Scorer.from_dir(model, **kwargs) if model else Scorer.default(**kwargs)
    try:
        files = {Path(p).name: probe_figures(scorer, Path(p)) for p in probes}
    finally:
        scorer.close()
    return {"model": model or "default", "model_version": scorer.info.model_version, "files": files}


def markdown(runs: list[dict[str, Any]]) -> str:
    """One table per probe file: rows are kinds, columns models; then each model's misses."""
    out = []
    for name in runs[0]["files"]:
        out += [f"`{name}`", "", "| kind | expected | " + " | ".join(r["model_version"] for r in runs) + " |",
                "| --- | --- | " + " | ".join("---" for _ in runs) + " |"]
        first = runs[0]["files"][name]
        expect = {p["kind"]: p["expect"] for p in first["posts"]}
        for kind in first["kinds"]:
            cells = [f"{r['files'][name]['kinds'][kind]['as_expected']}/{r['files'][name]['kinds'][kind]['n']}" for r in runs]
            want = "reviewed or blocked" if expect[kind] == "harmful" else "allowed"
            out.append(f"| {kind} | {want} | " + " | ".join(cells) + " |")
        totals = [f"{r['files'][name]['harmful_caught']}/{r['files'][name]['n_harmful']} harmful flagged, "
                  f"{r['files'][name]['benign_allowed']}/{r['files'][name]['n_benign']} benign allowed" for r in runs]
        out.append("| all | | " + " | ".join(totals) + " |")
        out.append("")
        for r in runs:
            misses = [p for p in r["files"][name]["posts"] if not p["as_expected"]]
            out.append(f"{r['model_version']} misses ({len(misses)}):")
            out += [f"- {p['action']} (top {p['top_category']} {p['top_score']:.3f}; expected {p['expect']}): "
                    f"{p['text']}" for p in misses]
            out.append("")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.probes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="model directory (repeatable; default: the shipped model)")
    p.add_argument("--probes", action="append", type=Path, default=None,
                   help="probe file (repeatable; default: both files in eval/probes/)")
    p.add_argument("--precision", default="fp32", help="Scorer precision (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write every post's outcome as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown here")
    args = p.parse_args(argv)
    runs = [measure(m, args.probes or list(PROBE_FILES), args.precision) for m in (args.model or [None])]
    table = markdown(runs)
    print(table)
    for path, text in ((args.out, json.dumps(runs, indent=2)), (args.markdown, table)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
