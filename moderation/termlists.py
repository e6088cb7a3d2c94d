"""Term and pattern lists: rules of the moderation policy that act on words, whatever the model says.

Trust-and-safety teams keep lists of terms (slurs, threats, a platform's known scams) that must always be
removed or reviewed, and lists of known false positives (a platform's own names, a film title) that must not be.
A list is a small versioned JSON file referenced from the policy (`"term_lists": ["lists/slurs-en.json"]`,
paths relative to the policy file):

    {"format": "moderation-term-list", "format_version": 1, "name": "threats-en", "category": "violence",
     "action": "block", "description": "explicit threats",
     "terms": ["kill you", "shoot up the*"], "patterns": ["\\bi(?:'ll| will) (?:find|hunt) you\\b"]}

`action` is "block", "review" or "allow". `terms` are words or phrases matched on word boundaries; a term ending
in "*" also matches words that start with it ("shoot up the*": "shoot up theatre"). `patterns` are regular
expressions (Python `re`), a separate kind for what terms cannot say; they run on the text after NFKC and case
folding (write them in lower case), without the obfuscation folding below. `version` is derived from the content
("tl-" + 12 hex digits of its hash), so it changes whenever the list does and a result names the exact list that
decided it. A file that is not such a list, a list with no terms and no patterns, an empty term or a regular
expression that does not compile is refused at load with an error naming the file (never a silent empty list).

Matching folds what people type to dodge lists, the same way for the list's terms and for the post:

- Unicode NFKC and case folding, accents stripped ("Ｋｉｌｌ", "kíll" -> "kill");
- confusable letters (Cyrillic and Greek look-alikes: "кіll" -> "kill");
- leetspeak inside words that hold a letter (0 o, 1 i, 3 e, 4 a, 5 s, 7 t, @ a, $ s, ! i, | l: "k1ll", "$hit");
  a number alone ("2024") is left alone;
- repeated letters (runs folded to one letter: "kiiilll" matches "kill"; the price: "shoot" and "shot" fold to one);
- inserted spaces or dots: single letters spaced out ("k i l l", "k.i.l.l") and words cut by one dot, dash,
  underscore or star ("ki.ll", "ki-ll") are also read joined.

All terms of all lists sit in one Aho-Corasick automaton (pyahocorasick): one pass over the post, whatever the
number of terms (10k terms: docs/benchmarks.md). Patterns are matched one by one.

    matcher = TermMatcher([TermList.load("threats-en.json")])
    matcher.match("I will k.i.l.l you")   # -> [TermMatch(list="threats-en", term="kill you", span=(7, 21), ...)]

Precedence in the policy (moderation.policy.Policy.decide): a hash match blocks; a block or review list gives
its category at least its action (stronger than the model: the model can only raise a review list's match to
block); then the model's thresholds; an allow list comes last: it never lowers what the model or a hash decided,
it only cancels block and review term matches that lie inside one of its matches ("kill bill" on an allow list
keeps "kill" from matching in "watching Kill Bill tonight").
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from moderation.schema import TermMatch, normalize_category
from moderation.textnorm import CONFUSABLES

FORMAT = "moderation-term-list"
FORMAT_VERSION = 1
TERM_ACTIONS: tuple[str, ...] = ("block", "review", "allow")

# Look-alike letters of other scripts -> the Latin letter they imitate (after case folding).
_CONFUSABLES = CONFUSABLES
# Leetspeak: only inside a word that holds at least one letter, so numbers stay numbers.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i",
                       "|": "l"})
# A word: letters and digits, plus the symbols leetspeak uses inside words.
_WORD = re.compile(r"(?:[^\W_]|[@$!|])+")
_REPEATS = re.compile(r"(.)\1+")
# One of these between two words (no space) may be an obfuscating cut: "ki.ll", "ki-ll", "f_u_c_k".
_CUTS = frozenset(".-_*~·•'")


class TermListError(ValueError):
    """A term list file is invalid (the message names the file and what is wrong)."""


# --- folding ------------------------------------------------------------------------------------------------

def fold_chars(text: str) -> tuple[str, list[int]]:
    """NFKC, case folding, accents stripped, confusables mapped: the folded text and, for each of its characters,
    the index of the character of `text` it came from (so spans map back to what the user wrote)."""
    if text.isascii():
        return text.lower(), list(range(len(text)))
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        piece = unicodedata.normalize("NFKC", ch).casefold()
        if not piece.isascii():
            piece = "".join(c for c in unicodedata.normalize("NFKD", piece) if not unicodedata.combining(c))
            piece = "".join(_CONFUSABLES.get(c, c) for c in piece)
        out.append(piece)
        origin.extend([i] * len(piece))
    return "".join(out), origin


def _words(text: str) -> tuple[list[str], list[tuple[int, int]], str, list[int]]:
    """The canonical words of `text` and their spans in it, plus the folded text and its origin map."""
    folded, origin = fold_chars(text)
    raw: list[str] = []
    spans: list[tuple[int, int]] = []
    for m in _WORD.finditer(folded):
        start, end = m.span()
        w = m.group()
        if not w.isalnum():  # holds leetspeak symbols
            while start < end and folded[start] in "!|":  # "kill!" is an exclamation, not "killi"
                start += 1
            while end > start and folded[end - 1] in "!|":
                end -= 1
            w = folded[start:end]
            if not w:
                continue
        if not w.isalpha() and any(c.isalpha() for c in w):  # leetspeak only in words that hold a letter
            w = w.translate(_LEET)
        raw.append(w)
        spans.append((origin[start], origin[end - 1] + 1))
    # Repeated letters folded in one pass over all the words (a space separates them, so none merge).
    words = _REPEATS.sub(r"\1", " ".join(raw)).split(" ") if raw else []
    return words, spans, folded, origin


def _joined(words: list[str], spans: list[tuple[int, int]], text: str) -> tuple[list[str], list[tuple[int, int]]] | None:
    """The words with obfuscating cuts undone: runs of 3+ single letters ("k i l l") and words cut by one dot,
    dash, underscore or star ("ki.ll") joined; None when there is nothing to join."""
    out_w: list[str] = []
    out_s: list[tuple[int, int]] = []
    changed = False
    i, n = 0, len(words)
    while i < n:
        j = i
        while j + 1 < n and spans[j + 1][0] - spans[j][1] == 1 and text[spans[j][1]] in _CUTS:
            j += 1
        if j == i:  # single letters spaced out: at least 3, gaps of at most 2 characters
            while j + 1 < n and len(words[j]) == 1 and len(words[j + 1]) == 1 and spans[j + 1][0] - spans[j][1] <= 2:
                j += 1
            if j - i < 2:
                j = i
        if j > i:
            out_w.append(_REPEATS.sub(r"\1", "".join(words[i:j + 1])))
            out_s.append((spans[i][0], spans[j][1]))
            changed = True
        else:
            out_w.append(words[i])
            out_s.append(spans[i])
        i = j + 1
    return (out_w, out_s) if changed else None


def canonical_term(term: str) -> str:
    """A term's key as matched: its canonical words joined by single spaces ("" when it has no word)."""
    return " ".join(_words(term)[0])


# --- lists --------------------------------------------------------------------------------------------------

@dataclass
class TermList:
    """One list: its name, category, action, terms and regular-expression patterns. `version` is derived from the
    content. Construct with `from_dict` / `load` (validated)."""

    name: str
    category: str
    action: str
    terms: list[str]
    patterns: list[str] = field(default_factory=list)
    description: str = ""
    path: Path | None = None
    compiled: list[re.Pattern] = field(default_factory=list, repr=False)

    @functools.cached_property
    def version(self) -> str:
        blob = json.dumps({"n": self.name, "c": self.category, "a": self.action, "t": sorted(self.terms),
                           "p": self.patterns}, sort_keys=True, ensure_ascii=False).encode()
        return "tl-" + hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name, "category": self.category,
                "action": self.action, "version": self.version, "description": self.description,
                "terms": list(self.terms), "patterns": list(self.patterns)}

    def describe(self) -> dict[str, Any]:
        """What `moderation info` shows: name, path, version, category, action and sizes."""
        return {"name": self.name, "path": str(self.path) if self.path else None, "version": self.version,
                "category": self.category, "action": self.action, "terms": len(self.terms),
                "patterns": len(self.patterns)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<term list>", path: Path | None = None) -> "TermList":
        """Validate a parsed list. Raises TermListError naming `source` and what is wrong."""
        def bad(msg: str) -> TermListError:
            return TermListError(f"{source}: {msg}")

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"not a term list (a JSON object with \"format\": \"{FORMAT}\")")
        if data.get("format_version") != FORMAT_VERSION:
            raise bad(f"format_version {data.get('format_version')!r} is not supported (this version reads "
                      f"{FORMAT_VERSION})")
        unknown = sorted(set(data) - {"format", "format_version", "name", "category", "action", "version",
                                      "description", "terms", "patterns"})
        if unknown:
            raise bad(f"unknown fields {unknown}")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad("'name' must be a non-empty string")
        category = data.get("category")
        if not isinstance(category, str) or not category.strip():
            raise bad("'category' must be a non-empty string (e.g. \"hate\")")
        action = data.get("action")
        if action not in TERM_ACTIONS:
            raise bad(f"'action' must be one of {list(TERM_ACTIONS)}, got {action!r}")
        terms, patterns = data.get("terms", []), data.get("patterns", [])
        for key, values in (("terms", terms), ("patterns", patterns)):
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise bad(f"'{key}' must be a list of strings")
        if not terms and not patterns:
            raise bad("the list has no terms and no patterns")
        for k, term in enumerate(terms):
            if not canonical_term(term.rstrip("*")):
                raise bad(f"term {k} ({term!r}) has no letters or digits to match")
        compiled = []
        for k, pattern in enumerate(patterns):
            if not pattern:
                raise bad(f"pattern {k} is empty")
            try:
                compiled.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise bad(f"pattern {k} ({pattern!r}) is not a valid regular expression: {exc}") from None
        out = cls(name=name.strip(), category=normalize_category(category), action=action, terms=list(terms),
                  patterns=list(patterns), description=str(data.get("description", "")), path=path,
                  compiled=compiled)
        declared = data.get("version")
        if declared is not None and declared != out.version:
            raise bad(f"'version' says {declared!r} but the content is {out.version!r}: the list was edited; remove "
                      "'version' or set it to the new one")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TermList":
        """Read a list file. Raises TermListError (missing, unreadable or invalid), naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TermListError(f"term list file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TermListError(f"{path}: not a readable JSON term list: {exc}") from None
        return cls.from_dict(data, str(path), path)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


# --- matching -----------------------------------------------------------------------------------------------

class TermMatcher:
    """All terms of `lists` in one Aho-Corasick automaton, plus their patterns; `match(text)` finds them.

    Raises TermListError when two lists share a name (results name lists by name).
    """

    def __init__(self, lists: Sequence[TermList]) -> None:
        import ahocorasick

        names = [tl.name for tl in lists]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise TermListError(f"two term lists are named {dupes}: list names must be unique")
        self.lists = list(lists)
        self._versions = [tl.version for tl in self.lists]
        self._automaton = ahocorasick.Automaton()
        # key (" word word " or " word" for a prefix term) -> [(list index, term as written)]
        keys: dict[str, list[tuple[int, str]]] = {}
        for li, tl in enumerate(self.lists):
            for term in tl.terms:
                prefix = term.endswith("*")
                key = " " + canonical_term(term.rstrip("*")) + ("" if prefix else " ")
                keys.setdefault(key, []).append((li, term))
        for key, entries in keys.items():
            self._automaton.add_word(key, (len(key), entries))
        self._empty = not keys
        if not self._empty:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return sum(len(tl.terms) + len(tl.patterns) for tl in self.lists)

    def describe(self) -> list[dict[str, Any]]:
        return [tl.describe() for tl in self.lists]

    def _match_words(self, words: list[str], spans: list[tuple[int, int]], text: str,
                     found: dict[tuple, TermMatch]) -> None:
        if not words or self._empty:
            return
        stream = " " + " ".join(words) + " "
        starts = []
        pos = 1
        for w in words:
            starts.append(pos)
            pos += len(w) + 1
        for end, (size, entries) in self._automaton.iter(stream):
            first = bisect.bisect_right(starts, end - size + 2) - 1
            last = bisect.bisect_right(starts, end - 1) - 1
            s, e = spans[first][0], spans[last][1]
            for li, term in entries:
                tl, version = self.lists[li], self._versions[li]
                found.setdefault((li, term, s, e), TermMatch(tl.name, version, tl.category, tl.action, "term",
                                                            term, (s, e), text[s:e]))

    def match(self, text: str | None) -> list[TermMatch]:
        """Every match of every list in `text`, in order of position; allow-list matches included (the policy
        applies them). An empty list for None or a text without matches."""
        if not text or not self.lists:
            return []
        words, spans, folded, origin = _words(text)
        found: dict[tuple, TermMatch] = {}
        self._match_words(words, spans, text, found)
        joined = _joined(words, spans, text)
        if joined is not None:
            self._match_words(*joined, text, found)
        for li, tl in enumerate(self.lists):
            for pattern, rx in zip(tl.patterns, tl.compiled):
                for m in rx.finditer(folded):
                    if m.end() == m.start():
                        continue
                    s, e = origin[m.start()], origin[m.end() - 1] + 1
                    found.setdefault((li, pattern, s, e), TermMatch(tl.name, self._versions[li], tl.category, tl.action,
                                                                   "pattern", pattern, (s, e), text[s:e]))
        return sorted(found.values(), key=lambda m: (m.span, m.list, m.rule))


def effective(matches: Iterable[TermMatch]) -> list[TermMatch]:
    """The block and review matches that count: those not inside the span of an allow-list match (an allowed
    phrase such as a platform's name or a film title is an exception to the block and review lists)."""
    matches = list(matches)
    allowed = [m.span for m in matches if m.action == "allow"]
    return [m for m in matches if m.action != "allow"
            and not any(a <= m.span[0] and m.span[1] <= b for a, b in allowed)]


def load_lists(paths: Iterable[str | os.PathLike], base: str | os.PathLike | None = None) -> list[TermList]:
    """Load list files; relative paths resolve under `base` (the policy file's folder). Raises TermListError."""
    out = []
    for p in paths:
        path = Path(p)
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        out.append(TermList.load(path))
    return out
