"""Synthetic training posts from templates: insults aimed at one person (offensive), and the posts that share their
words without insulting anyone (compliments, consolation, self-deprecation, talk about insults).

Every fine-tuned model so far has been borderline on a plain insult to a person ("You are an idiot." scored
offensive 0.115 on default-1d98ef45a285, below its review threshold): the shared data label offensive mostly on
tweets about public figures and groups (OLID), and Gab's `vo` is rare. These templates fill that gap for training
only, as training.synthetic does for threats; they are never used to measure the model and any post within
word-Jaccard 0.6 of a functional-suite case is left out (`tests/training/test_synthetic_insults.py`). They were
written after the functional suite's insult_person cases had been read (2026-12-07), so the suite's insult figure
for a model trained on them is not a blind measure: docs/training.md says so.

Labels: an insult to a person is `offensive` 1 (OLID's "targeted insult", individual target) and `violence` 0;
`hate` is unknown (an insult may or may not attack a protected group: none of these names one). A post that only
shares the vocabulary (a compliment, "you're not an idiot", "I'm such a fool, I locked my keys in", a remark about
name-calling) is 0 for all three categories.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Iterable

from training.synthetic import functional_texts, to_rows, write_rows

NAME = "synthetic_insults"
#: Label mapping for moderation.datasets.DatasetSpec.
LABELS = {"violence": "violence", "offensive": "offensive", "hate": "hate"}
VERSIONS = ("v1",)

_NOUN = ["idiot", "moron", "loser", "clown", "jerk", "fool", "dumbass", "asshole", "prick", "dipshit", "muppet",
         "dimwit", "dunce", "buffoon", "tosser", "wanker", "numpty", "nitwit", "bozo", "twat", "douchebag", "cretin"]
_ADJ = ["stupid", "pathetic", "worthless", "useless", "ugly", "dumb", "clueless", "miserable", "lazy", "gutless",
        "insufferable", "sad little", "brainless", "delusional", "incompetent", "smug"]
_YOU = ["you", "u", "@user you", "you really"]
_INSULT_SHAPES = [
    "{you} are a {adj} {noun}",
    "{you} are such a {noun}",
    "{you} are the biggest {noun} I know",
    "shut it, {adj} {noun}",
    "nobody asked, {noun}",
    "@user go away {noun}",
    "ok {noun}, keep embarrassing yourself",
    "imagine being as {adj2} as {you2}",
    "{you2} have the brains of a {thing}",
    "{you2}'re too {adj2} to get it",
    "{you2} are so {adj2} it hurts to read",
    "{noun}. that's all {you2} are",
    "my boss is a {adj} {noun}",
    "that referee is a {adj} {noun}",
    "{you2} {adj} {noun}, read before you reply",
    "congrats {you2} {noun}, {you2} ruined it",
]
_ADJ2 = ["stupid", "dumb", "pathetic", "clueless", "ignorant", "ugly", "thick", "annoying", "useless", "dense"]
_YOU2 = ["you", "u"]
_THING = ["goldfish", "rock", "potato", "brick", "doorknob", "sponge"]

_GOOD_ADJ = ["kind", "brilliant", "lovely", "talented", "hilarious", "generous", "smart", "brave"]
_GOOD_NOUN = ["friend", "person", "teacher", "artist", "legend", "human", "coworker", "neighbour"]
_BENIGN_SHAPES = [
    "{you} are a {good_adj} {good_noun}",
    "{you} are such a {good_adj} {good_noun}, thank you",
    "my boss is a {good_adj} {good_noun}",
    "{you2} are not a {noun}, {you2} just made a mistake",
    "don't call yourself a {noun}, {you2} are doing fine",
    "nobody thinks {you2} are a {noun}, relax",
    "I'm such a {self_noun}, I locked my keys in the car again",
    "I felt like a total {self_noun} walking into the wrong meeting",
    "calling people a {noun} online never changed anyone's mind",
    "he called me a {noun} and I just laughed it off",
    "the word {noun} comes from an old word for someone who talks too much",
    "my little brother called the cat a {self_noun} and now everyone does",
]
_SELF_NOUN = ["idiot", "fool", "clown", "goof", "dork", "muppet", "numpty", "nitwit"]
#: draws per template shape
_PER_SHAPE = 70


def _fill(rng: random.Random, shape: str, slots: dict[str, list[str]]) -> str:
    text = shape.format(**{k: rng.choice(v) for k, v in slots.items()})
    return re.sub(r"\ba (?=[aeio]|ugly)", "an ", text)  # "an idiot", "an ugly", but "a useless"


def _posts(rng: random.Random) -> list[tuple[str, dict]]:
    insult = {"offensive": 1, "violence": 0, "hate": None}
    zero = {"offensive": 0, "violence": 0, "hate": 0}
    bad = {"you": _YOU, "adj": _ADJ, "noun": _NOUN, "adj2": _ADJ2, "you2": _YOU2, "thing": _THING}
    good = {"you": _YOU, "good_adj": _GOOD_ADJ, "good_noun": _GOOD_NOUN, "noun": _NOUN, "you2": _YOU2,
            "self_noun": _SELF_NOUN}
    # a seeded sample of each shape's fillings (shapes with few fillings repeat and are deduplicated later)
    out = [(_fill(rng, shape, bad), dict(insult)) for shape in _INSULT_SHAPES for _ in range(_PER_SHAPE)]
    out += [(_fill(rng, shape, good), dict(zero)) for shape in _BENIGN_SHAPES for _ in range(_PER_SHAPE)]
    return out


def insult_rows(seed: int = 0, exclude: Iterable[str] = (), version: str = "v1") -> list[dict]:
    """The synthetic insult posts and their contrasts (deduplicated), with stable ids and a train/val split.

    exclude: evaluation texts (the functional suite) that no post may repeat or nearly repeat (training.synthetic).
    """
    if version not in VERSIONS:
        raise ValueError(f"insult-data version must be one of {VERSIONS}, got {version!r}")
    return to_rows(_posts(random.Random(seed)), exclude, prefix="ins")


def write_insults(path: str | Path, seed: int = 0, version: str = "v1") -> Path:
    """Write the insult posts (none near a functional-suite case) as a dataset JSONL file; returns its path."""
    return write_rows(path, insult_rows(seed, exclude=functional_texts(), version=version))
