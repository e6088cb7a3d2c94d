"""The functional test suite: short hand-written cases, one behaviour each, scored through the real scorer.

Modelled on the functional tests of HateCheck (Röttger et al., 2021) but written fresh for this project and
kept out of every training set (docs/functional.md). Each case in `cases.jsonl` (one JSON object a line) says:

    id         unique string
    text       the post (unique within the file, compared case- and whitespace-insensitively)
    behaviour  one of BEHAVIOURS
    expected   "allow", or "flag" (review or block); fixed by the behaviour
    category   "hate" | "offensive" | "violence" | null: the category the case is about
    target     the identity group it is about (one of TARGETS), "person", or null

A case passes when the scorer's action matches its expectation: an "allow" case when the action is "allow", a
"flag" case when it is "review" or "block". A post the scorer could not score (an error result) fails and is
reported with its error code.

    python -m eval.functional.suite [--model DIR] [--policy FILE] [--out results.json] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from moderation.scorer import Scorer

CASES_PATH = Path(__file__).with_name("cases.jsonl")

#: behaviour -> the action class its cases expect ("allow", or "flag" = review or block), in table order.
BEHAVIOURS: dict[str, str] = {
    "counter_speech_quote": "allow",
    "counter_speech_reference": "allow",
    "negation": "allow",
    "identity_neutral": "allow",
    "identity_positive": "allow",
    "reclaimed_slur": "allow",
    "profanity_untargeted": "allow",
    "violence_news": "allow",
    "everyday": "allow",
    "threat_person": "flag",
    "threat_group": "flag",
    "dehumanisation": "flag",
    "implicit_hate": "flag",
    "insult_person": "flag",
    "spelling_variants": "flag",
    "hate_question_opinion": "flag",
    "derogation": "flag",
}

#: One line per behaviour, for the table and the docs.
DESCRIPTIONS: dict[str, str] = {
    "counter_speech_quote": "quotes hate in order to reject it",
    "counter_speech_reference": "refers to hate in order to reject it",
    "negation": "negated hate (\"I don't hate X\", \"X are not inferior\")",
    "identity_neutral": "neutral statement about an identity group",
    "identity_positive": "positive statement about an identity group",
    "reclaimed_slur": "in-group, reclaimed use of a slur",
    "profanity_untargeted": "profanity aimed at no one",
    "violence_news": "news reporting shootings, bombings, attacks",
    "everyday": "harmless everyday post (control)",
    "threat_person": "direct threat to a person",
    "threat_group": "threat to an identity group",
    "dehumanisation": "group described as animals, vermin, disease, objects",
    "implicit_hate": "hate through stereotype, insinuation or code",
    "insult_person": "insult aimed at a person",
    "spelling_variants": "hate with obfuscated spelling (leetspeak, symbols, spaces, missing letters)",
    "hate_question_opinion": "hate phrased as a question or an opinion",
    "derogation": "explicit negative statement about a group",
}

EXPECTED = ("allow", "flag")
CATEGORIES = ("hate", "offensive", "violence")
#: The identity groups cases may target (plus "person" for an individual).
TARGETS = ("women", "Muslims", "Jews", "Black people", "immigrants", "refugees", "gay people", "trans people",
           "disabled people", "Asian people", "Roma", "Hispanic people", "Indigenous people", "rural people")
PERSON = "person"
FIELDS = ("id", "text", "behaviour", "expected", "category", "target")
FLAG_ACTIONS = ("review", "block")
MIN_PER_BEHAVIOUR = 20


class CaseError(ValueError):
    """A case file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    behaviour: str
    expected: str
    category: str | None
    target: str | None
    line: int = 0


@dataclass
class CaseResult:
    """What the scorer did with one case. `action` is None (and `error_code` set) when it could not score it."""

    id: str
    behaviour: str
    expected: str
    action: str | None
    passed: bool
    error_code: str | None = None
    error: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    text: str = ""


# --- the cases ----------------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def parse_case(obj: Any, where: str, line: int = 0) -> Case:
    """One case from a decoded JSON value; raises CaseError naming `where` (e.g. "cases.jsonl:12")."""
    if not isinstance(obj, dict):
        raise CaseError(f"{where}: a case must be a JSON object, got {type(obj).__name__}")
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise CaseError(f"{where}: missing field(s) {missing} (a case has {list(FIELDS)})")
    extra = sorted(set(obj) - set(FIELDS))
    if extra:
        raise CaseError(f"{where}: unknown field(s) {extra} (a case has {list(FIELDS)})")
    for name in ("id", "text"):
        value = obj[name]
        if not isinstance(value, str) or not value.strip():
            raise CaseError(f"{where}: {name!r} must be a non-empty string, got {value!r}")
    behaviour = obj["behaviour"]
    if behaviour not in BEHAVIOURS:
        raise CaseError(f"{where}: unknown behaviour {behaviour!r} (one of {sorted(BEHAVIOURS)})")
    expected = obj["expected"]
    if expected not in EXPECTED:
        raise CaseError(f"{where}: expected must be one of {list(EXPECTED)}, got {expected!r}")
    if expected != BEHAVIOURS[behaviour]:
        raise CaseError(f"{where}: behaviour {behaviour!r} expects {BEHAVIOURS[behaviour]!r}, "
                        f"the case says {expected!r}")
    category = obj["category"]
    if category is not None and category not in CATEGORIES:
        raise CaseError(f"{where}: category must be one of {list(CATEGORIES)} or null, got {category!r}")
    target = obj["target"]
    if target is not None and target != PERSON and target not in TARGETS:
        raise CaseError(f"{where}: target must be one of {list(TARGETS)}, {PERSON!r} or null, got {target!r}")
    return Case(id=obj["id"], text=obj["text"], behaviour=behaviour, expected=expected, category=category,
                target=target, line=line)


def load_cases(path: str | os.PathLike = CASES_PATH) -> list[Case]:
    """Read and validate a case file. Raises CaseError naming the line of the first bad case (bad JSON, a
    missing/unknown/invalid field, an expectation that contradicts the behaviour, a repeated id or text)."""
    path = Path(path)
    cases: list[Case] = []
    ids: dict[str, int] = {}
    texts: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise CaseError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            case = parse_case(obj, where, lineno)
            if case.id in ids:
                raise CaseError(f"{where}: id {case.id!r} already used on line {ids[case.id]}")
            key = _norm(case.text)
            if key in texts:
                raise CaseError(f"{where}: text {case.text!r} repeats line {texts[key]}")
            ids[case.id] = lineno
            texts[key] = lineno
            cases.append(case)
    if not cases:
        raise CaseError(f"{path}: no cases")
    return cases


def check_coverage(cases: Sequence[Case], minimum: int = MIN_PER_BEHAVIOUR) -> dict[str, int]:
    """Cases per behaviour; raises CaseError when a behaviour has fewer than `minimum`."""
    counts = Counter(c.behaviour for c in cases)
    short = {b: counts.get(b, 0) for b in BEHAVIOURS if counts.get(b, 0) < minimum}
    if short:
        raise CaseError(f"behaviours with fewer than {minimum} cases: {short}")
    return {b: counts[b] for b in BEHAVIOURS}


# --- scoring ------------------------------------------------------------------------------------------

def passes(expected: str, action: str | None) -> bool:
    """allow -> the action is "allow"; flag -> "review" or "block". No action (an error) never passes."""
    if expected == "allow":
        return action == "allow"
    if expected == "flag":
        return action in FLAG_ACTIONS
    raise ValueError(f"expected must be one of {EXPECTED}, got {expected!r}")


def score_cases(scorer: Any, cases: Sequence[Case]) -> list[CaseResult]:
    """Score the cases' texts with `scorer.score` (one call, ids = case ids) and judge each result.

    Raises RuntimeError when the scorer returns a different number of results or ids out of order."""
    results = scorer.score([{"id": c.id, "text": c.text} for c in cases])
    if len(results) != len(cases):
        raise RuntimeError(f"the scorer returned {len(results)} results for {len(cases)} cases")
    out = []
    for case, result in zip(cases, results):
        if result.id is not None and str(result.id) != case.id:
            raise RuntimeError(f"the scorer returned result id {result.id!r} where {case.id!r} was expected")
        error_code = getattr(result, "error_code", None)
        error = getattr(result, "error", None)
        failed = error is not None or error_code is not None
        action = None if failed else result.action
        if failed and error_code is None:
            error_code = "error"
        categories: Mapping[str, Any] = getattr(result, "categories", None) or {}
        scores = {name: round(float(getattr(c, "score", c)), 6) for name, c in categories.items()}
        out.append(CaseResult(id=case.id, behaviour=case.behaviour, expected=case.expected, action=action,
                              passed=passes(case.expected, action), error_code=error_code, error=error,
                              scores=scores, text=case.text))
    return out


def summarise(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Per behaviour (in BEHAVIOURS order, then any other): n, passed, pass_rate, errors, the actions taken and
    the ids that failed; overall: pass rate over all cases, over allow and flag cases, and the mean of the
    behaviours' pass rates (each behaviour weighted equally); the errored cases."""
    order = list(BEHAVIOURS) + sorted({r.behaviour for r in results} - set(BEHAVIOURS))
    behaviours: dict[str, Any] = {}
    for b in order:
        rows = [r for r in results if r.behaviour == b]
        if not rows:
            continue
        passed = sum(r.passed for r in rows)
        behaviours[b] = {
            "expected": rows[0].expected,
            "n": len(rows),
            "passed": passed,
            "pass_rate": passed / len(rows),
            "errors": sum(r.error_code is not None for r in rows),
            "actions": dict(Counter(r.action or "error" for r in rows)),
            "failed_ids": [r.id for r in rows if not r.passed],
        }

    def rate(rows: Sequence[CaseResult]) -> float | None:
        return sum(r.passed for r in rows) / len(rows) if rows else None

    rates = [v["pass_rate"] for v in behaviours.values()]
    return {
        "n": len(results),
        "passed": sum(r.passed for r in results),
        "pass_rate": rate(results),
        "allow_pass_rate": rate([r for r in results if r.expected == "allow"]),
        "flag_pass_rate": rate([r for r in results if r.expected == "flag"]),
        "mean_behaviour_pass_rate": sum(rates) / len(rates) if rates else None,
        "min_behaviour_pass_rate": min(rates) if rates else None,
        "errors": [{"id": r.id, "error_code": r.error_code, "error": r.error} for r in results if r.error_code],
        "behaviours": behaviours,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The per-behaviour table (behaviour, expected, cases, passed, pass rate, allow / review / block /
    error counts) with overall rows below."""
    lines = ["| behaviour | expected | cases | passed | pass rate | allow | review | block | error |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b, v in summary["behaviours"].items():
        a = v["actions"]
        expected = "allow" if v["expected"] == "allow" else "review or block"
        lines.append(f"| {b} | {expected} | {v['n']} | {v['passed']} | {_pct(v['pass_rate'])} | {a.get('allow', 0)} "
                     f"| {a.get('review', 0)} | {a.get('block', 0)} | {a.get('error', 0)} |")
    lines.append(f"| **all cases** | | {summary['n']} | {summary['passed']} | **{_pct(summary['pass_rate'])}** "
                 "| | | | |")
    lines.append(f"| allow cases | | | | {_pct(summary['allow_pass_rate'])} | | | | |")
    lines.append(f"| flag cases | | | | {_pct(summary['flag_pass_rate'])} | | | | |")
    lines.append(f"| mean over behaviours | | | | {_pct(summary['mean_behaviour_pass_rate'])} | | | | |")
    return "\n".join(lines) + "\n"


def report_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the per-behaviour table, for the calibration report's HTML and Markdown."""
    headers = ["behaviour", "expected", "cases", "pass rate", "allow", "review", "block", "error"]
    rows = []
    for b, v in summary["behaviours"].items():
        a = v["actions"]
        rows.append([b, "allow" if v["expected"] == "allow" else "review or block", str(v["n"]), _pct(v["pass_rate"]),
                     str(a.get("allow", 0)), str(a.get("review", 0)), str(a.get("block", 0)), str(a.get("error", 0))])
    rows.append(["all cases", "", str(summary["n"]), _pct(summary["pass_rate"]), "", "", "", ""])
    return headers, rows


# --- CLI ----------------------------------------------------------------------------------------------

def build_scorer(model: str | None, policy: str | None, device: str = "cpu", batch_size: int = 32) -> Scorer:
    """The scorer the suite measures: the model directory given, else the shipped default."""
    kwargs: dict[str, Any] = {"device": device, "batch_size": batch_size}
    if policy is not None:
        kwargs["policy"] = policy
    return Scorer.from_dir(model, **kwargs) if model is not None else Scorer.default(**kwargs)


def run(scorer: Any, cases_path: str | os.PathLike = CASES_PATH, cases: Sequence[Case] | None = None) -> dict[str, Any]:
    """Score the cases (loaded and checked from `cases_path` unless given); the report as JSON-ready data
    (summary, per-case results, model and policy versions)."""
    if cases is None:
        cases = load_cases(cases_path)
        check_coverage(cases)
    results = score_cases(scorer, cases)
    policy = getattr(scorer, "policy", None)
    return {
        "cases": str(cases_path),
        "model_version": getattr(scorer, "model_version", None),
        "policy_version": getattr(policy, "version", None),
        "summary": summarise(results),
        "results": [asdict(r) for r in results],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.functional.suite",
                                description="Score the functional test suite and print the pass rate per behaviour.")
    p.add_argument("--model", metavar="DIR", default=None, help="model directory (default: the shipped default model)")
    p.add_argument("--policy", metavar="FILE", default=None, help="policy file (default: the model directory's)")
    p.add_argument("--cases", metavar="FILE", default=str(CASES_PATH), help="case file (default: %(default)s)")
    p.add_argument("--out", metavar="FILE", default=None, help="write the full results (JSON) here")
    p.add_argument("--markdown", metavar="FILE", default=None, help="write the Markdown table here")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="posts per forward pass (default: 32)")
    args = p.parse_args(argv)
    try:
        cases = load_cases(args.cases)
        check_coverage(cases)
    except (CaseError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scorer = build_scorer(args.model, args.policy, args.device, args.batch_size)
    report = run(scorer, args.cases, cases)
    table = markdown_table(report["summary"])
    header = (f"Functional suite: {report['summary']['n']} cases, model {report['model_version']}, "
              f"policy {report['policy_version']}\n\n")
    print(header + table, end="")
    if report["summary"]["errors"]:
        print(f"\n{len(report['summary']['errors'])} case(s) could not be scored (counted as failures):")
        for e in report["summary"]["errors"]:
            print(f"  {e['id']}: {e['error_code']}: {e['error']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(header + table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
