"""Reading the text printed in an image (OCR), so that the text side of the model can judge it.

Harm in memes is mostly in their printed words, which an ImageNet CNN does not read. `OcrEngine` wraps
RapidOCR 3.x (Apache-2.0): PP-OCRv6 text detection and recognition as ONNX models that ship inside the
`rapidocr` wheel, run by onnxruntime on the CPU. The models are loaded from the installed package by explicit
path, so nothing is ever downloaded (RapidOCR would fetch models it cannot find; here a missing file is an
`OcrUnavailableError` instead).

Meme captions are often read as one run of letters ("GOKILLYOURSELF"): the recogniser sees no gap
between words set tight in bold fonts. `split_joined_words` splits such runs into English words by unigram
frequency (`wordninja`); docs/benchmarks.md measures what it buys against the dataset's text.

    engine = OcrEngine()
    engine.read(pil_image)     # -> "YOU ARE A WORTHLESS IDIOT" ("" when no text is found)

Thread-safe: one engine serves every image-preparation thread (onnxruntime sessions run concurrently).

Bounded: RapidOCR scales the detector input so that the shorter side is 736 px, so a tiny but elongated image
(a 77-byte 1x100 PNG) became a 736 x 69,000 px input (a minute of CPU, 7 GB). Here the detector input is also
held to `OcrSettings.max_pixels`, an image more elongated than `max_aspect` is not read, and each image's OCR
stops after `max_seconds` of CPU; the last two raise InputError(IMAGE_OCR_LIMIT), so the post carries an error
instead of a score that ignored its printed text. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from moderation.schema import ErrorCode, InputError

#: What the scorer does with OCR (see Scorer): "off" never reads images; "auto" (the default) reads every image
#: post and scores its given text followed by the OCR text (the OCR text alone when the post has none: a caption
#: such as "lol" must not hide an insult printed in the image); "both" is the same as "auto" (kept for configs
#: that name it); "ocr" reads every image post and scores the OCR text instead of the given text (the given
#: text when OCR finds none).
OCR_MODES: tuple[str, ...] = ("off", "auto", "ocr", "both")

#: The ONNX models RapidOCR 3.x ships in its wheel (PP-OCRv6 small detector and multilingual recogniser).
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"

# Letters-only runs at least this long that are not an English word are candidates for splitting (shorter
# runs are more often a misread word or a name than words run together: measured on MultiOFF, see
# docs/benchmarks.md).
_MIN_JOINED = 10
_LETTER_RUN = re.compile(r"[A-Za-z]+")


class OcrUnavailableError(RuntimeError):
    """OCR was asked for but its packages or model files are missing."""


@dataclass(frozen=True)
class OcrSettings:
    """How text is read. min_score: a recognised line below this confidence (0-1) is dropped. min_chars: a
    line with fewer letters or digits is dropped (texture read as "0" or "|"). split_joined_words: split runs
    of letters into English words. threads: onnxruntime threads per call (parallelism comes from the
    image-preparation threads, one image each).

    The caps (see the module docstring): max_pixels: the detector's input is at most this many pixels (the
    image is scaled down to fit; normal memes, up to about 736 x 2,700 px after RapidOCR's own upscaling, are
    unaffected). max_aspect: longer side / shorter side above which an image is not read. max_seconds: CPU
    seconds of this thread for one image, checked before every model call (detection, each batch of six
    recognised lines), so one image costs at most this plus one call. max_line_aspect: a detected line longer
    than this many times its height is squeezed to it for the recogniser (bounds the cost of one call)."""

    min_score: float = 0.5
    min_chars: int = 2
    split_joined_words: bool = True
    threads: int = 1
    max_pixels: int = 2_000_000
    max_aspect: float = 25.0
    #: 3 s: the detector alone costs about 1 s of CPU per million input pixels here, so at 2 s an image scaled to
    #: max_pixels (a 4:1 caption is) could never reach the recogniser.
    max_seconds: float = 3.0
    max_line_aspect: int = 40


def check_ocr_mode(mode: str) -> str:
    """Return `mode` when it is one of OCR_MODES; raise ValueError listing them otherwise."""
    if mode not in OCR_MODES:
        raise ValueError(f"ocr mode must be one of {', '.join(OCR_MODES)}; got {mode!r}")
    return mode


def model_dir() -> Path:
    """The folder of the ONNX models inside the installed rapidocr package. Raises OcrUnavailableError."""
    try:
        import onnxruntime  # noqa: F401 - RapidOCR's engine; checked here for a clear message
        import rapidocr
    except ImportError as exc:
        raise OcrUnavailableError(f"OCR needs the rapidocr and onnxruntime packages ({exc}); install them "
                                  "(pip install 'rapidocr>=3' onnxruntime) or switch OCR off (ocr: off)") from None
    root = Path(rapidocr.__file__).resolve().parent / "models"
    missing = [name for name in (DET_MODEL, REC_MODEL) if not (root / name).is_file()]
    if missing:
        raise OcrUnavailableError(f"the rapidocr package has no {', '.join(missing)} in {root}; install rapidocr 3.x "
                                  "(its wheel ships the PP-OCRv6 models) or switch OCR off (ocr: off)")
    return root


class OcrEngine:
    """Reads the printed text of an image: detection, recognition, then clean-up of each line.

    The ONNX sessions load and run once on first use (1-2 s), so a scorer that never meets an image pays nothing.
    """

    def __init__(self, settings: OcrSettings = OcrSettings()) -> None:
        self.settings = settings
        self._root = model_dir()
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from rapidocr import RapidOCR

                    threads = max(1, int(self.settings.threads))
                    engine = RapidOCR(params={
                        "Global.log_level": "error",
                        "Global.use_cls": False,  # captions are upright; the angle classifier costs time
                        "Global.text_score": float(self.settings.min_score),
                        "Det.model_path": str(self._root / DET_MODEL),
                        "Rec.model_path": str(self._root / REC_MODEL),
                        "Cls.model_path": str(self._root / CLS_MODEL),
                        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                    })
                    _bound(engine, self.settings)
                    self._engine = engine
        return self._engine

    def read_lines(self, image: Image.Image) -> list[str]:
        """The recognised lines, in reading order, before any clean-up (confident lines only).

        Raises InputError(IMAGE_OCR_LIMIT) for an image over the aspect cap or over the CPU-time cap."""
        width, height = image.size
        if max(width, height) > self.settings.max_aspect * max(1, min(width, height)):
            raise InputError(ErrorCode.IMAGE_OCR_LIMIT,
                             f"image is {width}x{height}; OCR reads images up to {self.settings.max_aspect:g}:1 "
                             "(send its printed text as the post's text, or crop the image)")
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])  # RapidOCR reads arrays as OpenCV's BGR
        engine = self._load()
        _deadline.end = time.thread_time() + float(self.settings.max_seconds)
        try:
            out = engine(bgr)
        finally:
            _deadline.end = None
        return [str(t) for t in (out.txts or ())]

    def read(self, image: Image.Image) -> str:
        """The text printed in `image`, lines joined by spaces; "" when none is found."""
        return clean_lines(self.read_lines(image), self.settings)


# The CPU-time deadline of the image this thread is reading (None: no image in progress).
_deadline = threading.local()


class _BoundedSession:
    """Wraps an onnxruntime session of RapidOCR's: refuses a call once the reading thread's deadline has passed,
    and (for the recogniser) narrows a batch wider than `max_width` px, so that no single call is long."""

    def __init__(self, session: Any, max_width: int | None = None) -> None:
        self._session = session
        self._max_width = max_width

    def __call__(self, batch: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        end = getattr(_deadline, "end", None)
        if end is not None and time.thread_time() > end:
            raise InputError(ErrorCode.IMAGE_OCR_LIMIT, "OCR of this image ran past its time limit (an image packed "
                                                        "with text, or one built to be slow to read)")
        if self._max_width is not None and batch.shape[-1] > self._max_width:
            import cv2

            # (N, C, H, W) float: each line squeezed to max_width (a line over 40:1 is read compressed, not skipped)
            batch = np.stack([cv2.resize(np.ascontiguousarray(b.transpose(1, 2, 0)), (self._max_width, b.shape[1]))
                              .reshape(b.shape[1], self._max_width, -1).transpose(2, 0, 1) for b in batch])
        return self._session(batch, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _bound(engine: Any, settings: OcrSettings) -> None:
    """Put the pixel budget on RapidOCR's detector and the deadline on its model calls (rapidocr 3.x internals,
    pinned in pyproject.toml; tests/moderation/test_ocr.py checks that both still hold)."""
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    det, rec = engine._load_det_model(), engine._load_rec_model()

    class BoundedDetPreProcess(DetPreProcess):
        def resize(self, img: np.ndarray) -> np.ndarray | None:
            import cv2

            h, w = img.shape[:2]
            # RapidOCR's "min" rule (shorter side up to limit_side_len, never down), then the pixel budget.
            ratio = max(1.0, float(self.limit_side_len) / min(h, w))
            ratio = min(ratio, math.sqrt(settings.max_pixels / float(h * w)))
            resize_h = int(round(int(h * ratio) / 32) * 32)
            resize_w = int(round(int(w * ratio) / 32) * 32)
            if resize_h <= 0 or resize_w <= 0:
                return None
            return cv2.resize(img, (resize_w, resize_h))

    pre = BoundedDetPreProcess(det.limit_side_len, "min", det.mean, det.std)
    det.get_preprocess = lambda: pre
    # The first run of a session allocates and plans (up to seconds on a busy machine): done here, before any
    # image's deadline runs.
    from rapidocr.ch_ppocr_rec.typings import TextRecInput

    det(np.full((64, 256, 3), 255, dtype=np.uint8))
    rec(TextRecInput(img=[np.full((48, 320, 3), 255, dtype=np.uint8)]))
    det.session = _BoundedSession(det.session)
    rec.session = _BoundedSession(rec.session, max_width=48 * settings.max_line_aspect)


def clean_lines(lines: list[str], settings: OcrSettings = OcrSettings()) -> str:
    """Drop lines with too few letters/digits, split joined words if asked, join with spaces."""
    kept = []
    for line in lines:
        line = " ".join(line.split())
        if sum(ch.isalnum() for ch in line) < settings.min_chars:
            continue
        kept.append(split_joined_words(line) if settings.split_joined_words else line)
    return " ".join(kept)


def split_joined_words(text: str) -> str:
    """Split runs of letters that are not English words into the most likely words ("GOKILLYOURSELF" ->
    "GO KILL YOURSELF"); everything else (punctuation, digits, known words, runs under 10 letters, runs
    whose split leaves a stray letter) is kept as is."""
    import wordninja

    vocab = wordninja.DEFAULT_LANGUAGE_MODEL._wordcost  # word -> cost, lower-case English (Wikipedia unigrams)

    def one(match: re.Match) -> str:
        run = match.group(0)
        if len(run) < _MIN_JOINED or run.lower() in vocab:
            return run
        words = wordninja.split(run)
        # A one-letter piece other than "a" / "I" means the run is a misread word, not words run together.
        if any(len(w) == 1 and w.lower() not in ("a", "i") for w in words):
            return run
        return " ".join(words)

    return _LETTER_RUN.sub(one, text)


_shared: dict[OcrSettings, OcrEngine] = {}
_shared_lock = threading.Lock()


def shared_engine(settings: OcrSettings = OcrSettings()) -> OcrEngine:
    """One engine per settings in this process (its ONNX sessions are shared by every scorer and thread)."""
    with _shared_lock:
        engine = _shared.get(settings)
        if engine is None:
            engine = _shared[settings] = OcrEngine(settings)
        return engine
