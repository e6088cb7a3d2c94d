"""Not-allowed share per identity group over live windows (`moderation monitor --groups`)."""

from __future__ import annotations

import json

from operations.group_rates import NO_GROUP, group_lines, group_rates, worst_window


def _log(tmp_path):
    rows = []
    for hour in range(4):
        for i in range(10):
            muslim = i < 5
            # hour 3: posts about Muslims are all sent to review
            action = "review" if (muslim and (hour == 3 or i == 0)) or (not muslim and i == 9) else "allow"
            text = "the mosque opened a food bank" if muslim else "the bakery opened a food bank"
            rows.append({"time": f"2026-11-27T{10 + hour:02d}:{i:02d}:00Z", "id": f"{hour}-{i}", "ok": True,
                         "action": action, "text": text, "hate_score": 0.1, "hate_flagged": False})
    rows.append({"time": "2026-11-27T10:30:00Z", "id": "nt", "ok": True, "action": "allow", "hate_score": 0.1,
                 "hate_flagged": False})
    rows.append({"time": "2026-11-27T10:31:00Z", "id": "err", "ok": False, "error_code": "empty_post"})
    path = tmp_path / "logs" / "decisions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_shares_per_group_and_window(tmp_path):
    r = group_rates([_log(tmp_path)], window_s=3600)
    assert r["posts"] == 40 and r["posts_without_text"] == 1
    assert r["groups"]["muslims"] == {"value": 8 / 20, "k": 8, "n": 20}
    assert r["groups"][NO_GROUP]["k"] == 4 and len(r["windows"]) == 4
    assert r["windows"][3]["groups"]["muslims"]["value"] == 1.0
    assert worst_window(r, "muslims") == (r["windows"][3]["start"], 1.0)
    lines = group_lines(r, min_posts=10)
    assert any("muslims" in ln and "40.0%" in ln and "2.0x no group" in ln for ln in lines)


def test_monitor_groups_flag(tmp_path, capsys):
    from moderation.cli import main

    log = _log(tmp_path)
    assert main(["monitor", "--reference", str(log), "--current", str(log), "--out", str(tmp_path / "m"),
                 "--no-report", "--groups", "--window", "1h"]) == 0
    assert "not allowed per identity group" in capsys.readouterr().err
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["groups"]["groups"]["muslims"]["n"] == 20 and len(summary["groups"]["windows"]) == 4
