"""`moderation score`: batch scoring of content dumps (argparse only at import; the work is in moderation.batch).

Engines other than `local` are found through the `moderation.batch_engines` entry point group (pyproject.toml),
so the core never names the packages above it: each is a module with `HELP`, `add_arguments(parser)` and
`score(args, max_row_bytes) -> BatchSummary` (e.g. serving.batch_engine, the Ray Data engine).
"""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
import threading
from importlib.metadata import entry_points
from types import ModuleType

from moderation.cli import (_quiet_libraries, add_image_args, add_model_args, build_scorer, print_precision,
                            untrained_banner)
from moderation.dumps import DEFAULT_MAX_ROW_BYTES

EPILOG = """\
examples:
  moderation score posts.jsonl --out results.parquet
  moderation score dumps/ 'more/*.csv' --model models/mine --out results.jsonl --image-root media/
  moderation score big.parquet --out results.parquet --engine ray --ray-address auto

Every input row gives exactly one output row (same id): per-category score, flag and threshold, the
modalities used, model and thresholds versions, and an error column. Errored rows also go to
OUT-stem.errors.jsonl. Interrupted (Ctrl-C, kill -9), run the same command again: it resumes.
Exit status: 0 every row scored; 1 some rows errored; 2 bad arguments or a refused job (OUT exists,
another job is writing OUT, OUT is one of the inputs); 3 a file could not be written (disk full, file too
large: fix it and run the same command again, it resumes); 130 interrupted (run it again to resume).
"""

#: Exit statuses of `moderation score` (docs/batch.md).
EXIT_OK, EXIT_ROWS_ERRORED, EXIT_REFUSED, EXIT_WRITE_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

ENGINE_GROUP = "moderation.batch_engines"


class EngineUnavailable(RuntimeError):
    """An engine's optional dependencies are missing; the message says what to install."""


def batch_engines() -> dict[str, ModuleType]:
    """The installed engines besides `local`, by name (entry point group `moderation.batch_engines`)."""
    engines = {}
    for ep in sorted(entry_points(group=ENGINE_GROUP), key=lambda e: e.name):
        try:
            engines[ep.name] = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and ep.value.split(".")[0] == exc.name.split(".")[0]:
                continue  # that package is not part of this installation
            raise
    return engines


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `score` subcommand."""
    p = subparsers.add_parser(
        "score", help="score JSONL / CSV / Parquet dumps of posts into one result row per post (resumable)",
        description="Score every row of content dumps (files, folders or globs of JSONL, CSV or Parquet; columns "
                    "id, text, image; other columns are carried through) into OUT (.parquet or .jsonl).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="dump files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output file, .parquet or .jsonl")
    add_model_args(p, precision="auto")
    add_image_args(p)
    p.add_argument("--image-root", default=None, metavar="DIR",
                   help="folder image paths resolve under; a path escaping it is refused "
                        "(default: the folder of each input file)")
    engines = batch_engines()
    p.add_argument("--engine", choices=("local", *engines), default="local",
                   help=" or ".join(["local (threads in this process)", *(f"{name} ({mod.HELP})"
                                                                       for name, mod in engines.items())]))
    p.add_argument("--workers", type=int, default=None,
                   help="threads reading and decoding images (default: min(4, cores))")
    p.add_argument("--chunk-size", type=int, default=128,
                   help="rows per part file and per model window sorted by text length (default: 128)")
    p.add_argument("--onnx-text", choices=("auto", "on", "off"), default="auto",
                   help="where the precision is a guarded bf16, re-score the posts near a threshold in fp32 through ONNX "
                        "Runtime instead of PyTorch (~1.6x faster for them; the same fp32 graph): auto (default: "
                        "where onnx and onnxruntime are installed, on a CPU), on, off")
    p.add_argument("--max-row-bytes", type=int, default=None,
                   help="refuse a row (line / record) larger than this (default: 8 MiB)")
    p.add_argument("--restart", action="store_true", help="discard an unfinished earlier run instead of resuming it")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it already exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for mod in engines.values():
        mod.add_arguments(p)
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    """`moderation score`: every check that needs no model first (seconds, not the ~20 s of loading one), then
    the job. Bad arguments raise ValueError / FileNotFoundError (moderation.cli.main: one line, exit 2)."""
    # deferred: numpy; the checks still run before the model (torch) loads
    from moderation.batch.job import check_job
    from moderation.batch.workdir import OutputWriteError

    _take_back_ctrl_c()
    try:
        check_job(args.inputs, args.out, args.image_root, overwrite=args.overwrite, restart=args.restart)
    except FileNotFoundError:
        raise
    except OSError as exc:  # OUT's folder cannot be written (its lock file is the first thing made there)
        print(f"error: cannot write --out {args.out}: {exc.strerror or exc} ({exc.filename or args.out})",
              file=sys.stderr)
        return EXIT_WRITE_FAILED
    try:
        return _score(args)
    except OutputWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_WRITE_FAILED


def _take_back_ctrl_c() -> None:
    """A job started with `&` from a non-interactive shell inherits SIGINT ignored (POSIX): take it back, so that
    Ctrl-C or `kill -INT` stops the job cleanly (exit 130, committed parts kept) instead of doing nothing."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _score(args: argparse.Namespace) -> int:
    _quiet_libraries()
    max_row_bytes = args.max_row_bytes or DEFAULT_MAX_ROW_BYTES
    if args.engine != "local":
        from moderation.scorer import planned_precision  # deferred: torch

        # Said before the workers load the model; each resolves "auto" again on its own hardware, and every
        # output row records the precision it was scored in.
        print("workers: " + planned_precision(args.model, args.precision, args.device).line(), file=sys.stderr)
        try:
            summary = batch_engines()[args.engine].score(args, max_row_bytes)
        except EngineUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        from moderation.batch import score_dump  # deferred: numpy, and torch with the scorer

        scorer = build_scorer(args, onnx_text=args.onnx_text, onnx_max_posts=0)
        print_precision(scorer)
        banner = untrained_banner(scorer)
        if banner:
            print(textwrap.fill(banner, 100), file=sys.stderr)
        try:
            summary = score_dump(args.inputs, args.out, scorer=scorer, image_root=args.image_root,
                                 chunk_size=args.chunk_size, workers=args.workers, progress=not args.no_progress,
                                 restart=args.restart, overwrite=args.overwrite, max_row_bytes=max_row_bytes)
        except KeyboardInterrupt:
            print("interrupted: the rows scored so far are kept; run the same command again to resume",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            scorer.close()
    for old, new in summary.renamed_columns.items():
        print(f"note: input column {old!r} clashes with a result column; written as {new!r}", file=sys.stderr)
    print(summary.line())
    return EXIT_OK if summary.ok else EXIT_ROWS_ERRORED
