"""The calibration report's example tables: which posts are drawn, what they show, how they render."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moderation.policy import CategoryPolicy, LanguageRule, Policy

from eval.examples import examples_html, examples_markdown, marked, report_examples, select_examples
from eval.report import write_report


def _policy() -> Policy:
    return Policy(version="pol-x", categories={"hate": CategoryPolicy(block=0.8, review=0.4),
                                               "offensive": CategoryPolicy(block=None, review=0.5)})


def test_select_draws_each_cell_in_turn_a_post_once():
    probs = np.array([[0.9, 0.1], [0.85, 0.6], [0.5, 0.2], [0.45, 0.7], [0.1, 0.1], [np.nan, np.nan], [0.95, 0.9]])
    labels = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0], [1, 0], [1, 1], [np.nan, 1]])
    picked, counts = select_examples(probs, labels, ["hate", "offensive"], _policy(), limit=20)
    assert counts["hate"] == {"block harmful": 1, "block benign": 1, "review harmful": 1, "review benign": 1}
    assert counts["offensive"] == {"block harmful": 0, "block benign": 0, "review harmful": 2, "review benign": 1}
    rows = [p["row"] for p in picked]
    assert len(rows) == len(set(rows))  # row 1 sits in two cells: explained once
    assert 4 not in rows and 5 not in rows and 6 in rows  # allowed; unscored; offensive review, hate label unknown
    assert {(p["row"], p["category"], p["action"], p["truth"]) for p in picked} >= {
        (0, "hate", "block", "harmful"), (1, "hate", "block", "benign"), (2, "hate", "review", "harmful"),
        (3, "hate", "review", "benign")}
    # the limit holds, and a small limit still reaches several cells before a second post of one
    few, _ = select_examples(probs, labels, ["hate", "offensive"], _policy(), limit=3)
    assert [(p["category"], p["action"], p["truth"]) for p in few] == [
        ("hate", "block", "harmful"), ("hate", "block", "benign"), ("hate", "review", "harmful")]


def _examples() -> dict:
    text = "these <people> are vermin | and pests"
    return {"limit": 20, "method": "pooled", "seed": 0, "seconds": 1.5,
            "cells": {"hate": {"block harmful": 12, "block benign": 3, "review harmful": 40, "review benign": 55}},
            "rows": [{"id": "toy/1", "dataset": "toy", "category": "hate", "action": "block", "truth": "benign",
                      "post_action": "block", "score": 0.91, "text": text, "image": False, "error": None,
                      "words": [{"word": "vermin", "span": [19, 25], "weight": 0.31},
                                {"word": "pests", "span": [32, 37], "weight": 0.052}]}]}


def test_html_marks_the_words_and_escapes_the_post():
    h = examples_html(_examples())
    assert "these &lt;people&gt; are <mark title='+0.310'>vermin</mark> | and <mark title='+0.052'>pests</mark>" in h
    assert "<people>" not in h
    assert "At most 20 posts are explained" in h and "1.5 s for these" in h
    assert "hate: block harmful 12, block benign 3, review harmful 40, review benign 55" in h
    assert "vermin +31.0, pests +5.2" in h and "block (benign)" in h and "Content warning" in h
    assert marked(None, [], markup=True) == "(no text: image only)"


def test_markdown_is_plain_text_with_the_words_beside_it():
    md = examples_markdown(_examples())
    assert "## Examples: what drove the score" in md and "<mark" not in md
    row = next(line for line in md.splitlines() if "toy / toy/1" in line)
    assert "these &lt;people> are vermin \\| and pests" in row  # one cell: the post's pipe escaped
    assert row.count(" | ") == 5 and "vermin +31.0, pests +5.2" in row


def test_the_report_carries_the_examples(tmp_path):
    ev = {"categories": ["hate"], "metrics": {"hate": {"all": {}}}, "slices": ["all"], "thresholds": {"hate": None}}
    paths = write_report(tmp_path, ev, title="toy", examples=_examples())
    assert "<mark title='+0.310'>vermin</mark>" in paths["html"].read_text()
    assert "## Examples: what drove the score" in paths["md"].read_text()
    assert json.loads(paths["json"].read_text())["examples"]["rows"][0]["words"][0]["word"] == "vermin"
    plain = write_report(tmp_path / "none", ev, title="toy")
    assert "Examples: what drove the score" not in plain["html"].read_text()


def test_report_examples_explains_the_drawn_posts_through_the_scorer(tiny_model_dir):
    from moderation.datasets import LabelledSet
    from moderation.scorer import Scorer

    words = "you are a terrible stupid person go away lovely friend nice day hate them never".split()
    rng = np.random.default_rng(0)
    posts = [{"id": f"toy/{i}", "text": " ".join(rng.choice(words, size=int(rng.integers(3, 9)))), "image": None}
             for i in range(40)]
    data = LabelledSet(posts=posts, labels=rng.integers(0, 2, (40, 2)).astype(float), categories=["hate", "offensive"],
                       sources=["toy"] * 40)
    policy = Policy(version="pol-t", languages=LanguageRule(trained=["en"], min_chars=10_000),
                    categories={"hate": CategoryPolicy(block=0.7, review=0.3),
                                "offensive": CategoryPolicy(block=0.7, review=0.3)})
    scorer = Scorer.from_dir(tiny_model_dir, num_workers=0, policy=policy, batch_size=8)
    try:
        probs = rng.random((40, 2))  # the cells come from these scores; the words from the scorer
        out = report_examples(scorer, data, probs, data.labels, limit=5, method="occlusion")
    finally:
        scorer.close()
    assert out["limit"] == 5 and len(out["rows"]) == 5 and out["method"] == "occlusion"
    assert out["rows"][0]["category"] == "hate" and out["rows"][0]["action"] == "block"  # rows in table order
    for r in out["rows"]:
        assert r["category"] in ("hate", "offensive") and r["action"] in ("block", "review")
        assert r["dataset"] == "toy" and r["text"] == posts[int(r["id"].split("/")[1])]["text"]
        for w in r["words"]:
            assert r["text"][w["span"][0]:w["span"][1]] == w["word"] and w["weight"] > 0
    assert sum(out["cells"]["hate"].values()) > 0
    assert "<mark" in examples_html(out) or not any(r["words"] for r in out["rows"])
