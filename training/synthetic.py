"""Synthetic training posts from templates: direct threats to a person (violence) and the everyday violent idioms,
games and news that are not threats.

The shared data label violence thinly (Gab `cv`, Latent Hatred `threatening`, ETHOS `violence`) and hardly ever
as a direct threat to one person ("I will find you and kill you"). These templates fill that gap for training
only; they are never used to measure the model (the functional suite in eval/functional/ is written apart and
checked to share no text with them: `tests/training/test_synthetic.py`). docs/training.md documents them.

Labels: a threat is `violence` 1 and `offensive` 1 (OLID, behind TweetEval offensive, counts threats as
offensive); a threat against a group for who they are is `hate` 1 too, a threat against a person leaves `hate`
unknown. A non-threat (idiom, game, sport, news, cooking) is 0 for all three categories.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from pathlib import Path
from typing import Iterable


NAME = "synthetic_threats"
#: Label mapping for moderation.datasets.DatasetSpec.
LABELS = {"violence": "violence", "offensive": "offensive", "hate": "hate"}

_VICTIM = ["you", "u", "ya", "your whole family", "your kids", "your wife", "your husband", "your brother",
           "that bitch", "that guy", "him", "her", "the landlord", "my boss", "my ex", "the mayor", "the judge",
           "the referee", "my neighbor", "the teacher"]
_SECOND = ["you", "u", "ya"]
_ACT = ["kill", "murder", "shoot", "stab", "strangle", "gut", "burn", "hang", "beat to death", "slit the throat of",
        "put a bullet in", "bury", "end", "cut up", "run over", "choke out", "smash the skull of", "break every bone of"]
_INTENT = ["I will", "I'm going to", "im gonna", "I swear I'll", "watch me", "I promise I will", "one day I will",
           "tonight I'm going to", "I'm coming to", "I am going to", "next time I see you I'll", "mark my words, I will"]
_CONDITIONAL = ["if you post that again", "if you come near my house", "if you touch my car again",
                "if you don't pay me back", "if I ever see you again", "if you show up tomorrow",
                "if you keep talking", "if you call the cops"]
_THREAT_SHAPES = [
    "{intent} {act} {victim}",
    "{intent} {act} {victim} {cond}",
    "{cond} {intent_lc} {act} {victim}",
    "{intent} find {second} and {act} {second}",
    "i know where {second} live. {intent_lc} {act} {second}",
    "{victim} will be dead by friday, {intent_lc} make sure of it",
    "{second} better watch your back, {intent_lc} {act} {second}",
    "sleep with one eye open, {intent_lc} {act} {second}",
    "{second} are dead. {intent} {act} {second}",
    "say that again and {intent_lc} {act} {second}",
]
#: threat data "v2" (--threat-data v2): more ways of threatening one person, several without a killing verb, so
#: that the violence head learns intent and target rather than a verb list.
_THREAT_SHAPES_V2 = [
    "{second} won't live to see next week",
    "enjoy your last days, {victim}",
    "{intent} make sure {second} never walk again",
    "{intent} put {victim} in the hospital {cond}",
    "there's a bullet with your name on it",
    "{intent} wait outside your work and {act} {second}",
    "{victim} is going to get what's coming, {intent_lc} {act} them",
    "keep it up and {second}'ll end up in a ditch",
    "{intent} hunt {second} down and {act} {second}",
    "count your days {second} little rat",
    "{cond} {second}'ll be found in pieces",
    "{intent} show up at your door and {act} {second}",
    "nobody will find your body when I'm done with {second}",
    "i've got a knife and your address, {second} know what comes next",
    "{intent} make {victim} bleed",
    "run while {second} can, {intent_lc} {act} {second}",
]
#: sampling rates of the person-directed threat combinations: v1's shapes, v2's added shapes
_PERSON_RATE = 0.0006
_PERSON_RATE_V2 = 0.0009
VERSIONS = ("v1", "v2")

_GROUP = ["muslims", "jews", "immigrants", "gays", "black people", "mexicans", "refugees", "women", "trans people",
          "asians", "christians", "arabs"]
_GROUP_THREAT = [
    "we should {act} all the {group}", "someone needs to {act} every last one of the {group}",
    "time to grab our guns and {act} the {group}", "{intent_lc} {act} any of the {group} I see",
    "the {group} will all be shot when the day comes", "line the {group} up and {act} them",
]

# Not threats: violent words in idioms, games, sport, cooking, news and self-talk.
_IDIOMS = [
    "this workout is killing me", "I could kill for a coffee right now", "we killed it at the show tonight",
    "my feet are murdering me after that hike", "shoot me an email when you get a chance",
    "break a leg at the audition tomorrow", "I'm going to kill this exam", "she absolutely slayed that presentation",
    "the traffic today was murder", "you're killing me with these puns", "I'll kill the process and restart the server",
    "let's shoot some hoops after work", "that comedian killed, I was crying laughing", "gonna smash this leg day",
    "I'm dead, that video is hilarious", "the suspense is killing me", "we need to kill two birds with one stone",
    "my phone battery is dying again", "I'm going to beat you at chess tonight", "he crushed the interview",
    "this heat is going to be the death of me", "I'd murder a pizza right now", "the new update killed my laptop",
    "I'm going to strangle this spreadsheet", "I'll fight you for the last slice lol", "that bass drop hits hard",
    "stab the potatoes with a fork before baking", "cut the onions and burn the garlic slightly for flavour",
    "I will destroy you at mario kart", "we slaughtered them 5-0 in the final", "the band blew up overnight",
    "she shot the photos for the wedding", "the ref killed the game with that call", "my boss will kill me if I'm late",
    "mom is going to murder me when she sees my grades", "I nearly died laughing at the meeting",
]
_GAMES = ["I finally killed the last boss", "my character stabbed the dragon in the final level",
          "we wiped the whole enemy squad in one round", "headshot from across the map, so satisfying",
          "I keep dying in the water level", "the zombies killed me again", "got a triple kill in ranked"]
_NEWS = [
    "police say two people were shot outside a bar downtown last night",
    "a man was stabbed during a robbery on main street, police are asking for witnesses",
    "the suspect in the bombing was arrested this morning",
    "three people were killed when a gunman opened fire at the mall",
    "officials confirm the explosion at the plant killed four workers",
    "the trial of the man accused of murdering his neighbour begins today",
    "vigil tonight for the victims of the shooting, please come",
    "prayers for the families of those killed in the attack",
    "police have charged a teenager with attempted murder after the knife attack",
    "the documentary looks at why mass shootings keep happening",
]
_NEWS_PLACES = ["", " in Ohio", " in Manchester", " near the station", " in the city centre", " in Texas"]


def _person_threats(rng: random.Random, shapes: list[str], rate: float) -> list[tuple[str, dict]]:
    out = []
    for shape, intent, act, victim, second, cond in itertools.product(
            shapes, _INTENT, _ACT, _VICTIM, _SECOND, _CONDITIONAL):
        if rng.random() > rate:  # a sample of the combinations, not all
            continue
        text = shape.format(intent=intent, intent_lc=intent[0].lower() + intent[1:], act=act, victim=victim,
                            second=second, cond=cond)
        out.append((text, {"violence": 1, "offensive": 1, "hate": None}))
    return out


def _threats(rng: random.Random, version: str = "v1") -> list[tuple[str, dict]]:
    out = _person_threats(rng, _THREAT_SHAPES, _PERSON_RATE)
    for shape, intent, act, group in itertools.product(_GROUP_THREAT, _INTENT, _ACT, _GROUP):
        if rng.random() > 0.025:
            continue
        text = shape.format(intent_lc=intent[0].lower() + intent[1:], act=act, group=group)
        out.append((text, {"violence": 1, "offensive": 1, "hate": 1}))
    if version == "v2":
        out += _person_threats(random.Random(rng.random()), _THREAT_SHAPES_V2, _PERSON_RATE_V2)
    return out


def _benign(rng: random.Random) -> list[tuple[str, dict]]:
    zero = {"violence": 0, "offensive": 0, "hate": 0}
    out = []
    prefixes = ["", "lol ", "honestly ", "ok ", "ugh ", "omg "]
    suffixes = ["", "!", " haha", " 😂", "...", " tbh"]
    for base in _IDIOMS + _GAMES:
        for p, s in itertools.product(prefixes, suffixes):
            if rng.random() < 0.5:
                out.append((p + base + s, dict(zero)))
    for base, place in itertools.product(_NEWS, _NEWS_PLACES):
        out.append((base.replace(" downtown", place or " downtown") if place else base, dict(zero)))
    return out


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


#: A template post whose word set overlaps an evaluation text's by this much (Jaccard) or more is left out.
NEAR_DUPLICATE = 0.6


def near_copy(words: frozenset[str], others: Iterable[frozenset[str]]) -> bool:
    """Whether a text's word set (`_words`) is within NEAR_DUPLICATE (Jaccard) of any of `others` (non-empty)."""
    return any(len(words & h) / len(words | h) >= NEAR_DUPLICATE for h in others)


def synthetic_rows(seed: int = 0, exclude: Iterable[str] = (), version: str = "v1") -> list[dict]:
    """The synthetic posts (deduplicated), each with a stable id, labels and a train (85%) / val (15%) split.

    exclude: evaluation texts (the functional suite) that no synthetic post may repeat or nearly repeat
    (word-set Jaccard >= NEAR_DUPLICATE), so that the suite measures behaviour learnt, not templates recalled.
    version: "v1" (the templates of the shipped model) or "v2" (v1 plus ~680 posts from _THREAT_SHAPES_V2).
    """
    if version not in VERSIONS:
        raise ValueError(f"threat-data version must be one of {VERSIONS}, got {version!r}")
    rng = random.Random(seed)
    return to_rows(_threats(rng, version) + _benign(rng), exclude, prefix="syn")


def to_rows(posts: Iterable[tuple[str, dict]], exclude: Iterable[str] = (), prefix: str = "syn") -> list[dict]:
    """Template posts as dataset rows: deduplicated, none within NEAR_DUPLICATE (word-set Jaccard) of an `exclude`
    text, each with a stable id `{prefix}-<sha1>` and a train (85%) / val (15%) split from the hash of its text."""
    rows, seen = [], set()
    held_out = [w for w in (_words(t) for t in exclude) if w]
    for text, labels in posts:
        key = " ".join(text.lower().split())
        words = _words(text)
        if key in seen or near_copy(words, held_out):
            continue
        seen.add(key)
        digest = hashlib.sha1(key.encode()).hexdigest()
        split = "val" if int(digest[:4], 16) % 100 < 15 else "train"
        rows.append({"id": f"{prefix}-{digest[:12]}", "text": text, "split": split, **labels})
    return rows


def functional_texts() -> list[str]:
    """The functional suite's texts (eval/functional/cases.jsonl, read and checked by its own loader), which the
    templates must not repeat. (Imported here: the suite's module loads the scorer, and the recipe's CLI, which
    reads this package's template versions, must stay light at import.)"""
    from eval.functional.suite import CASES_PATH, load_cases

    if not CASES_PATH.is_file():
        return []
    return [case.text for case in load_cases(CASES_PATH)]


def write_synthetic(path: str | Path, seed: int = 0, version: str = "v1") -> Path:
    """Write the synthetic posts (none near a functional-suite case) as a dataset JSONL file; returns its path."""
    return write_rows(path, synthetic_rows(seed, exclude=functional_texts(), version=version))


def write_rows(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write dataset rows as a JSONL file (its folder made if missing); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
