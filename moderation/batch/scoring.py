"""How a chunk of Items is scored into output records: one Scorer, images prepared in threads, one record per
item in order, never a dropped row (a failure of the model is reported on each row of its chunk)."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

from moderation.batch.rows import Item
from moderation.dumps import clean_text
from moderation.result_row import category_columns, result_row
from moderation.schema import ErrorCode, InputError, ScoreResult


def result_columns(categories: Sequence[str]) -> list[str]:
    """Output columns before the carried-through input columns, in order."""
    return (["id", "source_file", "source_row", "ok", "flagged", "action", *category_columns(categories),
             "applied_input_types", "text_truncated", "ocr_text", "hash_match", "language", "language_confidence",
             "action_reasons", "model_version", "thresholds_version", "policy_version", "precision", "error_code", "error"])


def make_record(item: Item, result: ScoreResult | None, categories: Sequence[str], model_version: str,
                thresholds_version: str | None, error: BaseException | None = None,
                policy_version: str | None = None) -> dict[str, Any]:
    """The internal (part-file) row: the shared result row (moderation.result_row) in output column order,
    plus where the row came from, the versions, the error, `seq` and `_extras`."""
    row = result_row(result, categories)
    ok = row["ok"]
    rec: dict[str, Any] = {"seq": item.seq, **{col: row.get(col) for col in result_columns(categories)}}
    rec.update(id=item.id, source_file=item.source_file, source_row=item.source_row,
               ocr_text=clean_text(result.ocr_text) if ok and result.ocr_text is not None else None,
               model_version=model_version, thresholds_version=thresholds_version)
    if policy_version is not None:
        rec["policy_version"] = policy_version
    if ok:
        rec["error_code"] = rec["error"] = None
    else:
        if result is not None:
            code, message = result.error_code, result.error
        elif isinstance(error, InputError):
            code, message = error.code.value, error.message
        else:
            code, message = ErrorCode.INTERNAL.value, f"{type(error).__name__}: {error}"
        rec["error_code"] = code
        rec["error"] = clean_text(str(message))
    rec["_extras"] = item.extras
    return rec


class ChunkScorer:
    """Scores chunks of Items with one Scorer: prepare (threads for images), model, results -> records.

    `submit(items)` starts preparing a chunk and returns at once; `finish(handle)` waits for it, runs the
    model and returns one record per item, in order. Submitting the next chunk before finishing the current
    one overlaps image decoding with the model.
    """

    def __init__(self, scorer: Any, workers: int | None = None) -> None:
        self.scorer = scorer
        self.categories = list(scorer.categories)
        self.workers = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="batch-prepare") if self.workers > 0 else None

    def _prepare(self, item: Item) -> Any:
        try:
            return self.scorer.prepare(item.post, item.image_root)
        except Exception as exc:  # noqa: BLE001 - one bad post must not sink the chunk
            return exc

    def submit(self, items: Sequence[Item]) -> list[tuple[Item, Any]]:
        handle: list[tuple[Item, Any]] = []
        for item in items:
            if item.post is None:
                handle.append((item, None))
            elif item.post.image is not None and self._pool is not None:
                handle.append((item, self._pool.submit(self._prepare, item)))
            else:
                handle.append((item, self._prepare(item)))  # text only: microseconds, no thread hop
        return handle

    def finish(self, handle: list[tuple[Item, Any]]) -> list[dict[str, Any]]:
        from moderation.model import PreparedPost  # deferred: torch (moderation.batch checks a job before any model)
        scorer = self.scorer
        mv, tv = scorer.model_version, scorer.thresholds_version
        pv = getattr(getattr(scorer, "policy", None), "version", None)
        done = [(item, p.result() if isinstance(p, Future) else p) for item, p in handle]
        ready = [(i, prep) for i, (_, prep) in enumerate(done) if isinstance(prep, PreparedPost)]
        results: dict[int, ScoreResult] = {}
        failure: BaseException | None = None
        if ready:
            prepared = [p for _, p in ready]
            try:
                logits, truncated = scorer.logits(prepared)
                for (i, _), r in zip(ready, scorer.results(prepared, logits, truncated)):
                    results[i] = r
            except Exception as exc:  # noqa: BLE001 - reported on every post of the chunk, never dropped
                failure = exc
        out = []
        for i, (item, prep) in enumerate(done):
            if item.error is not None:
                out.append(make_record(item, None, self.categories, mv, tv, item.error, pv))
            elif isinstance(prep, BaseException):
                out.append(make_record(item, None, self.categories, mv, tv, prep, pv))
            elif i in results:
                out.append(make_record(item, results[i], self.categories, mv, tv, None, pv))
            else:
                out.append(make_record(item, None, self.categories, mv, tv, failure or RuntimeError("not scored"), pv))
        return out

    def score(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        return self.finish(self.submit(items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

