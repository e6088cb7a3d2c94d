"""The decision log: one row per moderation decision, appended to rotating JSONL or Parquet files.

    log = DecisionLog(DecisionLogConfig(path="logs/decisions"))
    log.write([log.record(result, categories, input_types=["text"], latency_ms=12.5, source="endpoint")])
    log.close()

A row says what was decided about a post and by what, never what the post said (unless `content` is on):

    time                   UTC time of the decision (JSONL: ISO 8601 text "...Z"; Parquet: timestamp[ms, UTC])
    source                 "endpoint" or "batch"
    request_id             the endpoint's response id ("modr-..."); null in batch
    id / id_hash           the post's id; with `hash_ids`, id is null and id_hash = sha256(salt + id), 32 hex
    ok                     scored (true) or errored (false)
    flagged                any category flagged (null when errored)
    action                 "allow" | "review" | "block" from the moderation policy; null when errored or no policy
    <category>_score       calibrated probability (one group of four columns per category of the model)
    <category>_flagged     score >= the category's threshold (or a hash match)
    <category>_threshold   the threshold used
    <category>_action      the policy's action for that category (null without a policy)
    input_types            what the post held: ["text"], ["image"], ["image", "text"]
    applied_input_types    what the scores used (adds "ocr_text" when text was read from the image)
    text_truncated, language, language_confidence, hash_match {list, list_version, id, category, distance,
    threshold}, action_reasons (JSON text), model_version, thresholds_version, policy_version,
    precision              what the scores were computed in: one of moderation.precision.PRECISIONS; null when errored
    latency_ms             time the endpoint took to answer the request the post came in (ms)
    error_code             why the post was not scored (stable code); null when scored
    text, ocr_text         the post's text and the text OCR read in its image: only when `content` is on

The columns shared with a batch output (docs/batch.md) have the same names, types and meanings, so
`moderation monitor` and `moderation feedback` read either. Files are named
`<prefix>-<UTC start time>-<host>-<pid>-<n>.<jsonl|parquet>` (one writer per process, so several replicas can
share a folder) and rotate by size and age; old files are deleted after `retention_days` (when set).
JSONL lines are flushed after every write (a crash loses at most the line being written); a Parquet file is
written as `.parquet.tmp` and renamed when rotated or closed (a crash loses the open file: prefer JSONL where
that matters). Core module: no pandas, no ray; pyarrow only for Parquet, imported when used.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import socket
import threading
import time as _time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from moderation.dumps import expand_inputs
from moderation.result_row import category_columns, result_row
from moderation.schema import ScoreResult

LOG_FORMATS: tuple[str, ...] = ("jsonl", "parquet")
SOURCES: tuple[str, ...] = ("endpoint", "batch")
HEAD_COLUMNS: tuple[str, ...] = ("time", "source", "request_id", "id", "id_hash", "ok", "flagged", "action")
TAIL_COLUMNS: tuple[str, ...] = (
    "input_types", "applied_input_types", "text_truncated", "language", "language_confidence", "hash_match",
    "action_reasons", "model_version", "thresholds_version", "policy_version", "precision", "latency_ms", "error_code",
    "text", "ocr_text")
#: Environment variable holding the salt of hashed ids (kept out of config files).
ID_SALT_ENV = "MODERATION_LOG_ID_SALT"


class DecisionLogError(ValueError):
    """A decision-log setting is invalid, or its folder cannot be written."""


def log_columns(categories: Sequence[str]) -> list[str]:
    """Every column of a decision-log row, in order, for a model with `categories`."""
    return [*HEAD_COLUMNS, *category_columns(categories), *TAIL_COLUMNS]


def categories_in(columns: Sequence[str]) -> list[str]:
    """The categories of a decision log's or batch output's columns: every `<c>_score` with a `<c>_flagged`."""
    names = set(columns)
    return [c[: -len("_score")] for c in columns if c.endswith("_score") and f"{c[: -len('_score')]}_flagged" in names]


def hash_id(post_id: str, salt: str = "") -> str:
    """sha256(salt + id), first 32 hex digits: a stable pseudonym that joins logs and verdicts without the id."""
    return hashlib.sha256((salt + str(post_id)).encode("utf-8")).hexdigest()[:32]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(when: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z: "2026-11-28T09:15:02.125Z"."""
    when = when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class DecisionLogConfig:
    """Where and how decisions are logged.

    path: the folder (created). format: "jsonl" or "parquet". rotate_mb / rotate_minutes: start a new file
    when the current one reaches this size or age. retention_days: at each rotation, delete the folder's log
    files of this prefix and format older than that (by modification time); None keeps everything. content:
    also log the post's text and OCR text (off by default: the log then holds no post content). hash_ids: log
    sha256(salt + id) instead of the id; the salt comes from $MODERATION_LOG_ID_SALT (empty when unset).
    parquet_rows: rows buffered per Parquet row group. prefix: file name prefix.
    """

    path: str
    format: str = "jsonl"
    rotate_mb: float = 64.0
    rotate_minutes: float = 60.0
    retention_days: float | None = None
    content: bool = False
    hash_ids: bool = False
    parquet_rows: int = 4096
    prefix: str = "decisions"

    def __post_init__(self) -> None:
        if self.format not in LOG_FORMATS:
            raise DecisionLogError(f"decision log format must be one of {LOG_FORMATS}, got {self.format!r}")
        if not str(self.path).strip():
            raise DecisionLogError("decision log path is empty; give a folder")
        if self.rotate_mb <= 0 or self.rotate_minutes <= 0:
            raise DecisionLogError("rotate_mb and rotate_minutes must be > 0")
        if self.retention_days is not None and self.retention_days <= 0:
            raise DecisionLogError(f"retention_days must be > 0 or null, got {self.retention_days}")
        if self.parquet_rows < 1:
            raise DecisionLogError(f"parquet_rows must be >= 1, got {self.parquet_rows}")
        if not self.prefix or "/" in self.prefix or self.prefix.startswith("."):
            raise DecisionLogError(f"prefix must be a plain file-name prefix, got {self.prefix!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DecisionLogConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise DecisionLogError(f"unknown decision log settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision_record(result: ScoreResult | None, categories: Sequence[str], *, post_id: str | None = None,
                    when: datetime | None = None, source: str = "endpoint", request_id: str | None = None,
                    input_types: Sequence[str] | None = None, latency_ms: float | None = None,
                    error_code: str | None = None, text: str | None = None, content: bool = False,
                    id_salt: str | None = None, model_version: str | None = None,
                    thresholds_version: str | None = None) -> dict[str, Any]:
    """One decision-log row (see the module docstring) for a post's result.

    result: the post's ScoreResult, or None for a post refused before scoring (then `error_code` says why).
    post_id: defaults to the result's id. content: keep `text` (given) and the result's OCR text; otherwise
    both are null. id_salt: not None = log the id hashed with this salt. The policy fields (`action`,
    per-category `action`, `language`, `policy_version`, `reasons`) are read from the result when it has them
    and are null otherwise.
    """
    if source not in SOURCES:
        raise DecisionLogError(f"source must be one of {SOURCES}, got {source!r}")
    pid = post_id if post_id is not None else (result.id if result is not None else None)
    row = result_row(result, categories)
    ok = row["ok"]
    rec: dict[str, Any] = {col: row.get(col) for col in log_columns(categories)}
    rec.update({
        "time": when or utc_now(), "source": source, "request_id": request_id,
        "id": None if (id_salt is not None or pid is None) else str(pid),
        "id_hash": hash_id(pid, id_salt) if (id_salt is not None and pid is not None) else None,
        "input_types": list(input_types) if input_types is not None else None,
        # The log writes null, not "[]", for the empty reasons of an allowed post.
        "action_reasons": row["action_reasons"] if ok and getattr(result, "reasons", None) else None,
        "model_version": model_version or (result.model_version if result is not None else None) or None,
        "thresholds_version": thresholds_version or (result.thresholds_version if result is not None else None),
        "latency_ms": float(latency_ms) if latency_ms is not None else None,
        "error_code": None if ok else (error_code or (result.error_code if result is not None else None)
                                      or "internal_error"),
        "text": text if content else None,
        "ocr_text": (result.ocr_text if ok else None) if content else None,
    })
    return rec


def input_types_of(text: Any, image: Any) -> list[str]:
    """What a post holds, canonical order: ["image"], ["text"] or ["image", "text"]."""
    return (["image"] if image not in (None, b"", "") else []) + (["text"] if text not in (None, "") else [])


class DecisionLog:
    """Appends decision rows to rotating files in one folder (see the module docstring). Thread-safe.

    Raises DecisionLogError when the folder cannot be created or written.
    """

    def __init__(self, config: DecisionLogConfig | Mapping[str, Any]) -> None:
        self.config = config if isinstance(config, DecisionLogConfig) else DecisionLogConfig.from_dict(config)
        self.folder = Path(self.config.path).expanduser()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DecisionLogError(f"cannot create the decision log folder {self.folder}: {exc}") from None
        if not os.access(self.folder, os.W_OK):
            raise DecisionLogError(f"the decision log folder {self.folder} is not writable")
        self.id_salt = os.environ.get(ID_SALT_ENV, "") if self.config.hash_ids else None
        self._lock = threading.Lock()
        self._seq = 0
        self._fh: Any = None
        self._path: Path | None = None
        self._opened = 0.0
        self._bytes = 0
        self._pq_writer: Any = None
        self._pq_schema: Any = None
        self._pq_buffer: list[dict[str, Any]] = []
        self.rows_written = 0
        self.files_written: list[Path] = []
        # A process that exits normally closes its file (a Parquet file is only readable once closed).
        atexit.register(self.close)

    # --- building rows --------------------------------------------------------------------------------

    def record(self, result: ScoreResult | None, categories: Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """`decision_record` with this log's content and id-hashing settings."""
        return decision_record(result, categories, content=self.config.content, id_salt=self.id_salt, **kwargs)

    def log_request(self, items: Sequence[Any], scored: Sequence[ScoreResult], categories: Sequence[str], *,
                    latency_ms: float | None, request_id: str | None, model_version: str | None = None,
                    thresholds_version: str | None = None) -> int:
        """Log one endpoint request: `items` are its posts in order (objects with id, text, image, and `ok` /
        `error_code` when refused before scoring); `scored` the results of the ok ones, in order. Returns rows."""
        now = utc_now()
        results = iter(scored)
        rows = []
        for item in items:
            ok = bool(getattr(item, "ok", True))
            result = next(results, None) if ok else None
            text = getattr(item, "text", None)
            rows.append(self.record(
                result, categories, post_id=getattr(item, "id", None), when=now, source="endpoint",
                request_id=request_id, input_types=input_types_of(text, getattr(item, "image", None) or
                                                                  getattr(item, "image_url", None)),
                latency_ms=latency_ms, error_code=getattr(item, "error_code", None), text=text,
                model_version=model_version, thresholds_version=thresholds_version))
        self.write(rows)
        return len(rows)

    # --- writing --------------------------------------------------------------------------------------

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (dicts from `record`); rotates first when the current file is too big or too old."""
        rows = list(rows)
        if not rows:
            return
        with self._lock:
            try:
                self._rotate_if_due()
                if self.config.format == "jsonl":
                    self._write_jsonl(rows)
                else:
                    self._write_parquet(rows)
            except OSError as exc:
                raise DecisionLogError(f"cannot write the decision log in {self.folder}: {exc}") from exc
            self.rows_written += len(rows)

    def _new_path(self) -> Path:
        self._seq += 1
        host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())[:40] or "host"
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        return self.folder / f"{self.config.prefix}-{stamp}-{host}-{os.getpid()}-{self._seq:04d}.{self.config.format}"

    def _rotate_if_due(self) -> None:
        if self._path is None:
            return
        too_big = self._bytes >= self.config.rotate_mb * 1024 * 1024
        too_old = _time.monotonic() - self._opened >= self.config.rotate_minutes * 60
        if too_big or too_old:
            self._close_file()
            self._apply_retention()

    def _write_jsonl(self, rows: list[Mapping[str, Any]]) -> None:
        if self._fh is None:
            self._path = self._new_path()
            # backslashreplace: a lone surrogate in a field is written escaped; the row is never lost to it
            self._fh = open(self._path, "a", encoding="utf-8", errors="backslashreplace")
            self._opened = _time.monotonic()
            self._bytes = 0
        text = "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in rows)
        self._fh.write(text)
        self._fh.flush()
        self._bytes += len(text.encode("utf-8", "backslashreplace"))

    def _write_parquet(self, rows: list[Mapping[str, Any]]) -> None:
        if self._path is None:
            self._path = self._new_path()
            self._opened = _time.monotonic()
            self._bytes = 0
        self._pq_buffer.extend(rows)
        if len(self._pq_buffer) >= self.config.parquet_rows:
            self._flush_parquet()

    def _flush_parquet(self) -> None:
        if not self._pq_buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._pq_writer is None:
            self._pq_schema = arrow_schema(list(self._pq_buffer[0].keys()))
            tmp = self._path.with_name(self._path.name + ".tmp")
            self._pq_writer = pq.ParquetWriter(str(tmp), self._pq_schema)
        names = self._pq_schema.names
        cols = {n: [_arrow_value(n, r.get(n)) for r in self._pq_buffer] for n in names}
        self._pq_writer.write_table(pa.Table.from_pydict(cols, schema=self._pq_schema))
        self._bytes = self._path.with_name(self._path.name + ".tmp").stat().st_size
        self._pq_buffer.clear()

    def _close_file(self) -> None:
        if self._path is None:
            return
        if self.config.format == "jsonl":
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None
        else:
            self._flush_parquet()
            if self._pq_writer is not None:
                self._pq_writer.close()
                self._pq_writer = None
                os.replace(self._path.with_name(self._path.name + ".tmp"), self._path)
        self.files_written.append(self._path)
        self._path = None

    def _apply_retention(self) -> None:
        days = self.config.retention_days
        if days is None:
            return
        cutoff = _time.time() - days * 86400
        for p in self.folder.glob(f"{self.config.prefix}-*.{self.config.format}"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass  # another replica removed it first

    def flush(self) -> None:
        """Push buffered rows to disk (Parquet: into the open file's next row group)."""
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
            if self._pq_writer is not None or self._pq_buffer:
                self._flush_parquet()

    def rotate(self) -> None:
        """Close the current file now (the next write starts a new one)."""
        with self._lock:
            self._close_file()
            self._apply_retention()

    def close(self) -> None:
        """Close the current file (Parquet: written out and renamed into place)."""
        with self._lock:
            self._close_file()

    def __enter__(self) -> "DecisionLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- Parquet typing -------------------------------------------------------------------------------------

def arrow_schema(columns: Sequence[str]):
    """Arrow schema of decision-log rows with these columns (one fixed type per column)."""
    import pyarrow as pa

    hash_match = pa.struct([("list", pa.string()), ("list_version", pa.string()), ("id", pa.string()),
                            ("category", pa.string()), ("distance", pa.int64()), ("threshold", pa.int64())])
    fields = []
    for name in columns:
        if name == "time":
            t = pa.timestamp("ms", tz="UTC")
        elif name in ("ok", "flagged", "text_truncated") or name.endswith("_flagged"):
            t = pa.bool_()
        elif name in ("latency_ms", "language_confidence") or name.endswith(("_score", "_threshold")):
            t = pa.float64()
        elif name in ("input_types", "applied_input_types"):
            t = pa.list_(pa.string())
        elif name == "hash_match":
            t = hash_match
        else:
            t = pa.string()
        fields.append(pa.field(name, t))
    return pa.schema(fields)


def _arrow_value(name: str, value: Any) -> Any:
    if name == "time" and isinstance(value, str):
        return parse_time(value)
    return value


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (format_time(v) if isinstance(v, datetime) else v) for k, v in row.items()}


# --- reading -------------------------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    """A row's time as an aware UTC datetime: ISO 8601 text (a trailing Z or an offset; naive = UTC), epoch
    seconds, or a datetime. None for null. Raises ValueError for text that is not a time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def iter_log_rows(path: str | os.PathLike, columns: Sequence[str] | None = None,
                  errors: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of one decision log or batch output (.jsonl or .parquet) as dicts.

    columns: read only these (Parquet; those a file lacks are skipped). A JSONL line that is not a JSON object
    (e.g. the half-written last line of a log being written) is skipped and reported in `errors` when given.
    Raises ValueError for another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    row = None
                if not isinstance(row, dict):
                    if errors is not None:
                        errors.append(f"{path}:{n}: not a JSON object (skipped)")
                    continue
                yield row
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(str(path))
        names = pf.schema_arrow.names
        wanted = [c for c in columns if c in names] if columns is not None else None
        for batch in pf.iter_batches(batch_size=16_384, columns=wanted):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"{path}: a decision log or batch output is .jsonl or .parquet")


def decision_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Decision logs / batch outputs named by files, folders (recursive) and globs: .jsonl and .parquet, without a
    batch job's errors side files (`*.errors.jsonl`) and its unfinished work folders (`*.parts/`). Raises
    FileNotFoundError when an input matches nothing, ValueError for a file of another format."""
    out = []
    for path in expand_inputs(inputs):
        if path.suffix.lower() not in (".jsonl", ".ndjson", ".parquet", ".pq"):
            raise ValueError(f"{path}: decision logs and batch outputs are .jsonl or .parquet files")
        if path.name.endswith(".errors.jsonl") or any(part.endswith(".parts") for part in path.parts[:-1]):
            continue
        out.append(path)
    if not out:
        raise FileNotFoundError(f"no decision logs or batch outputs in {', '.join(map(str, inputs))}")
    return out
