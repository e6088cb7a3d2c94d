"""The feedback store: verdicts validated, content joined from the decision log (ids or hashed ids) or given,
labels with appeals, fixed hash splits, a dataset the loader reads, the online metrics, simulated reviewers,
and the `moderation feedback` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from operations.online_metrics import online_metrics
from tests.conftest import png_bytes
from operations.feedback import FeedbackError, FeedbackStore, load_decision_index, split_of
from operations.simulate import simulate_verdicts

CATS = ["hate", "offensive"]


def log_rows():
    """Decision-log rows with content (text) for p1..p4; p1 and p2 were sent to review for hate, p3 blocked."""
    rows = []
    for pid, text, hate_action, action in (("p1", "you vermin", "review", "review"), ("p2", "nice garden", "review", "review"),
                                           ("p3", "filthy scum", "block", "block"), ("p4", "coffee time", "allow", "allow")):
        rows.append({"time": "2026-11-27T10:00:00.000Z", "id": pid, "ok": True, "action": action, "text": text,
                     "hate_score": {"review": 0.6, "block": 0.95, "allow": 0.1}[hate_action], "hate_flagged": hate_action == "block",
                     "hate_action": hate_action, "offensive_score": 0.1, "offensive_flagged": False,
                     "offensive_action": "allow", "model_version": "m-1"})
    return rows


@pytest.fixture()
def logs(tmp_path):
    path = tmp_path / "logs" / "decisions-1.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in log_rows()))
    return path.parent


def test_add_joins_content_and_decisions_and_builds_a_dataset(tmp_path, logs):
    from moderation.datasets import load_labelled

    store = FeedbackStore.create(tmp_path / "fb", CATS)
    verdicts = [{"post_id": "p1", "category": "hate", "harmful": True, "reviewer": "ann", "time": "2026-11-27T11:00Z"},
                {"post_id": "p2", "category": "hate", "harmful": "no", "reviewer": "bob", "time": "2026-11-27T11:00Z"},
                {"post_id": "p3", "category": "hate", "harmful": True, "reviewer": "ann", "time": "2026-11-27T11:00Z",
                 "appeal": "overturned"},
                {"post_id": "p9", "category": "offensive", "harmful": 1, "reviewer": "cy", "origin": "report"},
                {"post_id": "p1", "category": "violence", "harmful": True, "reviewer": "ann"},
                {"post_id": "p2", "category": "hate", "harmful": "maybe", "reviewer": "bob"}]
    index = load_decision_index([logs], [v["post_id"] for v in verdicts])
    summary = store.add(verdicts, decisions=index)
    assert summary.added == 4 and summary.content_from_log == 3 and summary.without_content == 1
    assert len(summary.rejected) == 2
    assert "'violence' is not one of the store's" in summary.rejected[0] and "'harmful' must be" in summary.rejected[1]
    stored = {v["post_id"]: v for v in store.verdicts()}
    assert stored["p1"]["model_action"] == "review" and stored["p1"]["origin"] == "model"
    assert stored["p1"]["model_score"] == 0.6 and stored["p1"]["text"] == "you vermin"
    assert stored["p9"]["origin"] == "report" and stored["p9"]["text"] is None
    # Adding the same verdicts again changes nothing (cron re-imports are safe).
    again = store.add(verdicts[:4], decisions=index)
    assert again.added == 0 and again.duplicates == 4
    rows = [json.loads(line) for line in (tmp_path / "fb" / "data.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"p1", "p2", "p3"}  # p9 has no content: not a training row
    assert by_id["p1"]["hate"] == 1 and by_id["p2"]["hate"] == 0 and by_id["p1"]["offensive"] is None
    assert by_id["p3"]["hate"] == 0  # the appeal overturned the removal
    assert by_id["p1"]["split"] == split_of("p1")
    # The training loader reads it like any other dataset (partial labels stay unknown).
    data = load_labelled([store.spec()], CATS, {"train", "val", "test"})
    assert len(data) == 3 and np.isnan(data.labels[:, 1]).all()


def test_latest_verdict_wins_and_images_are_copied(tmp_path):
    store = FeedbackStore.create(tmp_path / "fb", CATS)
    (tmp_path / "meme.png").write_bytes(png_bytes())
    store.add([{"post_id": "m1", "category": "offensive", "harmful": True, "reviewer": "a", "time": "2026-11-27T10:00Z",
                "image": "meme.png"},
               {"post_id": "m1", "category": "offensive", "harmful": False, "reviewer": "b", "time": "2026-11-27T12:00Z"},
               {"post_id": "m1", "category": "offensive", "harmful": True, "reviewer": "c", "time": "2026-11-27T11:00Z"}],
              image_root=tmp_path)
    (row,) = [json.loads(line) for line in (tmp_path / "fb" / "data.jsonl").read_text().splitlines()]
    assert row["offensive"] == 0  # the 12:00 verdict is the latest
    assert row["image"].startswith("images/") and (tmp_path / "fb" / row["image"]).read_bytes() == png_bytes()
    bad = store.add([{"post_id": "m2", "category": "hate", "harmful": True, "reviewer": "a", "image": "gone.png"}],
                    image_root=tmp_path)
    assert bad.added == 0 and "image file not found" in bad.rejected[0]


def test_hashed_ids_join_and_store_errors(tmp_path, monkeypatch):
    from moderation.decision_log import hash_id

    monkeypatch.setenv("MODERATION_LOG_ID_SALT", "pepper")
    row = {**log_rows()[0], "id": None, "id_hash": hash_id("p1", "pepper")}
    (tmp_path / "log.jsonl").write_text(json.dumps(row) + "\n")
    index = load_decision_index([tmp_path / "log.jsonl"], ["p1"])
    assert index.lookup("p1")["text"] == "you vermin" and index.lookup("p2") is None
    FeedbackStore.create(tmp_path / "fb", CATS)
    with pytest.raises(FeedbackError, match="already holds a feedback store"):
        FeedbackStore.create(tmp_path / "fb", CATS)
    with pytest.raises(FeedbackError, match="is not a feedback store"):
        FeedbackStore.open(tmp_path / "nothing")
    with pytest.raises(FeedbackError, match="splits must give"):
        FeedbackStore.create(tmp_path / "fb2", CATS, {"train": 0.5, "val": 0.5})


def test_splits_are_fixed_and_proportional():
    ids = [f"post-{i}" for i in range(3000)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    shares = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.6, abs=0.03) and shares["test"] == pytest.approx(0.2, abs=0.03)


def test_online_metrics(tmp_path, logs):
    store = FeedbackStore.create(tmp_path / "fb", CATS)
    index = load_decision_index([logs])
    store.add([{"post_id": "p1", "category": "hate", "harmful": True, "reviewer": "a"},
               {"post_id": "p2", "category": "hate", "harmful": False, "reviewer": "a"},
               {"post_id": "p3", "category": "hate", "harmful": True, "reviewer": "a", "appeal": "upheld"},
               {"post_id": "p4", "category": "hate", "harmful": True, "reviewer": "a", "origin": "report"},
               {"post_id": "p5", "category": "hate", "harmful": True, "reviewer": "a", "appeal": "overturned",
                "model_action": "block", "text": "x"}], decisions=index)
    m = online_metrics(store.verdicts(), index)
    assert m["review_precision"]["hate"]["value"] == 0.5 and m["review_precision"]["hate"]["n"] == 2
    assert m["block_precision"]["hate"]["k"] == 1 and m["block_precision"]["hate"]["n"] == 2  # p3 upheld, p5 overturned
    assert m["appeal_overturn_rate"]["all"]["value"] == 0.5
    # Actioned: p1 (model), p3 (model), p4 (report); p5 overturned; p2 not harmful.
    pro = m["proactive_rate"]
    assert (pro["k"], pro["n"]) == (2, 3) and pro["ci95"][0] < 2 / 3 < pro["ci95"][1]


def test_simulated_reviewers_take_the_dataset_labels(tmp_path):
    from moderation.datasets import DatasetSpec

    data = tmp_path / "ds" / "data.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"id": f"x{i}", "text": f"post {i}", "label": i % 2, "split": "train"}) + "\n"
                            for i in range(20)))
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"id": f"x{i}", "ok": True, "hate_score": i / 20, "hate_flagged": i >= 18,
                                           "offensive_score": 0.0, "offensive_flagged": False, "text": f"post {i}"}) + "\n"
                               for i in range(20)))
    verdicts, counts = simulate_verdicts([results], DatasetSpec(data, {"label": "hate"}, "ds"), split="train",
                                         categories=CATS, review_min_score=0.5, budget=5)
    # Scores 0.5..0.85 and not flagged (>= 0.9 are): 8 candidates, the 5 highest reviewed.
    assert counts["sent_to_review"] == 5 and [v["post_id"] for v in verdicts] == ["x17", "x16", "x15", "x14", "x13"]
    assert all(v["harmful"] == (int(v["post_id"][1:]) % 2 == 1) and v["category"] == "hate" for v in verdicts)
    assert all(v["reviewer"] == "simulated" and "simulated" in v["note"] for v in verdicts)
    assert all(v["model_action"] == "review" and v["origin"] == "model" for v in verdicts)


def test_feedback_cli_add_stats_and_exit_statuses(tmp_path, logs, capsys):
    from moderation.cli import main

    store = tmp_path / "fb"
    assert main(["feedback", "add", "--store", str(store), "--decisions", str(logs), "--post-id", "p1",
                 "--category", "hate", "--harmful", "yes", "--reviewer", "ann"]) == 0
    assert "created feedback store" in capsys.readouterr().err
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text("post_id,category,harmful,reviewer,appeal\np2,hate,no,bob,\np3,hate,yes,ann,upheld\n"
                        "p4,hate,perhaps,bob,\n")
    assert main(["feedback", "add", "--store", str(store), "--decisions", str(logs), "--from", str(csv_file)]) == 1
    out = capsys.readouterr()
    assert "2 verdicts added" in out.out and f"rejected: {csv_file}:4:" in out.err  # the file's line, not "verdict 3"
    # issue 22: after a line that is not JSON, rejections named verdict numbers that no longer matched the lines
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"post_id": "p1", "category": "hate", "harmful": true, "reviewer": "c"}\nnot json\n'
                     '{"post_id": "p2", "category": "hate", "harmful": "perhaps", "reviewer": "c"}\n')
    assert main(["feedback", "add", "--store", str(store), "--from", str(jsonl)]) == 1
    err = capsys.readouterr().err
    assert f"rejected: {jsonl}:2: not JSON" in err and f"rejected: {jsonl}:3:" in err
    assert main(["feedback", "stats", "--store", str(store), "--decisions", str(logs),
                 "--json", str(tmp_path / "m.json")]) == 0
    assert "review precision 0.500 (1/2" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["store"]["labels"]["hate"] == {"harmful": 2, "not harmful": 1}
    assert main(["feedback", "add", "--store", str(tmp_path / "new"), "--post-id", "p1", "--category", "hate",
                 "--harmful", "yes", "--reviewer", "a"]) == 2
    assert "give --categories" in capsys.readouterr().err
    assert main(["feedback", "add", "--store", str(store), "--post-id", "p1"]) == 2


def test_simulated_reviewers_follow_the_policy_review_band(tmp_path):
    from moderation.datasets import DatasetSpec

    data = tmp_path / "ds" / "data.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"id": f"x{i}", "text": f"post {i}", "label": 1, "split": "train"}) + "\n"
                            for i in range(6)))
    actions = ["allow", "review", "block", "review", "allow", "allow"]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"id": f"x{i}", "ok": True, "hate_score": 0.9 - i / 10, "hate_flagged": a == "block",
                                           "hate_action": a, "offensive_score": 0.0, "offensive_flagged": False,
                                           "offensive_action": "allow", "text": f"post {i}"}) + "\n"
                               for i, a in enumerate(actions)))
    verdicts, counts = simulate_verdicts([results], DatasetSpec(data, {"label": "hate"}, "ds"), split="train",
                                         categories=CATS, review_min_score=0.0)
    assert [v["post_id"] for v in verdicts] == ["x1", "x3"] and counts["review_by"] == "policy review action"


def test_a_verdict_image_must_be_an_image_under_the_root(tmp_path):
    """Issue 22 S2: `/etc/passwd` named as a verdict's image was copied into the store byte for byte."""
    store = FeedbackStore.create(tmp_path / "fb", CATS)
    (tmp_path / "notes.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    out = store.add([{"post_id": "a", "category": "hate", "harmful": True, "reviewer": "r", "image": "/etc/passwd"},
                     {"post_id": "b", "category": "hate", "harmful": True, "reviewer": "r", "image": "../../etc/passwd"},
                     {"post_id": "c", "category": "hate", "harmful": True, "reviewer": "r", "image": "notes.png"}],
                    image_root=tmp_path)
    assert out.added == 0 and len(out.rejected) == 3
    assert "escapes the image root" in out.rejected[0] and "escapes the image root" in out.rejected[1]
    assert "not in a recognised image format" in out.rejected[2]
    assert not (tmp_path / "fb" / "images").exists() or not any((tmp_path / "fb" / "images").iterdir())


def test_a_torn_last_line_is_repaired_and_a_damaged_store_is_refused(tmp_path):
    """Issue 22 D1: a kill -9 during `feedback add` left half a line; every later add / stats failed with a JSON
    error naming no file, and retrain trained on the stale store."""
    store = FeedbackStore.create(tmp_path / "fb", CATS)
    store.add([{"post_id": "a", "category": "hate", "harmful": True, "reviewer": "r", "text": "x"}])
    verdicts = tmp_path / "fb" / "verdicts.jsonl"
    with open(verdicts, "a") as fh:
        fh.write('{"post_id": "b", "categ')  # cut short
    assert [v["post_id"] for v in store.verdicts()] == ["a"]
    out = store.add([{"post_id": "c", "category": "hate", "harmful": False, "reviewer": "r", "text": "y"}])
    assert out.added == 1 and [v["post_id"] for v in store.verdicts()] == ["a", "c"]
    assert verdicts.read_text().endswith("\n")
    verdicts.write_text(verdicts.read_text().replace('"post_id": "a"', 'post_id: a', 1))
    with pytest.raises(FeedbackError, match=r"verdicts.jsonl:1: not a JSON verdict"):
        store.verdicts()


def test_two_adds_at_once_store_each_verdict_once(tmp_path):
    """Issue 22 D5: the same verdicts file imported twice at once stored every verdict twice."""
    import multiprocessing

    FeedbackStore.create(tmp_path / "fb", CATS)
    verdicts = [{"post_id": f"p{i}", "category": "hate", "harmful": i % 2 == 0, "reviewer": "r", "text": f"t{i}",
                 "time": "2026-11-27T10:00Z"} for i in range(40)]
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_after, args=(str(tmp_path / "fb"), verdicts, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(FeedbackStore.open(tmp_path / "fb").verdicts()) == 40


def _add_after(path: str, verdicts: list, barrier) -> None:
    barrier.wait()
    FeedbackStore.open(path).add(verdicts)


def test_openai_ids_reused_across_requests_join_by_request(tmp_path):
    """Issue 22: feedback joined verdicts to decisions by post id only, but OpenAI-shaped requests reuse "0", "1":
    the join is keyed by request and post, and an ambiguous verdict is refused with what to give."""
    rows = []
    for request_id, text, action in (("req-a", "you vermin", "block"), ("req-b", "nice garden", "allow")):
        rows.append({**log_rows()[0], "id": "0", "request_id": request_id, "text": text, "hate_action": action,
                     "action": action})
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = load_decision_index([tmp_path / "log.jsonl"])
    assert index.lookup("0", "req-b")["text"] == "nice garden"
    with pytest.raises(FeedbackError, match="decided in 2 requests.*give the verdict's request_id"):
        index.lookup("0")
    store = FeedbackStore.create(tmp_path / "fb", CATS)
    out = store.add([{"post_id": "0", "category": "hate", "harmful": True, "reviewer": "r"},
                     {"post_id": "0", "request_id": "req-a", "category": "hate", "harmful": True, "reviewer": "r"}],
                    decisions=index)
    assert out.added == 1 and "decided in 2 requests" in out.rejected[0]
    assert store.verdicts()[0]["text"] == "you vermin" and store.verdicts()[0]["model_action"] == "block"
