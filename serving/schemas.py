"""Pydantic models of the endpoint: the app builder's typed arguments, the request and response bodies.

`ServeArgs` is what `serve run serving.app:build_app key=value`, a Serve config file's `args:` and
`moderation serve` all fill in, so the three start the same app with the same validation.

Request bodies take two shapes (exactly one of `input` / `posts`):

* OpenAI's: `{"model": ..., "input": "text" | ["text", ...] | [content part, ...]}` where a list of
  content parts (`{"type": "text", "text": ...}`, `{"type": "image_url", "image_url": {"url": "data:..."}}`)
  is ONE multimodal input, as in OpenAI's API;
* ours: `{"posts": [{"id": ..., "text": ..., "image": "<base64 or data URL>"}, ...]}`.

Structure and types are checked here (a violation is a 422 for the whole request); content (base64,
image bytes, text length, empty posts, duplicate ids) is checked per item in `serving.parsing`.

No `from __future__ import annotations` here: Ray Serve converts builder arguments to `ServeArgs` only
when the builder's annotation is a real class, not a string.
"""

import math
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError,
                      field_validator, model_validator)

from serving.fetch import UrlAllowList

# --- the app builder's arguments ----------------------------------------------------------------------


class BatchConfig(BaseModel):
    """Run-time settings of the model deployment: its `user_config`, applied by `reconfigure` without a restart:
    batching, and the moderation policy.

    max_batch_size counts posts (not requests): a request of several posts adds each of them to the queue.
    """

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, le=1024, description="posts per forward pass at most")
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0,
                                        description="seconds to wait for a batch to fill after its first post")
    #: Posts per forward pass inside a batch (the scorer sorts a batch by text length, then runs it in chunks
    #: of this size, so that short posts are not padded to the longest one). None: the whole batch at once.
    #: On CPU, 8 is measured faster than 32 (docs/benchmarks-serving.md); on GPU, leave it None.
    forward_batch_size: Optional[int] = Field(None, ge=1, le=1024)
    #: The moderation policy in force (the contents of a policy.json, moderation.policy): None uses the model
    #: directory's own. Changing it in a running deployment's config applies it at once (`serve deploy` /
    #: `serve.run` with the new config); a policy that does not fit the model fails the reconfigure.
    policy: Optional[Dict[str, Any]] = None


class AutoscalingArgs(BaseModel):
    """Replica autoscaling of the model deployment (Ray Serve's autoscaling_config, the common fields)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16.0, gt=0)
    #: Seconds the load must stay above / below target before a replica is added / removed (Ray's defaults).
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> "AutoscalingArgs":
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class RequestLimits(BaseModel):
    """Limits on one request. Units: bytes, items, characters, pixels."""

    model_config = ConfigDict(extra="forbid")

    #: Request body; a larger one gets 413 before it is parsed.
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    #: Posts (or OpenAI inputs) per request; more gets 422.
    max_items: int = Field(64, ge=1)
    #: Characters of text per post; a longer text is a per-item `text_too_long` error (never silently cut).
    max_text_chars: int = Field(20_000, ge=1)
    #: Decoded image bytes per post; more is a per-item `image_too_large` error.
    max_image_bytes: int = Field(5 * 1024 * 1024, ge=1)
    #: Image width x height per post; more is a per-item `image_decompression_bomb` error (checked from the header).
    max_image_pixels: int = Field(20_000_000, ge=1)
    #: Longer side / shorter side per image; more is a per-item `image_decompression_bomb` error (from the header):
    #: preprocessing scales the shorter side to 256 px, so a 91-byte 1x6000 PNG would take 1.5 GB.
    max_image_aspect_ratio: float = Field(100.0, ge=1.0, le=10_000.0)
    #: Seconds the whole request body may take to arrive; a slower one gets 408 `body_timeout` (slow-client guard).
    body_timeout_s: float = Field(10.0, gt=0, le=600)


class DecisionLogArgs(BaseModel):
    """Where the ingress logs every decision (moderation.decision_log; docs/operations.md): one row per post,
    rotating files, no post content unless `content` is true, ids hashed (salt $MODERATION_LOG_ID_SALT) with
    `hash_ids`."""

    model_config = ConfigDict(extra="forbid")

    path: str
    format: Literal["jsonl", "parquet"] = "jsonl"
    rotate_mb: float = Field(64.0, gt=0)
    rotate_minutes: float = Field(60.0, gt=0)
    retention_days: Optional[float] = Field(None, gt=0)
    content: bool = False
    hash_ids: bool = False


class ServeArgs(BaseModel):
    """Typed arguments of `serving.app:build_app` (also the fields of `args:` in a Serve config file)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: Model directory; None serves the shipped default model (untrained head until one is trained: says so).
    model_dir: Optional[str] = None
    device: str = "cpu"
    #: "auto": bf16 where the device has native bf16 and the model's precision.json validates it, else fp32
    #: (moderation.precision), or a guarded bf16 where the record validates that; "fp32", "bf16", "bf16-guarded" or
    #: "bf16-block-guarded" to force one.
    precision: Literal["auto", "fp32", "bf16", "bf16-guarded", "bf16-block-guarded"] = "auto"
    #: The text encoder of batches of at most 4 posts (a lone request) in fp32 through ONNX Runtime
    #: (moderation.onnx_text): "auto" (on where onnx and onnxruntime are installed and the device is a CPU), "on", "off".
    onnx_text: Literal["auto", "on", "off"] = "auto"
    #: Threads that decode images inside the model replica (0: decode in the batch thread); OCR and hashing run there.
    decode_workers: int = Field(2, ge=0, le=16)
    #: OCR of images (moderation.ocr): "auto" (or "both") reads every image post and scores the OCR text after
    #: the given text, "ocr" instead of it, "off" never. About 0.3-1 s of CPU per image (at most ~3.5 s: OCR caps).
    ocr: Literal["off", "auto", "ocr", "both"] = "auto"
    #: When a post's text comes from OCR alone, score it with the image too (default: the OCR text alone).
    ocr_with_image: bool = False
    #: Hash-list files of known violating images (moderation.hashes): a match flags the listed category and
    #: the result carries `hash_match`. Paths must be readable where the model replicas run.
    hash_lists: List[str] = Field(default_factory=list)
    #: A policy file (moderation.policy) to use instead of the model directory's policy.json; it is read here
    #: and handed to the replicas as `batch.policy` (their user_config), so it can later change without restart.
    policy: Optional[str] = None

    batch: BatchConfig = Field(default_factory=BatchConfig)
    #: Requests a model replica holds at once. None: 2 x max_batch_size, so one batch fills while one runs.
    max_ongoing_requests: Optional[int] = Field(None, ge=1)
    #: Requests waiting for a model replica beyond that; more are refused at once with 503 (load shedding).
    max_queued_requests: int = Field(64, ge=-1)
    num_replicas: int = Field(1, ge=1)
    #: When set, replicas scale between its bounds and num_replicas is ignored.
    autoscaling: Optional[AutoscalingArgs] = None
    #: CPUs reserved per model replica; torch uses this many threads (at least 1).
    num_cpus: float = Field(1.0, ge=0.0)
    #: GPUs per model replica (with device "cuda").
    num_gpus: float = Field(0.0, ge=0.0)

    #: "fused": one deployment is both the FastAPI ingress and the batched model (one Ray hop less per
    #: request; 9% more requests/s on a 2-core CPU machine, A/B). "split": a FastAPI ingress deployment in front
    #: of a separate model deployment, so that they scale apart (e.g. CPU ingress, GPU model replicas).
    topology: Literal["fused", "split"] = "fused"
    #: Split topology only: replicas of the ingress deployment.
    ingress_replicas: int = Field(1, ge=1)
    #: Requests an ingress replica takes from the HTTP proxy at once (fused: the model replica; the model itself
    #: still admits only max_ongoing_requests + max_queued_requests of them and answers the rest 503 at once);
    #: beyond that and ingress_max_queued_requests, the proxy answers 503.
    ingress_max_ongoing_requests: int = Field(256, ge=1)
    ingress_max_queued_requests: int = Field(256, ge=-1)

    limits: RequestLimits = Field(default_factory=RequestLimits)
    #: Name of the environment variable that holds the bearer token; None: no authentication.
    #: The token itself is never an argument (it would land in config files and logs).
    auth_token_env: Optional[str] = None
    #: Seconds the ingress waits for the model before answering 504.
    request_timeout_s: float = Field(30.0, gt=0)
    #: http(s) URL prefixes (path ending in '/') whose images the ingress may fetch; empty: image URLs other than
    #: data URLs are refused per item (`image_url_refused`). See serving/fetch.py for what is checked.
    image_url_allowlist: List[str] = Field(default_factory=list)
    #: Seconds one image fetch may take in all (connect + transfer) before the item fails (`image_fetch_failed`).
    image_fetch_timeout_s: float = Field(5.0, gt=0, le=60)
    #: Log every decision to rotating files (None: no decision log). See DecisionLogArgs.
    decision_log: Optional[DecisionLogArgs] = None

    @field_validator("image_url_allowlist")
    @classmethod
    def _allowlist(cls, value: List[str]) -> List[str]:
        UrlAllowList(value)  # raises ValueError with the offending entry
        return value

    @field_validator("auth_token_env")
    @classmethod
    def _env_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not value or not value.replace("_", "").isalnum()):
            raise ValueError(f"auth_token_env must be an environment variable NAME such as MODERATION_API_TOKEN, "
                             f"got {value!r}")
        return value

    def model_max_ongoing_requests(self) -> int:
        return self.max_ongoing_requests or 2 * self.batch.max_batch_size


# --- request bodies -----------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: StrictStr


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: StrictStr


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]
_CONTENT_PART: TypeAdapter = TypeAdapter(ContentPart)


class PostIn(BaseModel):
    """One of our posts: `image` is base64 (standard alphabet) or a `data:image/...;base64,` URL."""

    model_config = ConfigDict(extra="forbid")
    id: Union[StrictStr, StrictInt]
    text: Optional[StrictStr] = None
    image: Optional[StrictStr] = None

    @field_validator("id")
    @classmethod
    def _id_not_empty(cls, value: Union[str, int]) -> Union[str, int]:
        if isinstance(value, str) and not value.strip():
            raise ValueError("id must not be empty")
        return value


class ModerationRequest(BaseModel):
    """The body of POST /v1/moderations. Exactly one of `input` (OpenAI's shape) or `posts` (ours)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: Accepted for OpenAI compatibility and ignored: the response names the model actually served.
    model: Optional[StrictStr] = None
    input: Optional[Union[StrictStr, List[StrictStr], List[ContentPart]]] = None
    posts: Optional[List[PostIn]] = None
    #: Also return, for each post sent to review or blocked, the words that drove its scores (`explanation` in each
    #: result; moderation.explain, pooled occlusion). Costs about one more model pass per explained post.
    explain: StrictBool = False

    @field_validator("input", mode="before")
    @classmethod
    def _input_shape(cls, value: object) -> object:
        # Route by shape first, so that an error names what is wrong instead of listing every union branch.
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("must be a string, a list of strings, or a list of content parts "
                             "({'type': 'text', 'text': ...} / {'type': 'image_url', 'image_url': {'url': ...}})")
        if all(isinstance(v, str) for v in value):
            return value
        if not all(isinstance(v, dict) for v in value):
            raise ValueError("a list must hold only strings or only content parts (objects), not a mix or other types")
        parts = []
        for i, part in enumerate(value):
            try:
                parts.append(_CONTENT_PART.validate_python(part))
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = list(err["loc"])
                if loc and loc[0] == part.get("type"):
                    loc = loc[1:]  # the discriminator's tag, not a field
                where = ".".join(str(p) for p in loc)
                raise ValueError(f"part {i}{'.' + where if where else ''}: {err['msg']}") from None
        return parts

    @model_validator(mode="after")
    def _one_shape(self) -> "ModerationRequest":
        if (self.input is None) == (self.posts is None):
            raise ValueError("give exactly one of 'input' (OpenAI's shape) or 'posts' (a list of {id, text, image})")
        if isinstance(self.input, list) and not self.input:
            raise ValueError("'input' is an empty list")
        if self.posts is not None and not self.posts:
            raise ValueError("'posts' is an empty list")
        return self


# --- response bodies ----------------------------------------------------------------------------------


class ExplainedWord(BaseModel):
    """A word (or span of words) of the scored text and how far masking it lowers the category's calibrated
    probability (probability points)."""

    word: str
    #: [start, end) character offsets in the explanation's `text`.
    span: List[int]
    weight: float


class ItemExplanation(BaseModel):
    """Why a post was sent to review or blocked: per actioned category (OpenAI's names, as in `category_scores`),
    the words that raised its score most, strongest first (moderation.explain)."""

    #: "pooled" (one encoder pass, each word left out of the pooling) or "occlusion" (each word deleted in turn).
    method: Literal["pooled", "occlusion"]
    #: Words masked together (1 for a tweet; more for long texts).
    span_words: int
    #: The text the model read (the post's text, with OCR text for image posts); the spans index into it.
    text: Optional[str] = None
    words: Dict[str, List[ExplainedWord]] = Field(default_factory=dict)


class ModerationResult(BaseModel):
    """One item's verdict: OpenAI's fields plus ours.

    Category keys are OpenAI's names where the meaning matches (offensive -> harassment). `flagged` and
    `categories` are the automatic decision (the policy's block); `action` says what to do with the post
    (allow / review / block) and `reasons` why. An item that could not be scored has `flagged: null`,
    `action: null`, every category `null`, empty `category_applied_input_types`, and `error_code` / `error`
    set: never "safe".
    """

    id: str
    flagged: Optional[bool]
    categories: Dict[str, Optional[bool]]
    category_scores: Dict[str, Optional[float]]
    category_applied_input_types: Dict[str, List[str]]
    #: "allow" | "review" | "block": the strongest of the categories' actions and the policy's other rules.
    action: Optional[Literal["allow", "review", "block"]] = None
    category_actions: Dict[str, Optional[str]] = Field(default_factory=dict)
    #: The categories whose score falls in their human-review band.
    review_categories: List[str] = Field(default_factory=list)
    #: Why, strongest first: {action, category (null for a post-level rule), rule, detail}.
    reasons: List[Dict[str, Optional[str]]] = Field(default_factory=list)
    #: Block thresholds (flagged at or above) and review thresholds, per category; null: never.
    category_thresholds: Dict[str, Optional[float]]
    category_review_thresholds: Dict[str, Optional[float]] = Field(default_factory=dict)
    #: What the scores used ("image", "ocr_text": text read from the image, "text").
    applied_input_types: List[str] = Field(default_factory=list)
    #: The text's language (ISO 639-1) and the detector's confidence; null without text.
    language: Optional[str] = None
    language_confidence: Optional[float] = None
    policy_version: Optional[str] = None
    #: The numeric precision the scores were computed in (moderation.precision.PRECISIONS); null when not scored.
    precision: Optional[str] = None
    text_truncated: bool = False
    #: Text OCR read in the image ("" none found); null when OCR did not run on this item.
    ocr_text: Optional[str] = None
    #: The listed hash the image matched: {list, list_version, id, category, distance, threshold}; null when none.
    hash_match: Optional[Dict[str, Union[str, int]]] = None
    error_code: Optional[str] = None
    error: Optional[str] = None
    #: Only in answers to a request with `explain: true`: the words behind the action of a post sent to review or
    #: blocked; null for the other posts (nothing to explain) and for items that could not be scored.
    explanation: Optional[ItemExplanation] = None

    @field_validator("category_scores")
    @classmethod
    def _finite(cls, value: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
        for name, score in value.items():
            if score is not None and not math.isfinite(score):
                raise ValueError(f"score of {name} is not finite")
        return value


class ModerationResponse(BaseModel):
    """The body of a 200 from POST /v1/moderations (and of a 422 where every item failed)."""

    model_config = ConfigDict(protected_namespaces=())

    id: str
    #: The served model's version (OpenAI's field; the request's `model` is not used to pick a model).
    model: str
    model_version: str
    thresholds_version: Optional[str]
    #: The moderation policy the actions follow (moderation.policy); it can change without a restart.
    policy_version: Optional[str] = None
    #: False for the default architecture with an untrained head: its scores are not judgements.
    trained: bool
    results: List[ModerationResult]
    #: Items that carry an error.
    errors: int


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Optional[list] = None


class ErrorResponse(BaseModel):
    """The body of every 4xx / 5xx: `{"error": {"code", "message", "details"}}`."""

    error: ErrorBody
