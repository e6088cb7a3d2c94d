"""Images benchmark: OCR quality and what it buys, OCR's cost on batch throughput, PDQ hash robustness.

    nice -n 10 python -m benchmarks.images                       # everything (about 30-40 min on 2 cores)
    python -m benchmarks.images --parts hashes                   # one part: ocr, throughput, hashes

On the MultiOFF memes (../shared/datasets/multioff; content warning: real offensive material), with the shipped
default model (`Scorer.default()`, its model_version printed):

1. ocr: every meme is scored as an image-only post (its text hidden) through the scorer with `ocr="auto"`,
   which reads its text (the OCR runs in the scorer's image threads). Word error rate of that OCR text against
   the dataset's own text (itself OCR of someone else: it runs words together in places), after lower-casing
   and dropping punctuation; character error rate with spaces removed (recognition alone, not word splitting).
   Then ROC-AUC and F1 of the offensive class on the test split (F1 at the threshold that maximises it on val,
   as in the model card) for image-only posts: without OCR (`ocr="off"`: the image CNN alone), with OCR (the
   default: the OCR text scored alone), with OCR and the image (`ocr_with_image=True`: the OCR text fed as the
   post's text beside the image: the same model inputs, without reading every image twice), and for reference
   the dataset's text with and without the image.
2. throughput: `moderation.batch.score_dump` on a dump of image-only MultiOFF posts with OCR off and on,
   alternated A/B/A/B in one run (the machine may be shared: compare within a run).
3. hashes: every MultiOFF image and the example images are listed; each is then edited (resized to half,
   re-encoded at JPEG 50, both, cropped 2% and 5%, captioned, mirrored, rotated 90 degrees) and matched back against
   the list (all 8 dihedral orientations of the query): match rate at the threshold, and distances. Distinct
   memes: every pair of different MultiOFF images, as if one were listed and the other uploaded (both
   directions). MultiOFF holds the same meme more than once under different ids (re-encoded copies, some
   across splits), so a pair within the threshold whose dataset texts share at least half their words is
   counted as a duplicate, and only the others as false matches; the closest of each are listed to check.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.quality import anchor_metrics
from moderation.batch import score_dump
from moderation.hashes import PDQ_MATCH_THRESHOLD, hamming, hex_to_words, pdq_dihedral, pdq_hash
from moderation.inputs import load_image
from moderation.ocr import OcrEngine, OcrSettings
from moderation.scorer import Scorer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
PARTS = ("ocr", "throughput", "hashes")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- 1. OCR quality ----------------------------------------------------------------------------------------

def normalize_words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (apostrophes removed inside words: "don't" -> "dont")."""
    import re

    text = (text or "").lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"[^a-z0-9]+", " ", text).split()


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance between two sequences (words or characters)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Corpus WER (word edits / reference words) and CER without spaces (char edits / reference chars)."""
    w_err = w_tot = c_err = c_tot = 0
    for ref, hyp in zip(refs, hyps):
        rw, hw = normalize_words(ref), normalize_words(hyp)
        w_err += edit_distance(rw, hw)
        w_tot += len(rw)
        rc, hc = "".join(rw), "".join(hw)
        c_err += edit_distance(rc, hc)
        c_tot += len(rc)
    return {"wer": w_err / max(1, w_tot), "cer_no_spaces": c_err / max(1, c_tot), "ref_words": w_tot}


def _offensive(results: Sequence[Any]) -> np.ndarray:
    bad = [r for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"{len(bad)} posts could not be scored, e.g. {bad[0].id}: {bad[0].error}")
    return np.array([r.categories["offensive"].score for r in results], dtype=np.float64)


def _score(scorer: Any, posts: list[dict[str, Any]], root: Path, chunk: int = 64, label: str = "") -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(posts), chunk):
        out += scorer.score(posts[start : start + chunk], image_root=root)
        print(f"\r  {label} {len(out)}/{len(posts)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def ocr_quality(datasets: Path, limit: int | None = None, split_words: bool = True) -> dict[str, Any]:
    """WER of OCR vs the dataset's text, and image-only ROC-AUC / F1 with and without OCR (module docstring).

    split_words False: OCR without splitting runs of letters into words (to measure what the split does)."""
    root = datasets / "multioff"
    rows = _read_jsonl(root / "data.jsonl")[:limit]
    engine = OcrEngine(OcrSettings(split_joined_words=split_words))
    scorer = Scorer.default(ocr="auto", num_workers=2, ocr_engine=engine)
    scorer_off = Scorer.default(ocr="off", num_workers=2)
    print(f"model {scorer.model_version}: scoring {len(rows)} MultiOFF memes as image-only posts", file=sys.stderr)
    image_only = [{"id": r["id"], "image": r["image"]} for r in rows]
    start = time.perf_counter()
    with_ocr = _score(scorer, image_only, root, label="OCR")
    ocr_wall = time.perf_counter() - start
    ocr_texts = [r.ocr_text or "" for r in with_ocr]
    variants = {
        "image only, OCR off": _offensive(_score(scorer_off, image_only, root, label="image only")),
        "image only, OCR text alone (default)": _offensive(with_ocr),
        "image only, OCR text + image (ocr_with_image)": _offensive(_score(
            scorer_off, [{"id": r["id"], "image": r["image"], "text": t or None} for r, t in zip(rows, ocr_texts)],
            root, label="OCR text + image")),
        "reference: dataset text + image": _offensive(_score(
            scorer_off, [{"id": r["id"], "image": r["image"], "text": r["text"]} for r in rows], root, label="text+image")),
        "reference: dataset text alone": _offensive(_score(
            scorer_off, [{"id": r["id"], "text": r["text"]} for r in rows], root, label="text")),
    }
    y = np.array([r["label"] for r in rows])
    split = np.array([r["split"] for r in rows])
    metrics = {}
    for name, s in variants.items():
        val, test = split == "val", split == "test"
        if val.sum() and test.sum():
            metrics[name] = anchor_metrics(y[val], s[val], y[test], s[test], "f1")
    rates = error_rates([r["text"] for r in rows], ocr_texts)
    found = sum(bool(t) for t in ocr_texts)
    return {"model_version": scorer.model_version, "memes": len(rows), "split_words": split_words,
            "ocr_found_text": found,
            "ocr_seconds_per_image_2_threads": ocr_wall / max(1, len(rows)), **rates, "variants": metrics,
            "examples": [{"id": r["id"], "dataset": r["text"][:120], "ocr": t[:120]}
                         for r, t in list(zip(rows, ocr_texts))[:3]]}


# --- 2. throughput ----------------------------------------------------------------------------------------

def ocr_throughput(datasets: Path, rows: int, rounds: int) -> dict[str, Any]:
    """Batch rows/s on image-only MultiOFF posts, OCR off vs auto, alternated in one run."""
    root = datasets / "multioff"
    memes = _read_jsonl(root / "data.jsonl")[:rows]
    scorers = {"ocr off": Scorer.default(ocr="off"), "ocr auto": Scorer.default(ocr="auto")}
    timings: dict[str, list[float]] = {k: [] for k in scorers}
    with tempfile.TemporaryDirectory(prefix="images-bench-") as tmp:
        dump = Path(tmp) / "image_only.jsonl"
        dump.write_text("".join(json.dumps({"id": m["id"], "image": m["image"]}) + "\n" for m in memes))
        for k in range(rounds):
            for name, scorer in scorers.items():
                out = Path(tmp) / f"out-{k}-{name.replace(' ', '_')}.parquet"
                summary = score_dump([dump], out, scorer=scorer, image_root=root, progress=False)
                if summary.rows_errored:
                    raise RuntimeError(f"{summary.rows_errored} rows errored: {summary.error_counts}")
                timings[name].append(summary.rows_per_s)
                print(f"  round {k + 1} {name}: {summary.rows_per_s:.2f} rows/s", file=sys.stderr)
    mean = {k: float(np.mean(v)) for k, v in timings.items()}
    return {"rows": len(memes), "rounds": rounds, "workers": min(4, os.cpu_count() or 1), "rows_per_s": timings,
            "mean_rows_per_s": mean, "ocr_cost_s_per_image": 1 / mean["ocr auto"] - 1 / mean["ocr off"],
            "slowdown": mean["ocr off"] / mean["ocr auto"]}


# --- 3. hash robustness -----------------------------------------------------------------------------------

def _caption(img: Any) -> Any:
    from PIL import ImageDraw, ImageFont

    out = img.copy()
    draw = ImageDraw.Draw(out)
    size = max(12, out.height // 10)
    font = ImageFont.load_default(size=size)
    text = "WHEN THE MEME GETS REPOSTED"
    while draw.textlength(text, font=font) > out.width * 0.95 and size > 8:
        size -= 2
        font = ImageFont.load_default(size=size)
    width = draw.textlength(text, font=font)
    draw.text(((out.width - width) / 2, out.height - size * 1.4), text, font=font, fill="white",
              stroke_width=max(1, size // 10), stroke_fill="black")
    return out


def _jpeg(img: Any, quality: int) -> Any:
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def edits() -> dict[str, Any]:
    """Name -> edit of a PIL image: the everyday changes a re-upload goes through."""
    from PIL import Image, ImageOps

    def half(img: Any) -> Any:
        return img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.BILINEAR)

    def crop(fraction: float) -> Any:
        def edit(img: Any) -> Any:
            dx, dy = round(img.width * fraction / 2), round(img.height * fraction / 2)
            return img.crop((dx, dy, img.width - dx, img.height - dy))
        return edit

    return {
        "resized to 50%": half,
        "re-encoded JPEG 50": lambda img: _jpeg(img, 50),
        "resized 50% + JPEG 50": lambda img: _jpeg(half(img), 50),
        "cropped 2% (1% each side)": crop(0.02),
        "cropped 5% (2.5% each side)": crop(0.05),
        "captioned": _caption,
        "mirrored": ImageOps.mirror,
        "rotated 90 degrees": lambda img: img.rotate(90, expand=True),
    }


def hash_robustness(datasets: Path, limit: int | None = None) -> dict[str, Any]:
    """Match rate of edited copies, and false matches between distinct images, at the PDQ threshold."""
    root = datasets / "multioff"
    memes = _read_jsonl(root / "data.jsonl")[:limit]
    paths = [root / r["image"] for r in memes]
    paths += sorted((REPO / "examples" / "images").glob("*.jpg"))
    images = [load_image(p.name, p.parent) for p in paths]
    start = time.perf_counter()
    listed = [pdq_hash(img) for img in images]
    hash_s = (time.perf_counter() - start) / len(images)
    words = hex_to_words([h for h, _ in listed])
    quality = np.array([q for _, q in listed])
    out: dict[str, Any] = {"images": len(images), "threshold": PDQ_MATCH_THRESHOLD, "pdq_ms_per_image": hash_s * 1000,
                           "quality_below_50": int((quality < 50).sum()), "edits": {}}
    dihedral = []
    for name, edit in edits().items():
        dist = []
        for i, img in enumerate(images):
            q, _ = pdq_dihedral(edit(img))
            dist.append(int(hamming(q, words[i : i + 1]).min()))
        d = np.array(dist)
        out["edits"][name] = {"match_rate": float((d <= PDQ_MATCH_THRESHOLD).mean()), "median_distance": float(np.median(d)),
                              "p95_distance": float(np.percentile(d, 95)), "max_distance": int(d.max())}
        print(f"  {name}: match rate {(d <= PDQ_MATCH_THRESHOLD).mean():.3f}", file=sys.stderr)
    for img in images:
        dihedral.append(pdq_dihedral(img)[0])
    # Distinct MultiOFF images: query i (8 orientations) against listed j, every ordered pair i != j.
    n = len(memes)
    best = np.full((n, n), 257, dtype=np.int64)
    for i in range(n):
        best[i] = hamming(dihedral[i], words[:n]).min(axis=0)
    np.fill_diagonal(best, 257)
    sym = np.minimum(best, best.T)  # a pair matches if either direction does
    pair = sym[np.triu_indices(n, 1)]
    word_sets = [set(normalize_words(r["text"])) for r in memes]

    def same_meme(i: int, j: int) -> bool:
        a, b = word_sets[i], word_sets[j]
        return bool(a or b) and len(a & b) / max(1, len(a | b)) >= 0.5

    within = [(int(sym[i, j]), int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(sym <= PDQ_MATCH_THRESHOLD, 1)))]
    dups = sorted(t for t in within if same_meme(t[1], t[2]))
    false = sorted(t for t in within if not same_meme(t[1], t[2]))
    name = lambda t: (t[0], memes[t[1]]["id"], memes[t[2]]["id"])  # noqa: E731
    out["distinct"] = {"images": n, "pairs": int(pair.size), "within_threshold": len(within),
                       "duplicate_memes": len(dups), "false_matches": len(false),
                       "false_match_rate": len(false) / max(1, int(pair.size)),
                       "p01_distance": float(np.percentile(pair, 1)), "median_distance": float(np.median(pair)),
                       "closest_false": [name(t) for t in false[:10]], "closest_duplicates": [name(t) for t in dups[:5]]}
    return out


# --- report -----------------------------------------------------------------------------------------------

def print_report(res: dict[str, Any]) -> None:
    if "ocr" in res:
        o = res["ocr"]
        split = "" if o["split_words"] else ", joined words NOT split"
        print(f"\n## OCR on MultiOFF ({o['memes']} memes, model {o['model_version']}{split})\n")
        print(f"text found in {o['ocr_found_text']} of {o['memes']}; WER vs the dataset's text {o['wer']:.3f} "
              f"({o['ref_words']} reference words); CER without spaces {o['cer_no_spaces']:.3f}; "
              f"{o['ocr_seconds_per_image_2_threads']:.2f} s per image (2 threads, OCR + model)\n")
        print("| image-only post (test split) | ROC-AUC | F1 offensive (val-chosen threshold) |")
        print("| --- | --- | --- |")
        for name, m in o["variants"].items():
            print(f"| {name} | {m['roc_auc']:.3f} | {m['f1']:.3f} |")
    if "throughput" in res:
        t = res["throughput"]
        print(f"\n## Batch throughput, image-only posts ({t['rows']} rows x {t['rounds']} rounds, A/B alternated)\n")
        for name, v in t["rows_per_s"].items():
            print(f"{name}: {', '.join(f'{x:.2f}' for x in v)} rows/s (mean {t['mean_rows_per_s'][name]:.2f})")
        print(f"OCR costs {t['ocr_cost_s_per_image']:.2f} s per image; {t['slowdown']:.1f}x slower")
    if "hashes" in res:
        h = res["hashes"]
        print(f"\n## PDQ robustness ({h['images']} images, threshold {h['threshold']}, "
              f"{h['pdq_ms_per_image']:.1f} ms per hash; quality < 50: {h['quality_below_50']})\n")
        print("| edit | match rate | median distance | p95 | max |")
        print("| --- | --- | --- | --- | --- |")
        for name, e in h["edits"].items():
            print(f"| {name} | {e['match_rate']:.3f} | {e['median_distance']:.0f} | {e['p95_distance']:.0f} | "
                  f"{e['max_distance']} |")
        d = h["distinct"]
        print(f"\ndistinct MultiOFF images ({d['images']}, {d['pairs']} pairs): {d['within_threshold']} pairs within the "
              f"threshold, of which {d['duplicate_memes']} are the same meme twice in the dataset (texts share >= half "
              f"their words) and {d['false_matches']} are false matches (rate {d['false_match_rate']:.2e}); "
              f"distance 1st percentile {d['p01_distance']:.0f}, median {d['median_distance']:.0f}")
        for dist, a, b in d["closest_false"]:
            print(f"  false match: {a} ~ {b}: {dist}")
        for dist, a, b in d["closest_duplicates"]:
            print(f"  duplicate: {a} ~ {b}: {dist}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--limit", type=int, default=None, help="first N memes only (a quick look)")
    parser.add_argument("--throughput-rows", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-split", action="store_true",
                        help="ocr part: do not split runs of letters into words (what the split buys)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    if not (args.datasets / "multioff" / "data.jsonl").is_file():
        parser.error(f"MultiOFF not found under {args.datasets}")
    res: dict[str, Any] = {}
    if "hashes" in parts:
        res["hashes"] = hash_robustness(args.datasets, args.limit)
    if "ocr" in parts:
        res["ocr"] = ocr_quality(args.datasets, args.limit, split_words=not args.no_split)
    if "throughput" in parts:
        res["throughput"] = ocr_throughput(args.datasets, args.throughput_rows, args.rounds)
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
