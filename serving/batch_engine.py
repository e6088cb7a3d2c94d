"""The `ray` engine of `moderation score`, found by the core through the `moderation.batch_engines` entry point.

An engine module gives `HELP` (one line for `--engine`), `add_arguments(parser)` (its own options) and
`score(args, max_row_bytes) -> BatchSummary`. Light at import (argparse only): Ray loads inside `score`.
"""

from __future__ import annotations

import argparse

from moderation.batch_cli import EngineUnavailable

HELP = "Ray Data, local or existing cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ray engine's options of `moderation score`."""
    ray = parser.add_argument_group("ray engine")
    ray.add_argument("--ray-address", default=None,
                     help="address of an existing Ray cluster, e.g. 127.0.0.1:PORT of `python -m serving.cluster up` "
                          "(default: start a local, loopback-only Ray)")
    ray.add_argument("--ray-actors", type=int, default=1, help="scorer actors (model replicas) (default: 1)")
    ray.add_argument("--ray-cpus-per-actor", type=float, default=None,
                     help="CPUs each scorer actor reserves; its torch uses as many threads, at least 1 (default: the "
                          "cluster's CPUs less 0.5 for reading and writing, shared among the actors)")


def score(args: argparse.Namespace, max_row_bytes: int):
    """Score the dumps of `moderation score` with Ray Data (serving.batch_ray.score_dump_ray)."""
    try:
        from serving.batch_ray import score_dump_ray  # deferred: Ray is heavy and optional (the serve extra)
    except ImportError as exc:
        raise EngineUnavailable(f"--engine ray needs the serving extra (pip install 'moderation[serve]'): {exc}") from exc
    return score_dump_ray(args.inputs, args.out, model=args.model, image_root=args.image_root,
                          address=args.ray_address, num_actors=args.ray_actors,
                          cpus_per_actor=args.ray_cpus_per_actor, batch_size=args.batch_size,
                          precision=args.precision, device=args.device, chunk_size=args.chunk_size,
                          workers=args.workers, restart=args.restart, overwrite=args.overwrite,
                          max_row_bytes=max_row_bytes, progress=not args.no_progress, ocr=args.ocr,
                          ocr_with_image=args.ocr_with_image, hash_lists=args.hash_lists,
                          policy=getattr(args, "policy", None), onnx_text=getattr(args, "onnx_text", "off"))
