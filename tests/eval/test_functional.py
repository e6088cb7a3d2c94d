"""The functional test suite (eval.functional): the case file itself, the validation of case files, and the
scoring / pass-rate logic with a fake scorer (no model), plus one pass through the real Scorer on the tiny model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from eval.functional import suite
from eval.functional.suite import (
    BEHAVIOURS,
    CASES_PATH,
    CATEGORIES,
    PERSON,
    TARGETS,
    Case,
    CaseError,
    check_coverage,
    load_cases,
    markdown_table,
    passes,
    score_cases,
    summarise,
)
from moderation.schema import CategoryResult, ScoreResult

GROUP_BEHAVIOURS = ("counter_speech_quote", "counter_speech_reference", "negation", "identity_neutral",
                    "identity_positive", "threat_group", "dehumanisation", "implicit_hate", "spelling_variants",
                    "hate_question_opinion", "derogation")


# --- the shipped case file ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return load_cases(CASES_PATH)


def test_case_file_is_valid_and_large_enough(cases):
    assert len(cases) >= 300
    counts = check_coverage(cases)
    assert set(counts) == set(BEHAVIOURS)
    assert all(n >= 20 for n in counts.values()), counts
    assert len({c.id for c in cases}) == len(cases)
    assert len({" ".join(c.text.casefold().split()) for c in cases}) == len(cases)
    for c in cases:
        assert c.expected == BEHAVIOURS[c.behaviour]
        assert c.category is None or c.category in CATEGORIES
        assert c.target is None or c.target == PERSON or c.target in TARGETS
        assert c.text == c.text.strip() and len(c.text) <= 200


def test_case_file_lines_have_exactly_the_fields():
    for lineno, raw in enumerate(CASES_PATH.read_text(encoding="utf-8").splitlines(), 1):
        obj = json.loads(raw)
        assert list(obj) == list(suite.FIELDS), f"line {lineno}"


def test_case_file_balance_and_labels(cases):
    flags = sum(c.expected == "flag" for c in cases)
    assert 0.4 <= flags / len(cases) <= 0.6  # roughly balanced allow vs flag
    by = lambda b: [c for c in cases if c.behaviour == b]  # noqa: E731
    assert all(c.category == "violence" and c.target == PERSON for c in by("threat_person"))
    assert all(c.category == "violence" and c.target in TARGETS for c in by("threat_group"))
    assert all(c.category == "offensive" and c.target == PERSON for c in by("insult_person"))
    assert all(c.category == "hate" for b in ("dehumanisation", "implicit_hate", "derogation",
                                              "hate_question_opinion") for c in by(b))
    assert all(c.target is None for c in by("profanity_untargeted") + by("everyday"))
    assert all(c.category is not None for c in cases if c.expected == "flag")
    # Varied identity groups wherever a behaviour is about a group.
    for b in GROUP_BEHAVIOURS:
        targets = Counter(c.target for c in by(b))
        assert None not in targets and PERSON not in targets, b
        assert len(targets) >= 6, (b, targets)
        assert max(targets.values()) <= len(by(b)) // 3, (b, targets)
    for group in ("women", "Muslims", "Jews", "Black people", "immigrants", "gay people", "trans people",
                  "disabled people"):
        assert sum(c.target == group for c in cases) >= 10, group


# --- validation of case files -------------------------------------------------------------------------

GOOD = {"id": "x-01", "text": "I don't hate Muslims.", "behaviour": "negation", "expected": "allow",
        "category": "hate", "target": "Muslims"}


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_cases_reads_a_good_file(tmp_path):
    other = dict(GOOD, id="x-02", text="Kill all Muslims.", behaviour="threat_group", expected="flag",
                 category="violence")
    cases = load_cases(write_lines(tmp_path / "c.jsonl", [GOOD, "", other]))
    assert [(c.id, c.line) for c in cases] == [("x-01", 1), ("x-02", 3)]
    assert cases[1].expected == "flag" and cases[1].category == "violence"


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ('["a", "list"]', "must be a JSON object"),
    ({k: v for k, v in GOOD.items() if k != "target"}, "missing field(s) ['target']"),
    (dict(GOOD, note="x"), "unknown field(s) ['note']"),
    (dict(GOOD, id=""), "'id' must be a non-empty string"),
    (dict(GOOD, id=7), "'id' must be a non-empty string"),
    (dict(GOOD, text="   "), "'text' must be a non-empty string"),
    (dict(GOOD, behaviour="sarcasm"), "unknown behaviour 'sarcasm'"),
    (dict(GOOD, expected="block"), "expected must be one of"),
    (dict(GOOD, expected="flag"), "behaviour 'negation' expects 'allow'"),
    (dict(GOOD, category="spam"), "category must be one of"),
    (dict(GOOD, target="cats"), "target must be one of"),
    (dict(GOOD, id="x-01", text="Something else entirely."), "id 'x-01' already used on line 2"),
    (dict(GOOD, id="x-09", text="  i DON'T hate   muslims. "), "repeats line 2"),
])
def test_a_bad_case_is_refused_naming_its_line(tmp_path, bad, message):
    first = dict(GOOD, id="x-00", text="Women are not inferior to men.", target="women")
    path = write_lines(tmp_path / "c.jsonl", [first, GOOD, bad])
    with pytest.raises(CaseError) as err:
        load_cases(path)
    assert f"{path}:3:" in str(err.value)
    assert message in str(err.value)


def test_empty_file_and_short_behaviours_are_refused(tmp_path):
    with pytest.raises(CaseError, match="no cases"):
        load_cases(write_lines(tmp_path / "empty.jsonl", []))
    with pytest.raises(CaseError, match="fewer than 20 cases") as err:
        check_coverage(load_cases(write_lines(tmp_path / "c.jsonl", [GOOD])))
    assert "'negation': 1" in str(err.value) and "'derogation': 0" in str(err.value)


# --- scoring and pass rates with a fake scorer --------------------------------------------------------

class FakeScorer:
    """Stands in for moderation.scorer.Scorer: an action per id (None: an error result), one call recorded."""

    model_version = "fake-1"

    class policy:  # noqa: N801 - mimics Scorer.policy
        version = "pol-fake"

    def __init__(self, actions: dict[str, str | None]):
        self.actions = actions
        self.calls: list[list[dict]] = []

    def score(self, posts):
        self.calls.append(list(posts))
        out = []
        for p in posts:
            action = self.actions[p["id"]]
            if action is None:
                out.append(ScoreResult(id=p["id"], error="the text is too long", error_code="text_too_long"))
            else:
                cats = {"hate": CategoryResult(score=0.9 if action != "allow" else 0.1, flagged=action == "block",
                                               threshold=0.8, action=action)}
                out.append(ScoreResult(id=p["id"], categories=cats, action=action))
        return out


def make_cases() -> list[Case]:
    rows = [("n1", "negation", "allow"), ("n2", "negation", "allow"), ("n3", "negation", "allow"),
            ("n4", "negation", "allow"), ("d1", "derogation", "flag"), ("d2", "derogation", "flag"),
            ("d3", "derogation", "flag"), ("e1", "everyday", "allow")]
    return [Case(id=i, text=f"text {i}", behaviour=b, expected=e, category=None, target=None) for i, b, e in rows]


def test_passes():
    assert passes("allow", "allow")
    assert not passes("allow", "review") and not passes("allow", "block") and not passes("allow", None)
    assert passes("flag", "review") and passes("flag", "block")
    assert not passes("flag", "allow") and not passes("flag", None)
    with pytest.raises(ValueError):
        passes("review", "review")


def test_score_cases_and_summary_with_a_fake_scorer():
    cases = make_cases()
    scorer = FakeScorer({"n1": "allow", "n2": "review", "n3": "allow", "n4": None,
                         "d1": "block", "d2": "review", "d3": "allow", "e1": "allow"})
    results = score_cases(scorer, cases)
    assert len(scorer.calls) == 1 and scorer.calls[0][0] == {"id": "n1", "text": "text n1"}
    assert [r.passed for r in results] == [True, False, True, False, True, True, False, True]
    errored = results[3]
    assert errored.action is None and errored.error_code == "text_too_long" and not errored.passed
    assert results[4].scores == {"hate": 0.9}

    s = summarise(results)
    assert s["n"] == 8 and s["passed"] == 5 and s["pass_rate"] == pytest.approx(5 / 8)
    assert s["allow_pass_rate"] == pytest.approx(3 / 5) and s["flag_pass_rate"] == pytest.approx(2 / 3)
    neg = s["behaviours"]["negation"]
    assert neg == {"expected": "allow", "n": 4, "passed": 2, "pass_rate": 0.5, "errors": 1,
                   "actions": {"allow": 2, "review": 1, "error": 1}, "failed_ids": ["n2", "n4"]}
    assert s["behaviours"]["derogation"]["pass_rate"] == pytest.approx(2 / 3)
    assert list(s["behaviours"]) == ["negation", "everyday", "derogation"]  # BEHAVIOURS order
    assert s["mean_behaviour_pass_rate"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert s["min_behaviour_pass_rate"] == 0.5
    assert s["errors"] == [{"id": "n4", "error_code": "text_too_long", "error": "the text is too long"}]

    table = markdown_table(s)
    assert table.splitlines()[0].startswith("| behaviour | expected | cases | passed | pass rate |")
    assert "| negation | allow | 4 | 2 | 50.0% | 2 | 1 | 0 | 1 |" in table
    assert "| derogation | review or block | 3 | 2 | 66.7% | 1 | 1 | 1 | 0 |" in table
    assert "**62.5%**" in table


def test_score_cases_refuses_a_scorer_that_loses_or_reorders_posts():
    cases = make_cases()[:2]

    class Short(FakeScorer):
        def score(self, posts):
            return super().score(posts)[:1]

    class Swapped(FakeScorer):
        def score(self, posts):
            return super().score(posts)[::-1]

    actions = {"n1": "allow", "n2": "allow"}
    with pytest.raises(RuntimeError, match="1 results for 2 cases"):
        score_cases(Short(actions), cases)
    with pytest.raises(RuntimeError, match="result id 'n2' where 'n1'"):
        score_cases(Swapped(actions), cases)


def test_cli_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    cases = load_cases(CASES_PATH)
    actions = {c.id: ("allow" if c.expected == "allow" else "review") for c in cases}
    actions[cases[0].id] = "block"  # one failure
    actions[cases[-1].id] = None  # one error
    seen = {}

    def fake_build(model, policy, device, batch_size):
        seen.update(model=model, policy=policy, device=device, batch_size=batch_size)
        return FakeScorer(actions)

    monkeypatch.setattr(suite, "build_scorer", fake_build)
    out, md = tmp_path / "r.json", tmp_path / "t.md"
    assert suite.main(["--model", "m", "--policy", "p.json", "--out", str(out), "--markdown", str(md)]) == 0
    assert seen == {"model": "m", "policy": "p.json", "device": "cpu", "batch_size": 32}
    printed = capsys.readouterr().out
    assert "model fake-1, policy pol-fake" in printed and "| counter_speech_quote | allow |" in printed
    assert f"{cases[-1].id}: text_too_long" in printed
    report = json.loads(out.read_text())
    assert report["model_version"] == "fake-1" and report["policy_version"] == "pol-fake"
    assert report["summary"]["n"] == len(cases) and report["summary"]["passed"] == len(cases) - 2
    assert len(report["results"]) == len(cases)
    assert md.read_text().count("\n| ") >= len(BEHAVIOURS) + 4


def test_cli_refuses_a_bad_case_file(tmp_path, capsys):
    path = write_lines(tmp_path / "c.jsonl", [GOOD, dict(GOOD, id="x-02", behaviour="nope")])
    assert suite.main(["--cases", str(path)]) == 2
    assert f"{path}:2: unknown behaviour 'nope'" in capsys.readouterr().err


# --- the real scorer ----------------------------------------------------------------------------------

def test_real_scorer_on_the_tiny_model(tiny_scorer):
    """Through moderation.scorer.Scorer: every case gets an action (the tiny model has no thresholds, so it allows
    everything); a post it cannot score (empty text) is an error result, reported and failed."""
    every = load_cases(CASES_PATH)
    cases = [c for c in every if c.behaviour == "negation"][:3] + [c for c in every if c.behaviour == "derogation"][:3]
    cases.append(Case(id="empty", text="", behaviour="everyday", expected="allow", category=None, target=None))
    results = score_cases(tiny_scorer, cases)
    assert [r.action for r in results[:-1]] == ["allow"] * 6
    assert [r.passed for r in results[:-1]] == [c.expected == "allow" for c in cases[:-1]]
    assert results[-1].action is None and results[-1].error_code == "empty_post" and not results[-1].passed
    assert set(results[0].scores) == set(tiny_scorer.categories)
    assert summarise(results)["errors"][0]["id"] == "empty"
