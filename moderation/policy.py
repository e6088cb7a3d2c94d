"""The moderation policy: what happens to a post, from its calibrated scores: allow, review or block.

A model directory's `policy.json` (versioned, beside calibration.json and thresholds.json) holds, per category,

    block   calibrated probability at or above which the post is removed automatically (fitted for a high
            target precision with a lower confidence bound: automated removals must almost never be wrong);
            null: this category never blocks automatically
    review  a lower threshold: from it up to `block` the post goes to human review (fitted for a target
            recall of block + review, a minimum review precision, or a review budget); null: no review band

plus a language rule: posts whose detected language is not one the model was trained on are never allowed
automatically; they go to `languages.action` ("review" by default; a deployment may choose otherwise), and a
`not_judged` rule: what happens to a category none of the post's inputs can judge (an image without readable
text, for a category the model judges only from text). "allow" (the default, as OpenAI's moderation API does:
the score is 0) or "review" (a deployment that wants a person to look at every picture a model cannot read).

`Policy.decide(...)` gives a post's `Decision`: the action of each category, the post's action (the strongest
of its categories and of the other rules), and why. An error is never decided: a post that could not be scored
has no action (it is neither allowed nor removed; route it by its error_code).

    {"format_version": 1, "version": "pol-...", "categories": {"hate": {"block": 0.93, "review": 0.31, ...}},
     "languages": {"trained": ["en"], "action": "review", "min_confidence": 0.6, "min_chars": 12},
     "not_judged": "allow", "term_lists": ["lists/threats-en.json"]}

`term_lists` (optional) names term and pattern list files (moderation.termlists; paths relative to the policy
file), each with a category and an action. A list is part of the policy: the version results record
(`Policy.version`) is the file's own version plus "+lists-" and a hash of each list's name and content version,
so an edit of a list file shows in every result although policy.json did not change.

Precedence, strongest first: a hash match blocks; a block or review list match gives its category at least that
action (the model can raise a review match to block, never lower it); the model's thresholds; an allow list last:
it only cancels block / review list matches inside its own matches (a film title, a platform's name), never a
model's or a hash's decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from moderation.termlists import TermList, TermListError, TermMatch, TermMatcher, effective, load_lists

POLICY_FILE = "policy.json"
FORMAT_VERSION = 1
#: Actions from the mildest to the strongest; a post's action is the strongest any rule gives it.
ACTIONS: tuple[str, ...] = ("allow", "review", "block")
LANGUAGE_ACTIONS: tuple[str, ...] = ("review", "allow", "block")
#: What may happen to a category that none of a post's inputs can judge (never "block": there is no evidence).
NOT_JUDGED_ACTIONS: tuple[str, ...] = ("allow", "review")
#: How a policy's block threshold is fitted (eval.policy.fit_policy, `moderation calibrate --block-rule`):
#: "pooled" (the precision lower bound over all calibration rows) or "each_dataset" (that, and the precision must
#: also reach the target on every dataset on its own wherever it blocks at least EACH_DATASET_MIN_FLAGGED posts:
#: a pooled split is dominated by the datasets that are easy to block, and a platform's traffic looks like one
#: dataset, not the pool). Here, not in eval.policy, so that the CLI's parser needs no numpy.
BLOCK_RULES: tuple[str, ...] = ("pooled", "each_dataset")
EACH_DATASET_MIN_FLAGGED = 10
#: The suffix of a policy version that names its term lists (see `lists_version`).
_LISTS_SUFFIX = re.compile(r"\+lists-[0-9a-f]{12}$")


class PolicyError(ValueError):
    """A policy file or argument is invalid."""


# The policy file's schema: what decides actions, and the diagnostics the fitting code writes beside it. Any other
# key is refused (a typo such as "blok" would otherwise be kept as a diagnostic and the category never block).
_TOP_KEYS = ("format_version", "version", "categories", "languages", "not_judged", "term_lists")
_TOP_DIAGNOSTICS = ("fitted", "fitted_on", "note")
_CATEGORY_KEYS = ("block", "review")
_CATEGORY_DIAGNOSTICS = ("block_fit", "review_fit", "alternatives", "from")
_LANGUAGE_KEYS = ("trained", "action", "min_confidence", "min_chars")


def _unknown_keys(found: Any, allowed: Sequence[str], where: str) -> None:
    """Raise PolicyError naming the keys of `found` not in `allowed` (with the nearest allowed one)."""
    import difflib

    for key in found:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise PolicyError(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _number(value: Any, where: str, *, integer: bool = False) -> None:
    """Raise PolicyError unless `value` is a JSON number (an integer when asked), not a string or a boolean."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise PolicyError(f"{where} must be {'an integer' if integer else 'a number'}, got {value!r}")


def strongest(actions: Sequence[str]) -> str:
    """The strongest of `actions` ("allow" for none)."""
    return max(actions, key=ACTIONS.index, default="allow")


@dataclass
class CategoryPolicy:
    """Thresholds of one category on calibrated probabilities (None: that action never happens automatically)."""

    block: float | None = None
    review: float | None = None
    #: How the thresholds were chosen and what they measured on the calibration split (diagnostics only).
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("block", "review"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0)):
                raise PolicyError(f"{name} threshold must be a probability in [0, 1] or null, got {v!r}")
        if self.block is not None and self.review is not None and self.review > self.block:
            raise PolicyError(f"the review threshold ({self.review}) must not exceed the block threshold ({self.block})")

    def action(self, score: float) -> tuple[str, str]:
        """(action, why) for one calibrated score."""
        if self.block is not None and score >= self.block:
            return "block", f"score {score:.3f} >= block threshold {self.block:.3f}"
        if self.review is not None and score >= self.review:
            return "review", f"score {score:.3f} >= review threshold {self.review:.3f}"
        return "allow", "below the review threshold" if self.review is not None else "no review band"


@dataclass
class LanguageRule:
    """Posts in a language the model was not trained on go to `action`, never to allow (unless configured).

    The rule looks at texts of at least `min_chars` letters (a short post, "lol", an emoji or a name, is no
    evidence of a language). It fires when the detector's best guess is not a trained language, however unsure
    it is: below `min_confidence` the language is "uncertain", which is no reason to allow (look-alike letters
    and mixed scripts make the detector unsure; they were the way around the rule). A trained language detected
    unsurely does not fire it (13% of English tweets are detected below 0.6; 2.5% get another best guess).
    """

    trained: list[str] = field(default_factory=lambda: ["en"])
    action: str = "review"
    min_confidence: float = 0.6
    min_chars: int = 12

    def __post_init__(self) -> None:
        if self.action not in LANGUAGE_ACTIONS:
            raise PolicyError(f"languages.action must be one of {LANGUAGE_ACTIONS}, got {self.action!r}")
        _number(self.min_confidence, "languages.min_confidence")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise PolicyError(f"languages.min_confidence must be in [0, 1], got {self.min_confidence}")
        _number(self.min_chars, "languages.min_chars", integer=True)
        if self.min_chars < 0:
            raise PolicyError(f"languages.min_chars must be >= 0, got {self.min_chars}")
        # a string would be read letter by letter ("en" as the languages e and n)
        if not isinstance(self.trained, (list, tuple)) or not all(isinstance(c, str) and c.strip() for c in self.trained):
            raise PolicyError(f"languages.trained must be a list of language codes such as [\"en\"], got {self.trained!r}")
        self.trained = [c.strip().lower() for c in self.trained]

    def applies(self, language: str | None, confidence: float | None, letters: int) -> bool:
        """True when the text has enough letters and its most likely language (sure or not) is not trained."""
        return language is not None and language not in self.trained and letters >= self.min_chars

    def describe(self, language: str, confidence: float | None) -> str:
        """Why the rule fired, for the decision's reasons."""
        trained = ", ".join(self.trained)
        if confidence is None or confidence < self.min_confidence:
            return (f"language uncertain (best guess {language!r}, confidence {confidence or 0.0:.2f} < "
                    f"{self.min_confidence:g}): not one the model was trained on ({trained})")
        return f"language {language!r} (confidence {confidence:.2f}) is not one the model was trained on ({trained})"


@dataclass
class Decision:
    """What to do with one post: its action, each category's action, and the reasons (strongest first)."""

    action: str
    categories: dict[str, str]
    reasons: list[dict[str, Any]]


@dataclass
class Policy:
    """Per-category block / review thresholds and the language rule, versioned. See the module docstring.

    `version` is what results record: the version given (the policy file's own, `rules_version`), plus
    "+lists-<hash>" of the term lists' names and versions when there are any (set at construction, so a copy made
    with other lists gets its own). `to_json` writes `rules_version`.
    """

    version: str
    categories: dict[str, CategoryPolicy]
    languages: LanguageRule = field(default_factory=LanguageRule)
    meta: dict[str, Any] = field(default_factory=dict)
    #: The action for a category none of the post's inputs can judge ("allow" or "review"; see the module doc).
    not_judged: str = "allow"
    #: Term and pattern lists (moderation.termlists), matched in one automaton.
    term_lists: list[TermList] = field(default_factory=list)
    #: The version of the thresholds and rules alone, as the policy file states it (set from `version`).
    rules_version: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.not_judged not in NOT_JUDGED_ACTIONS:
            raise PolicyError(f"not_judged must be one of {NOT_JUDGED_ACTIONS}, got {self.not_judged!r}")
        try:
            self._terms = TermMatcher(self.term_lists) if self.term_lists else None
        except TermListError as exc:
            raise PolicyError(str(exc)) from None
        # a copy (dataclasses.replace) passes the full version back in: the lists' part is recomputed, never doubled
        self.rules_version = _LISTS_SUFFIX.sub("", self.version)
        self.version = self.rules_version + (f"+{lists_version(self.term_lists)}" if self.term_lists else "")

    def match_terms(self, text: str | None) -> list[TermMatch]:
        """Matches of the policy's term lists in `text` (allow lists included; `decide` applies them)."""
        return self._terms.match(text) if self._terms is not None else []

    def decide(self, scores: Mapping[str, float], *, language: str | None = None,
               language_confidence: float | None = None, letters: int = 0,
               hash_categories: Sequence[str] = (), not_judged: Sequence[str] = (),
               term_matches: Sequence[TermMatch] = ()) -> Decision:
        """The decision for one scored post.

        scores: calibrated probability per category; hash_categories: categories whose listed hash the image
        matched (blocked whatever the scores); language / language_confidence / letters: the detected language
        of the post's text (None when it has none); not_judged: categories none of the post's inputs can judge
        (their score means nothing; they get the policy's `not_judged` action); term_matches: matches of the
        term lists (`match_terms`), precedence in the module docstring. A category without a policy entry is
        never actioned by its score.
        """
        cats: dict[str, str] = {}
        reasons: list[dict[str, Any]] = []
        listed: dict[str, TermMatch] = {}  # category -> its strongest block / review list match
        for m in effective(term_matches):
            if m.category not in listed or ACTIONS.index(m.action) > ACTIONS.index(listed[m.category].action):
                listed[m.category] = m
        for cat, score in scores.items():
            entry = self.categories.get(cat)
            action, why = entry.action(score) if entry is not None else ("allow", "no policy for this category")
            rule = f"{action}_threshold"
            if cat in not_judged:
                action, why, rule = self.not_judged, "none of the post's inputs can judge this category", "not_judged"
            term = listed.get(cat)
            if term is not None and ACTIONS.index(term.action) >= ACTIONS.index(action):
                action = term.action
            else:
                term = None
            if cat in hash_categories:
                action, why, rule, term = "block", "the image matches a listed hash of known violating images", "hash_match", None
            cats[cat] = action
            if term is not None:
                reasons.append(_term_reason(term))
            elif action != "allow":
                reasons.append({"action": action, "category": cat, "rule": rule, "detail": why})
        for cat in hash_categories:
            if cat not in scores:  # a listed category the model does not score (e.g. a programme's own) still blocks
                reasons.append({"action": "block", "category": cat, "rule": "hash_match",
                                "detail": "the image matches a listed hash of known violating images"})
        reasons.extend(_term_reason(m) for cat, m in listed.items() if cat not in scores and cat not in hash_categories)
        if self.languages.applies(language, language_confidence, letters):
            reasons.append({"action": self.languages.action, "category": None, "rule": "language",
                            "detail": self.languages.describe(language, language_confidence)})
        reasons.sort(key=lambda r: -ACTIONS.index(r["action"]))
        return Decision(action=strongest([r["action"] for r in reasons]), categories=cats, reasons=reasons)

    def check_categories(self, categories: Sequence[str], source: str | None = None) -> "Policy":
        """Return self when the policy names exactly the model's `categories`; raise PolicyError naming the missing
        and unknown ones otherwise (a missing category is never actioned: its harm would always be allowed)."""
        if not self.categories:  # built in code for a model without thresholds: nothing is actioned, on purpose
            return self  # (a policy file cannot say this: from_json refuses empty categories)
        missing = [c for c in categories if c not in self.categories]
        unknown = sorted(set(self.categories) - set(categories))
        if missing or unknown:
            parts = ([f"lacks {missing} (give each {{\"block\": ..., \"review\": ...}}, null for never)"] if missing else []) + \
                    ([f"has {unknown}, which the model does not score"] if unknown else [])
            raise PolicyError(f"{source or 'the policy'} ({self.version}) {' and '.join(parts)}; the model scores "
                              f"{list(categories)}")
        return self

    # --- storage --------------------------------------------------------------------------------------

    def rules(self, base: str | os.PathLike | None = None) -> dict[str, Any]:
        """What decides actions, without the fitting diagnostics: thresholds per category and the rules (term list
        files relative to `base` when given)."""
        out = {"categories": {c: {"block": p.block, "review": p.review} for c, p in self.categories.items()},
               "languages": {"trained": self.languages.trained, "action": self.languages.action,
                             "min_confidence": self.languages.min_confidence, "min_chars": self.languages.min_chars},
               "not_judged": self.not_judged}
        if self.term_lists:
            out["term_lists"] = [os.path.relpath(tl.path, base) if base is not None and tl.path else str(tl.path)
                                 for tl in self.term_lists]
        return out

    def to_json(self, base: str | os.PathLike | None = None) -> dict[str, Any]:
        rules = self.rules(base)
        rules["categories"] = {c: {**rules["categories"][c], **p.meta} for c, p in self.categories.items()}
        return {"format_version": FORMAT_VERSION, "version": self.rules_version, **rules, **self.meta}

    @classmethod
    def from_json(cls, data: Any, source: str = POLICY_FILE) -> "Policy":
        """Build from parsed JSON; raises PolicyError naming the file and what is wrong."""
        if not isinstance(data, dict) or "version" not in data or not isinstance(data.get("categories"), dict):
            raise PolicyError(f"{source}: a policy is a JSON object with 'version' and 'categories'")
        if data.get("format_version") != FORMAT_VERSION:
            raise PolicyError(f"{source} has format_version {data.get('format_version')!r}; this code reads {FORMAT_VERSION}")
        _unknown_keys(data, _TOP_KEYS + _TOP_DIAGNOSTICS, source)
        if not isinstance(data["version"], str) or not data["version"].strip():
            raise PolicyError(f"{source}: 'version' must be a non-empty string, got {data['version']!r}")
        if not data["categories"]:
            raise PolicyError(f"{source}: 'categories' is empty: give each category the model scores, with "
                              "\"block\" and \"review\" (null: never that action)")
        cats = {}
        for name, entry in data["categories"].items():
            if not isinstance(entry, dict):
                raise PolicyError(f"{source}: category {name!r} must be an object with 'block' and 'review'")
            _unknown_keys(entry, _CATEGORY_KEYS + _CATEGORY_DIAGNOSTICS, f"{source}: category {name!r}")
            if not any(k in entry for k in _CATEGORY_KEYS):
                raise PolicyError(f"{source}: category {name!r} has neither 'block' nor 'review' (null: never that "
                                  "action)")
            meta = {k: v for k, v in entry.items() if k not in ("block", "review")}
            try:
                cats[str(name)] = CategoryPolicy(block=entry.get("block"), review=entry.get("review"), meta=meta)
            except PolicyError as exc:
                raise PolicyError(f"{source}: category {name!r}: {exc}") from None
        lang = data.get("languages") or {}
        if not isinstance(lang, dict):
            raise PolicyError(f"{source}: 'languages' must be an object")
        _unknown_keys(lang, _LANGUAGE_KEYS, f"{source}: languages")
        try:
            rule = LanguageRule(**lang)
        except (TypeError, PolicyError) as exc:
            raise PolicyError(f"{source}: languages: {exc}") from None
        refs = data.get("term_lists", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
            raise PolicyError(f"{source}: 'term_lists' must be a list of term list file paths")
        try:
            term_lists = load_lists(refs, Path(source).parent)
        except TermListError as exc:
            raise PolicyError(f"{source}: term list: {exc}") from None
        meta = {k: v for k, v in data.items()
                if k not in ("format_version", "version", "categories", "languages", "not_judged", "term_lists")}
        try:
            return cls(version=str(data["version"]), categories=cats, languages=rule, meta=meta,
                       not_judged=data.get("not_judged", "allow"), term_lists=term_lists)
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Policy":
        """Read a policy file (or the policy.json of a model directory). Raises PolicyError."""
        path = Path(path)
        if path.is_dir():
            path = path / POLICY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"policy file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyError(f"{path} is not a readable JSON policy: {exc}") from None
        return cls.from_json(data, str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to `path` (a file, or a model directory's policy.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / POLICY_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(path.parent), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def _term_reason(m: TermMatch) -> dict[str, Any]:
    return {"action": m.action, "category": m.category, "rule": "term_list", "list": m.list,
            "list_version": m.list_version,
            "detail": f"{m.kind} {m.rule!r} of list {m.list!r} ({m.list_version}) matched {m.text!r}"}


def lists_version(term_lists: Sequence[TermList]) -> str:
    """"lists-<hash12>" of the lists' names and content versions (in name order): changes whenever a list does."""
    blob = json.dumps(sorted([tl.name, tl.version] for tl in term_lists)).encode()
    return "lists-" + hashlib.sha256(blob).hexdigest()[:12]


def policy_version(categories: Mapping[str, CategoryPolicy], languages: LanguageRule, not_judged: str = "allow") -> str:
    """"pol-<date>-<hash8>" of the thresholds and the rules: it changes whenever they do."""
    content: dict[str, Any] = {"c": {k: [v.block, v.review] for k, v in sorted(categories.items())},
                               "l": [languages.trained, languages.action, languages.min_confidence, languages.min_chars]}
    if not_judged != "allow":  # the default leaves the versions of policies written before the rule unchanged
        content["n"] = not_judged
    blob = json.dumps(content, sort_keys=True).encode()
    return f"pol-{datetime.now(timezone.utc):%Y%m%d}-{hashlib.sha256(blob).hexdigest()[:8]}"


def with_not_judged(policy: Policy, action: str) -> Policy:
    """The same policy with another `not_judged` action (and a new version when it changes)."""
    if action == policy.not_judged:
        return policy
    return replace(policy, not_judged=action, version=policy_version(policy.categories, policy.languages, action))


def from_thresholds(thresholds: Any, languages: LanguageRule | None = None) -> Policy:
    """A block-only policy from a thresholds.json (moderation.calibration.Thresholds): for model directories
    fitted before policies existed. No review band."""
    rule = languages or LanguageRule()
    cats = {c: CategoryPolicy(block=thresholds.threshold(c), review=None, meta={"from": thresholds.version})
            for c in thresholds.categories}
    return Policy(version=f"from-{thresholds.version}", categories=cats, languages=rule,
                  meta={"note": "derived from thresholds.json: block thresholds only, no review band"})
