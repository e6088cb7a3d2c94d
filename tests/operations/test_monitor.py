"""`moderation monitor`: drift statistics, reading decision logs and batch outputs (with or without policy
columns), alerts that fire on a real shift and stay quiet on two windows of one distribution, exit statuses,
report and summary."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from operations.drift import ks_test, mix_shift, psi, rate_change
from operations.decisions import load_decisions, parse_duration, parse_when
from operations.monitor import AlertThresholds, compare
from moderation.decision_log import format_time

START = datetime(2026, 11, 20, tzinfo=timezone.utc)


def decisions(n: int, seed: int, harmful: float = 0.1, *, policy: bool = True, start: datetime = START,
              hours: float = 24.0, error_rate: float = 0.01, latency: float | None = 20.0,
              image_share: float = 0.2, model: str = "m-1") -> list[dict]:
    """Synthetic decision rows: `harmful` of the posts are hateful (scores ~ Beta(8, 2), else Beta(1.5, 12));
    offensive does not move with it. policy: rows carry actions (block >= 0.8, review >= 0.5)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        when = start + timedelta(hours=hours * i / n)
        row = {"time": format_time(when), "source": "endpoint", "request_id": f"r{seed}-{i}", "id": f"{seed}-{i}",
               "model_version": model, "thresholds_version": "thr-1", "latency_ms": None if latency is None else
               float(rng.gamma(4.0, latency / 4.0))}
        if rng.random() < error_rate:
            row.update({"ok": False, "flagged": None, "error_code": "image_corrupt", "applied_input_types": []})
            for c in ("hate", "offensive"):
                row.update({f"{c}_score": None, f"{c}_flagged": None, f"{c}_threshold": 0.8})
            rows.append(row)
            continue
        hate = rng.beta(8, 2) if rng.random() < harmful else rng.beta(1.5, 12)
        off = rng.beta(6, 3) if rng.random() < 0.15 else rng.beta(1.5, 10)
        row.update({"ok": True, "error_code": None,
                    "applied_input_types": ["image", "text"] if rng.random() < image_share else ["text"]})
        acts = {}
        for c, s in (("hate", hate), ("offensive", off)):
            row.update({f"{c}_score": float(s), f"{c}_flagged": bool(s >= 0.8), f"{c}_threshold": 0.8})
            acts[c] = "block" if s >= 0.8 else ("review" if s >= 0.5 else "allow")
            if policy:
                row[f"{c}_action"] = acts[c]
        row["flagged"] = bool(hate >= 0.8 or off >= 0.8)
        if policy:
            row["action"] = max(acts.values(), key=("allow", "review", "block").index)
            row["language"] = "en" if rng.random() < 0.95 else "de"
            row["policy_version"] = "pol-1"
        rows.append(row)
    return rows


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# --- statistics -------------------------------------------------------------------------------------------

def test_psi_is_zero_for_one_sample_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    a = rng.beta(2, 8, 5000)
    assert psi(a, a)["psi"] == pytest.approx(0.0, abs=1e-12)
    assert psi(a, rng.beta(2, 8, 5000))["psi"] < 0.02
    shifted = psi(a, rng.beta(5, 5, 5000))
    assert shifted["psi"] > 1.0 and shifted["bins"] == 10 and sum(shifted["current"]) == pytest.approx(1.0)
    # A hand-checked case: two bins, 50/50 -> 25/75.
    two = psi([0.1, 0.2, 0.8, 0.9], [0.1, 0.8, 0.85, 0.9], bins=2)
    assert two["psi"] == pytest.approx((0.25 - 0.5) * np.log(0.5) + (0.75 - 0.5) * np.log(1.5))
    with pytest.raises(ValueError, match="needs values in both samples"):
        psi([], [0.1])


def test_rate_change_and_tests():
    same = rate_change(100, 1000, 105, 1000)
    assert same["pvalue"] > 0.5 and same["change"] == pytest.approx(0.005)
    moved = rate_change(100, 1000, 300, 1000)
    assert moved["pvalue"] < 1e-20 and moved["relative"] == pytest.approx(2.0)
    assert moved["ci"][0] < 0.2 < moved["ci"][1]
    assert ks_test([0.1, 0.2, 0.3] * 50, [0.7, 0.8, 0.9] * 50)["pvalue"] < 1e-10
    m = mix_shift({"text": 900, "image": 100}, {"text": 500, "image": 500})
    assert m["psi"] > 0.3 and m["pvalue"] < 1e-10 and m["current"]["image"] == 0.5


def test_time_bounds_and_durations():
    now = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    assert parse_when("24h", now) == now - timedelta(days=1)
    assert parse_when("2026-11-27T00:00Z") == datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert parse_duration("15m") == 900
    with pytest.raises(ValueError, match="neither an ISO 8601 time nor a duration"):
        parse_when("last tuesday")


# --- reading and comparing --------------------------------------------------------------------------------

def test_same_distribution_is_quiet_and_a_harmful_jump_alerts(tmp_path):
    ref = load_decisions([write_jsonl(tmp_path / "ref.jsonl", decisions(3000, 1))])
    same = load_decisions([write_jsonl(tmp_path / "same.jsonl", decisions(3000, 2))])
    quiet = compare(ref, same)
    assert quiet["status"] == "ok" and quiet["alerts"] == [], quiet["alerts"]
    assert quiet["categories"]["hate"]["psi"]["psi"] < 0.05

    jump = load_decisions([write_jsonl(tmp_path / "jump.jsonl", decisions(3000, 3, harmful=0.3))])
    loud = compare(ref, jump)
    assert loud["status"] == "alert"
    hate = [a for a in loud["alerts"] if a["category"] == "hate"]
    assert {a["metric"] for a in hate} >= {"block rate", "psi"}
    block = next(a for a in hate if a["metric"] == "block rate")
    from scipy.stats import beta
    # 20% more hateful posts, of which the share scoring >= 0.8 is blocked.
    assert block["change"] == pytest.approx(0.2 * beta.sf(0.8, 8, 2), abs=0.03)
    assert "block rate" in block["message"] and "pp" in block["message"]
    assert not [a for a in loud["alerts"] if a["category"] == "offensive"]  # only hate moved


def test_batch_outputs_without_policy_columns_fall_back_to_flags(tmp_path):
    """Today's batch outputs: no action columns, no time: a flag counts as block; no review rate."""
    rows = decisions(1500, 4, policy=False, latency=None)
    for r in rows:
        del r["time"], r["request_id"]
        r.update({"source_file": "dump.jsonl", "source_row": 1})
    out = write_parquet(tmp_path / "results.parquet", rows)
    (tmp_path / "results.errors.jsonl").write_text('{"id": "x", "error_code": "image_corrupt"}\n')
    d = load_decisions([tmp_path])  # the folder: the errors side file is not read
    assert d.files == [str(out)] and d.n == 1500 and not d.has_time
    hate = d.scores["hate"][d.ok]
    assert np.array_equal(d.actions["hate"][d.ok] == "block", hate >= 0.8)
    summary = compare(d, d)
    assert "review_rate" not in summary["categories"]["hate"]["rates"]
    assert summary["windows"] is None and summary["latency"]["current"] is None and summary["status"] == "ok"


def test_error_rate_latency_and_mix_alerts(tmp_path):
    ref = load_decisions([write_jsonl(tmp_path / "r.jsonl", decisions(2000, 5))])
    bad = load_decisions([write_jsonl(tmp_path / "b.jsonl", decisions(2000, 6, error_rate=0.08, latency=60.0,
                                                                       image_share=0.7))])
    kinds = {a["kind"] for a in compare(ref, bad)["alerts"]}
    assert {"error_rate", "latency", "mix"} <= kinds


def test_small_windows_never_alert_and_time_windows(tmp_path):
    ref = load_decisions([write_jsonl(tmp_path / "r.jsonl", decisions(2000, 7))])
    tiny = load_decisions([write_jsonl(tmp_path / "t.jsonl", decisions(100, 8, harmful=0.5, error_rate=0.0))])
    s = compare(ref, tiny)
    assert not [a for a in s["alerts"] if a["kind"] in ("rate", "score_drift")]
    assert any("too few scored rows" in n for n in s["notes"])
    windows = s["windows"]
    assert windows["window_s"] == 3600 and len(windows["windows"]) == 24
    assert sum(w["rows"] for w in windows["windows"]) == 100


def test_since_until_and_category_selection(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", decisions(480, 9, hours=48))
    d = load_decisions([path], since=START + timedelta(hours=24), categories=["hate"])
    assert d.categories == ["hate"] and d.n == 240
    with pytest.raises(ValueError, match="categories \\['violence'\\] are not in"):
        load_decisions([path], categories=["violence"])
    rows = decisions(10, 1)
    for r in rows:
        del r["time"]
    with pytest.raises(ValueError, match="need a time on each row"):
        load_decisions([write_jsonl(tmp_path / "nt.jsonl", rows)], since=START)


def test_thresholds_from_dict_and_overrides():
    th = AlertThresholds.from_dict({"psi": 0.3}).updated(["rate_abs=0.05", "latency_p95_max_ms=none", "min_rows=50"])
    assert (th.psi, th.rate_abs, th.latency_p95_max_ms, th.min_rows) == (0.3, 0.05, None, 50)
    with pytest.raises(ValueError, match="unknown alert thresholds"):
        AlertThresholds.from_dict({"psy": 1})
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        th.updated(["psi"])


# --- the command ------------------------------------------------------------------------------------------

def test_cli_exit_statuses_report_and_summary(tmp_path, capsys):
    from moderation.cli import main

    ref = write_jsonl(tmp_path / "logs" / "ref" / "decisions-a.jsonl", decisions(2000, 11))
    write_jsonl(tmp_path / "logs" / "same" / "decisions-b.jsonl", decisions(2000, 12, start=START + timedelta(days=1)))
    write_jsonl(tmp_path / "logs" / "jump" / "decisions-c.jsonl",
                decisions(2000, 13, harmful=0.3, start=START + timedelta(days=2)))
    assert main(["monitor", "--reference", str(ref), "--current", str(tmp_path / "logs" / "same"),
                 "--out", str(tmp_path / "m1")]) == 0
    assert "no alerts" in capsys.readouterr().err
    status = main(["monitor", "--reference", str(ref), "--current", str(tmp_path / "logs" / "jump" / "*.jsonl"),
                   "--out", str(tmp_path / "m2"), "--window", "6h"])
    captured = capsys.readouterr()
    assert status == 3
    assert "ALERT hate: block rate" in captured.out and "offensive" not in captured.out
    summary = json.loads((tmp_path / "m2" / "summary.json").read_text())
    assert summary["status"] == "alert" and summary["windows"]["window_s"] == 6 * 3600
    html = (tmp_path / "m2" / "report.html").read_text()
    assert "ALERT" in html and "hate: block rate" in html and html.count("data:image/png;base64,") >= 3
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # A higher PSI threshold and rate thresholds silence it: thresholds are configurable.
    (tmp_path / "loose.json").write_text(json.dumps({"psi": 5, "rate_abs": 0.5}))
    assert main(["monitor", "--reference", str(ref), "--current", str(tmp_path / "logs" / "jump"), "--out",
                 str(tmp_path / "m3"), "--thresholds", str(tmp_path / "loose.json"), "--no-report", "--quiet"]) == 0
    assert not (tmp_path / "m3" / "report.html").exists()
    # Bad arguments: one line, exit 2.
    assert main(["monitor", "--reference", str(tmp_path / "nothing"), "--current", str(ref), "--out", "x"]) == 2
    assert "error: input not found" in capsys.readouterr().err
    assert main(["monitor", "--reference", str(ref), "--current", str(ref), "--out", str(tmp_path / "m4"),
                 "--threshold", "psi=high"]) == 2


def test_strongest_of_follows_the_policy_order():
    import numpy as np

    from moderation.policy import strongest
    from operations.decisions import strongest_of

    a = np.array(["allow", "review", None, "block"], dtype=object)
    b = np.array(["review", "allow", None, "allow"], dtype=object)
    assert strongest_of([a, b], 4).tolist() == ["review", "review", "allow", "block"]
    assert [strongest([x for x in pair if x is not None]) for pair in zip(a, b)] == ["review", "review", "allow", "block"]


def test_category_actions_read_a_flag_as_a_removal_only_without_policy_columns():
    from operations.decisions import category_actions

    flagged = {"hate": np.array([1, 0, -1, 1], dtype=np.int8), "offensive": np.array([0, 1, 1, -1], dtype=np.int8)}
    ok = np.array([True, True, True, False])
    raw = {"hate": [None, None, None, None], "offensive": ["review", "allow", None, "block"]}
    actions, has = category_actions(raw, flagged, ok)
    assert has == {"hate": False, "offensive": True}
    assert actions["hate"].tolist() == ["block", "allow", None, None]  # no policy: flag -> block; unscored: None
    assert actions["offensive"].tolist() == ["review", "allow", None, None]  # the rows' own actions, kept


def test_a_category_first_seen_in_a_later_file_is_unknown_before_it(tmp_path):
    """One schema per file: rows of an earlier file without `violence` read NaN / -1 / None for it."""
    first = decisions(5, 1, error_rate=0.0)
    later = decisions(3, 2, error_rate=0.0)
    for r in later:
        r.update({"violence_score": 0.9, "violence_flagged": True, "violence_action": "block"})
    d = load_decisions([write_jsonl(tmp_path / "a.jsonl", first), write_jsonl(tmp_path / "b.jsonl", later)])
    assert d.n == 8 and d.categories == ["hate", "offensive", "violence"]
    assert np.isnan(d.scores["violence"][:5]).all() and d.scores["violence"][5:].tolist() == [0.9] * 3
    assert d.flagged["violence"].tolist() == [-1] * 5 + [1] * 3
    assert d.actions["violence"].tolist() == [None] * 5 + ["block"] * 3


def test_between_keeps_the_half_open_window(tmp_path):
    from operations.decisions import between

    d = load_decisions([write_jsonl(tmp_path / "d.jsonl", decisions(48, 3, hours=48, error_rate=0.0))])
    day2 = between(d, START + timedelta(hours=24), START + timedelta(hours=36))
    assert day2.n == 12 and day2.time.min() == (START + timedelta(hours=24)).timestamp()
    assert between(d, None, START + timedelta(hours=1)).n == 1
    with pytest.raises(ValueError, match="no rows fall between"):
        between(d, START + timedelta(days=5), None)
