"""`moderation monitor`: compare a current window of decisions with a reference window; exit 3 on an alert.

Light at import (argparse and light modules); numpy, scipy and matplotlib load in the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from operations.feedback_cli import format_share, overturn_lines
from operations.group_rates import group_lines, group_rates

#: Exit statuses of `moderation monitor` (docs/operations.md).
EXIT_OK, EXIT_BAD_ARGS, EXIT_ALERT = 0, 2, 3

EPILOG = """\
examples:
  moderation monitor --reference logs/week-47/ --current 'logs/decisions-20261127*.jsonl' --out monitor/2026-11-27
  moderation monitor --reference baseline.parquet --current logs/ --since 24h --out monitor/today
  moderation monitor --reference scored-oct.parquet --current scored-nov.parquet --time-column created_at --out m/
  moderation monitor ... --threshold psi=0.25 --threshold rate_abs=0.02 --thresholds my-thresholds.json

Exit status: 0 nothing crossed the alert thresholds; 3 something did (the alerts are printed, and listed in
OUT/summary.json and at the top of OUT/report.html); 2 bad arguments or unreadable inputs. For cron or CI.
"""


def register(subparsers: Any) -> None:
    """Add the `monitor` subcommand."""
    p = subparsers.add_parser(
        "monitor", help="compare recent decisions with a reference window: rates, score drift, mixes, errors, "
                        "latency; exit 3 on an alert",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description=textwrap.dedent("""\
            Read decision logs (the endpoint's --decision-log files) or batch outputs (`moderation score`) for a
            reference window and a current window, and compare them: per category the flag / review / block
            rates and the score distribution (population stability index and a two-sample KS test), the post
            actions, the error rate, the input-type and language mix, latency percentiles, and per time window
            when the rows carry a time. Writes OUT/report.html and OUT/summary.json, prints the alerts."""))
    p.add_argument("--reference", nargs="+", required=True, metavar="REF",
                   help="reference decisions: .jsonl / .parquet files, folders or glob patterns")
    p.add_argument("--current", nargs="+", required=True, metavar="CUR", help="current decisions (same forms)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.html and summary.json")
    p.add_argument("--categories", default=None, help="comma-separated categories to compare (default: all found)")
    p.add_argument("--time-column", default="time",
                   help="column holding each row's time (default: time, as in decision logs; batch outputs carry "
                        "your input's columns, e.g. created_at)")
    p.add_argument("--since", default=None, metavar="WHEN",
                   help="keep current rows at or after WHEN: ISO 8601 time or a duration before now (24h, 7d)")
    p.add_argument("--until", default=None, metavar="WHEN", help="keep current rows before WHEN (same forms)")
    p.add_argument("--reference-since", default=None, metavar="WHEN", help="as --since, for the reference rows")
    p.add_argument("--reference-until", default=None, metavar="WHEN", help="as --until, for the reference rows")
    p.add_argument("--window", default="auto",
                   help="time window of the per-window figures: 15m, 1h, 1d ...; auto (about 24 windows) or none")
    p.add_argument("--thresholds", default=None, metavar="FILE",
                   help="JSON file of alert thresholds (names as in summary.json's 'thresholds')")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override one alert threshold, e.g. psi=0.25 (repeatable; applied after --thresholds)")
    p.add_argument("--feedback", default=None, metavar="STORE",
                   help="feedback store (`moderation feedback`): add the appeal overturn rate per category and per "
                        "decision appealed (block / review / allow) to the summary")
    p.add_argument("--groups", action="store_true",
                   help="the current rows' not-allowed share per identity group (moderation.identity's term list, "
                        "on the text the rows kept) overall and per --window, beside posts that mention no group")
    p.add_argument("--no-report", action="store_true", help="write summary.json only")
    p.add_argument("--quiet", action="store_true", help="print the alerts only")
    p.set_defaults(func=_cmd_monitor)


def _cmd_monitor(args: argparse.Namespace) -> int:
    # deferred: numpy (scipy, matplotlib further down) load when the command runs, not for every `moderation --help`
    from operations.decisions import load_decisions, parse_duration, parse_when
    from operations.monitor import AlertThresholds, compare, summary_lines, write_summary

    thresholds = AlertThresholds()
    if args.thresholds:
        path = Path(args.thresholds)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"--thresholds file not found: {path}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--thresholds {path}: not a readable JSON object ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--thresholds {path}: expected a JSON object of NAME: VALUE")
        thresholds = AlertThresholds.from_dict(data)
    thresholds = thresholds.updated(args.threshold)
    window = None if args.window == "auto" else (0.0 if args.window == "none" else parse_duration(args.window))
    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    bounds = {k: parse_when(v) if v else None for k, v in (("since", args.since), ("until", args.until),
                                                            ("ref_since", args.reference_since),
                                                            ("ref_until", args.reference_until))}
    ref = load_decisions(args.reference, categories=categories, time_column=args.time_column,
                         since=bounds["ref_since"], until=bounds["ref_until"])
    cur = load_decisions(args.current, categories=categories, time_column=args.time_column,
                         since=bounds["since"], until=bounds["until"])
    summary = compare(ref, cur, thresholds, window_s=window)
    extra_lines: list[str] = []
    if args.feedback:
        from operations.feedback import FeedbackStore  # deferred: numpy, PIL
        from operations.online_metrics import online_metrics

        figures = online_metrics(FeedbackStore.open(args.feedback).verdicts())
        summary["appeals"] = {"store": str(args.feedback), "overturn_rate": figures["appeal_overturn_rate"],
                              "by_action": figures["appeal_overturn_by_action"]}
        extra_lines = [f"appeals (all): overturned {format_share(figures['appeal_overturn_rate']['all'])}",
                        *overturn_lines(figures["appeal_overturn_by_action"])]
    if args.groups:
        summary["groups"] = group_rates(args.current, time_column=args.time_column, since=bounds["since"],
                                        until=bounds["until"], window_s=window)
        extra_lines += group_lines(summary["groups"])
    out = Path(args.out)
    summary_path = write_summary(out, summary)
    report = None
    if not args.no_report:
        from operations.monitor_report import write_monitor_report  # deferred: numpy, matplotlib
        report = write_monitor_report(out, summary, ref, cur)
    lines = summary_lines(summary) + extra_lines
    for line in lines:  # alerts on stdout (what cron mails), the rest on stderr
        if line.startswith("ALERT"):
            print(line)
        elif not args.quiet:
            print(line, file=sys.stderr)
    if not args.quiet:
        print(f"summary: {summary_path.resolve()}" + (f"\nreport: {report.resolve()}" if report else ""), file=sys.stderr)
    return EXIT_ALERT if summary["alerts"] else EXIT_OK
