"""`moderation score --engine ray`: the batch job on Ray Data, same output contract as the local engine.

    files --from_items--> flat_map(read rows: the same readers, ids and bad-row checks as the local engine)
          --map_batches(pool of scorer actors, each one Scorer: the same ChunkScorer as the local engine)
          --write_parquet(parts in OUT.parts/ray-parts/)
    driver: duplicate ids found over the parts (first occurrence in input order is scored), then the same
            merge as the local engine writes OUT (.parquet / .jsonl) and the errors side file.

Runs on a local Ray (started loopback-only when no cluster is running) or on an existing cluster given by
address; there the model directory, the inputs and OUT must be on a filesystem every node sees.
Resuming: a run whose parts were all written but whose merge was cut short only redoes the merge; a run cut
short while Ray was scoring starts again from the first row (the local engine resumes row-exactly).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from moderation.batch import (
    BatchSummary,
    ChunkScorer,
    Item,
    finish_job,
    finished_summary,
    internal_arrow_schema,
    job_fingerprint,
    job_lock,
    make_item,
    open_work_dir,
    resolve_job,
)
from moderation.dumps import DEFAULT_MAX_ROW_BYTES, iter_rows
from moderation.inputs import check_text
from moderation.schema import ErrorCode, InputError, Post

#: seq of a Ray row = file index << SEQ_SHIFT | position of the row in its file: sorts in input order.
SEQ_SHIFT = 40
RAY_PARTS = "ray-parts"
WRITTEN_MARKER = "ray-written"


def _read_file(item: dict[str, Any], *, max_row_bytes: int) -> Iterator[dict[str, Any]]:
    """flat_map: one input file -> its rows, as flat Arrow-friendly dicts (post fields or the row's error)."""
    file_index, path, root = int(item["file_index"]), item["path"], item["image_root"]
    for pos, (rowno, raw) in enumerate(iter_rows(path, max_row_bytes=max_row_bytes)):
        it = make_item((file_index << SEQ_SHIFT) | pos, path, rowno, raw, root)
        post, error = it.post, it.error
        if post is not None and isinstance(post.text, str):
            try:
                check_text(post.text)  # undecodable text cannot travel as an Arrow string: refuse it here
            except InputError as exc:
                post, error = None, exc
        yield {
            "seq": it.seq, "source_file": it.source_file, "source_row": it.source_row, "id": it.id,
            "text": post.text if post is not None else None,
            "image_path": post.image if post is not None and isinstance(post.image, str) else None,
            "image_bytes": bytes(post.image) if post is not None and isinstance(post.image, (bytes, bytearray)) else None,
            "has_post": post is not None,
            "error_code": error.code.value if error is not None else None,
            "error": error.message if error is not None else None,
            "extras": it.extras, "image_root": root,
        }


class ScorerActor:
    """A Ray Data actor holding one Scorer; scores a batch of rows into internal records (a pyarrow Table)."""

    def __init__(self, model: str | None, batch_size: int, precision: str, device: str, workers: int | None,
                 threads: int, ocr: str = "auto", ocr_with_image: bool = False,
                 hash_lists: Sequence[str] = ()) -> None:
        import torch

        from moderation.cli import _quiet_libraries
        from moderation.scorer import Scorer

        _quiet_libraries()
        torch.set_num_threads(max(1, threads))  # the actor's torch uses the CPUs it reserved, no more
        opts = dict(batch_size=batch_size, precision=precision, device=device, ocr=ocr, ocr_with_image=ocr_with_image,
                    hash_lists=list(hash_lists))
        self.scorer = Scorer.from_dir(model, **opts) if model else Scorer.default(**opts)
        self.chunker = ChunkScorer(self.scorer, workers)
        self.schema = internal_arrow_schema(self.scorer.categories)

    def __call__(self, batch):
        import pyarrow as pa

        items = []
        for r in batch.to_pylist():
            post = None
            if r["has_post"]:
                image = r["image_bytes"] if r["image_bytes"] is not None else r["image_path"]
                post = Post(id=r["id"], text=r["text"], image=image)
            error = InputError(ErrorCode(r["error_code"]), r["error"]) if r["error_code"] else None
            items.append(Item(r["seq"], r["source_file"], r["source_row"], r["id"], post, error, r["extras"],
                              r["image_root"]))
        return pa.Table.from_pylist(self.chunker.score(items), schema=self.schema)


def find_duplicate_seqs(parts: Sequence[Path]) -> set[int]:
    """Rows whose id appeared at an earlier position (file order, row order): all but the first of each id.

    Reads only the `seq` and `id` columns; keeps 16 bytes a row (two uint64 arrays) on the driver.
    """
    import numpy as np
    import pyarrow.parquet as pq

    seqs, hashes = [], []
    for part in parts:
        table = pq.read_table(str(part), columns=["seq", "id"])
        ids = table.column("id").to_pylist()
        keep = [i for i, v in enumerate(ids) if v is not None]
        seq_col = table.column("seq").to_numpy()
        seqs.append(seq_col[keep].astype(np.uint64))
        hashes.append(np.fromiter((int.from_bytes(hashlib.blake2b(ids[i].encode("utf-8"), digest_size=8).digest(),
                                                  "little") for i in keep), dtype=np.uint64, count=len(keep)))
    if not seqs:
        return set()
    seq = np.concatenate(seqs)
    h = np.concatenate(hashes)
    order = np.lexsort((seq, h))
    h_sorted, seq_sorted = h[order], seq[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = h_sorted[1:] == h_sorted[:-1]
    return {int(s) for s in seq_sorted[repeat]}


def _ordered_parts(folder: Path) -> list[Path]:
    """The Parquet parts Ray wrote, ordered by their first row (rows within a part are in order)."""
    import pyarrow.parquet as pq

    keyed = []
    for p in folder.glob("*.parquet"):
        table = pq.read_table(str(p), columns=["seq"])
        if table.num_rows:
            keyed.append((int(table.column("seq")[0].as_py()), p))
    return [p for _, p in sorted(keyed)]


def _connect(address: str | None, num_cpus: int | None):
    """Use the running Ray, connect to `address`, or start a loopback-only local Ray. Returns a closer."""
    if address is None:
        # Ray must not be imported before local_ray has set its environment (HOME, usage stats): imported
        # earlier, its processes bind the machine's address instead of 127.0.0.1 (seen with `ss -tnap`).
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            return lambda: None
        from serving.local_ray import local_ray

        ctx = local_ray(num_cpus=num_cpus)
        ctx.__enter__()
        return lambda: ctx.__exit__(None, None, None)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray.shutdown


def score_dump_ray(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
                   model: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                   address: str | None = None, num_actors: int = 1, cpus_per_actor: float | None = None,
                   batch_size: int = 32, precision: str = "fp32", device: str = "cpu", chunk_size: int = 128,
                   workers: int | None = None, restart: bool = False, overwrite: bool = False,
                   max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, progress: bool = True, ocr: str = "auto",
                   ocr_with_image: bool = False, hash_lists: Sequence[str | os.PathLike] = ()) -> BatchSummary:
    """Score dumps into OUT with Ray Data: same arguments and output contract as moderation.batch.score_dump.

    address: an existing cluster ("auto", "ray://host:10001", ...); None uses the Ray already running in
    this process or starts a local loopback-only one. num_actors: scorer actors (model replicas), each
    reserving cpus_per_actor CPUs (default: the cluster's CPUs but one, shared among the actors, at least 1)
    and using as many torch threads. ocr / ocr_with_image / hash_lists: as Scorer's (hash-list paths must be
    readable on every node). Raises FileNotFoundError / ValueError for bad arguments or a refused job
    (JobLockedError: another job writes OUT), OutputWriteError when OUT cannot be written (disk full...).
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    out, files, roots = resolve_job(inputs, out, image_root)
    with job_lock(out):  # the same lock as the local engine: one job per OUT at a time
        started = time.perf_counter()
        model_str = str(model) if model is not None else None

        # The fingerprint needs the model's versions: read them from the model directory without loading weights.
        from moderation.model_dir import default_model_dir, read_model_info
        from moderation.scorer import UNTRAINED_VERSION

        model_path = Path(model_str) if model_str else default_model_dir()
        if model_path is not None:
            info = read_model_info(model_path)
            meta = {"model_version": info.model_version, "categories": list(info.config.categories),
                    "thresholds_version": info.thresholds.version if info.thresholds else None}
        else:
            from moderation.model import ModelConfig
            meta = {"model_version": UNTRAINED_VERSION, "categories": list(ModelConfig().categories),
                    "thresholds_version": None}

        class _Versions:  # what job_fingerprint reads from a scorer
            model_version = meta["model_version"]
            thresholds_version = meta["thresholds_version"]
            categories = meta["categories"]

        from moderation.hashes import HashList
        from moderation.ocr import check_ocr_mode

        lists = [HashList.load(p) for p in hash_lists]  # refused here, before Ray starts, when missing or invalid
        _Versions.precision = precision
        _Versions.ocr, _Versions.ocr_with_image = check_ocr_mode(ocr), bool(ocr_with_image)
        _Versions.hash_list_versions = {hl.name: hl.version for hl in lists}
        fingerprint = job_fingerprint(files, image_root=str(image_root) if image_root is not None else None,
                                      scorer=_Versions, out=out, max_row_bytes=max_row_bytes, engine="ray")
        work, finished = open_work_dir(out, fingerprint, restart=restart, overwrite=overwrite)
        if finished:
            return finished_summary(work)
        parts_dir = work / RAY_PARTS
        if not (work / WRITTEN_MARKER).is_file():
            import shutil
            shutil.rmtree(parts_dir, ignore_errors=True)  # a cut-short Ray run: start the scoring again
            close = _connect(address, num_cpus=None)
            try:
                import ray

                # Leave one CPU to the read and write tasks: actors holding every CPU would starve them (a deadlock).
                total = float(ray.cluster_resources().get("CPU", 1.0))
                cpus = cpus_per_actor if cpus_per_actor is not None else max(1.0, float((total - 1) // num_actors))

                ctx = ray.data.DataContext.get_current()
                ctx.execution_options.preserve_order = True  # parts come out in input order
                ctx.enable_progress_bars = progress
                ds = ray.data.from_items([{"file_index": i, "path": str(p), "image_root": r}
                                          for i, (p, r) in enumerate(zip(files, roots))],
                                         override_num_blocks=max(1, len(files)))
                ds = ds.flat_map(_read_file, fn_kwargs={"max_row_bytes": max_row_bytes}, num_cpus=0.25)
                ds = ds.map_batches(ScorerActor, batch_size=chunk_size, batch_format="pyarrow",
                                    compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=cpus,
                                    fn_constructor_kwargs={"model": model_str, "batch_size": batch_size,
                                                           "precision": precision, "device": device,
                                                           "workers": workers, "threads": int(cpus), "ocr": ocr,
                                                           "ocr_with_image": bool(ocr_with_image),
                                                           "hash_lists": [str(Path(p).resolve()) for p in hash_lists]})
                ds.write_parquet(str(parts_dir), ray_remote_args={"num_cpus": 0.25})
            finally:
                close()
            (work / WRITTEN_MARKER).write_text("all parts written\n")
        parts = _ordered_parts(parts_dir)
        duplicates = find_duplicate_seqs(parts)
        summary_base = {"engine": "ray", "resumed_rows": 0, "model_version": meta["model_version"],
                        "thresholds_version": meta["thresholds_version"], "elapsed_s": time.perf_counter() - started}
        return finish_job(work, parts, out, summary_base, meta["categories"], expected_rows=None,
                          duplicate_seqs=duplicates)
