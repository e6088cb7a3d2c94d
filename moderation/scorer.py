"""The scorer: one object, built from a model directory, that turns a list of posts into a list of results.

The CLI, batch scoring, evaluation and the Ray Serve deployment all call this code path, so what is
measured is what is served. Lists in, lists out: one result per post, in order; a post that cannot be
scored gets a result carrying its error, never a score.

    scorer = Scorer.from_dir("path/to/model")          # or Scorer.default()
    results = scorer.score([{"id": "1", "text": "..."}, {"id": "2", "image": "cat.jpg"}], image_root="data/")

Images get two more looks while they are decoded, in the same worker thread: OCR reads their printed text
for the text side (`ocr`, moderation.ocr), and their PDQ hash is matched against lists of known violating
images (`hash_lists`, moderation.hashes); a match flags the listed category whatever the model says.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from moderation.calibration import sigmoid
from moderation.hashes import HashList, HashMatcher, as_matcher
from moderation.inputs import DEFAULT_LIMITS, InputLimits, check_text, load_image
from moderation.model import ModelConfig, ModerationModel, PreparedPost, collate, merge_lora
from moderation.language import detect_language
from moderation.model_dir import ModelInfo, default_model_dir, load_model, read_model_info
from moderation.policy import POLICY_FILE, Policy, from_thresholds
from moderation.precision import (PRECISIONS, BLOCK_GUARDED, DEFAULT_BATCH_SIZE, GUARDED_MODES,  # noqa: F401 - PRECISIONS
                                  PrecisionChoice, PrecisionError, check_precision, guard_margins, resolve_precision)
from moderation.onnx_text import DEFAULT_MAX_POSTS, text_runtime
from moderation.ocr import OcrEngine, OcrUnavailableError, check_ocr_mode, model_dir as ocr_model_dir, shared_engine
from moderation.textnorm import normalize_text
from moderation.schema import CategoryResult, ErrorCode, HashMatch, InputError, Post, ScoreResult

UNTRAINED_VERSION = "default-untrained"


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def planned_precision(model_dir: str | os.PathLike | None, precision: str = "auto",
                      device: str = "cpu") -> PrecisionChoice:
    """The precision a Scorer of `model_dir` (None: the shipped default model) would run in on `device`, read from
    the directory's config and precision record without loading weights: what a driver prints before its
    workers load the model. Raises ModelDirError, PrecisionError."""
    path = Path(model_dir) if model_dir is not None else default_model_dir()
    if path is None:
        version, record = UNTRAINED_VERSION, None
    else:
        info = read_model_info(path)
        version, record = info.model_version, info.precision
    return resolve_precision(precision, resolve_device(device), model_version=version, record=record)


@dataclass
class PreparedImagePost(PreparedPost):
    """A prepared post plus what its image told besides pixels: OCR text and hash-list matches.

    `text` is what the text encoder reads (the given text, the OCR text or both, per the scorer's `ocr` mode);
    `text_sources` says which ("ocr_text", "text"); `hash_matches` are nearest first.
    """

    ocr_text: str | None = None
    text_sources: tuple[str, ...] = ()
    hash_matches: tuple[HashMatch, ...] = ()

    @property
    def applied_input_types(self) -> list[str]:
        """What the scores used, sorted: "image" (pixels), "ocr_text" (text read in the image), "text" (given)."""
        used = ["image"] if self.pixels is not None else []
        return sorted(used + list(self.text_sources if self.text is not None else ()))


def applied_input_types(item: PreparedPost) -> list[str]:
    """What a prepared post's scores use (modalities, with "ocr_text" for text read in the image)."""
    return item.applied_input_types if isinstance(item, PreparedImagePost) else item.modalities


class Scorer:
    """Scores posts with a model, its calibration and its thresholds.

    batch_size: posts per forward pass. precision: "fp32" (the default here: the thresholds are fitted in it), "bf16"
    autocast (faster on CPUs and GPUs with native bf16), "bf16-guarded" (bf16, then fp32 again for the posts whose
    bf16 logits lie within `guard_margin`, per category, of a threshold: fp32's decisions near bf16's cost; default
    margins: the precision record's; `forward_stats` counts posts scored, scored twice and run through ONNX),
    "bf16-block-guarded" (the same for the block thresholds only: fp32's blocks), or
    "auto": a bf16 where the device has native bf16 and the model directory's precision record validates it for this
    model, fp32 elsewhere (moderation.precision; the default of batch scoring and serving). `precision` is then what runs and
    `precision_choice` says why; every result records it. num_workers: threads that read and decode images in
    parallel (0: in the calling thread); OCR and hashing run there too. image_root: default folder that image paths
    resolve under. onnx_text: "off" (default), "auto" or "on": batches of at most `onnx_max_posts` (0: none) posts,
    and bf16-guarded's re-scored posts, run their text encoder in fp32 through ONNX Runtime (moderation.onnx_text).

    ocr: "auto" (default, or its synonym "both") reads the printed text of every image post and scores it after
    the given text (alone when there is none); "ocr" scores the OCR text instead of the given text; "off" never
    reads (see moderation.ocr). The text is normalised before it is scored (moderation.textnorm). ocr_with_image: when a post's text comes from OCR alone, also feed its
    image to the model (default False: the text is scored alone; on the shipped model the image adds nothing
    and fusing it drowned the text's signal, docs/benchmarks.md). hash_lists: hash-list files (or loaded lists, or a HashMatcher) of known
    violating images: an image within a list's distance threshold gets `hash_match` and its category flagged.
    ocr_engine: the OCR engine to use (default: one shared per process). Raises OcrUnavailableError when OCR
    is on and its packages are missing, HashListError / FileNotFoundError for a bad list.
    """

    def __init__(self, model: ModerationModel, info: ModelInfo, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str = "cpu", precision: str = "fp32", image_root: str | os.PathLike | None = None,
                 limits: InputLimits = DEFAULT_LIMITS, num_workers: int | None = None, ocr: str = "auto",
                 ocr_with_image: bool = False,
                 hash_lists: Sequence[str | os.PathLike | HashList] | HashMatcher | None = None,
                 ocr_engine: OcrEngine | None = None, policy: Policy | str | os.PathLike | None = None,
                 detect_language: bool = True, guard_margin: Mapping[str, float] | None = None,
                 onnx_text: str = "off", onnx_max_posts: int = DEFAULT_MAX_POSTS) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_precision(precision)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        self.batch_size = batch_size
        self.precision_choice: PrecisionChoice = resolve_precision(
            precision, self.device, model_version=info.model_version, record=info.precision)
        #: What the model runs in (one of PRECISIONS), after resolving "auto".
        self.precision: str = self.precision_choice.chosen
        self.guard_margin: dict[str, float] | None = None
        if self.precision in GUARDED_MODES:
            self.guard_margin = guard_margins(guard_margin, info.precision, info.model_version, self.categories)
        self.forward_stats: dict[str, int] = {"posts": 0, "rescored": 0, "onnx": 0}  # rescored: fp32 again (guarded)
        #: onnx_text "auto" / "on": batches of at most onnx_max_posts run fp32 in ONNX Runtime (moderation.onnx_text)
        self.onnx_max_posts = int(onnx_max_posts)
        self.onnx_text, self.onnx_text_choice = text_runtime(
            onnx_text, self.model, self.device, max_posts=self.onnx_max_posts,
            spin=self.precision not in GUARDED_MODES, rescoring=self.precision in GUARDED_MODES)
        self.image_root = image_root
        self.limits = limits
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self._pool: ThreadPoolExecutor | None = None
        self.ocr = check_ocr_mode(ocr)
        if self.ocr != "off" and ocr_engine is None:
            ocr_model_dir()  # fail now, with what to do, rather than on the first image
        self._ocr_engine = ocr_engine
        self.ocr_with_image = bool(ocr_with_image)
        self.hash_matcher = as_matcher(hash_lists)
        self.policy = self.resolve_policy(policy)
        self.detect_language = bool(detect_language)

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | os.PathLike, **kwargs: Any) -> "Scorer":
        """Load a model directory (see moderation.model_dir) and wrap it. Raises ModelDirError.

        LoRA adapters are merged into their base weights (the scorer owns this copy and only infers with it):
        same scores, one matmul less per adapted layer (+8-13% posts/s on 2 CPU threads, docs/benchmarks-serving.md).
        """
        policy = kwargs.get("policy")
        if policy is not None and not isinstance(policy, Policy):
            policy = kwargs["policy"] = Policy.load(policy)
        # The policy in use is checked against the model's categories from its config, before any weight loads.
        config_only = read_model_info(path)
        chosen, source = (policy, "the policy given") if policy is not None else (config_only.policy, f"{path}/{POLICY_FILE}")
        if chosen is not None:
            chosen.check_categories(config_only.config.categories, source)
        model, info = load_model(path)
        merge_lora(model)
        return cls(model, info, **kwargs)

    @classmethod
    def default(cls, **kwargs: Any) -> "Scorer":
        """The shipped default model; while none is trained, the default architecture with an UNTRAINED head.

        An untrained scorer says so (`trained` is False, the version is "default-untrained") and has no
        thresholds, so it flags nothing: its scores are not judgements.
        """
        path = default_model_dir()
        if path is not None:
            return cls.from_dir(path, **kwargs)
        config = ModelConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = ModerationModel(config)
        info = ModelInfo(path=None, config=config, model_version=UNTRAINED_VERSION, trained=False,
                         calibration=None, thresholds=None, meta={})
        return cls(model, info, **kwargs)

    def resolve_policy(self, policy: Policy | str | os.PathLike | None) -> Policy:
        """The policy in use: the one given (object or file), else the model directory's policy.json, else a
        block-only policy from its thresholds.json, else (an untrained model) one that never actions.

        Raises PolicyError for an unreadable file, or a policy that lacks a category this model scores or names
        one it does not."""
        if isinstance(policy, Policy):
            chosen = policy
        elif policy is not None:
            chosen = Policy.load(policy)
        elif self.info.policy is not None:
            chosen = self.info.policy
        elif self.info.thresholds is not None:
            chosen = from_thresholds(self.info.thresholds)
        else:  # an untrained model: nothing is actioned, on purpose
            return Policy(version="none", categories={}, meta={"note": "no thresholds: nothing is actioned"})
        return chosen.check_categories(self.categories)

    # --- what it is ---------------------------------------------------------------------------------

    @property
    def categories(self) -> list[str]:
        return self.model.categories

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.model.modalities

    @property
    def model_version(self) -> str:
        return self.info.model_version

    @property
    def thresholds_version(self) -> str | None:
        return self.info.thresholds.version if self.info.thresholds is not None else None

    @property
    def trained(self) -> bool:
        return self.info.trained

    def thresholds(self) -> dict[str, float | None]:
        """Block threshold per category, from the policy (None: never flags automatically)."""
        return {c: (self.policy.categories[c].block if c in self.policy.categories else None) for c in self.categories}

    def review_thresholds(self) -> dict[str, float | None]:
        """Review threshold per category, from the policy (None: no review band)."""
        return {c: (self.policy.categories[c].review if c in self.policy.categories else None) for c in self.categories}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: version, categories, modalities, thresholds, calibration, trained."""
        return {
            "model_version": self.model_version,
            "trained": self.trained,
            "categories": self.categories,
            "modalities": list(self.modalities),
            "thresholds": self.thresholds(),
            "review_thresholds": self.review_thresholds(),
            "thresholds_version": self.thresholds_version,
            "policy_version": self.policy.version,
            "policy": self.policy.rules(),
            "image_categories": self.image_categories(),
            "target_precision": self.info.thresholds.target_precision if self.info.thresholds else None,
            "calibration_version": self.info.calibration.version if self.info.calibration else None,
            "text_encoder": self.info.config.text_encoder,
            "image_encoder": self.info.config.image_encoder,
            "fusion": self.info.config.fusion,
            "path": str(self.info.path) if self.info.path else None,
            "precision": self.precision,
            "precision_choice": self.precision_choice.to_dict(),
            "precision_record": self.info.precision.to_json() if self.info.precision is not None else None,
            "onnx_text": {"choice": self.onnx_text_choice, "max_posts": self.onnx_max_posts if self.onnx_text else 0},
            "ocr": self.ocr,
            "ocr_with_image": self.ocr_with_image,
            "hash_lists": self.hash_matcher.describe() if self.hash_matcher is not None else [],
            "term_lists": [tl.describe() for tl in self.policy.term_lists],
        }

    @property
    def hash_list_versions(self) -> dict[str, str]:
        """Name -> version of each hash list in use (empty when none)."""
        return self.hash_matcher.versions() if self.hash_matcher is not None else {}

    @property
    def ocr_engine(self) -> OcrEngine:
        if self._ocr_engine is None:
            self._ocr_engine = shared_engine()
        return self._ocr_engine

    # --- preparing posts ----------------------------------------------------------------------------

    def prepare(self, post: Post | Mapping[str, Any], image_root: str | os.PathLike | None = None) -> PreparedPost:
        """Validate a post and preprocess it: text checked; image read, decoded, hashed against the hash lists,
        read by OCR (per the `ocr` mode) and transformed, all in the calling thread, once per image.

        Thread-safe. Raises InputError with a stable code when the post cannot be scored.
        """
        if not isinstance(post, Post):
            post = Post.from_dict(post)
        text, truncated = check_text(post.text, self.limits)
        if text is None and post.image is None:
            raise InputError(ErrorCode.EMPTY_POST, "the post has neither text nor an image")
        reads_image = "image" in self.modalities
        wants_ocr = self.ocr != "off"  # a caption is no reason to skip the words printed in the image
        pixels = None
        ocr_text: str | None = None
        matches: tuple[HashMatch, ...] = ()
        if post.image is not None and (reads_image or wants_ocr or self.hash_matcher is not None):
            root = image_root if image_root is not None else self.image_root
            image = load_image(post.image, root, self.limits)
            if self.hash_matcher is not None:
                matches = tuple(self.hash_matcher.match_image(image))
            if wants_ocr:
                ocr_text = self._read_text(image)
            only_ocr_text = bool(ocr_text) and (text is None or self.ocr == "ocr")
            if reads_image and (self.ocr_with_image or not only_ocr_text or "text" not in self.modalities):
                pixels = self.model.encoders["image"].transform(image)
        sources: tuple[str, ...] = ("text",) if text is not None else ()
        if ocr_text:
            if text is not None and self.ocr in ("auto", "both"):
                text, sources = f"{text}\n{ocr_text}", ("ocr_text", "text")
            else:
                text, sources = ocr_text, ("ocr_text",)
            text, ocr_truncated = check_text(text, self.limits)
            truncated = truncated or ocr_truncated
        if text is None and pixels is None:
            found = " (and OCR found none in its image)" if ocr_text is not None else ""
            raise InputError(ErrorCode.MODALITY_UNSUPPORTED, f"this model reads text only and the post has no text{found}")
        if text is not None and "text" not in self.modalities:
            if pixels is None:
                raise InputError(ErrorCode.MODALITY_UNSUPPORTED, "this model reads images only and the post has no image")
            text, sources = None, ()
        if text is not None:
            text = normalize_text(text)  # look-alike letters cannot dodge the model (moderation.textnorm)
        return PreparedImagePost(id=post.id, text=text, pixels=pixels, text_truncated=truncated, ocr_text=ocr_text,
                                 text_sources=sources, hash_matches=matches)

    def _read_text(self, image: Any) -> str:
        try:
            return self.ocr_engine.read(image)
        except (OcrUnavailableError, InputError):  # InputError: over the OCR caps (moderation.ocr)
            raise
        except Exception as exc:  # noqa: BLE001 - said on this post's result, never scored as if text-free
            raise RuntimeError(f"OCR failed on this image ({type(exc).__name__}: {exc})") from exc

    def prepare_many(self, posts: Sequence[Post | Mapping[str, Any]],
                     image_root: str | os.PathLike | None = None) -> list[PreparedPost | ScoreResult]:
        """Prepare each post (images decoded in `num_workers` threads); a failure becomes an error result.

        Duplicate ids within `posts` are reported: every occurrence after the first gets a DUPLICATE_ID error.
        """
        def one(post: Post | Mapping[str, Any]) -> PreparedPost | ScoreResult:
            try:
                return self.prepare(post, image_root)
            except InputError as exc:
                return self._failure(_post_id(post), exc)
            except Exception as exc:  # noqa: BLE001 - one bad post must not sink the others
                return self._failure(_post_id(post), exc)

        has_images = any(_has_image(p) for p in posts)
        if self.num_workers > 0 and has_images and len(posts) > 1:
            out = list(self._executor().map(one, posts))
        else:
            out = [one(p) for p in posts]
        seen: set[str] = set()
        for i, item in enumerate(out):
            if isinstance(item, PreparedPost):
                if item.id in seen:
                    out[i] = self._failure(item.id, InputError(
                        ErrorCode.DUPLICATE_ID, f"id {item.id!r} appears more than once in this request"))
                seen.add(item.id)
        return out

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="moderation-prep")
        return self._pool

    def close(self) -> None:
        """Stop the image-decoding threads (also done at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # --- the model ----------------------------------------------------------------------------------

    def logits(self, items: Sequence[PreparedPost]) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits for prepared posts, (N, C) float64, plus (N,) bool 'text truncated'. Order kept.

        Runs in chunks of `batch_size`, each chunk's posts sorted by text length to cut padding. The guarded
        precisions: the posts near_thresholds() finds in the bf16 pass get their fp32 logits (from ONNX Runtime where
        the scorer has it: the same fp32 graph at ~0.6x PyTorch fp32's time for these small batches)."""
        self.forward_stats["posts"] += len(items)
        if self.onnx_text is not None and len(items) <= self.onnx_max_posts:
            self.forward_stats["onnx"] += len(items)
            return self._forward(items, bf16=False, runtime=self.onnx_text)
        if self.precision not in GUARDED_MODES:
            return self._forward(items, bf16=self.precision == "bf16")
        logits, truncated = self._forward(items, bf16=True)
        near = self.near_thresholds(items, logits)
        if near.any():
            idx = np.flatnonzero(near)
            logits[idx] = self._forward([items[i] for i in idx], bf16=False, runtime=self.onnx_text)[0]
            self.forward_stats["rescored"] += len(idx)
        return logits, truncated

    def near_thresholds(self, items: Sequence[PreparedPost], logits: np.ndarray, margins: Mapping[str, float] | None
                        = None, blocks_only: bool | None = None) -> np.ndarray:
        """(N,) bool: posts whose decision could differ for a logit within `margins` (default: guard_margin) of
        theirs, i.e. whose calibrated scores at logit - margin and logit + margin lie on two sides of a category's
        block or review threshold (calibration is monotone, so every score in between lies between them).
        blocks_only (default: the precision is bf16-block-guarded): the block thresholds alone."""
        margins = self.guard_margin if margins is None else margins
        if margins is None:
            raise PrecisionError(f"near_thresholds needs the margins of {' or '.join(GUARDED_MODES)}")
        blocks_only = self.precision == BLOCK_GUARDED if blocks_only is None else blocks_only
        margin = np.array([margins[c] for c in self.categories], dtype=np.float64)
        low, high = self.probabilities(items, logits - margin), self.probabilities(items, logits + margin)
        near = np.zeros(len(items), dtype=bool)
        for j, c in enumerate(self.categories):
            entry = self.policy.categories.get(c)
            for t in (() if entry is None else (entry.block,) if blocks_only else (entry.block, entry.review)):
                if t is not None:
                    near |= (low[:, j] < t) & (high[:, j] >= t)
        return near

    def _autocast(self, bf16: bool) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def _forward(self, items: Sequence[PreparedPost], bf16: bool, runtime: Any = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(items)
        logits = np.zeros((n, len(self.categories)), dtype=np.float64)
        truncated = np.zeros(n, dtype=bool)
        if n == 0:
            return logits, truncated
        order = sorted(range(n), key=lambda i: len(items[i].text or ""))
        with torch.inference_mode(), self._autocast(bf16):
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = collate([items[i] for i in idx], self.model, self.device)
                if runtime is not None and "text" in batch:
                    batch["text_runtime"] = runtime
                out = self.model(batch).float().cpu().numpy()
                logits[idx] = out
                truncated[idx] = batch["truncated"].numpy()
        return logits, truncated

    def image_categories(self) -> list[str]:
        """Categories an image alone can be judged for: those the image classifier was trained on (all, for a
        fused head or a model that reads images only)."""
        head = self.model.head
        if "image" not in self.modalities:
            return []
        flags = getattr(head, "image_categories", None)
        if flags is None:
            return list(self.categories)
        return [c for c, f in zip(self.categories, flags.tolist()) if f > 0]

    def image_adds_to_text(self, category: str) -> bool:
        """Whether an image beside a text changes this category's score (False for a late-fusion head whose
        image weight for it is 0: a post with both is then scored from its text alone)."""
        if "image" not in self.modalities or "text" not in self.modalities:
            return False
        weights = getattr(self.model.head, "image_weight", None)
        if weights is None:  # a fused head (gated / concat) mixes the image into every category
            return True
        j = self.categories.index(category)
        return float(weights[j].clamp(0, self.model.config.image_weight_cap)) > 0

    def _category_inputs(self, applied: list[str], category: str, image_ok: set[str]) -> list[str]:
        """The inputs of a post that a category's score used: the image counts where it can judge the category."""
        has_text = any(t != "image" for t in applied)
        if "image" not in applied:
            return applied
        if not has_text:
            return applied if category in image_ok else []
        if not self.image_adds_to_text(category):
            return [t for t in applied if t != "image"]
        return applied

    def probabilities(self, items: Sequence[PreparedPost], logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, C) of the logits of prepared posts, per their input type."""
        types = ["+".join(item.modalities) for item in items]
        return self.info.calibration.apply(logits, self.categories, types) if self.info.calibration else sigmoid(logits)

    def results(self, items: Sequence[PreparedPost], logits: np.ndarray, truncated: np.ndarray) -> list[ScoreResult]:
        """Turn logits into results: calibrate per input type, decide per the policy (thresholds, hash matches,
        language), record inputs, language and versions."""
        cats = self.categories
        probs = self.probabilities(items, logits)
        policy = self.policy
        block, review = self.thresholds(), self.review_thresholds()
        image_ok = set(self.image_categories())
        out = []
        for i, item in enumerate(items):
            applied = applied_input_types(item)
            inputs = {c: self._category_inputs(applied, c, image_ok) for c in cats}
            # A category none of the post's inputs can judge is not scored (0); the policy's not_judged rule
            # decides its action (allow by default, as OpenAI's API does).
            scores = {c: (float(probs[i, j]) if inputs[c] else 0.0) for j, c in enumerate(cats)}
            lang = detect_language(item.text) if self.detect_language and item.text is not None else None
            matches = getattr(item, "hash_matches", ())
            terms = policy.match_terms(item.text)
            decision = policy.decide(scores, language=lang.code if lang else None,
                                     language_confidence=lang.confidence if lang else None,
                                     letters=lang.letters if lang else 0,
                                     hash_categories=[m.category for m in matches],
                                     not_judged=[c for c in cats if not inputs[c]], term_matches=terms)
            categories = {c: CategoryResult(score=scores[c], flagged=decision.categories[c] == "block",
                                            threshold=block[c], action=decision.categories[c],
                                            review_threshold=review[c], applied_input_types=inputs[c]) for c in cats}
            out.append(ScoreResult(id=item.id, categories=categories, applied_input_types=applied,
                                   model_version=self.model_version, thresholds_version=self.thresholds_version,
                                   text_truncated=bool(truncated[i]), ocr_text=getattr(item, "ocr_text", None),
                                   hash_match=matches[0] if matches else None, action=decision.action,
                                   reasons=decision.reasons, language=lang.code if lang else None,
                                   language_confidence=round(lang.confidence, 4) if lang else None,
                                   policy_version=policy.version, term_matches=terms, precision=self.precision))
        return out

    def score_prepared(self, items: Sequence[PreparedPost | ScoreResult]) -> list[ScoreResult]:
        """Score a mix of prepared posts and error results (from prepare_many); order kept."""
        ready = [(i, it) for i, it in enumerate(items) if isinstance(it, PreparedPost)]
        out: list[ScoreResult | None] = [it if isinstance(it, ScoreResult) else None for it in items]
        if ready:
            prepared = [it for _, it in ready]
            try:
                logits, truncated = self.logits(prepared)
                scored = self.results(prepared, logits, truncated)
            except Exception as exc:  # noqa: BLE001 - report on every post of the batch, never drop them
                scored = [self._failure(p.id, exc) for p in prepared]
            for (i, _), result in zip(ready, scored):
                out[i] = result
        return [r for r in out if r is not None]

    def score(self, posts: Sequence[Post | Mapping[str, Any]], image_root: str | os.PathLike | None = None) -> list[ScoreResult]:
        """Score posts: one result per post, in order. Never raises for a bad post: its result has the error."""
        if isinstance(posts, (str, bytes, Mapping, Post)):
            raise TypeError("score() takes a list of posts; wrap a single post in a list")
        return self.score_prepared(self.prepare_many(list(posts), image_root))

    def _failure(self, post_id: str | None, exc: Exception) -> ScoreResult:
        return ScoreResult.failure(post_id, exc, self.model_version, self.thresholds_version, self.policy.version)


def _post_id(post: Any) -> str | None:
    if isinstance(post, Post):
        return post.id
    if isinstance(post, Mapping):
        raw = post.get("id")
        return None if raw is None else str(raw)
    return None


def _has_image(post: Any) -> bool:
    if isinstance(post, Post):
        return post.image is not None
    return isinstance(post, Mapping) and post.get("image") is not None
