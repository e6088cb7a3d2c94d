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
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: What the scorer does with OCR (see Scorer): "off" never reads images; "auto" reads image posts that have no
#: text; "ocr" reads every image post and scores the OCR text instead of the given text (the given text when
#: OCR finds none); "both" reads every image post and scores the given text followed by the OCR text.
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
    image-preparation threads, one image each)."""

    min_score: float = 0.5
    min_chars: int = 2
    split_joined_words: bool = True
    threads: int = 1


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

    The ONNX sessions load on first use (about 1 s), so a scorer that never meets an image pays nothing.
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
                    self._engine = RapidOCR(params={
                        "Global.log_level": "error",
                        "Global.use_cls": False,  # captions are upright; the angle classifier costs time
                        "Global.text_score": float(self.settings.min_score),
                        "Det.model_path": str(self._root / DET_MODEL),
                        "Rec.model_path": str(self._root / REC_MODEL),
                        "Cls.model_path": str(self._root / CLS_MODEL),
                        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                    })
        return self._engine

    def read_lines(self, image: Image.Image) -> list[str]:
        """The recognised lines, in reading order, before any clean-up (confident lines only)."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])  # RapidOCR reads arrays as OpenCV's BGR
        out = self._load()(bgr)
        return [str(t) for t in (out.txts or ())]

    def read(self, image: Image.Image) -> str:
        """The text printed in `image`, lines joined by spaces; "" when none is found."""
        return clean_lines(self.read_lines(image), self.settings)


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
