"""What one input row becomes in a batch job: an Item (its post, or why it has none), and the ids seen so far.

Shared by both engines (the local one in moderation.batch.local, the Ray one in serving.batch_ray), so that
they read rows, check ids and report bad rows in the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from moderation.dumps import Row, clean_text, clean_value, json_default
from moderation.schema import ErrorCode, InputError, Post

#: Input columns that make the post; every other column is carried through to the output untouched.
POST_FIELDS = ("id", "text", "image")


@dataclass
class Item:
    """One input row on its way through the job: where it came from, its post or why it has none."""

    seq: int
    source_file: str
    source_row: int
    id: str | None
    post: Post | None
    error: InputError | None
    extras: str  # carried-through columns as a JSON object (text), so every part has one fixed schema
    image_root: str | None


def make_item(seq: int, source_file: str, source_row: int, raw: Row | InputError, image_root: str | None) -> Item:
    """Turn a row from a reader (dict or InputError) into an Item; never raises for a bad row."""
    if isinstance(raw, InputError):
        return Item(seq, source_file, source_row, None, None, raw, "{}", image_root)
    extras = {k: v for k, v in raw.items() if k not in POST_FIELDS}
    try:
        extras_json = json.dumps(clean_value(extras), ensure_ascii=False, default=json_default)
    except (TypeError, ValueError) as exc:
        extras_json = json.dumps({"_unwritable_columns": f"{type(exc).__name__}: {exc}"})
    raw_id = raw.get("id")
    post_id = clean_text(str(raw_id)) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and raw_id != "" else None
    try:
        post = Post.from_dict(raw)
    except InputError as exc:
        return Item(seq, source_file, source_row, post_id, None, exc, extras_json, image_root)
    if post_id != post.id:  # the id itself held undecodable bytes
        return Item(seq, source_file, source_row, post_id, None,
                    InputError(ErrorCode.TEXT_NOT_UTF8, "the id is not valid UTF-8"), extras_json, image_root)
    return Item(seq, source_file, source_row, post.id, post, None, extras_json, image_root)


def duplicate_error(post_id: str) -> InputError:
    return InputError(ErrorCode.DUPLICATE_ID, f"id {post_id!r} appears earlier in the input; only the first is scored")


class IdSet:
    """The ids seen so far, as 64-bit hashes: 8 bytes an id (plus a small buffer), whatever the dump size.

    Two different ids share a hash with probability about n^2 / 2^65 (1e-5 at ten million ids); such a row
    would be reported as a duplicate, never merged silently.
    """

    def __init__(self, buffer: int = 65_536) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._buffer = buffer

    @staticmethod
    def _hash(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")

    def add(self, key: str) -> bool:
        """Add `key`; True when it was new, False when it had been seen."""
        h = self._hash(key)
        if h in self._recent:
            return False
        if self._sorted.size:
            i = int(np.searchsorted(self._sorted, np.uint64(h)))
            if i < self._sorted.size and int(self._sorted[i]) == h:
                return False
        self._recent.add(h)
        if len(self._recent) >= self._buffer:
            self._flush()
        return True

    def _flush(self) -> None:
        fresh = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        self._sorted = np.union1d(self._sorted, fresh)
        self._recent.clear()

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._recent)

