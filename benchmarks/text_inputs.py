"""Cost of the input hardening of issue 22 (S3): text normalisation per post, and OCR on posts with a caption.

Normalisation (moderation.textnorm.normalize_text) is timed one post at a time on the TweetEval hate test tweets
(when ../shared/datasets is present; else synthetic text), and on the same tweets disguised (fullwidth letters,
Cyrillic look-alikes), the worst case: every character is non-ASCII. OCR on captioned posts: the default scorer
scores N posts that have a caption and a captioned image, with OCR off (the old default's behaviour for them)
and with the default "auto" (which now reads them), in the calling thread; seconds per post.

    python -m benchmarks.text_inputs [--posts 2970] [--ocr-posts 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from moderation.scorer import Scorer
from moderation.textnorm import normalize_text

DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "tweeteval_hate" / "data.jsonl"
_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_CYRILLIC = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "y": "у", "x": "х", "i": "і"}


def _tweets(limit: int) -> tuple[list[str], str]:
    if DATASET.is_file():
        rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
        texts = [r["text"] for r in rows if r.get("split") == "test"][:limit]
        return texts, f"TweetEval hate test split ({len(texts)} tweets)"
    return [f"post number {i}: you are all wonderful people, café" for i in range(limit)], "synthetic"


def _per_post_us(texts: list[str]) -> tuple[float, float]:
    times = []
    for text in texts:
        started = time.perf_counter()
        normalize_text(text)
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return statistics.mean(times), times[int(0.99 * (len(times) - 1))]


def _ocr_cost(n: int) -> dict[str, float]:
    from tests.imagegen import caption, encode

    posts = [{"id": str(i), "text": "lol", "image": encode(caption(f"MEME NUMBER {i} SAYS HELLO"))} for i in range(n)]
    out = {}
    for mode in ("off", "auto"):
        scorer = Scorer.default(num_workers=0, ocr=mode)
        scorer.score(posts[:1])  # warm up (OCR sessions, the model)
        started = time.perf_counter()
        scorer.score(posts)
        out[mode] = (time.perf_counter() - started) / n
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=2970)
    parser.add_argument("--ocr-posts", type=int, default=12, help="captioned image posts for the OCR cost (0: skip)")
    args = parser.parse_args(argv)
    texts, source = _tweets(args.posts)
    disguised = ["".join(_CYRILLIC.get(c, c) for c in t) for t in texts[: len(texts) // 2]]
    disguised += ["".join(_FULLWIDTH.get(c, c) for c in t) for t in texts[len(texts) // 2:]]
    ascii_share = sum(t.isascii() for t in texts) / max(1, len(texts))
    for name, batch in ((source, texts), ("the same, disguised (half Cyrillic look-alikes, half fullwidth)", disguised)):
        mean, p99 = _per_post_us(batch)
        print(f"normalize_text on {name}: mean {mean:.1f} us per post, p99 {p99:.1f} us")
    print(f"  ({ascii_share:.0%} of the plain tweets are ASCII and cost one check)")
    if args.ocr_posts:
        cost = _ocr_cost(args.ocr_posts)
        print(f"captioned image posts ('lol' + a captioned image), {args.ocr_posts} posts, 1 thread: OCR off "
              f"{cost['off']:.3f} s per post, auto (reads them now) {cost['auto']:.3f} s per post "
              f"(+{cost['auto'] - cost['off']:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
