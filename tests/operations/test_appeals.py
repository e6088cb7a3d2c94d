"""Appeals of decisions: a feedback kind of its own, labels for retraining (an overturned block becomes "not
harmful"), the overturn rate per category and decision appealed, in `feedback stats` and `moderation monitor`."""

from __future__ import annotations

import json

from operations.feedback import FeedbackStore, load_decision_index
from operations.online_metrics import online_metrics
from tests.operations.test_feedback import CATS, log_rows


def _logs(tmp_path):
    path = tmp_path / "logs" / "decisions-1.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in log_rows()))
    return path.parent


def test_an_appeal_takes_the_decision_from_the_log_and_becomes_a_label(tmp_path):
    logs = _logs(tmp_path)
    store = FeedbackStore.create(tmp_path / "fb", CATS)
    index = load_decision_index([logs])
    summary = store.add([
        {"kind": "appeal", "post_id": "p3", "category": "hate", "appeal": "overturned", "reviewer": "panel"},  # block
        {"kind": "appeal", "post_id": "p1", "category": "hate", "appeal": "upheld", "reviewer": "panel"},     # review
        {"kind": "appeal", "post_id": "p4", "category": "hate", "appeal": "overturned", "reviewer": "panel"},  # allow
        {"kind": "appeal", "post_id": "p9", "category": "hate", "appeal": "overturned", "reviewer": "panel"},  # unknown
        {"kind": "appeal", "post_id": "p2", "category": "hate", "reviewer": "panel"},                          # no outcome
    ], decisions=index)
    assert summary.added == 3 and len(summary.rejected) == 2
    assert "the decision appealed is unknown" in summary.rejected[0] and "has no outcome" in summary.rejected[1]
    stored = {v["post_id"]: v for v in store.verdicts()}
    assert stored["p3"]["kind"] == "appeal" and stored["p3"]["decision_action"] == "block" and stored["p3"]["harmful"]
    # retraining reads data.jsonl: the overturned block is "not harmful", the overturned allow "harmful"
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "fb" / "data.jsonl").read_text().splitlines())}
    assert rows["p3"]["hate"] == 0 and rows["p1"]["hate"] == 1 and rows["p4"]["hate"] == 1
    m = online_metrics(store.verdicts(), index)
    by = m["appeal_overturn_by_action"]["hate"]
    assert by["block"]["value"] == 1.0 and by["review"]["value"] == 0.0 and by["allow"]["k"] == 1
    assert m["appeal_overturn_rate"]["hate"]["k"] == 2 and m["appeal_overturn_rate"]["hate"]["n"] == 3


def test_an_appeal_may_name_the_decision_without_a_log(tmp_path):
    store = FeedbackStore.create(tmp_path / "fb", CATS)
    store.add([{"kind": "appeal", "post_id": "q1", "category": "offensive", "appeal": "overturned",
                "reviewer": "panel", "action": "block", "text": "a joke among friends"}])
    [v] = store.verdicts()
    assert v["harmful"] is True and v["decision_action"] == "block"
    assert store.labels()["q1"]["labels"] == {"offensive": 0}
    bad = store.add([{"kind": "appeal", "post_id": "q2", "category": "offensive", "appeal": "overturned",
                      "reviewer": "panel", "action": "delete"}])
    assert "action (the decision appealed) must be one of" in bad.rejected[0]


def test_cli_appeal_stats_and_monitor_report_the_overturn_rate(tmp_path, capsys):
    from moderation.cli import main

    logs = _logs(tmp_path)
    store = str(tmp_path / "fb")
    assert main(["feedback", "add", "--store", store, "--categories", "hate,offensive", "--decisions", str(logs),
                 "--kind", "appeal", "--post-id", "p3", "--category", "hate", "--appeal", "overturned",
                 "--reviewer", "panel"]) == 0
    assert main(["feedback", "add", "--store", store, "--kind", "appeal", "--post-id", "p3"]) == 2
    assert "an appeal needs" in capsys.readouterr().err
    assert main(["feedback", "stats", "--store", store]) == 0
    assert "appeals on hate: block overturned 1.000 (1/1" in capsys.readouterr().out
    assert main(["monitor", "--reference", str(logs), "--current", str(logs), "--out", str(tmp_path / "mon"),
                 "--no-report", "--feedback", store]) == 0
    assert "appeals on hate: block overturned 1.000 (1/1" in capsys.readouterr().err
    summary = json.loads((tmp_path / "mon" / "summary.json").read_text())
    assert summary["appeals"]["by_action"]["hate"]["block"]["k"] == 1
