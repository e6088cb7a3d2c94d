"""benchmarks/harm_vs_topic.py: each figure read from `moderation score`'s actions, and the same figure without the
posts the policy's language rule sent to review (tiny dataset folders; the scoring command is replaced by canned
result rows, so the counting is what is tested)."""

from __future__ import annotations

import json

import pytest

from benchmarks import harm_vs_topic as hvt


def _reasons(*rules: tuple[str, str | None]) -> str:
    return json.dumps([{"action": "review", "category": cat, "rule": rule, "detail": ""} for rule, cat in rules])


def _result(action: str, hate_action: str = "allow", reasons: str = "[]", ok: bool = True) -> dict:
    return {"ok": ok, "action": action, "hate_action": hate_action, "action_reasons": reasons,
            "hate_score": 0.5, "offensive_score": 0.5, "model_version": "m-test"}


@pytest.fixture()
def root(tmp_path):
    root = tmp_path / "datasets"
    rows = {
        "conan": [("c0", 0), ("c1", 0), ("c2", 1), ("c3", 1)],
        "qian_interventions": [("q0", 0), ("q1", 0)],
        "crisislex_violence_news": [("n0", 0), ("n1", 0), ("n2", 0), ("n3", 0), ("n4", 0)],
        "hatexplain": [("h0", 0), ("h1", 1)],
    }
    for name, items in rows.items():
        (root / name).mkdir(parents=True)
        lines = [{"id": i, "text": f"post {i}", "label": lab, "offensive": lab, "split": "val"} for i, lab in items]
        lines.append({"id": "t0", "text": "a test row", "label": 0, "offensive": 0, "split": "test"})
        (root / name / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return root


def test_figures_and_the_language_rule_split(root, monkeypatch):
    lang = _reasons(("language", None))
    canned = {
        "conan/c0": _result("allow"), "conan/c1": _result("review", "review", _reasons(("review_threshold", "hate"))),
        "conan/c2": _result("review", "review"), "conan/c3": _result("allow"),
        "qian_interventions/q0": _result("allow"), "qian_interventions/q1": _result("review", reasons=lang),
        # CrisisLex: 2 allowed, 1 reviewed by the language rule only, 1 by the model and the language rule,
        # 1 by the model alone; the test row is never scored (it is not in the val split)
        "crisislex_violence_news/n0": _result("allow"), "crisislex_violence_news/n1": _result("allow"),
        "crisislex_violence_news/n2": _result("review", reasons=lang),
        "crisislex_violence_news/n3": _result("review", reasons=_reasons(("review_threshold", "violence"), ("language", None))),
        "crisislex_violence_news/n4": _result("review", reasons=_reasons(("review_threshold", "offensive"))),
        "hatexplain/h0": _result("allow"), "hatexplain/h1": _result("block", "block"),
    }
    seen = {}

    def fake_score(posts, model, work):
        seen["ids"] = [p["id"] for p in posts]
        return {p["id"]: canned[p["id"]] for p in posts}

    monkeypatch.setattr(hvt, "score_with_cli", fake_score)
    out = hvt.measure(None, root, "val")
    assert not any(i.endswith("/t0") for i in seen["ids"])
    f = out["figures"]
    cn = f["CONAN counter-narratives allowed for hate"]
    assert (cn["n"], cn["passed"], cn["language_rule"]) == (2, 1, 0)
    hate = f["CONAN hate speech reviewed or blocked"]
    assert (hate["n"], hate["passed"]) == (2, 1) and hate["met"] is False
    news = f["CrisisLex violence news allowed (every category)"]
    assert (news["n"], news["passed"], news["language_rule"], news["n_judged"], news["passed_judged"]) == (5, 2, 2, 3, 2)
    assert news["share"] == pytest.approx(0.4) and news["share_judged"] == pytest.approx(2 / 3)
    qian = f["Qian interventions allowed (every category)"]
    assert (qian["passed_judged"], qian["n_judged"], qian["language_rule"]) == (1, 1, 1)
    table = hvt.markdown([out])
    assert "| CrisisLex violence news allowed (every category) | 66.7% (2/3) | 2 |" in table
    assert "40.0% (2/5)" in table


def test_a_row_that_failed_is_neither_allowed_nor_language_routed():
    assert not hvt.language_routed(_result("review", ok=False, reasons=_reasons(("language", None))))
    assert not hvt.passes(_result("allow", ok=False), "allow")
    assert hvt.language_routed({"ok": True, "action_reasons": [{"rule": "language"}]})  # already decoded
