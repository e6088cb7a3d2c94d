"""Synthetic training posts from templates: statements about identity groups whose label turns on what the post
*does* with a hateful or a positive claim (asserts it, negates it, rejects someone else's use of it), plus neutral
and positive statements about groups.

Why: the shipped models hold counter-speech that names hate without quoting it ("calling X vermin is disgusting"),
negated hate ("X are not vermin") and neutral statements about groups for review, because the shared data pair a
group's name with hate far more often than with anything else, and have almost no negation. Each claim here occurs
with both labels: "X are vermin" is hate and "the idea that X are vermin is a lie" is not; "X are welcome here" is
not hate and "X will never be welcome here" is (a negated positive claim is an attack), so neither the group's name,
the hateful word nor the word "not" decides the label alone.

Labels: an asserted hateful claim or a negated positive one is `hate` 1, `offensive` 1 (CONAN's mapping of its hate
speech), `violence` unknown; every other post (negated or rejected hate, positive, neutral) is 0 for all three
(none contains profanity or a threat; v2: violence unknown). Reclaimed slurs are not covered (no slur appears in these templates).

Written on 2026-12-07 without reading the functional suite (eval/functional/) or scoring any model on them; any
post within word-Jaccard 0.6 of a suite case or a probe post (eval/probes/) is left out, as for the other
templates (training.synthetic). Training and validation only, never measured on; docs/training.md documents it.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Iterable

from training.synthetic import functional_texts, to_rows, write_rows

NAME = "synthetic_groups"
#: Label mapping for moderation.datasets.DatasetSpec.
LABELS = {"hate": "hate", "offensive": "offensive", "violence": "violence"}
#: v1: the benign posts are violence 0; v2: the same posts with the benign ones' violence unknown (v1 lowered the
#: real datasets' val violence ROC-AUC, 0.881 -> 0.859, and several of its hateful claims name danger: "a threat
#: to our children", "terrorists", "dangerous", so a 0 there may teach that such words are never violence).
VERSIONS = ("v1", "v2")
PROBES = Path(__file__).resolve().parents[1] / "eval" / "probes"

_GROUP = ["muslims", "jews", "christians", "hindus", "sikhs", "immigrants", "refugees", "black people",
          "white people", "asian people", "mexicans", "latinos", "women", "men", "gay people", "lesbians",
          "trans people", "bisexual people", "disabled people", "autistic people", "roma", "arabs",
          "chinese people", "indians", "africans", "catholics", "atheists", "old people", "migrants", "asylum seekers"]
_BAD = ["vermin", "parasites", "a disease", "a plague on this country", "animals", "subhuman", "filth", "trash",
        "criminals", "rapists", "terrorists", "a cancer", "less than human", "dirty", "stupid", "inferior",
        "dangerous", "disgusting", "worthless", "savages", "a burden on society", "born liars", "too dumb to vote",
        "ruining this country", "an invasion", "all the same", "a threat to our children", "mentally ill"]
_GOOD = ["human beings like the rest of us", "welcome here", "part of our community", "just as smart as anyone",
         "valued colleagues", "equal citizens", "good neighbours", "worthy of respect", "capable of anything",
         "fine people", "an asset to this country", "as trustworthy as anyone", "normal people living normal lives",
         "entitled to the same rights as everyone"]
_DENY = ["to live here", "the same rights as us", "to vote", "any respect", "to be treated like people",
         "to raise children", "jobs in this country", "to exist"]
_GRANT = ["the same rights as everyone", "respect", "to feel safe in their own homes", "a fair hearing",
          "to be treated with dignity", "equal pay"]

_HATE_SHAPES = [  # the poster asserts the hateful claim, or negates a positive one
    "{g} are {bad}.",
    "all {g} are {bad}",
    "honestly {g} are {bad} and everyone knows it",
    "i really do think {g} are {bad}",
    "let's be real, {g} are {bad}",
    "{g} are not {good}.",
    "{g} will never be {good}",
    "no matter what anyone says, {g} are not {good}",
    "{g} don't deserve {deny}",
    "{g} should not be allowed {deny_inf}",
]
_NOT_HATE_SHAPES = [  # negated or rejected hate, positive claims, rights granted
    "{g} are not {bad}.",
    "i don't think {g} are {bad} at all",
    "it is simply false that {g} are {bad}",
    "no, {g} are not {bad}, and saying so is ignorant",
    "{g} have never been {bad}",
    "the idea that {g} are {bad} is a lie",
    "calling {g} {bad} is disgusting and wrong",
    "stop saying {g} are {bad}. it is hate, plain and simple",
    "if you think {g} are {bad}, you have clearly never met any",
    "people who call {g} {bad} should take a long look in the mirror",
    "spreading the lie that {g} are {bad} hurts real people",
    "i'm tired of seeing posts that call {g} {bad}",
    "we have to speak up whenever someone claims {g} are {bad}",
    "my grandfather used to say {g} were {bad}. he was wrong, and he admitted it before he died",
    "{g} are {good}.",
    "proud to say that {g} are {good}",
    "whatever the trolls say, {g} are {good}",
    "{g} deserve {grant}",
    "hatred of {g} has no place in this town",
]
_NEUTRAL_SHAPES = [  # statements that only mention a group
    "my neighbours are {g} and they helped us move last weekend",
    "the council report counts how many {g} live in each district",
    "{g} make up about a tenth of the workforce here",
    "the documentary follows three {g} starting new jobs",
    "a survey asked {g} what they think of public transport",
    "our school has a support club for {g}",
    "the museum has a new exhibition on the history of {g} in this city",
    "a lot of {g} in my area volunteer at the food bank",
    "the podcast interviewed {g} about their first year at university",
    "{g} were asked about housing costs in the new poll",
]
#: draws per template shape
_PER_SHAPE = 70


def _fill(rng: random.Random, shape: str) -> str:
    deny = rng.choice(_DENY)
    slots = {"g": rng.choice(_GROUP), "bad": rng.choice(_BAD), "good": rng.choice(_GOOD), "deny": deny,
             "deny_inf": re.sub(r"^(any |the )", "", deny if deny.startswith("to ") else "to have " + deny),
             "grant": rng.choice(_GRANT)}
    text = shape.format(**slots)
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text  # half the posts start with a capital


def _posts(rng: random.Random, version: str = "v1") -> list[tuple[str, dict]]:
    hate = {"hate": 1, "offensive": 1, "violence": None}
    zero = {"hate": 0, "offensive": 0, "violence": 0 if version == "v1" else None}
    out = [(_fill(rng, shape), dict(hate)) for shape in _HATE_SHAPES for _ in range(_PER_SHAPE)]
    out += [(_fill(rng, shape), dict(zero)) for shape in _NOT_HATE_SHAPES + _NEUTRAL_SHAPES for _ in range(_PER_SHAPE)]
    return out


def probe_texts() -> list[str]:
    """The texts of the probe files (eval/probes/*.jsonl), which measure models blind: no template may repeat them."""
    texts = []
    for path in sorted(PROBES.glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts


def group_rows(seed: int = 0, exclude: Iterable[str] = (), version: str = "v1") -> list[dict]:
    """The synthetic group-statement posts (deduplicated), with stable ids and a train/val split.

    exclude: evaluation texts (the functional suite, the probes) that no post may repeat or nearly repeat.
    """
    if version not in VERSIONS:
        raise ValueError(f"group-data version must be one of {VERSIONS}, got {version!r}")
    return to_rows(_posts(random.Random(seed), version), exclude, prefix="grp")


def write_groups(path: str | Path, seed: int = 0, version: str = "v1") -> Path:
    """Write the group-statement posts (none near a functional-suite case or a probe) as a dataset JSONL file."""
    return write_rows(path, group_rows(seed, exclude=functional_texts() + probe_texts(), version=version))
