"""Dataset parsing and loading: label mapping, partial labels (NaN), malformed rows counted, slices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import png_bytes
from moderation.datasets import (
    DEFAULT_DATASETS,
    DatasetSpec,
    DatasetWarning,
    default_dataset_specs,
    load_labelled,
    parse_dataset_arg,
)


def write_dataset(folder: Path, rows: list, name: str = "data.jsonl", raw_lines: list[str] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    (folder / "images" / "a.png").write_bytes(png_bytes())
    path = folder / name
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        for line in raw_lines:
            fh.write(line + "\n")
    return path


def test_parse_dataset_arg_forms(tmp_path):
    path = write_dataset(tmp_path / "mine", [{"id": 1, "text": "x", "label": 1, "split": "train"}])
    spec = parse_dataset_arg(f"{tmp_path / 'mine'}:label=Hateful,tox=toxicity@first")
    assert spec == DatasetSpec(path=path, labels={"label": "hate", "tox": "toxic"}, name="first")
    spec = parse_dataset_arg(f"{path}:label=offense")
    assert spec.name == "mine" and spec.labels == {"label": "offensive"}
    known = write_dataset(tmp_path / "tweeteval_hate", [{"id": 1, "text": "x", "label": 1, "split": "train"}])
    assert parse_dataset_arg(str(tmp_path / "tweeteval_hate")).labels == {"label": "hate"}
    assert parse_dataset_arg(str(known)).name == "tweeteval_hate"


@pytest.mark.parametrize("arg, message", [
    ("", "empty dataset argument"),
    ("/nonexistent/folder:label=hate", "dataset not found"),
    ("{folder}:label", "expected FIELD=CATEGORY"),
    ("{folder}:label=hate,label=offensive", "mapped twice"),
    ("{folder}:text=hate", "not a label field"),
    ("{folder}", "say which fields label which category"),
    ("{empty}:label=hate", "has no data.jsonl"),
    ("{folder}:label=hate@", "gives no name"),
])
def test_parse_dataset_arg_errors(tmp_path, arg, message):
    write_dataset(tmp_path / "mine", [{"id": 1, "text": "x", "label": 1, "split": "train"}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=message):
        parse_dataset_arg(arg.format(folder=tmp_path / "mine", empty=tmp_path / "empty"))


def test_partial_labels_are_nan_and_ids_prefixed(tmp_path):
    hate = write_dataset(tmp_path / "h", [
        {"id": "1", "text": "a", "label": 1, "split": "train"},
        {"id": "2", "text": "b", "label": 0, "split": "train"},
        {"id": "3", "text": "c", "label": 0, "split": "test"},
    ])
    memes = write_dataset(tmp_path / "m", [
        {"id": "1", "text": "meme", "image": "images/a.png", "label": 1, "split": "train"},
        {"id": "2", "image": "images/a.png", "label": 0, "split": "train"},
    ])
    specs = [DatasetSpec(hate, {"label": "hate"}, "h"), DatasetSpec(memes, {"label": "offensive"}, "m")]
    data = load_labelled(specs, ["hate", "offensive"], "train")
    assert [p["id"] for p in data.posts] == ["h/1", "h/2", "m/1", "m/2"]
    np.testing.assert_array_equal(data.labels[:, 0], [1, 0, np.nan, np.nan])
    np.testing.assert_array_equal(data.labels[:, 1], [np.nan, np.nan, 1, 0])
    assert data.sources == ["h", "h", "m", "m"]
    assert list(data.slices()) == ["text", "text", "image+text", "image"]
    assert Path(data.posts[2]["image"]).is_absolute() and Path(data.posts[2]["image"]).is_file()
    assert data.counts() == {"hate": {"known": 2, "positive": 1}, "offensive": {"known": 2, "positive": 1}}
    sub = data.subset(np.array([False, True, True, False]))
    assert [p["id"] for p in sub.posts] == ["h/2", "m/1"] and sub.sources == ["h", "m"]
    both = load_labelled(specs, ["hate", "offensive"], {"train", "test"})
    assert len(both) == 5 and both.splits.count("test") == 1


def test_several_fields_map_to_one_category(tmp_path):
    path = write_dataset(tmp_path / "j", [
        {"id": "1", "text": "a", "insult": 0, "obscene": 1, "split": "test"},
        {"id": "2", "text": "b", "insult": 0, "obscene": 0, "split": "test"},
        {"id": "3", "text": "c", "insult": 0, "obscene": None, "split": "test"},
    ])
    data = load_labelled([DatasetSpec(path, {"insult": "offensive", "obscene": "offensive"}, "j")], ["offensive"], "test")
    np.testing.assert_array_equal(data.labels[:, 0], [1, 0, 0])


def test_malformed_rows_are_counted_and_reported(tmp_path):
    folder = tmp_path / "d"
    path = write_dataset(folder, [
        {"id": "ok", "text": "fine", "label": 1, "split": "train"},
        {"id": "ok", "text": "again", "label": 0, "split": "train"},
        {"text": "no id", "label": 0, "split": "train"},
        {"id": "e", "text": "  ", "label": 0, "split": "train"},
        {"id": "l", "text": "x", "label": 7, "split": "train"},
        {"id": "s", "text": "x", "label": 0},
        {"id": "i", "text": "x", "image": "images/missing.png", "label": 0, "split": "train"},
        {"id": "esc", "text": "x", "image": "../outside.png", "label": 0, "split": "train"},
        {"id": "u", "text": "x", "split": "train"},
    ], raw_lines=["{not json", "[1, 2]"])
    (tmp_path / "outside.png").write_bytes(png_bytes())
    with pytest.warns(DatasetWarning, match=r"d: 1 bad_json.*1 duplicate_id"):
        data = load_labelled([DatasetSpec(path, {"label": "hate"}, "d")], ["hate"], "train")
    assert [p["id"] for p in data.posts] == ["d/ok"]
    assert data.problems == {"d": {"duplicate_id": 1, "missing_id": 1, "empty_post": 1, "bad_label_value": 1,
                                   "missing_split": 1, "image_not_found": 1, "image_path_escapes_folder": 1,
                                   "no_known_label": 1, "bad_json": 1, "not_an_object": 1}}


def test_load_labelled_errors(tmp_path):
    path = write_dataset(tmp_path / "d", [{"id": "1", "text": "a", "label": 1, "split": "train"}])
    with pytest.raises(ValueError, match="names must be unique"):
        load_labelled([DatasetSpec(path, {"label": "hate"}, "x")] * 2, ["hate"], "train")
    with pytest.raises(ValueError, match="none of the model's categories"):
        load_labelled([DatasetSpec(path, {"label": "toxic"}, "x")], ["hate"], "train")
    with pytest.raises(ValueError, match="maps no label field"):
        DatasetSpec(path, {}, "x")


def test_default_specs_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODERATION_DATA_ROOT"):
        default_dataset_specs(tmp_path)


@pytest.mark.datasets
def test_shared_datasets_load():
    """Every val row of every shared dataset is loaded or counted as skipped; unlabelled categories stay unknown."""
    try:
        specs = default_dataset_specs()
    except FileNotFoundError:
        pytest.skip("shared datasets are absent")
    assert [s.name for s in specs] == list(DEFAULT_DATASETS)
    val = load_labelled(specs, ["hate", "offensive", "violence"], "val")
    sources = np.array(val.sources)
    skipped = {name: sum(c.values()) for name, c in val.problems.items()}
    readme_val_rows = {"tweeteval_hate": 1000, "tweeteval_offensive": 1324, "multioff": 148, "gab_hate_corpus": 2199,
                       "implicit_hate": 2148, "harmeme_text": 348, "reddit_misogyny": 504, "ethos": 99}
    for name, n in readme_val_rows.items():
        assert (sources == name).sum() + skipped.get(name, 0) == n, name
    known = val.known()
    hate, off, vio = 0, 1, 2
    tweets = sources == "tweeteval_hate"
    assert known[tweets, hate].all() and not known[tweets, off].any() and not known[tweets, vio].any()
    gab = sources == "gab_hate_corpus"
    assert known[gab].all()  # label -> hate, vo -> offensive, cv -> violence
    # implicit_hate annotates `threatening` / `incitement` on its implicit-hate rows only: unknown elsewhere.
    implicit = sources == "implicit_hate"
    assert known[implicit, vio].any() and not known[implicit, vio].all()
    assert set(val.slices()) == {"text", "image+text"}
