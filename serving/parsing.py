"""From a request body to posts: what is a 4xx for the whole request, what is an error on one item.

The rule (documented in docs/serving.md):

* the request as a whole is refused (4xx, JSON error body) when it cannot be read as a request at all:
  body too large (413), not JSON or not UTF-8 (400), wrong structure or types (422, with the field's
  location), too many items (422);
* an item that is well-formed but whose CONTENT cannot be scored gets its own error in `results` and the
  other items are scored: bad base64, image over the byte limit, image URL refused (or, allow-listed, failing
  to fetch: serving.fetch), text over the length
  limit, empty post, duplicate id; the model replica adds corrupt images, unsupported formats and
  decompression bombs (decoded by `moderation.inputs`, the one image decoder of the project);
* when NO item of a request could be scored because of such content errors, the answer is a 422 whose
  body is the usual response (every item with its error), so a single bad post gets a 4xx too.

No Ray and no FastAPI here, so all of it is unit-tested directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from moderation.inputs import decode_base64, decode_data_url
from moderation.schema import ErrorCode, InputError, openai_name
from serving.fetch import UrlAllowList
from serving.schemas import ImagePart, ModerationRequest, RequestLimits, TextPart


class RequestRejected(Exception):
    """The whole request is refused: an HTTP status, a stable code and a message (plus optional details)."""

    def __init__(self, status: int, code: str, message: str, details: list | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


@dataclass
class Item:
    """One post as sent to the model replica, or the error that keeps it from being sent."""

    id: str
    text: str | None = None
    image: bytes | None = None
    error_code: str | None = None
    error: str | None = None
    #: An allow-listed image URL still to fetch (the ingress fills `image` from it, or fails the item).
    image_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def fail(self, exc: InputError) -> "Item":
        return Item(id=self.id, error_code=exc.code.value, error=exc.message)


def parse_request(body: bytes, limits: RequestLimits) -> ModerationRequest:
    """Check the body's size, decode its JSON and validate its structure. Raises RequestRejected (413/400/422):
    400 for a body that is not JSON, not UTF-8, nested too deeply or holding a number too long to read."""
    if len(body) > limits.max_body_bytes:
        raise RequestRejected(413, "body_too_large",
                              f"the request body is {len(body)} bytes, over the limit of {limits.max_body_bytes}; "
                              "send fewer or smaller items per request")
    if not body.strip():
        raise RequestRejected(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        data = json.loads(body)
    except UnicodeDecodeError as exc:
        raise RequestRejected(400, "invalid_json", f"the request body is not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise RequestRejected(400, "invalid_json",
                              f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise RequestRejected(400, "invalid_json", "the request body is nested too deeply (arrays or objects inside "
                                                   "each other, hundreds of levels); a request is at most a few levels deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise RequestRejected(400, "invalid_json", f"the request body is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise RequestRejected(422, "invalid_request", f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        request = ModerationRequest.model_validate(data)
    except ValidationError as exc:
        details = [{"loc": [str(p) for p in err["loc"]], "message": err["msg"].removeprefix("Value error, ")}
                   for err in exc.errors()[:20]]
        first = details[0] if details else {"loc": [], "message": "invalid request"}
        where = ".".join(first["loc"]) or "body"
        raise RequestRejected(422, "invalid_request", f"{where}: {first['message']}", details) from None
    return _count_checked(request, limits)


def _count_checked(request: ModerationRequest, limits: RequestLimits) -> ModerationRequest:
    n = _count_items(request)
    if n > limits.max_items:
        raise RequestRejected(422, "too_many_items",
                              f"the request has {n} items, over the limit of {limits.max_items}; split it into several requests")
    return request


def _count_items(request: ModerationRequest) -> int:
    if request.posts is not None:
        return len(request.posts)
    if isinstance(request.input, str):
        return 1
    inputs = request.input or []
    return 1 if inputs and not isinstance(inputs[0], str) else len(inputs)


def request_items(request: ModerationRequest, limits: RequestLimits, allow: UrlAllowList | None = None) -> list[Item]:
    """One Item per input, in order: OpenAI inputs get ids "0", "1", ...; posts keep theirs.

    Per-item content errors are set on the item (see the module docstring); nothing is dropped. An image URL
    under `allow` is kept on the item (`image_url`) for the caller to fetch; any other URL is refused.
    """
    if request.posts is not None:
        items = []
        seen: set[str] = set()
        for post in request.posts:
            post_id = str(post.id)
            shown = post_id.encode("utf-8", "backslashreplace").decode("utf-8")
            if shown != post_id:
                # A lone surrogate ("\udc00") cannot be written to the response or the decision log: the item gets
                # an error under its escaped id, and the request's other posts are scored and logged as usual.
                items.append(Item(id=shown).fail(InputError(ErrorCode.TEXT_NOT_UTF8, "the id is not valid UTF-8 (it "
                                                            "holds a lone surrogate); it is shown escaped")))
                seen.add(shown)
                continue
            item = _check(Item(id=post_id), post.text, post.image, limits, False, allow)
            if item.id in seen:
                item = item.fail(InputError(ErrorCode.DUPLICATE_ID, f"id {item.id!r} appears more than once in this request"))
            seen.add(item.id)
            items.append(item)
        return items
    if isinstance(request.input, str):
        return [_check(Item(id="0"), request.input, None, limits, True, allow)]
    inputs = request.input or []
    if inputs and not isinstance(inputs[0], str):
        return [_content_parts(inputs, limits, allow)]
    return [_check(Item(id=str(i)), text, None, limits, True, allow) for i, text in enumerate(inputs)]


def _content_parts(parts: list, limits: RequestLimits, allow: UrlAllowList | None) -> Item:
    """OpenAI's multimodal input: a list of parts that together make ONE input (one result)."""
    texts = [p.text for p in parts if isinstance(p, TextPart)]
    images = [p.image_url.url for p in parts if isinstance(p, ImagePart)]
    item = Item(id="0")
    if len(images) > 1:
        return item.fail(InputError(ErrorCode.INVALID_FIELD,
                                    f"an input may hold at most one image_url part (got {len(images)}); "
                                    "send several inputs as separate posts"))
    text = "\n".join(t for t in texts if t.strip()) or None
    return _check(item, text, images[0] if images else None, limits, True, allow)


def _check(item: Item, text: str | None, image: str | None, limits: RequestLimits, image_is_url: bool,
           allow: UrlAllowList | None) -> Item:
    """Apply the per-item content checks; return the item with its text and decoded image (or the allow-listed
    URL to fetch), or its error."""
    url = None
    try:
        if text is not None and len(text) > limits.max_text_chars:
            raise InputError(ErrorCode.TEXT_TOO_LONG,
                             f"text is {len(text)} characters, over the limit of {limits.max_text_chars}")
        if image and allow and "://" in image[:16] and allow.allows(image):
            url, data = image, None
        else:
            data = _image_bytes(image, limits, image_is_url, bool(allow)) if image else None
        if (text is None or not text.strip()) and data is None and url is None:
            raise InputError(ErrorCode.EMPTY_POST, "the post has neither text nor an image")
    except InputError as exc:
        return item.fail(exc)
    return Item(id=item.id, text=text, image=data, image_url=url)


def _image_bytes(image: str, limits: RequestLimits, image_is_url: bool, have_allowlist: bool = False) -> bytes:
    """Decode an image given as a data URL or (posts only) bare base64. Other URLs are refused here (the
    allow-listed ones never reach this function)."""
    head = image[:32].lower()
    if head.startswith("data:"):
        payload = image.partition(",")[2]
    elif "://" in head or image_is_url:
        why = ("it is not under any prefix of the image URL allow-list" if have_allowlist else
               "no image URL allow-list is configured (image_url_allowlist)")
        raise InputError(ErrorCode.IMAGE_URL_REFUSED,
                         f"image URL refused: {why}; send the image inline as a data URL: data:image/png;base64,...")
    else:
        payload = image
    # Refuse an oversize image from the length of its base64 text, before decoding it.
    approx = (len(payload) * 3) // 4
    if approx > limits.max_image_bytes + 3:
        raise InputError(ErrorCode.IMAGE_TOO_LARGE,
                         f"image is about {approx} bytes, over the limit of {limits.max_image_bytes}")
    try:
        data = decode_data_url(image) if head.startswith("data:") else decode_base64(image)
    except InputError:
        # "memes/cat.jpg": a file path (base64 has no "." or "~"), which batch scoring reads but the endpoint does not
        if not head.startswith("data:") and ("." in image or image.startswith("~")):
            raise InputError(ErrorCode.IMAGE_PATH_REFUSED,
                             f"image paths are not read by the endpoint ({image[:60]!r}); send the image's bytes as "
                             "base64 or a data URL (data:image/png;base64,...), or score files with `moderation score`"
                             ) from None
        raise
    if len(data) > limits.max_image_bytes:
        raise InputError(ErrorCode.IMAGE_TOO_LARGE, f"image is {len(data)} bytes, over the limit of {limits.max_image_bytes}")
    if not data:
        raise InputError(ErrorCode.IMAGE_CORRUPT, "image is empty (0 bytes)")
    return data


def _openai_inputs(types: list[str] | None) -> list[str]:
    """Our applied input types in OpenAI's vocabulary ("text", "image"): text read from the image is "image"."""
    out = {("image" if t in ("image", "ocr_text") else t) for t in types or []}
    return sorted(out)


def format_results(items: list[Item], scored: list[Any], categories: list[str]) -> list[dict[str, Any]]:
    """Merge the items refused here with the model's results (`ScoreResult`s, in the order of the ok items).

    Returns one OpenAI-shaped result dict per item, in request order. Category keys are OpenAI's names where
    the meaning matches (moderation.schema.OPENAI_CATEGORIES: offensive -> harassment); `flagged` and
    `categories` are the automatic decision (block). Ours beside them: `action` (allow / review / block),
    `category_actions`, `review_categories`, `reasons`, `language`, thresholds and versions. Errored items are
    never "safe": `flagged`, `action` and every category are null and `error_code` / `error` say why.
    """
    names = {c: openai_name(c) for c in categories}
    ok_results = iter(scored)
    out = []
    for item in items:
        result = next(ok_results, None) if item.ok else None
        if item.ok and result is None:
            raise RuntimeError("the model returned fewer results than items sent")
        if result is not None and result.ok:
            cats = result.categories
            out.append({
                "id": item.id,
                "flagged": result.flagged,
                "categories": {names[c]: cats[c].flagged for c in categories},
                "category_scores": {names[c]: cats[c].score for c in categories},
                "category_applied_input_types": {names[c]: _openai_inputs(
                    cats[c].applied_input_types if cats[c].applied_input_types is not None else result.applied_input_types)
                    for c in categories},
                "action": result.action,
                "category_actions": {names[c]: cats[c].action for c in categories},
                "review_categories": [names[c] for c in categories if cats[c].action == "review"],
                "reasons": [{**r, "category": names.get(r.get("category"), r.get("category"))} for r in result.reasons],
                "category_thresholds": {names[c]: cats[c].threshold for c in categories},
                "category_review_thresholds": {names[c]: cats[c].review_threshold for c in categories},
                "applied_input_types": list(result.applied_input_types),
                "language": result.language,
                "language_confidence": result.language_confidence,
                "policy_version": result.policy_version,
                "precision": getattr(result, "precision", None),
                "text_truncated": bool(result.text_truncated),
                "ocr_text": result.ocr_text,
                "hash_match": result.hash_match.to_dict() if result.hash_match is not None else None,
                "error_code": None,
                "error": None,
            })
            continue
        code = item.error_code if result is None else result.error_code
        message = item.error if result is None else result.error
        out.append({
            "id": item.id,
            "flagged": None,
            "categories": {names[c]: None for c in categories},
            "category_scores": {names[c]: None for c in categories},
            "category_applied_input_types": {names[c]: [] for c in categories},
            "action": None,
            "category_actions": {names[c]: None for c in categories},
            "review_categories": [],
            "reasons": [],
            "category_thresholds": {names[c]: None for c in categories},
            "category_review_thresholds": {names[c]: None for c in categories},
            "applied_input_types": [],
            "language": None,
            "language_confidence": None,
            "policy_version": result.policy_version if result is not None else None,
            "precision": None,
            "text_truncated": False,
            "ocr_text": None,
            "hash_match": None,
            "error_code": code or ErrorCode.INTERNAL.value,
            "error": message or "the item could not be scored",
        })
    if next(ok_results, None) is not None:
        raise RuntimeError("the model returned more results than items sent")
    return out


def response_status(results: list[dict[str, Any]]) -> int:
    """200 when at least one item was scored; 422 when every item failed on its content; 500 when the
    failures include internal errors (the server's fault, not the client's)."""
    if any(r["error_code"] is None for r in results):
        return 200
    if any(r["error_code"] == ErrorCode.INTERNAL.value for r in results):
        return 500
    return 422
