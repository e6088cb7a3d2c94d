"""Batch scoring of content dumps: JSONL / CSV / Parquet in, one result row per input row out.

    from moderation.batch import score_dump
    summary = score_dump(["posts/*.jsonl"], "results.parquet", model="path/to/model")
    print(summary.line())          # rows read, scored, errored: they add up

How it runs (the local engine): a reader thread turns the input files into numbered rows, checks ids
(duplicates are reported, never merged) and hands out chunks through a bounded queue; a pool of threads
prepares posts (`Scorer.prepare`: image reading and decoding release the GIL) while the main thread runs
the model (`Scorer.logits`) on the previous chunk, sorted by text length to cut padding; a writer thread
writes each scored chunk as a numbered part file, committed by an atomic rename. Memory is bounded by the
queues, not by the dump. Killed at any moment and run again with the same arguments, the job skips the rows
of committed parts and goes on; a final merge writes OUT with every row exactly once, in input order.

One file per question:

    rows.py      what an input row becomes (Item), ids seen so far (IdSet)
    scoring.py   how a chunk of Items is scored into output records (ChunkScorer)
    job.py       a job's arguments, the paths it owns (OUT, errors file, work folder) and its lock
    workdir.py   the work folder: fingerprint, part files, resume
    merge.py     the final merge of the parts into OUT and the errors file
    summary.py   what a job did (BatchSummary)
    local.py     the local engine (threads): score_dump

The Ray engine (serving.batch_ray) reuses `make_item` / `ChunkScorer` / `merge_parts`, so both engines give
the same rows. This package imports no ray and no pandas; pyarrow only for Parquet.
"""

from moderation.batch.job import (
    DONE_FILE,
    JOB_FILE,
    OUTPUT_FORMATS,
    JobLockedError,
    check_job,
    errors_path_for,
    job_lock,
    lock_path_for,
    output_format,
    resolve_job,
    work_dir_for,
)
from moderation.batch.local import score_dump
from moderation.batch.merge import ROW_GROUP_ROWS, finish_job, internal_arrow_schema, merge_parts
from moderation.batch.rows import POST_FIELDS, IdSet, Item, duplicate_error, make_item
from moderation.batch.scoring import ChunkScorer, make_record, result_columns
from moderation.batch.summary import BatchSummary
from moderation.batch.workdir import (
    PART_PREFIX,
    OutputWriteError,
    cleanup_work_dir,
    committed_parts,
    finished_summary,
    job_fingerprint,
    open_work_dir,
    part_name,
    read_part,
    write_atomic,
    write_part,
    writing,
)

__all__ = [
    "BatchSummary", "ChunkScorer", "DONE_FILE", "IdSet", "Item", "JOB_FILE", "JobLockedError", "OUTPUT_FORMATS",
    "OutputWriteError", "PART_PREFIX", "POST_FIELDS", "ROW_GROUP_ROWS", "check_job", "cleanup_work_dir",
    "committed_parts", "duplicate_error", "errors_path_for", "finish_job", "finished_summary",
    "internal_arrow_schema", "job_fingerprint", "job_lock", "lock_path_for", "make_item", "make_record",
    "merge_parts", "open_work_dir", "output_format", "part_name", "read_part", "resolve_job", "result_columns",
    "score_dump", "work_dir_for", "write_atomic", "write_part", "writing",
]
