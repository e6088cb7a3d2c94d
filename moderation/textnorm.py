"""Normalising a post's text before it is scored, so that look-alike characters cannot dodge the model.

"ｙｏｕ ａｒｅ ａｎ ｉｄｉｏｔ" (fullwidth letters) and "уоu аrе аn іdіоt" (Cyrillic letters that look Latin) read
as the plain sentence to a person, but to the tokenizer they are other characters: the model scored them safe and
the language detector called them Kannada and Ukrainian. `normalize_text`:

- applies Unicode NFKC (fullwidth and styled letters such as "𝐢𝐝𝐢𝐨𝐭", ligatures, superscripts -> plain ones);
- drops invisible format characters (zero-width spaces and joiners, soft hyphens, direction marks) inserted
  inside words;
- maps Cyrillic and Greek look-alikes to the Latin letter they imitate, in words that are written in Latin
  letters plus look-alikes (mixed-script words, or look-alike-only words in a text that is otherwise Latin).
  Real Cyrillic or Greek text is left alone: its words hold letters that imitate nothing ("привет", "γειά").

Case and accents are kept (the tokenizer handles case; accents carry meaning in other languages). The scorer
scores and identifies the language of the normalised text; the decision log keeps what the user sent.
Cost: docs/benchmarks.md ("Text normalisation").
"""

from __future__ import annotations

import re
import unicodedata

#: Look-alike letters of other scripts -> the Latin letter they imitate (lower case; upper-case look-alikes
#: are handled through their lower case). Not the whole Unicode confusables table: the Cyrillic and Greek
#: letters used to dodge filters in Latin-script text. Shared with moderation.termlists.
CONFUSABLES: dict[str, str] = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "һ": "h", "ո": "n", "ս": "u",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w", "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss",
}
#: Upper-case look-alikes that imitate an upper-case Latin letter (mapped keeping the case).
_UPPER = {"А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
          "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Α": "A", "Β": "B", "Ε": "E", "Η": "H", "Ι": "I", "Κ": "K",
          "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ζ": "Z"}
_WORD = re.compile(r"[^\W\d_]+")


def _latin(ch: str) -> bool:
    return ch.isascii() or "LATIN" in unicodedata.name(ch, "")


def _lookalike(ch: str) -> str | None:
    """The Latin letter `ch` imitates, in its case; None when it imitates none (a length-1 mapping only)."""
    if ch in _UPPER:
        return _UPPER[ch]
    mapped = CONFUSABLES.get(ch)
    return mapped if mapped is not None and len(mapped) == 1 else None


def normalize_text(text: str) -> str:
    """The text as scored: NFKC, invisible format characters dropped, look-alikes in Latin-script words mapped to
    Latin (see the module docstring). Plain ASCII text comes back unchanged (and costs one check)."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    if any(unicodedata.category(ch) == "Cf" for ch in text):
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    if text.isascii():
        return text
    words = [(m, _kind(m.group(0))) for m in _WORD.finditer(text)]
    # Letters of the text outside look-alike-only words: do they say the text is Latin?
    latin = sum(sum(_latin(c) for c in m.group(0)) for m, kind in words if kind == "mixed" or kind == "latin")
    other = sum(len(m.group(0)) for m, kind in words if kind == "other")
    text_is_latin = latin >= other
    out, last = [], 0
    for m, kind in words:
        if kind == "mixed" or (kind == "lookalike" and text_is_latin):
            out.append(text[last:m.start()])
            out.append("".join(_lookalike(c) or c for c in m.group(0)))
            last = m.end()
    out.append(text[last:])
    return "".join(out)


def _kind(word: str) -> str:
    """"latin" (Latin letters only), "mixed" (Latin letters and look-alikes), "lookalike" (look-alikes only),
    "other" (holds a letter of another script that imitates nothing)."""
    has_latin = has_lookalike = False
    for ch in word:
        if _latin(ch):
            has_latin = True
        elif _lookalike(ch) is not None:
            has_lookalike = True
        else:
            return "other"
    if has_latin and has_lookalike:
        return "mixed"
    return "lookalike" if has_lookalike else "latin"
