"""Synthetic stance posts: real hate speech (CONAN's training split) quoted inside a frame that rejects it, reports
it, or endorses it. The same hateful sentence appears with both labels, so only the frame can tell them apart:
this teaches what a post *does* with a hateful sentence, not what it is about.

Why: the shared data have counter-speech (CONAN counter-narratives, Qian interventions) that answers hate without
quoting it, and hate that is never quoted. A model trained on them learns that a hateful sentence inside a post
means hate, so counter-speech that quotes or names the hate it rejects is held. These rows pair each quoted
sentence with a rejecting or reporting frame (hate 0, offensive unknown: a rejection may itself be rude; violence 0,
or unknown with `benign_violence=None`) and with an endorsing frame (hate 1, offensive 1, violence unknown: CONAN's
own labels for its hate speech).

Only CONAN's `train` split is quoted, so its val and test hate speech and counter-narratives stay unseen. The
frames were written for this module without reading the functional suite (eval/functional/), and every generated
post is checked against the suite's texts like the threat templates (training.synthetic.NEAR_DUPLICATE). Training
and validation only; never measured on. docs/training.md documents the mapping.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Iterable

from training.synthetic import _words, functional_texts, near_copy

NAME = "synthetic_stance"
#: Label mapping for moderation.datasets.DatasetSpec (the row fields are the category names).
LABELS = {"hate": "hate", "offensive": "offensive", "violence": "violence"}
#: Quoted sentences longer than this (characters) are skipped: a frame around a paragraph reads unnaturally.
MAX_QUOTE_CHARS = 160

#: The poster rejects the quoted sentence (counter-speech that quotes what it answers).
REJECT = [
    'Someone in my replies wrote "{q}" and no, that is bigotry, plain and simple.',
    'People who post things like "{q}" should be ashamed of themselves.',
    'Reported a comment that said "{q}". This kind of thing has no place here.',
    '"{q}" is not an opinion, it is prejudice, and I will keep calling it out.',
    'My uncle said "{q}" at dinner and I told him that is a hateful stereotype.',
    'Saying "{q}" does not make you brave. It makes you part of the problem.',
    'Stop spreading lies like "{q}". The facts say otherwise.',
    'Whenever I read "{q}" I think about my friends who have to hear this every day. It is wrong.',
    'Imagine believing "{q}" in this day and age. Do better.',
    'Claims like "{q}" fall apart the moment you look at the evidence.',
    'Teaching my kids why "{q}" is a hurtful, false thing to say.',
    'The post said "{q}". I disagree completely and I stand with the people it targets.',
]
#: The poster reports someone else's words without endorsing them (news, moderation, research).
REPORT = [
    'A councillor has been suspended after posting "{q}" on social media.',
    'The study collected posts such as "{q}" to measure online hate.',
    'Police are investigating a leaflet that read "{q}".',
    'The moderator removed a thread titled "{q}" and banned the account.',
    'Court hears the defendant wrote "{q}" days before the attack.',
]
#: The poster endorses the quoted sentence (hate, whatever the quotation marks).
ENDORSE = [
    '"{q}" Finally someone said it.',
    'My uncle said "{q}" and honestly he is right.',
    '{q} Exactly what I have been saying for years.',
    'Everyone is thinking it: "{q}"',
    'Retweet if you agree: {q}',
    '"{q}" This. So much this.',
    'Not sorry: {q}',
    'They call it hate but "{q}" is just the truth.',
    'Couldn\'t have put it better: "{q}"',
    '{q} And nobody will change my mind.',
]


def conan_train_hate(conan_path: str | Path) -> list[tuple[str, str]]:
    """(id, text) of the hate speech in CONAN's train split, short enough to quote."""
    out = []
    with open(conan_path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            text = " ".join(str(row.get("text") or "").split())
            if row.get("kind") == "hate_speech" and row.get("split") == "train" and 0 < len(text) <= MAX_QUOTE_CHARS:
                out.append((str(row["id"]), text))
    return out


def stance_rows(conan_path: str | Path, n_quotes: int = 1500, seed: int = 0, exclude: Iterable[str] = (),
                benign_violence: int | None = 0) -> list[dict]:
    """Two posts per sampled quote: one rejecting or reporting it (hate 0), one endorsing it (hate 1).

    `benign_violence` is the rejecting or reporting post's violence label: 0, or None (unknown, masked): the
    reporting frames name attacks and police, and 0 there may teach the violence head that violent words in a
    post are benign.

    Both posts of a quote share a split (85% train / 15% val by the quote's id), so a quote seen in training never
    judges the early stopping. Posts within word-Jaccard NEAR_DUPLICATE of an `exclude` text are left out.
    """
    rng = random.Random(seed)
    quotes = conan_train_hate(conan_path)
    if not quotes:
        raise ValueError(f"{conan_path}: no CONAN hate speech in the train split to quote")
    rng.shuffle(quotes)
    held_out = [w for w in (_words(t) for t in exclude) if w]
    rows = []
    for qid, q in quotes[:n_quotes]:
        split = "val" if int(hashlib.sha1(qid.encode()).hexdigest()[:4], 16) % 100 < 15 else "train"
        benign_frame = rng.choice(REJECT if rng.random() < 0.75 else REPORT)
        pairs = [(benign_frame, {"hate": 0, "offensive": None, "violence": benign_violence}),
                 (rng.choice(ENDORSE), {"hate": 1, "offensive": 1, "violence": None})]
        for frame, labels in pairs:
            text = frame.format(q=q.rstrip(".") if '"{q}".' in frame else q)  # no '."."'
            if near_copy(_words(text), held_out):
                continue
            digest = hashlib.sha1(text.encode()).hexdigest()
            rows.append({"id": f"stance-{digest[:12]}", "text": text, "split": split, "quote_id": qid, **labels})
    return rows


def write_stance(path: str | Path, conan_path: str | Path, seed: int = 0, n_quotes: int = 1500,
                 benign_violence: int | None = 0) -> Path:
    """Write the stance posts (none near a functional-suite case) as a dataset JSONL file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in stance_rows(conan_path, n_quotes, seed, exclude=functional_texts(), benign_violence=benign_violence):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
