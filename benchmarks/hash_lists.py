"""Load and match time of PDQ hash lists with many entries (issue 22 H2: loading was quadratic).

Writes a list of N random PDQ hashes (JSON, as `moderation hashes` does), then times `HashList.load` (parse and
validate every entry), `HashMatcher` construction (packing) and matching one image (its 8 orientations) against
the list, and reports the process's peak RSS.

    python -m benchmarks.hash_lists --entries 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from moderation.hashes import FORMAT, FORMAT_VERSION, HashList, HashMatcher


def _write(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    hexes = [row.tobytes().hex() for row in rng.integers(0, 256, size=(n, 32), dtype=np.uint8)]
    entries = [{"id": f"e{i:07d}", "hash": h, "category": "hate", "quality": 100, "source": "bench",
                "added": "2026-12-04"} for i, h in enumerate(hexes)]
    path.write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "hash_type": "pdq",
                                "name": "bench", "threshold": 31, "entries": entries}), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args(argv)
    query = np.random.default_rng(1).integers(0, 2**63, size=(8, 4), dtype=np.uint64)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.entries:
            path = Path(tmp) / f"list-{n}.json"
            _write(path, n)
            started, cpu = time.perf_counter(), time.process_time()
            hl = HashList.load(path)
            loaded, loaded_cpu = time.perf_counter() - started, time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            matcher = HashMatcher([hl])
            packed, packed_cpu = time.perf_counter() - started, time.process_time() - cpu
            matcher.match_words(query)
            started = time.perf_counter()
            for _ in range(5):
                matcher.match_words(query)
            match_ms = (time.perf_counter() - started) / 5 * 1000
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{n:>9,} hashes ({path.stat().st_size / 1e6:.0f} MB file): load {loaded:.2f} s ({loaded_cpu:.2f} s CPU), "
                  f"matcher {packed:.2f} s ({packed_cpu:.2f} s CPU), "
                  f"match one image (8 orientations) {match_ms:.1f} ms; peak RSS so far {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
