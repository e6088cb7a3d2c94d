"""Match time of the policy's term lists per post, with many terms (issue 21).

Builds a list of N synthetic terms (1-3 pseudo-words each, a tenth of them prefix terms; plus a few real phrases so
that posts do match) and times `TermMatcher.match` on real tweets (TweetEval hate test split when the shared
datasets are present, else synthetic text), one post at a time as the scorer calls it. For context it also times
the naive alternative on a sample: one compiled word-boundary regex per term.

    python -m benchmarks.termlists --terms 10000 [--posts 2970] [--regex-sample 200]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path

from moderation.termlists import FORMAT, TermList, TermMatcher

DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "tweeteval_hate" / "data.jsonl"
REAL_TERMS = ["kill you", "go back to*", "vermin", "build the wall", "rapefugee*", "deport them all"]


def _terms(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = set(REAL_TERMS)
    while len(out) < n:
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(rng.randint(1, 3))]
        out.add(" ".join(words) + ("*" if rng.random() < 0.1 else ""))
    return sorted(out)


def _posts(limit: int, rng: random.Random) -> tuple[list[str], str]:
    if DATASET.is_file():
        rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
        texts = [r["text"] for r in rows if r.get("split") == "test"][:limit]
        return texts, f"TweetEval hate test split ({len(texts)} tweets)"
    words = ["the", "you", "kill", "people", "go", "back", "to", "great", "day", "vermin", "lol"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) for _ in range(limit)]
    return texts, f"{len(texts)} synthetic posts (shared datasets absent)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--terms", type=int, default=10_000)
    ap.add_argument("--posts", type=int, default=2970)
    ap.add_argument("--regex-sample", type=int, default=200, help="posts timed with one regex per term")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    terms = _terms(args.terms, rng)
    tl = TermList.from_dict({"format": FORMAT, "format_version": 1, "name": "bench", "category": "hate",
                             "action": "review", "terms": terms})
    t0 = time.perf_counter()
    matcher = TermMatcher([tl])
    build_s = time.perf_counter() - t0
    posts, source = _posts(args.posts, rng)
    for p in posts[:50]:  # warm up
        matcher.match(p)
    times, hits = [], 0
    for p in posts:
        t = time.perf_counter()
        hits += bool(matcher.match(p))
        times.append(time.perf_counter() - t)
    times.sort()
    mean_chars = statistics.mean(len(p) for p in posts)
    print(f"{len(terms)} terms, automaton built in {build_s * 1000:.0f} ms; posts: {source}, mean {mean_chars:.0f} chars")
    print(f"TermMatcher.match per post: mean {statistics.mean(times) * 1e6:.0f} us, p50 {times[len(times) // 2] * 1e6:.0f} us, "
          f"p99 {times[int(len(times) * 0.99)] * 1e6:.0f} us; {hits} posts matched a term")
    if args.regex_sample:
        regexes = [re.compile(r"\b" + re.escape(t.rstrip("*")) + ("" if t.endswith("*") else r"\b"), re.IGNORECASE)
                   for t in terms]
        sample = posts[:args.regex_sample]
        t = time.perf_counter()
        for p in sample:
            [rx.search(p) for rx in regexes]
        per = (time.perf_counter() - t) / len(sample)
        print(f"for comparison, one regex per term (no obfuscation folding): {per * 1e6:.0f} us per post "
              f"({len(sample)} posts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
