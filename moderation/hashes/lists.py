"""Hash lists: the versioned JSON file of known violating images' PDQ hashes, how it is read safely, edited under a
lock and filled from a CSV.

A hash list is a small versioned JSON file (never a pickle):

    {"format": "moderation-hash-list", "format_version": 1, "hash_type": "pdq", "name": "known-bad",
     "threshold": 31, "version": "pdq-3f0c2d9a8e5b4c6f",
     "entries": [{"id": "a1b2c3d4e5f60718", "hash": "<64 hex>", "category": "hate", "quality": 100,
                  "source": "meme.jpg", "added": "2026-11-28"}]}

`version` is derived from the content (entries and threshold), so it changes whenever the list does; a
result that was blocked names the list version that blocked it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import functools
import gc
import hashlib
import io
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from moderation.filelock import file_lock, holder
from moderation.hashes.pdq import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY, HashListError, check_hex, degenerate, popcount
from moderation.schema import normalize_category

FORMAT = "moderation-hash-list"
FORMAT_VERSION = 1
HASH_TYPE = "pdq"
#: A hash list file larger than this is refused (about 3 million entries; 1M entries are 174 MB).
MAX_LIST_BYTES = 512 * 1024 * 1024


def read_list_file(path: Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a list file: a regular file of at most `max_bytes`. Raises FileNotFoundError, or
    HashListError for a directory, a device (/dev/zero would be read until memory ran out), a FIFO (would
    hang), an unreadable or an oversized file. Opened non-blocking and checked on the open descriptor, so a
    file swapped for a FIFO after a check cannot hang the read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise HashListError(f"{path}: is a directory; give the {what} file") from None
    except OSError as exc:
        raise HashListError(f"{path}: cannot open the {what} ({exc.strerror})") from None
    info = os.fstat(fd)
    problem = ("is a directory" if stat.S_ISDIR(info.st_mode) else
               "not a regular file (a device, FIFO or socket)" if not stat.S_ISREG(info.st_mode) else
               f"{info.st_size} bytes, over the {what} limit of {max_bytes}" if info.st_size > max_bytes else None)
    if problem is not None:
        os.close(fd)
        raise HashListError(f"{path}: {problem}; give the {what} file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HashListError(f"{path}: over the {what} limit of {max_bytes} bytes")
    return data


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a million small objects are made (they hold no cycles; the collector's
    passes over the growing heap doubled the time of loading a list)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# A list names few categories: fold each name once, not once per entry.
_category = functools.lru_cache(maxsize=256)(normalize_category)


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV of hashes, keys and values stripped and keys lower-cased. Raises FileNotFoundError, or
    HashListError for an unreadable file or a header without `hash` and `category`."""
    raw = read_list_file(path, MAX_LIST_BYTES, "CSV of hashes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HashListError(f"{path}: not UTF-8 text ({exc})") from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if "hash" not in fields or "category" not in fields:
            raise HashListError(f"{path}: the header must name 'hash' and 'category' columns (got {fields})")
        return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]


def _check_csv_quality(row: dict[str, str], quality: int | None, min_quality: int) -> None:
    """Raise HashListError when a CSV row's hash is too poor to list: its PDQ quality is below `min_quality`, or
    the hash is degenerate (an all-zero hash matched every black image). Nothing is checked when `min_quality`
    is 0."""
    if min_quality <= 0:
        return
    if quality is not None and quality < min_quality:
        raise HashListError(f"PDQ quality {quality} is below {min_quality} (a flat or featureless "
                            "image's hash matches unrelated images)")
    if degenerate(row.get("hash", "")):
        raise HashListError(f"the hash {row.get('hash', '')[:16]}... has {popcount(row['hash'])} of "
                            "256 bits set: the hash of a flat image, which would match every flat image")


@dataclass(frozen=True)
class HashEntry:
    """One listed hash: its id, the 64-hex PDQ hash, the category it violates, and where it came from."""

    id: str
    hash: str
    category: str
    quality: int | None = None
    source: str | None = None
    added: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hash": self.hash, "category": self.category, "quality": self.quality,
                "source": self.source, "added": self.added}


@dataclass
class HashList:
    """A named list of PDQ hashes with categories and a match threshold; loads from and saves to JSON."""

    name: str
    entries: list[HashEntry] = field(default_factory=list)
    threshold: int = PDQ_MATCH_THRESHOLD
    path: Path | None = None
    # (hash, category) pairs and ids of `entries`, kept up to date by add(): loading is linear, not quadratic.
    _pairs: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False, compare=False)
    _ids: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _indexed: tuple[int, int] = field(default=(0, 0), init=False, repr=False, compare=False)
    _version: tuple[Any, str] | None = field(default=None, init=False, repr=False, compare=False)

    def _index(self) -> tuple[set[tuple[str, str]], set[str]]:
        """The pairs and ids of the entries, rebuilt only when `entries` was replaced or changed size elsewhere."""
        if self._indexed != (id(self.entries), len(self.entries)):
            self._pairs = {(e.hash, e.category) for e in self.entries}
            self._ids = {e.id for e in self.entries}
            self._indexed = (id(self.entries), len(self.entries))
        return self._pairs, self._ids

    @property
    def version(self) -> str:
        """Derived from the content (threshold and entries): changes whenever the list does."""
        key = (self._index() and self._indexed, self.threshold)
        if self._version is None or self._version[0] != key:
            self._version = (key, self._compute_version())
        return self._version[1]

    def _compute_version(self) -> str:
        content = json.dumps({"hash_type": HASH_TYPE, "threshold": self.threshold,
                              "entries": [[e.id, e.hash, e.category] for e in self.entries]}, sort_keys=True)
        return f"{HASH_TYPE}-{hashlib.sha256(content.encode('utf-8')).hexdigest()[:16]}"

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "hash_type": HASH_TYPE, "name": self.name,
                "threshold": self.threshold, "version": self.version,
                "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "HashList":
        """Validate a parsed list file. Raises HashListError naming the problem."""
        where = f"{path}: " if path else ""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HashListError(f"{where}not a hash list (expected a JSON object with \"format\": \"{FORMAT}\")")
        if data.get("format_version") != FORMAT_VERSION:
            raise HashListError(f"{where}hash list format_version {data.get('format_version')!r} is not supported "
                                f"(this version reads {FORMAT_VERSION})")
        if data.get("hash_type", HASH_TYPE) != HASH_TYPE:
            raise HashListError(f"{where}hash_type {data.get('hash_type')!r} is not supported (only {HASH_TYPE!r})")
        threshold = data.get("threshold", PDQ_MATCH_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= 256:
            raise HashListError(f"{where}threshold must be an integer from 0 to 256, got {threshold!r}")
        raw_entries = data.get("entries", [])
        if not isinstance(raw_entries, list):
            raise HashListError(f"{where}'entries' must be a list")
        out = cls(name=str(data.get("name") or (path.stem if path else "hash-list")), threshold=threshold, path=path)
        for i, raw in enumerate(raw_entries):
            if not isinstance(raw, dict):
                raise HashListError(f"{where}entry {i} is not an object")
            try:
                out.add(raw.get("hash", ""), raw.get("category", ""), id=raw.get("id"), quality=raw.get("quality"),
                        source=raw.get("source"), added=raw.get("added"))
            except HashListError as exc:
                raise HashListError(f"{where}entry {i}: {exc}") from None
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HashList":
        """Read a list file. Raises FileNotFoundError, or HashListError for anything else wrong with it."""
        path = Path(path)
        raw = read_list_file(path, MAX_LIST_BYTES, "hash list")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HashListError(f"{path}: not UTF-8 text ({exc})") from None
        with no_gc():
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HashListError(f"{path}: not valid JSON ({exc})") from None
            return cls.from_dict(data, path)

    @classmethod
    def load_or_new(cls, path: str | os.PathLike, name: str | None = None) -> "HashList":
        """The list at `path`, or a new empty one (named after the file) when the file does not exist."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        return cls(name=name or path.stem, path=path)

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the list as JSON (temporary file, then rename: readers never see half a list)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this hash list has no path; give one")
        # A temporary name of its own: two writers never share (and truncate) one.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.path = target
        return target

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: str | os.PathLike, wait_s: float = 60.0) -> Iterator["HashList"]:
        """Load (or start) the list at `path` under an exclusive lock (`<path>.lock`) and save it when the block
        ends without an error: concurrent `hashes add / import / remove` on one list each see the other's entries
        (two imports of 300 kept 300 before, not 600). Raises HashListError when the lock is held past `wait_s`."""
        path = Path(path)

        def busy(lock: Path) -> Exception:
            return HashListError(f"{path} is being changed by another process{holder(lock)} (it holds {lock}); "
                                 "try again when it has finished")

        with file_lock(path.with_name(path.name + ".lock"), wait_s=wait_s, busy=busy):
            hl = cls.load_or_new(path)
            yield hl
            hl.save()

    def add(self, hash_hex: str, category: str, *, id: str | None = None, quality: int | None = None,
            source: str | None = None, added: str | None = None) -> HashEntry | None:
        """Add a hash; returns the entry, or None when the same hash is already listed for that category.

        The id defaults to the first 16 hex digits of the hash (plus the category when the same hash is listed
        for another one). Raises HashListError for a bad hash, an empty category or an id already used.
        """
        h = check_hex(hash_hex)
        try:
            cat = _category(category) if isinstance(category, str) else normalize_category(category)
        except ValueError:
            raise HashListError("the category is empty") from None
        pairs, ids = self._index()
        if (h, cat) in pairs:
            return None
        if id is None or str(id).strip() == "":
            id = h[:16] if h[:16] not in ids else f"{h[:16]}-{cat}"
        id = str(id).strip()
        if id in ids:
            raise HashListError(f"id {id!r} is already in the list")
        if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int)):
            raise HashListError(f"quality must be an integer, got {quality!r}")
        entry = HashEntry(id=id, hash=h, category=cat, quality=quality, source=source,
                          added=added or _dt.date.today().isoformat())
        self.entries.append(entry)
        pairs.add((h, cat))
        ids.add(id)
        self._indexed = (self._indexed[0], len(self.entries))
        return entry

    def remove(self, keys: Iterable[str]) -> list[HashEntry]:
        """Remove entries whose id or hash is in `keys`; returns the removed entries."""
        wanted = {str(k).strip().lower() for k in keys}
        removed = [e for e in self.entries if e.id.lower() in wanted or e.hash in wanted]
        self.entries = [e for e in self.entries if e not in removed]
        self._indexed = (0, 0)
        return removed

    def import_csv(self, path: str | os.PathLike, min_quality: int = PDQ_MIN_QUALITY) -> tuple[list[HashEntry], int]:
        """Add the rows of a CSV with a header naming `hash` and `category` (optional: `id`, `source`, `quality`).

        All or nothing: every row is checked first and any bad row raises HashListError naming its line, with
        nothing added. A row whose `quality` is below `min_quality`, or whose hash is degenerate (see
        `degenerate`: an all-zero hash matched every black image), is a bad row unless `min_quality` is 0.
        Returns (entries added, rows already listed).
        """
        path = Path(path)
        rows = _read_csv_rows(path)
        trial = HashList(name=self.name, entries=list(self.entries), threshold=self.threshold)
        added: list[HashEntry] = []
        already = 0
        errors = []
        for lineno, row in enumerate(rows, start=2):
            try:
                quality = int(row["quality"]) if row.get("quality") else None
                _check_csv_quality(row, quality, min_quality)
                entry = trial.add(row.get("hash", ""), row.get("category", ""), id=row.get("id") or None,
                                  quality=quality, source=row.get("source") or path.name)
            except (HashListError, ValueError) as exc:
                errors.append(f"line {lineno}: {exc}")
                continue
            if entry is None:
                already += 1
            else:
                added.append(entry)
        if errors:
            shown = "; ".join(errors[:10]) + (f"; ... ({len(errors)} bad rows)" if len(errors) > 10 else "")
            raise HashListError(f"{path}: nothing imported: {shown}")
        self.entries = trial.entries
        return added, already
