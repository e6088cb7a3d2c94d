"""Fairness figures: AUCs against scikit-learn, the generalized mean, BPSN / BNSP on a built bias, groups from
dataset labels and the identity term list, the rendered table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval.fairness import fairness, html_section, load_identity_posts, markdown_section, power_mean
from moderation.identity import detect_groups, groups_of


def test_generalized_mean_leans_to_the_worst():
    assert power_mean([0.5, 1.0], -5) == pytest.approx(((0.5 ** -5 + 1.0) / 2) ** (-1 / 5))
    assert power_mean([0.5, 1.0], -5) < 0.6 and np.isnan(power_mean([float("nan")]))


def test_a_group_whose_benign_posts_score_high_gets_a_low_bpsn():
    rng = np.random.default_rng(1)
    n = 600
    y = rng.integers(0, 2, n).astype(bool)
    groups = [("a",) if i % 3 == 0 else ("b",) if i % 3 == 1 else () for i in range(n)]
    s = np.where(y, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.5, n))
    in_a = np.array(["a" in g for g in groups])
    s[in_a & ~y] += 0.45  # benign posts about "a" look hateful to this model
    not_allowed = s >= 0.5
    r = fairness(y.astype(int), s, not_allowed, groups, bootstrap=50)
    a, b = r["groups"]["a"], r["groups"]["b"]
    assert a["bpsn_auc"]["value"] < 0.8 < b["bpsn_auc"]["value"]
    assert a["benign_not_allowed"]["value"] > 0.5 > b["benign_not_allowed"]["value"]
    assert a["posts"] == 200 and a["positives"] + a["benign"] == 200 and a["bpsn_posts"] > 0
    lo, hi = a["bpsn_auc"]["ci"]
    assert lo <= a["bpsn_auc"]["value"] <= hi
    mean = r["generalized_mean"]["bpsn_auc"]
    assert mean["groups"] == 2 and mean["value"] < (a["bpsn_auc"]["value"] + b["bpsn_auc"]["value"]) / 2
    rows = markdown_section(r)
    assert rows.index("| a |") < rows.index("| b |")  # worst BPSN first
    assert "<table" in html_section(r, "m-1") and "m-1" in html_section(r, "m-1")


def test_small_groups_are_counted_only_and_unscored_posts_left_out():
    y = np.array([0, 1] * 20)
    s = np.linspace(0, 1, 40)
    s[0] = np.nan
    groups = [("big",)] * 35 + [("tiny",)] * 5
    r = fairness(y, s, s > 0.5, groups, bootstrap=0, min_posts=30)
    assert r["posts"] == 39 and r["groups"]["tiny"]["posts"] == 5 and "subgroup_auc" not in r["groups"]["tiny"]
    assert r["groups"]["big"]["subgroup_auc"]["ci"] is None  # no bootstrap


def test_identity_terms_and_dataset_labels():
    assert detect_groups("Muslims and imm1grants are welcome here") == {"muslims", "migrants"}
    assert detect_groups("a black cat and a white dog") == set()
    assert detect_groups("non-white people") == {"people of colour"}
    assert groups_of(["MIGRANTS/MUSLIMS", "LGBT+", None]) == {"migrants", "muslims", "lgbtq"}


def test_posts_get_groups_from_labels_and_text(tmp_path):
    rows = {
        "conan": [{"id": "1", "text": "They should all leave", "label": 1, "target": "MIGRANTS", "split": "test"},
                  {"id": "2", "text": "Refugees enrich our towns", "label": 0, "target": "MIGRANTS", "split": "test"},
                  {"id": "3", "text": "other split", "label": 0, "target": "JEWS", "split": "train"}],
        "implicit_hate": [{"id": "4", "text": "you know who runs the banks", "label": 1, "targets": ["Jews"],
                           "split": "test"}],
        "ethos": [{"id": "5", "text": "women cannot drive", "label": 1, "gender": 1, "split": "test"},
                  {"id": "6", "text": "nice day", "label": 0, "gender": None, "split": "test"}],
        "harmeme_text": [{"id": "7", "text": "the gay agenda meme", "label": 1, "target": ["community"],
                          "split": "test"}],
    }
    for name, items in rows.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    posts = {p["id"]: p for p in load_identity_posts(tmp_path)}
    assert set(posts) == {"conan:1", "conan:2", "implicit_hate:4", "ethos:5", "ethos:6", "harmeme_text:7"}
    assert posts["conan:1"]["groups"] == ["migrants"] and posts["conan:1"]["labelled_groups"] == ["migrants"]
    assert posts["implicit_hate:4"]["groups"] == ["jews"] and posts["ethos:5"]["groups"] == ["women"]
    assert posts["ethos:6"]["groups"] == [] and posts["harmeme_text:7"]["groups"] == ["lgbtq"]
    assert posts["harmeme_text:7"]["labelled_groups"] == []
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        load_identity_posts(tmp_path / "nowhere")


def test_the_calibration_report_carries_the_fairness_section(tmp_path):
    from eval.metrics import evaluate
    from eval.report import write_report

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (200, 1)).astype(float)
    p = np.clip(y[:, 0] * 0.5 + rng.random(200) * 0.5, 0, 1)[:, None]
    ev = evaluate(p, y, ["hate"], {"hate": 0.7}, np.array(["text"] * 200, dtype=object), bootstrap=0)
    groups = [("muslims",) if i % 2 else () for i in range(200)]
    fair = fairness(y[:, 0], p[:, 0], p[:, 0] > 0.5, groups, bootstrap=20)
    fair["model_version"] = "toy-1"
    paths = write_report(tmp_path, ev, title="toy", calibrated_probs=p, labels=y, fairness=fair)
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert "Fairness: identity groups" in html and "muslims" in html and "BPSN AUC" in html
    assert "## Fairness: identity groups" in md and "generalized mean (p = -5" in md
    assert json.loads(paths["json"].read_text())["fairness"]["groups"]["muslims"]["posts"] == 100


def test_a_quick_sample_caps_each_group_and_the_background():
    from eval.fairness import sample_posts

    posts = [{"id": str(i), "groups": ["a"] if i < 50 else ["a", "b"] if i < 60 else []} for i in range(100)]
    got = sample_posts(posts, per_group=20, background=5, seed=3)
    assert sum(not p["groups"] for p in got) == 5
    assert sum("a" in p["groups"] for p in got) <= 20 + sum("b" in p["groups"] for p in got)
    assert 1 <= sum("b" in p["groups"] for p in got) <= 10
    assert sample_posts(posts, 20, 5, seed=3) == got


def test_held_for_hate_is_a_share_of_the_same_benign_posts_and_gets_its_column():
    """A benign post held only as offensive counts as not allowed but not as held for hate."""
    y = np.array([0] * 40 + [1] * 20)
    s = np.linspace(0, 1, 60)
    groups = [("g",)] * 30 + [()] * 10 + [("g",)] * 10 + [()] * 10
    not_allowed = np.zeros(60, dtype=bool)
    not_allowed[:20] = True  # 20 benign group posts held (say, as offensive) ...
    for_hate = np.zeros(60, dtype=bool)
    for_hate[:5] = True  # ... 5 of them for hate
    r = fairness(y, s, not_allowed, groups, bootstrap=0, min_posts=30, held_for_hate=for_hate)
    g = r["groups"]["g"]
    assert g["benign_not_allowed"]["k"] == 20 and g["benign_held_for_hate"]["k"] == 5 and g["benign"] == 30
    assert r["background"]["benign_held_for_hate"] == {"value": 0.0, "k": 0, "n": 10, "ci": pytest.approx([0.0, 0.308], abs=1e-3)}
    md = markdown_section(r)
    assert "benign held for hate" in md and "16.7%" in md
    header, sep, *rows = [line for line in md.splitlines() if line.startswith("|")]
    assert all(row.count("|") == header.count("|") for row in rows)
    # results written before the column existed render as before
    del g["benign_held_for_hate"], r["background"]["benign_held_for_hate"]
    assert "held for hate" not in markdown_section(r).split("\n\n")[2]
