"""Labelled datasets from JSONL files, with partial labels.

A dataset is one JSONL file (or a folder holding `data.jsonl`), one post per line:

    {"id": "...", "text": "...", "image": "images/x.jpg", "label": 1, "split": "train"}

`image` is a path relative to the file's folder (it may not escape it); any number of label fields map to
categories (`DatasetSpec.labels`, e.g. {"label": "hate"}). A dataset that labels only `hate` says nothing
about `offensive`: that cell is NaN (unknown), masked out of the loss and of every metric, never a negative.

Malformed rows (bad JSON, no id, duplicate id, no content, bad label value, missing split, image missing
or escaping the folder) are counted per reason and reported in a warning and in `LabelledSet.problems`;
they are never silently dropped and never scored as "safe".
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from moderation.inputs import DEFAULT_LIMITS, check_text
from moderation.schema import InputError, normalize_category

DATA_ROOT_ENV = "MODERATION_DATA_ROOT"
DATA_FILE = "data.jsonl"
SLICES = ("text", "image", "image+text")

#: Label mappings of the shared datasets (folder name -> {field: categories}); also the fallback of
#: `parse_dataset_arg` when a known folder is named without a mapping. Every dataset labels harm its own way;
#: the reasons for each line are in docs/training.md ("Which dataset supervises which category"). A field a
#: dataset leaves null on a row (e.g. implicit_hate's `threatening` outside its implicit-hate rows) is unknown
#: there, never a negative. Several fields may map to one category: positive if any is. One field may feed
#: several categories ("hate+offensive"); a category written "~violence" takes the field's 0s only (a negative
#: for it) and leaves its 1s unknown: e.g. a counter-narrative (CONAN label 0) is no threat, but a hateful
#: CONAN post (label 1) is not necessarily one either.
KNOWN_DATASETS: dict[str, dict[str, str]] = {
    "tweeteval_hate": {"label": "hate"},
    "tweeteval_offensive": {"label": "offensive"},
    "multioff": {"label": "offensive"},
    # label = hd (assault on human dignity) OR cv (call for violence): the GHC paper's "hate".
    "gab_hate_corpus": {"label": "hate", "cv": "violence", "vo": "offensive"},
    # label = implicit or explicit hate; threatening / incitement (to violence) are annotated on implicit rows only.
    "implicit_hate": {"label": "hate", "threatening": "violence", "incitement": "violence"},
    # Harmful memes (somewhat or very harmful to a person, group or society): offensive content in our terms.
    "harmeme_text": {"label": "offensive"},
    "reddit_misogyny": {"label": "hate", "threatening": "violence"},
    # violence is annotated on hate comments only.
    "ethos": {"label": "hate", "violence": "violence"},
    # Hate speech (1) vs the NGO-written counter-narratives answering it (0). Hate speech against a group is
    # offensive in OLID's sense (offensive, targeted at a group), so the label feeds offensive too; a
    # counter-narrative is no threat (~violence), a hateful post may or may not be one (unknown).
    "conan": {"label": "hate+offensive+~violence"},
    # Counter-speech replies written to intervene in hateful threads, all label 0: civil by design, so neither
    # hate, nor offensive, nor a threat.
    "qian_interventions": {"label": "hate+offensive+violence"},
    # Tweets reporting shootings, bombings and explosions, all label 0: not hate and not a threat; whether a
    # tweet is offensive (swearing about an attack) is not labelled.
    "crisislex_violence_news": {"label": "hate+violence"},
    # label = hatespeech; offensive = hatespeech or offensive (3-class: normal / offensive / hatespeech);
    # a normal post (offensive 0) is no threat either (~violence).
    "hatexplain": {"label": "hate", "offensive": "offensive+~violence"},
    # Test split only (101 rows): a smoke test, never trained on.
    "jigsaw_toxic_sample": {"identity_hate": "hate", "toxic": "offensive", "insult": "offensive", "threat": "violence"},
}
#: The datasets the default model trains on (train splits), calibrates on (val) and is measured on (test), in this order.
DEFAULT_DATASETS: tuple[str, ...] = ("tweeteval_hate", "tweeteval_offensive", "multioff", "gab_hate_corpus",
                                     "implicit_hate", "harmeme_text", "reddit_misogyny", "ethos")
#: The benign-heavy sets added for the fine-tuned model: counter-speech, news about violence, and HateXplain
#: (hate / offensive / normal). Hard negatives for topic-vs-harm (and CONAN's hate speech as hard positives).
HARD_NEGATIVE_DATASETS: tuple[str, ...] = ("conan", "qian_interventions", "crisislex_violence_news", "hatexplain")
ALL_DATASETS: tuple[str, ...] = DEFAULT_DATASETS + HARD_NEGATIVE_DATASETS


def _parse_targets(value: str) -> tuple[tuple[str, bool], ...]:
    """"hate+~violence" -> (("hate", False), ("violence", True)): categories, and whether only 0s count."""
    out = []
    for part in str(value).split("+"):
        part = part.strip()
        neg_only = part.startswith("~")
        name = part[1:].strip() if neg_only else part
        if not name:
            raise ValueError(f"empty category in label mapping {value!r}")
        out.append((normalize_category(name), neg_only))
    return tuple(out)


class DatasetWarning(UserWarning):
    """Rows were skipped while loading a dataset (counts per reason are in the message)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One labelled dataset: where it is, which fields label which category, and a short name.

    path: a JSONL file (rows: id, text, image path relative to the file, label fields, split).
    labels: source field -> category, e.g. {"label": "hate"}; categories are normalised. One field may feed
    several categories joined by "+", and "~CATEGORY" takes the field's 0s only (see KNOWN_DATASETS).
    name: prefixes ids (`name/id`) so they are unique across datasets; also the `sources` entry of a row.
    """

    path: Path
    labels: dict[str, str]
    name: str

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError(f"dataset {self.name!r} maps no label field to a category")
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "labels", {str(k): "+".join(("~" if neg else "") + c for c, neg in _parse_targets(v))
                                            for k, v in self.labels.items()})
        if not self.name or "/" in self.name:
            raise ValueError(f"dataset name must be non-empty and hold no '/', got {self.name!r}")


    def targets(self) -> dict[str, tuple[tuple[str, bool], ...]]:
        """field -> ((category, negatives_only), ...)."""
        return {f: _parse_targets(v) for f, v in self.labels.items()}

    def categories(self) -> set[str]:
        """The categories this dataset labels (some perhaps only with negatives)."""
        return {c for targets in self.targets().values() for c, _ in targets}


def _resolve_data_file(path: Path) -> Path:
    if path.is_dir():
        candidate = path / DATA_FILE
        if not candidate.is_file():
            raise ValueError(f"dataset folder {str(path)!r} has no {DATA_FILE}; give the JSONL file itself or a folder holding {DATA_FILE}")
        return candidate
    if path.is_file():
        return path
    raise ValueError(f"dataset not found: {str(path)!r} (give a JSONL file or a folder holding {DATA_FILE})")


def parse_dataset_arg(arg: str) -> DatasetSpec:
    """Parse "PATH[:FIELD=CATEGORY[,FIELD=CATEGORY]][@NAME]" into a DatasetSpec.

    PATH may be a folder holding data.jsonl. Without a mapping, the shared datasets' own mapping is used
    when the folder is one of them (tweeteval_hate, tweeteval_offensive, multioff); otherwise the mapping is
    required. NAME defaults to the folder name (or the file's stem). Raises ValueError saying what is wrong.
    """
    if not isinstance(arg, str) or not arg.strip():
        raise ValueError("empty dataset argument; expected PATH[:FIELD=CATEGORY[,FIELD=CATEGORY]][@NAME]")
    rest = arg.strip()
    name: str | None = None
    head, at, tail = rest.rpartition("@")
    if at and "/" not in tail and "=" not in tail:
        if not tail:
            raise ValueError(f"dataset argument {arg!r} ends with '@' but gives no name")
        rest, name = head, tail
    mapping: dict[str, str] | None = None
    head, colon, tail = rest.rpartition(":")
    # A colon starts the mapping unless it is part of an existing path (e.g. C:\ or odd folder names).
    if colon and "/" not in tail and (("=" in tail) or not Path(rest).expanduser().exists()):
        rest = head
        mapping = {}
        for part in tail.split(","):
            field_name, eq, category = part.partition("=")
            field_name, category = field_name.strip(), category.strip()
            if not eq or not field_name or not category:
                raise ValueError(f"bad label mapping {part!r} in {arg!r}; expected FIELD=CATEGORY, e.g. label=hate")
            if field_name in ("id", "text", "image", "split"):
                raise ValueError(f"{field_name!r} is not a label field (in {arg!r})")
            if field_name in mapping:
                raise ValueError(f"label field {field_name!r} is mapped twice in {arg!r}")
            mapping[field_name] = category
    if not rest:
        raise ValueError(f"dataset argument {arg!r} has no path")
    path = Path(rest).expanduser()
    data_file = _resolve_data_file(path)
    folder_name = path.name if path.is_dir() else (data_file.parent.name if data_file.name == DATA_FILE else data_file.stem)
    if mapping is None:
        if folder_name not in KNOWN_DATASETS:
            raise ValueError(f"dataset {arg!r}: say which fields label which category, e.g. {rest}:label=hate "
                             f"(known folders with a default mapping: {', '.join(KNOWN_DATASETS)})")
        mapping = dict(KNOWN_DATASETS[folder_name])
    return DatasetSpec(path=data_file, labels=mapping, name=name or folder_name)


def data_root(root: str | Path | None = None) -> Path:
    """The shared datasets folder: `root`, else $MODERATION_DATA_ROOT, else ../shared/datasets from the repo root."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def default_dataset_specs(root: str | Path | None = None, names: Sequence[str] = DEFAULT_DATASETS) -> list[DatasetSpec]:
    """Specs of the default model's datasets (`DEFAULT_DATASETS`, mapped by `KNOWN_DATASETS`), or of `names`.

    Raises FileNotFoundError naming the folder (and $MODERATION_DATA_ROOT) when a dataset is absent.
    """
    base = data_root(root)
    specs = []
    for name in names:
        data_file = base / name / DATA_FILE
        if not data_file.is_file():
            raise FileNotFoundError(f"dataset {name!r} not found at {data_file}; point ${DATA_ROOT_ENV} (or --data-root) "
                                    f"at the folder holding {', '.join(n + '/' for n in names)}")
        specs.append(DatasetSpec(path=data_file, labels=dict(KNOWN_DATASETS[name]), name=name))
    return specs


@dataclass
class LabelledSet:
    """Posts with a (N, C) label matrix: 1.0 / 0.0, NaN = unknown for that category (masked, never a negative).

    posts: {"id", "text", "image"} with image an ABSOLUTE path or None; ids are `dataset/id`.
    sources: dataset name per row; splits: split per row; problems: {dataset: {reason: count}} of skipped rows.
    """

    posts: list[dict]
    labels: np.ndarray
    categories: list[str]
    sources: list[str]
    splits: list[str] = field(default_factory=list)
    problems: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float32).reshape(len(self.posts), len(self.categories))
        if len(self.sources) != len(self.posts):
            raise ValueError(f"{len(self.sources)} sources for {len(self.posts)} posts")
        if self.splits and len(self.splits) != len(self.posts):
            raise ValueError(f"{len(self.splits)} splits for {len(self.posts)} posts")

    def __len__(self) -> int:
        return len(self.posts)

    def slices(self) -> np.ndarray:
        """Per row "text", "image" or "image+text", by which fields are present."""
        out = []
        for p in self.posts:
            has_text, has_image = bool(p.get("text")), p.get("image") is not None
            out.append("image+text" if has_text and has_image else ("image" if has_image else "text"))
        return np.asarray(out, dtype=object)

    def subset(self, mask: Any) -> "LabelledSet":
        """Rows selected by a boolean mask (length N) or an index array; problems are carried over."""
        mask = np.asarray(mask)
        if mask.dtype == bool:
            if mask.shape != (len(self),):
                raise ValueError(f"mask has shape {mask.shape}, expected ({len(self)},)")
            index = np.nonzero(mask)[0]
        else:
            index = mask.astype(int).reshape(-1)
        return LabelledSet(posts=[self.posts[i] for i in index], labels=self.labels[index].copy(),
                           categories=list(self.categories), sources=[self.sources[i] for i in index],
                           splits=[self.splits[i] for i in index] if self.splits else [],
                           problems={k: dict(v) for k, v in self.problems.items()})

    def concat(self, other: "LabelledSet") -> "LabelledSet":
        """This set's rows followed by `other`'s (same categories; ids are kept as they are). Raises ValueError."""
        if list(other.categories) != list(self.categories):
            raise ValueError(f"cannot join sets of categories {self.categories} and {other.categories}")
        problems = {k: dict(v) for k, v in self.problems.items()}
        for name, counts in other.problems.items():
            for reason, n in counts.items():
                problems.setdefault(name, {})[reason] = problems.get(name, {}).get(reason, 0) + n
        return LabelledSet(posts=self.posts + other.posts, labels=np.concatenate([self.labels, other.labels]),
                           categories=list(self.categories), sources=self.sources + other.sources,
                           splits=(self.splits + other.splits) if self.splits and other.splits else [],
                           problems=problems)

    def known(self) -> np.ndarray:
        """(N, C) bool: which labels are known."""
        return ~np.isnan(self.labels)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per category: known labels and positives."""
        known = self.known()
        return {c: {"known": int(known[:, j].sum()), "positive": int(np.nansum(self.labels[:, j]))}
                for j, c in enumerate(self.categories)}


def post_texts(posts: Sequence[dict]) -> list[str | None]:
    """Each post's text as the scorer reads it (moderation.inputs.check_text), or None when it has none or it
    cannot be read (such a post is reported by the embedding pass)."""
    out: list[str | None] = []
    for p in posts:
        try:
            out.append(check_text(p.get("text"), DEFAULT_LIMITS)[0])
        except InputError:
            out.append(None)
    return out


def _label_value(value: Any) -> float | None:
    """0/1 (int, float, bool or their strings) -> 0.0/1.0; None/NaN/"" -> None (unknown). Raises ValueError."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return None
        if value in (0, 1):
            return float(value)
        raise ValueError(value)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        return 1.0 if value.strip().lower() in ("1", "true") else 0.0
    raise ValueError(value)


def _read_rows(spec: DatasetSpec, categories: list[str], splits: set[str], problems: Counter
               ) -> Iterable[tuple[dict, np.ndarray, str]]:
    folder = spec.path.parent.resolve()
    col = {c: j for j, c in enumerate(categories)}
    used = {f: [(col[c], neg) for c, neg in targets if c in col] for f, targets in spec.targets().items()}
    seen: set[str] = set()
    with open(spec.path, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                problems["bad_json"] += 1
                continue
            if not isinstance(row, dict):
                problems["not_an_object"] += 1
                continue
            split = row.get("split")
            if not isinstance(split, str) or not split:
                problems["missing_split"] += 1
                continue
            if split not in splits:
                continue
            raw_id = row.get("id")
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
                problems["missing_id"] += 1
                continue
            post_id = str(raw_id)
            if post_id in seen:
                problems["duplicate_id"] += 1
                continue
            text = row.get("text")
            if text is not None and not isinstance(text, str):
                problems["bad_text"] += 1
                continue
            text = text if text and text.strip() else None
            image = row.get("image")
            image_path = None
            if image not in (None, ""):
                if not isinstance(image, str) or "://" in image:
                    problems["bad_image_field"] += 1
                    continue
                full = (folder / image).resolve()
                if folder not in full.parents:
                    problems["image_path_escapes_folder"] += 1
                    continue
                if not full.is_file():
                    problems["image_not_found"] += 1
                    continue
                image_path = str(full)
            if text is None and image_path is None:
                problems["empty_post"] += 1
                continue
            values = np.full(len(categories), np.nan, dtype=np.float32)
            try:
                for field_name, targets in used.items():
                    v = _label_value(row.get(field_name))
                    if v is None:
                        continue
                    for j, neg_only in targets:
                        if neg_only and v == 1.0:
                            continue  # this field's positives say nothing about this category
                        # Several fields may map to one category: positive if any is, negative if all known are.
                        values[j] = v if np.isnan(values[j]) else max(values[j], v)
            except ValueError:
                problems["bad_label_value"] += 1
                continue
            if np.isnan(values).all():
                problems["no_known_label"] += 1
                continue
            seen.add(post_id)
            yield {"id": f"{spec.name}/{post_id}", "text": text, "image": image_path}, values, split


def load_labelled(specs: list[DatasetSpec], categories: list[str], splits: str | set[str]) -> LabelledSet:
    """Load the rows of `splits` (e.g. "train" or {"val"}) of every dataset, labels aligned to `categories`.

    Labels a dataset does not give are NaN. Rows skipped as malformed are counted per dataset and reason,
    reported in one DatasetWarning and kept in `.problems`. Raises ValueError for duplicate dataset names,
    or when a dataset labels none of `categories`.
    """
    categories = [normalize_category(c) for c in categories]
    wanted = {splits} if isinstance(splits, str) else set(splits)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be unique (they prefix ids): {names}; rename one with PATH@NAME")
    posts: list[dict] = []
    labels: list[np.ndarray] = []
    sources: list[str] = []
    row_splits: list[str] = []
    problems: dict[str, dict[str, int]] = {}
    for spec in specs:
        if not spec.categories() & set(categories):
            raise ValueError(f"dataset {spec.name!r} labels {sorted(spec.categories())}, none of the model's "
                             f"categories {categories}")
        counter: Counter = Counter()
        for post, values, split in _read_rows(spec, categories, wanted, counter):
            posts.append(post)
            labels.append(values)
            sources.append(spec.name)
            row_splits.append(split)
        if counter:
            problems[spec.name] = dict(counter)
    if problems:
        detail = "; ".join(f"{name}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(c.items()))
                           for name, c in problems.items())
        warnings.warn(f"skipped malformed rows ({detail})", DatasetWarning, stacklevel=2)
    matrix = np.stack(labels) if labels else np.zeros((0, len(categories)), dtype=np.float32)
    return LabelledSet(posts=posts, labels=matrix, categories=categories, sources=sources, splits=row_splits,
                       problems=problems)
