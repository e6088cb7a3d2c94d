"""`moderation score --engine ray`: the batch job on Ray Data, same output contract as the local engine.

    files, cut into row ranges (plan_ranges: every actor, every node, gets work)
          --from_items--> flat_map(read rows: the same readers, ids and bad-row checks as the local engine)
          --map_batches(pool of scorer actors, each one Scorer: the same ChunkScorer as the local engine)
          --write_parquet(parts in OUT.parts/ray-parts/)
    driver: the parts are checked against the input (every row exactly once: a row scored twice after a retry
            is kept once, a missing row fails the job), duplicate ids found over the parts (first occurrence in
            input order is scored), then the same merge as the local engine writes OUT (.parquet / .jsonl) and
            the errors side file.

Node failures: Ray restarts a lost scorer actor (Ray Data's actors: max_restarts=-1, max_task_retries=-1) and
re-runs lost tasks from lineage; a write re-run may leave a second copy of a block's rows (or a part cut short by
the kill). The driver therefore checks the parts by position, not by trust: each row carries `seq` (file, position)
and the last row of each file its file's row count, so a missing row is found and a repeated one dropped.

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
from dataclasses import dataclass, field
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
from moderation.cli import _quiet_libraries
from moderation.dumps import DEFAULT_MAX_ROW_BYTES, count_rows, iter_rows
from moderation.hashes import HashList
from moderation.inputs import check_text
from moderation.precision import DEFAULT_BATCH_SIZE
from moderation.ocr import check_ocr_mode
from moderation.policy import Policy
from moderation.schema import ErrorCode, InputError, Post
from serving.cluster import connect
from serving.local_ray import local_ray

#: seq of a Ray row = file index << SEQ_SHIFT | position of the row in its file: sorts in input order.
SEQ_SHIFT = 40
RAY_PARTS = "ray-parts"
WRITTEN_MARKER = "ray-written"


def plan_ranges(counts: Sequence[int], chunk_size: int, num_actors: int) -> list[tuple[int, int, int]]:
    """Read tasks: (file index, first row, end row or -1 for "to the end of the file"), in input order.

    A file of n rows (`counts`, as moderation.dumps.count_rows sees it) is cut into ranges of
    max(chunk_size, ceil(n / (4 x num_actors))) rows, so that every actor (every node) gets work and a lost node
    costs one range per actor, while a big file needs few ranges (each range skips the rows before it). The last
    range of a file runs to its end, whatever the count said.
    """
    if chunk_size < 1 or num_actors < 1:
        raise ValueError(f"chunk_size and num_actors must be >= 1, got {chunk_size}, {num_actors}")
    plan = []
    for f, n in enumerate(counts):
        size = max(chunk_size, -(-n // (4 * num_actors)))
        starts = list(range(0, max(n, 1), size))
        for i, start in enumerate(starts):
            plan.append((f, start, starts[i + 1] if i + 1 < len(starts) else -1))
    return plan


def _read_file(item: dict[str, Any], *, max_row_bytes: int) -> Iterator[dict[str, Any]]:
    """flat_map: one range of one input file (`plan_ranges`) -> its rows, as flat Arrow-friendly dicts (post
    fields or the row's error).

    The file's last row carries `file_rows`, the number of rows of the file (0 on the others: a column of one
    type in every block): the driver checks the parts against it (`check_parts`)."""
    start, stop = int(item["start"]), int(item["stop"])
    file_index, path, root = int(item["file_index"]), item["path"], item["image_root"]
    row = None
    for pos, (rowno, raw) in enumerate(iter_rows(path, skip=start, max_row_bytes=max_row_bytes), start=start):
        if 0 <= stop <= pos:  # the range ends before the file does: its last row is not the file's
            if row is not None:
                yield row
            return
        if row is not None:
            yield row
        it = make_item((file_index << SEQ_SHIFT) | pos, path, rowno, raw, root)
        post, error = it.post, it.error
        if post is not None and isinstance(post.text, str):
            try:
                check_text(post.text)  # undecodable text cannot travel as an Arrow string: refuse it here
            except InputError as exc:
                post, error = None, exc
        row = {
            "seq": it.seq, "source_file": it.source_file, "source_row": it.source_row, "id": it.id,
            "text": post.text if post is not None else None,
            "image_path": post.image if post is not None and isinstance(post.image, str) else None,
            "image_bytes": bytes(post.image) if post is not None and isinstance(post.image, (bytes, bytearray)) else None,
            "has_post": post is not None,
            "error_code": error.code.value if error is not None else None,
            "error": error.message if error is not None else None,
            "extras": it.extras, "image_root": root, "file_rows": 0,
        }
    if row is not None:
        row["file_rows"] = (row["seq"] & ((1 << SEQ_SHIFT) - 1)) + 1
        yield row


class ScorerActor:
    """A Ray Data actor holding one Scorer; scores a batch of rows into internal records (a pyarrow Table)."""

    def __init__(self, model: str | None, batch_size: int, precision: str, device: str, workers: int | None,
                 threads: int, ocr: str = "auto", ocr_with_image: bool = False,
                 hash_lists: Sequence[str] = (), policy: str | None = None, onnx_text: str = "off") -> None:
        # deferred: torch and the scorer load in the actor's own process, not in the driver
        import torch

        from moderation.scorer import Scorer

        _quiet_libraries()
        torch.set_num_threads(max(1, threads))  # the actor's torch uses the CPUs it reserved, no more
        opts = dict(batch_size=batch_size, precision=precision, device=device, ocr=ocr, ocr_with_image=ocr_with_image,
                    hash_lists=list(hash_lists), policy=policy, onnx_text=onnx_text, onnx_max_posts=0)
        self.scorer = Scorer.from_dir(model, **opts) if model else Scorer.default(**opts)
        self.chunker = ChunkScorer(self.scorer, workers)
        self.schema = part_arrow_schema(self.scorer.categories)
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch):
        import pyarrow as pa

        items = []
        rows = batch.to_pylist()
        for r in rows:
            post = None
            if r["has_post"]:
                image = r["image_bytes"] if r["image_bytes"] is not None else r["image_path"]
                post = Post(id=r["id"], text=r["text"], image=image)
            error = InputError(ErrorCode(r["error_code"]), r["error"]) if r["error_code"] else None
            items.append(Item(r["seq"], r["source_file"], r["source_row"], r["id"], post, error, r["extras"],
                              r["image_root"]))
        records = self.chunker.score(items)
        for rec, r in zip(records, rows):  # one record per item, in order (ChunkScorer's contract)
            rec["_file_rows"] = r["file_rows"]
            rec["_node"] = self.node_id
        return pa.Table.from_pylist(records, schema=self.schema)


def part_arrow_schema(categories: Sequence[str]):
    """Schema of a Ray part: the engines' internal part schema plus `_file_rows` (the file's row count, on its
    last row) and `_node` (the Ray node that scored the row). The merge reads neither."""
    import pyarrow as pa

    return internal_arrow_schema(categories).append(pa.field("_file_rows", pa.int64())).append(
        pa.field("_node", pa.string()))


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


class RowsLostError(RuntimeError):
    """The parts Ray wrote miss rows of the input (never expected: Ray re-runs lost work). The job stops before
    the merge, nothing is written to OUT, and the same command scores again from the first row."""


@dataclass
class PartsCheck:
    """What `check_parts` found: rows per file, rows scored more than once (kept once), rows per Ray node,
    parts that could not be read (a write cut short by a killed node; their rows were found in other parts)."""

    rows: int
    files_checked: int
    repeated_rows: int = 0
    rows_per_node: dict[str, int] = field(default_factory=dict)
    unreadable_parts: list[str] = field(default_factory=list)
    in_order: bool = True


def check_parts(folder: Path, files: Sequence[Path], *, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> PartsCheck:
    """Check the parts in `folder` against the input: every row of every file present, at least once.

    A file's rows are the positions 0..n-1 (`seq`'s low bits), n given by its last row's `_file_rows`; a file
    no part mentions is read to confirm it has no rows. Reads only the seq, _file_rows and _node columns.
    Raises RowsLostError naming the files with missing rows.
    """
    import numpy as np
    import pyarrow.parquet as pq

    seqs, counts, nodes, unreadable = [], [], [], []
    in_order, last_max = True, -1
    keyed = []
    for p in sorted(folder.glob("*.parquet")):
        try:
            t = pq.read_table(str(p), columns=["seq", "_file_rows", "_node"])
        except Exception:  # noqa: BLE001 - a part cut short by a kill: its rows must be found elsewhere
            unreadable.append(p.name)
            continue
        seq = t.column("seq").to_numpy().astype(np.int64)
        if len(seq):
            keyed.append((int(seq[0]), int(seq[-1]), bool(np.all(seq[1:] > seq[:-1]))))
        seqs.append(seq)
        counts.append(t.column("_file_rows").to_numpy(zero_copy_only=False))
        nodes.extend(t.column("_node").to_pylist())
    for first, last, ordered in sorted(keyed):
        in_order = in_order and ordered and first > last_max
        last_max = max(last_max, last)
    seq = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    file_rows = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    unique = np.unique(seq)
    file_of = unique >> SEQ_SHIFT
    pos = unique & ((1 << SEQ_SHIFT) - 1)
    declared: dict[int, int] = {}
    for s_, n in zip(seq[file_rows > 0], file_rows[file_rows > 0]):
        declared[int(s_) >> SEQ_SHIFT] = int(n)
    lost = []
    for f, path in enumerate(files):
        present = pos[file_of == f]
        n = declared.get(f)
        if n is None:
            if len(present) or next(iter(iter_rows(path, max_row_bytes=max_row_bytes)), None) is not None:
                lost.append(f"{path}: its last row is missing")
            continue
        missing = n - int(np.count_nonzero(present < n))
        if missing:
            lost.append(f"{path}: {missing} of {n} rows missing")
    if lost:
        raise RowsLostError("the Ray parts miss rows of the input; nothing was written to OUT, run the same "
                            "command again to score from the first row:\n  " + "\n  ".join(lost))
    per_node: dict[str, int] = {}
    for n in nodes:
        per_node[n] = per_node.get(n, 0) + 1
    return PartsCheck(rows=len(unique), files_checked=len(files), repeated_rows=len(seq) - len(unique),
                      rows_per_node=per_node, unreadable_parts=unreadable, in_order=in_order)


#: Rows per part when the parts are rewritten (`rewrite_parts`).
REWRITE_PART_ROWS = 8192


def rewrite_parts(folder: Path, dest: Path) -> int:
    """Rewrite the readable parts of `folder` into `dest` in input order with every row once (the first copy of
    a row scored twice is kept): a streaming k-way merge on `seq`, REWRITE_PART_ROWS rows per new part.
    Returns the rows written."""
    import heapq

    import pyarrow as pa
    import pyarrow.parquet as pq

    def rows_of(path: Path, rank: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
        for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                yield rec["seq"], rank, rec

    readable, schema = [], None
    for p in sorted(folder.glob("*.parquet")):
        try:
            schema = schema or pq.read_schema(str(p))
            pq.read_metadata(str(p))
            readable.append(p)
        except Exception:  # noqa: BLE001 - cut short: check_parts found its rows elsewhere
            continue
    dest.mkdir(parents=True, exist_ok=True)
    written, last, buf, n_part = 0, None, [], 0

    def flush() -> None:
        nonlocal n_part
        if buf:
            pq.write_table(pa.Table.from_pylist(buf, schema=schema), str(dest / f"part-{n_part:06d}.parquet"))
            n_part += 1
            buf.clear()

    for seq, _, rec in heapq.merge(*(rows_of(p, i) for i, p in enumerate(readable)), key=lambda x: (x[0], x[1])):
        if seq == last:
            continue
        last = seq
        buf.append(rec)
        written += 1
        if len(buf) >= REWRITE_PART_ROWS:
            flush()
    flush()
    return written


def node_names(ray: Any) -> dict[str, str]:
    """Ray node id -> a readable name: the node's one custom resource (`node_a`, as serving.cluster names its
    nodes) when it has exactly one, else the id's first 12 characters."""
    standard = {"CPU", "GPU", "memory", "object_store_memory"}
    names = {}
    for n in ray.nodes():
        custom = [k for k in n.get("Resources", {}) if k not in standard and not k.startswith(("node:", "accelerator"))]
        names[n["NodeID"]] = custom[0] if len(custom) == 1 else n["NodeID"][:12]
    return names


@dataclass
class RayBatchSummary(BatchSummary):
    """BatchSummary plus what the Ray engine saw: rows scored per node (a row scored twice counts twice) and
    rows scored more than once after a retry (kept once)."""

    rows_per_node: dict[str, int] = field(default_factory=dict)
    rows_scored_twice: int = 0

    def line(self) -> str:
        nodes = ", ".join(f"{k} {v}" for k, v in sorted(self.rows_per_node.items()))
        return super().line() + (f" [ray: rows scored per node: {nodes}; rows scored twice after a retry, kept once: "
                                 f"{self.rows_scored_twice}]" if nodes else "")


def _connect(address: str | None, num_cpus: int | None):
    """Use the running Ray, connect to `address`, or start a loopback-only local Ray. Returns a closer."""
    if address is None:
        # Ray must not be imported before local_ray has set its environment (HOME, usage stats): imported
        # earlier, its processes bind the machine's address instead of 127.0.0.1 (seen with `ss -tnap`).
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            return lambda: None
        ctx = local_ray(num_cpus=num_cpus)
        ctx.__enter__()
        return lambda: ctx.__exit__(None, None, None)
    ctx = connect(address)  # a cluster on 127.0.0.1 is checked to stay on loopback
    ctx.__enter__()
    return lambda: ctx.__exit__(None, None, None)


def score_dump_ray(inputs: Sequence[str | os.PathLike] | str | os.PathLike, out: str | os.PathLike, *,
                   model: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                   address: str | None = None, num_actors: int = 1, cpus_per_actor: float | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "fp32", device: str = "cpu",
                   chunk_size: int = 128,
                   workers: int | None = None, restart: bool = False, overwrite: bool = False,
                   max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, progress: bool = True, ocr: str = "auto",
                   ocr_with_image: bool = False, hash_lists: Sequence[str | os.PathLike] = (),
                   policy: str | os.PathLike | None = None, onnx_text: str = "off") -> BatchSummary:
    """Score dumps into OUT with Ray Data: same arguments and output contract as moderation.batch.score_dump.

    address: an existing cluster ("auto", "ray://host:10001", ...); None uses the Ray already running in
    this process or starts a local loopback-only one. num_actors: scorer actors (model replicas), each
    reserving cpus_per_actor CPUs (default: `default_cpus_per_actor`: the cluster's CPUs less half a CPU, shared
    among the actors) and using as many torch threads (at least 1). ocr / ocr_with_image / hash_lists: as Scorer's
    (hash-list paths must be readable on every node). onnx_text: as Scorer's, for bf16-guarded's re-scored posts only
    (`moderation score` passes auto). Raises FileNotFoundError / ValueError for bad arguments or a refused job
    (JobLockedError: another job writes OUT), OutputWriteError when OUT cannot be written (disk full...),
    RowsLostError when the parts miss input rows (nothing written to OUT). Returns a RayBatchSummary.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    out, files, roots = resolve_job(inputs, out, image_root)
    with job_lock(out):  # the same lock as the local engine: one job per OUT at a time
        started = time.perf_counter()
        model_str = str(model) if model is not None else None

        # The fingerprint needs the model's versions: read them from the model directory without loading weights.
        from moderation.model_dir import default_model_dir, read_model_info  # deferred: torch, in jobs that need it
        from moderation.scorer import UNTRAINED_VERSION

        model_path = Path(model_str) if model_str else default_model_dir()
        if model_path is not None:
            info = read_model_info(model_path)
            meta = {"model_version": info.model_version, "categories": list(info.config.categories),
                    "thresholds_version": info.thresholds.version if info.thresholds else None}
        else:
            from moderation.model import ModelConfig  # deferred: torch, as above

            meta = {"model_version": UNTRAINED_VERSION, "categories": list(ModelConfig().categories),
                    "thresholds_version": None}

        class _Versions:  # what job_fingerprint reads from a scorer
            model_version = meta["model_version"]
            thresholds_version = meta["thresholds_version"]
            categories = meta["categories"]

        lists = [HashList.load(p) for p in hash_lists]  # refused here, before Ray starts, when missing or invalid
        policy_path = None
        if policy is not None:  # refused here too (PolicyError), before Ray starts
            Policy.load(policy).check_categories(meta["categories"], str(policy))
            policy_path = str(Path(policy).resolve())
        _Versions.precision = precision
        _Versions.ocr, _Versions.ocr_with_image = check_ocr_mode(ocr), bool(ocr_with_image)
        _Versions.hash_list_versions = {hl.name: hl.version for hl in lists}
        fingerprint = job_fingerprint(files, image_root=str(image_root) if image_root is not None else None,
                                      scorer=_Versions, out=out, max_row_bytes=max_row_bytes, engine="ray")
        work, finished = open_work_dir(out, fingerprint, restart=restart, overwrite=overwrite)
        if finished:
            return finished_summary(work)
        parts_dir = work / RAY_PARTS
        rows_per_node: dict[str, int] = {}
        repeated = 0
        if not (work / WRITTEN_MARKER).is_file():
            import shutil
            shutil.rmtree(parts_dir, ignore_errors=True)  # a cut-short Ray run: start the scoring again
            close = _connect(address, num_cpus=None)
            try:
                import ray

                # Leave half a CPU to the read and write tasks (0.25 each): actors holding every CPU would starve
                # them (a deadlock).
                total = float(ray.cluster_resources().get("CPU", 1.0))
                cpus = cpus_per_actor if cpus_per_actor is not None else default_cpus_per_actor(total, num_actors)

                names = node_names(ray)  # now: a node lost during the job no longer shows its resources

                ctx = ray.data.DataContext.get_current()
                ctx.execution_options.preserve_order = True  # parts come out in input order
                ctx.enable_progress_bars = progress
                ranges = plan_ranges([count_rows(p) for p in files], chunk_size, num_actors)
                ds = ray.data.from_items([{"file_index": f, "path": str(files[f]), "image_root": roots[f],
                                           "start": start, "stop": stop} for f, start, stop in ranges],
                                         override_num_blocks=len(ranges))
                ds = ds.flat_map(_read_file, fn_kwargs={"max_row_bytes": max_row_bytes}, num_cpus=0.25)
                ds = ds.map_batches(ScorerActor, batch_size=chunk_size, batch_format="pyarrow",
                                    compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=cpus,
                                    fn_constructor_kwargs={"model": model_str, "batch_size": batch_size,
                                                           "precision": precision, "device": device,
                                                           "workers": workers, "threads": max(1, int(cpus)),
                                                           "ocr": ocr, "ocr_with_image": bool(ocr_with_image),
                                                           "hash_lists": [str(Path(p).resolve()) for p in hash_lists],
                                                           "policy": policy_path, "onnx_text": onnx_text})
                ds.write_parquet(str(parts_dir), ray_remote_args={"num_cpus": 0.25})
                names.update({k: v for k, v in node_names(ray).items() if k not in names})
            finally:
                close()
            check = check_parts(parts_dir, files, max_row_bytes=max_row_bytes)  # RowsLostError: no marker, no OUT
            rows_per_node = {names.get(k, k[:12]): v for k, v in check.rows_per_node.items()}
            repeated = check.repeated_rows
            if check.repeated_rows or check.unreadable_parts or not check.in_order:
                clean = work / (RAY_PARTS + ".clean")
                shutil.rmtree(clean, ignore_errors=True)
                rewrite_parts(parts_dir, clean)
                shutil.rmtree(parts_dir)
                os.replace(clean, parts_dir)
            print(f"ray: every input row is in the parts ({check.rows} rows, {check.files_checked} files); "
                  f"{check.repeated_rows} rows scored twice after a retry, kept once; "
                  f"{len(check.unreadable_parts)} parts cut short, set aside", file=sys.stderr)
            (work / WRITTEN_MARKER).write_text("all parts written\n")
        parts = _ordered_parts(parts_dir)
        duplicates = find_duplicate_seqs(parts)
        summary_base = {"engine": "ray", "resumed_rows": 0, "model_version": meta["model_version"],
                        "thresholds_version": meta["thresholds_version"], "elapsed_s": time.perf_counter() - started}
        summary = finish_job(work, parts, out, summary_base, meta["categories"], expected_rows=None,
                             duplicate_seqs=duplicates)
        return RayBatchSummary(**summary.to_dict(), rows_per_node=rows_per_node, rows_scored_twice=repeated)


def default_cpus_per_actor(total_cpus: float, num_actors: int) -> float:
    """CPUs each scorer actor reserves by default: the cluster's CPUs less half a CPU for the read and write
    tasks, shared among the actors, in quarters, at least a quarter."""
    return max(0.25, int(4 * (total_cpus - 0.5) / num_actors) / 4)
