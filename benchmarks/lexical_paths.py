"""The lexical channel's two scoring paths, timed in one run: scikit-learn's sparse TF-IDF rows vs the direct path.

    python -m benchmarks.lexical_paths                       # the shipped default model's channel, 512 test posts
    python -m benchmarks.lexical_paths --model DIR --posts 1024 --batch-sizes 1,4,8,32,128

`LexicalModel.logits` sends batches of at most `moderation.lexical.DIRECT_MAX_TEXTS` texts through
`direct_logits` (n-grams counted in a dict, one gather of coefficient rows) and larger ones through the sparse
matrices. Printed per batch size: the median ms per post of each path (the paths alternate per batch, so a change
of the machine's load hits both alike), their ratio, and the largest |logit difference| between them over every
post (float32 rounding only; exit status 1 above 1e-4). Posts come from the test splits of five shared datasets.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lexical_paths", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the shipped default model)")
    parser.add_argument("--data-dir", help="shared datasets folder (default: $MODERATION_DATA_DIR or ../shared/datasets)")
    parser.add_argument("--posts", type=int, default=512)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,128", metavar="N,N,...")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from benchmarks.model_cost import sample_posts
    from moderation.datasets import data_root
    from moderation.lexical import DIRECT_MAX_TEXTS, LexicalModel
    from moderation.model_dir import default_model_dir

    model = LexicalModel.load(Path(args.model) if args.model else default_model_dir())
    texts = [p["text"] for p in sample_posts(Path(args.data_dir) if args.data_dir else data_root(), args.posts,
                                             seed=args.seed)]

    paths = {"sparse": model.sparse_logits, "direct": model.direct_logits}
    diff = float(np.abs(model.sparse_logits(texts) - model.direct_logits(texts)).max())
    for fn in paths.values():  # warm-up: the vectorisers and analyzers are built on first use
        fn(texts[:8])
    print(f"{len(texts)} posts; the direct path serves batches of at most {DIRECT_MAX_TEXTS}; "
          f"largest |logit difference| between the paths {diff:.2e}")
    print("\n| posts per batch | sparse ms / post | direct ms / post | direct / sparse |")
    print("| ---: | ---: | ---: | ---: |")
    for size in [int(x) for x in args.batch_sizes.split(",")]:
        per_post: dict[str, list[float]] = {name: [] for name in paths}
        for k, start in enumerate(range(0, len(texts) - size + 1, size)):
            batch = texts[start:start + size]
            for name in (("sparse", "direct") if k % 2 == 0 else ("direct", "sparse")):
                t0 = time.perf_counter()
                paths[name](batch)
                per_post[name].append((time.perf_counter() - t0) * 1000 / size)
        s, d = statistics.median(per_post["sparse"]), statistics.median(per_post["direct"])
        print(f"| {size} | {s:.3f} | {d:.3f} | {d / s:.2f}x |", flush=True)
    return 1 if diff > 1e-4 else 0


if __name__ == "__main__":
    raise SystemExit(main())
