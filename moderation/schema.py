"""Shared types: the post in, the result out, the category vocabulary and the per-item errors.

Batch scoring, evaluation and the HTTP endpoint all speak these types. This module imports no torch, so
that light clients (readers, validators, the endpoint's request models) can use it cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

#: Modalities in their canonical (sorted) order. Every fusion module and every batch uses this order.
MODALITIES: tuple[str, ...] = ("image", "text")

#: Categories the default model scores, with what each means. A model directory may carry others.
CATEGORY_DESCRIPTIONS: dict[str, str] = {
    "hate": "hateful content: attacks, dehumanises or slurs a person or group for a protected attribute "
            "(origin, religion, gender, sexual orientation, disability, ...); also its implicit forms",
    "offensive": "offensive content: insults, profanity, targeted abuse or harmful mockery, hateful or not",
    "violence": "threats of violence and calls or incitement to violence against a person or group",
}
DEFAULT_CATEGORIES: tuple[str, ...] = ("hate", "offensive", "violence")
#: Our category -> OpenAI's moderation category of the same meaning, used in the endpoint's OpenAI-shaped fields.
#: "offensive" (insults, targeted abuse, profanity) is closest to OpenAI's "harassment"; a category not listed
#: keeps its own name there. docs/serving.md says what each covers.
OPENAI_CATEGORIES: dict[str, str] = {"hate": "hate", "offensive": "harassment", "violence": "violence"}


def openai_name(category: str) -> str:
    """The name of `category` in OpenAI-shaped responses (its own name when OpenAI has none of that meaning)."""
    return OPENAI_CATEGORIES.get(category, category)


# Label names seen in datasets and other models, normalised at load time so every model speaks one vocabulary.
_CATEGORY_ALIASES: dict[str, str] = {
    "hateful": "hate",
    "hate_speech": "hate",
    "hatespeech": "hate",
    "identity_hate": "hate",
    "offense": "offensive",
    "offensive_language": "offensive",
    "abusive": "offensive",
    "harassment": "offensive",
    "insult": "offensive",
    "threat": "violence",
    "threatening": "violence",
    "toxic": "toxic",
    "toxicity": "toxic",
}


def normalize_category(name: str) -> str:
    """Return the canonical category name for a label name (case, spaces, dashes and aliases folded).

    Raises ValueError for an empty name.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if not key:
        raise ValueError("category name is empty")
    return _CATEGORY_ALIASES.get(key, key)


class ErrorCode(str, Enum):
    """Why a post could not be scored. The value is stable and machine-readable."""

    MALFORMED_ROW = "malformed_row"
    MISSING_ID = "missing_id"
    DUPLICATE_ID = "duplicate_id"
    INVALID_FIELD = "invalid_field"
    EMPTY_POST = "empty_post"
    TEXT_NOT_UTF8 = "text_not_utf8"
    TEXT_TOO_LONG = "text_too_long"
    IMAGE_NOT_FOUND = "image_not_found"
    IMAGE_PATH_REFUSED = "image_path_refused"
    IMAGE_URL_REFUSED = "image_url_refused"
    IMAGE_FETCH_FAILED = "image_fetch_failed"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_DECOMPRESSION_BOMB = "image_decompression_bomb"
    IMAGE_UNSUPPORTED_FORMAT = "image_unsupported_format"
    IMAGE_CORRUPT = "image_corrupt"
    IMAGE_OCR_LIMIT = "image_ocr_limit"
    BAD_BASE64 = "bad_base64"
    MODALITY_UNSUPPORTED = "modality_unsupported"
    INTERNAL = "internal_error"


class InputError(ValueError):
    """A post (or one of its fields) cannot be scored. Carries a stable `code` and a readable message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Post:
    """One post to moderate: text, image or both.

    `image` is a path (resolved under the caller's image root; a path escaping it is refused), a
    `data:` URL, or raw encoded bytes (JPEG, PNG, ...). Extra fields of the source row are not kept here:
    batch scoring carries them through on its own.
    """

    id: str
    text: str | None = None
    image: str | bytes | None = None

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> "Post":
        """Build a post from a dict such as a JSONL row; raises InputError with a clear code when invalid.

        The id may be a string or an integer (kept as its decimal string). Empty strings count as absent.
        Whether the post has any content at all is checked when it is prepared for scoring, so that the
        error lands on the post's own result.
        """
        if not isinstance(row, Mapping):
            raise InputError(ErrorCode.MALFORMED_ROW, f"a post must be an object, got {type(row).__name__}")
        raw_id = row.get("id")
        if raw_id is None or (isinstance(raw_id, float) and math.isnan(raw_id)) or raw_id == "":
            raise InputError(ErrorCode.MISSING_ID, "the post has no 'id'")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise InputError(ErrorCode.INVALID_FIELD, f"'id' must be a string or an integer, got {type(raw_id).__name__}")
        text = _optional_field(row, "text", (str, bytes))
        image = _optional_field(row, "image", (str, bytes))
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(ErrorCode.TEXT_NOT_UTF8, f"text is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        return cls(id=str(raw_id), text=text, image=image)


def _optional_field(row: Mapping[str, Any], name: str, types: tuple[type, ...]) -> Any:
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if not isinstance(value, types):
        raise InputError(ErrorCode.INVALID_FIELD, f"'{name}' must be a string, got {type(value).__name__}")
    if isinstance(value, str) and value == "":
        return None
    return value


@dataclass(frozen=True)
class HashMatch:
    """A post's image matched a listed hash (moderation.hashes): the list, its version, the entry and how close.

    distance: Hamming distance of the PDQ hashes (bits of 256, best of the image's 8 orientations); a match
    is a distance at most the list's threshold. Such a post is blocked for `category`, whatever the model says.
    """

    list: str
    list_version: str
    id: str
    category: str
    distance: int
    threshold: int

    def to_dict(self) -> dict[str, Any]:
        return {"list": self.list, "list_version": self.list_version, "id": self.id, "category": self.category,
                "distance": self.distance, "threshold": self.threshold}


@dataclass(frozen=True)
class TermMatch:
    """A term list (moderation.termlists) matched a post: which list (name, version, category, action), which
    rule (`kind` "term" or "pattern", and the term or pattern as written in the list), and where: `span` in the
    text as given (character offsets, end exclusive) and the `text` found there."""

    list: str
    list_version: str
    category: str
    action: str
    kind: str
    rule: str
    span: tuple[int, int]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"list": self.list, "list_version": self.list_version, "category": self.category,
                "action": self.action, "kind": self.kind, "rule": self.rule, "span": list(self.span),
                "text": self.text}


@dataclass
class CategoryResult:
    """One category's verdict: calibrated probability, its action, whether it is flagged, and the thresholds used.

    `flagged` is the automatic decision: the category's action is "block". `threshold` is the block threshold
    (None: this category never blocks automatically, e.g. its target precision was not reachable on the
    calibration split); `review_threshold` the lower one from which posts go to human review (None: no review
    band). `applied_input_types` says which of the post's inputs this score used; empty when none of them can
    judge this category (an image without text, for a category no image was ever labelled for): the score is
    then 0 and the action the policy's `not_judged` one ("allow" by default, as OpenAI's moderation API does for
    such categories; "review" where a deployment wants a person to see them).
    """

    score: float
    flagged: bool
    threshold: float | None
    action: str | None = None
    review_threshold: float | None = None
    applied_input_types: list[str] | None = None


@dataclass
class ScoreResult:
    """The result for one post, in the order of the input. Exactly one of `categories` / `error` is set."""

    id: str | None
    categories: dict[str, CategoryResult] = field(default_factory=dict)
    #: Modalities the scores used, canonical order, e.g. ["image", "text"].
    applied_input_types: list[str] = field(default_factory=list)
    model_version: str = ""
    thresholds_version: str | None = None
    error: str | None = None
    error_code: str | None = None
    #: True when the text was cut to the encoder's maximum length (or the character limit) before scoring.
    text_truncated: bool = False
    #: The text OCR read in the image ("" when it found none); None when OCR did not run on this post.
    ocr_text: str | None = None
    #: The nearest listed hash the image matched (moderation.hashes); its category is flagged whatever the score.
    hash_match: HashMatch | None = None
    #: What to do with the post (moderation.policy): "allow", "review" or "block", the strongest over its
    #: categories and the policy's other rules; None for a post that could not be scored (never "allow").
    action: str | None = None
    #: Why, strongest first: {"action", "category" (or None), "rule", "detail"}; empty when allowed.
    reasons: list[dict[str, Any]] = field(default_factory=list)
    #: The text's language (ISO 639-1, moderation.language) and the detector's confidence; None without text.
    language: str | None = None
    language_confidence: float | None = None
    policy_version: str | None = None
    #: Matches of the policy's term lists in the scored text, by position (allow lists included; the reasons say
    #: which decided). Spans are character offsets in the text the model read (with OCR text where it read it).
    term_matches: list[TermMatch] = field(default_factory=list)
    #: The numeric precision the scores were computed in (one of moderation.precision.PRECISIONS):
    #: with the model, thresholds and policy versions, what the decision depended on. None for a post not scored.
    precision: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def flagged(self) -> bool:
        """True when the post is blocked automatically: a category is flagged (its action is "block"), the
        image matched a hash list or a block term list matched. An errored post is never 'flagged' and never 'safe': check `ok`."""
        return (self.hash_match is not None or any(c.flagged for c in self.categories.values())
                or any(r.get("rule") == "term_list" and r.get("action") == "block" for r in self.reasons))

    @classmethod
    def failure(cls, post_id: str | None, error: InputError | Exception, model_version: str = "",
                thresholds_version: str | None = None, policy_version: str | None = None) -> "ScoreResult":
        """The result of a post that could not be scored: its error, no scores and no action."""
        if isinstance(error, InputError):
            code, message = error.code.value, error.message
        else:
            code, message = ErrorCode.INTERNAL.value, f"{type(error).__name__}: {error}"
        return cls(id=post_id, model_version=model_version, thresholds_version=thresholds_version,
                   policy_version=policy_version, error=message, error_code=code)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: id, ok, flagged, action, categories {name: {score, flagged, action, thresholds, ...}}, ..."""
        return {
            "id": self.id,
            "ok": self.ok,
            "flagged": self.flagged if self.ok else None,
            "action": self.action,
            "categories": {k: {"score": v.score, "flagged": v.flagged, "action": v.action, "threshold": v.threshold,
                               "review_threshold": v.review_threshold, "applied_input_types": v.applied_input_types}
                           for k, v in self.categories.items()},
            "reasons": list(self.reasons),
            "language": self.language,
            "language_confidence": self.language_confidence,
            "applied_input_types": list(self.applied_input_types),
            "text_truncated": self.text_truncated,
            "ocr_text": self.ocr_text,
            "hash_match": self.hash_match.to_dict() if self.hash_match is not None else None,
            "term_matches": [m.to_dict() for m in self.term_matches],
            "model_version": self.model_version,
            "thresholds_version": self.thresholds_version,
            "policy_version": self.policy_version,
            "precision": self.precision,
            "error_code": self.error_code,
            "error": self.error,
        }
