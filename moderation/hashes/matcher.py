"""Matching images against hash lists: every entry of one or more lists packed for vectorised Hamming distances.

    matcher = HashMatcher.from_files(["known-bad.json"])
    matcher.match_image(pil_image)          # -> [HashMatch(list=..., id=..., category=..., distance=12, ...)]
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from moderation.hashes.lists import HashEntry, HashList, no_gc
from moderation.hashes.pdq import PDQ_MIN_QUALITY, HashListError, hamming, hex_to_words, pdq_dihedral
from moderation.schema import HashMatch


class HashMatcher:
    """Every entry of one or more lists, packed for vectorised matching (brute force: 21 ms per image against
    100,000 listed hashes; a multi-index hash would be the next step for industry-sized lists)."""

    def __init__(self, lists: Sequence[HashList]) -> None:
        self.lists = list(lists)
        names = [hl.name for hl in self.lists]
        if len(set(names)) != len(names):
            raise HashListError(f"two hash lists have the same name ({', '.join(sorted(names))}); rename one")
        with no_gc():
            self._entries: list[tuple[HashList, HashEntry]] = [(hl, e) for hl in self.lists for e in hl.entries]
            self._words = hex_to_words([e.hash for _, e in self._entries])
            self._versions = {hl.name: hl.version for hl in self.lists}
        self._thresholds = np.concatenate([np.full(len(hl.entries), hl.threshold, dtype=np.int64)
                                           for hl in self.lists] or [np.zeros(0, dtype=np.int64)])

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike]) -> "HashMatcher":
        """Load list files. Raises FileNotFoundError / HashListError."""
        return cls([HashList.load(p) for p in paths])

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> list[dict[str, Any]]:
        """Name, path, version, threshold and size of each list."""
        return [{"name": hl.name, "path": str(hl.path) if hl.path else None, "version": self._versions[hl.name],
                 "threshold": hl.threshold, "entries": len(hl.entries)} for hl in self.lists]

    def versions(self) -> dict[str, str]:
        """List name -> version."""
        return dict(self._versions)

    def _distances(self, query: np.ndarray) -> np.ndarray:
        """(N,) the smallest distance from any of the (Q, 4) query hashes to each listed hash. One query row at a
        time: the temporary is (N, 4) words, not (Q, N, 4) (256 MB per image against a million hashes)."""
        dist = hamming(query[:1], self._words)[0]
        for row in query[1:]:
            np.minimum(dist, hamming(row[None, :], self._words)[0], out=dist)
        return dist

    def match_words(self, query: np.ndarray) -> list[HashMatch]:
        """Entries within their list's threshold of any of the query hashes ((Q, 4) uint64), nearest first."""
        if not self._entries:
            return []
        dist = self._distances(np.asarray(query, dtype=np.uint64).reshape(-1, 4))
        hits = np.nonzero(dist <= self._thresholds)[0]
        out = []
        for i in hits[np.argsort(dist[hits], kind="stable")]:
            hl, e = self._entries[int(i)]
            out.append(HashMatch(list=hl.name, list_version=self._versions[hl.name], id=e.id, category=e.category,
                                 distance=int(dist[i]), threshold=hl.threshold))
        return out

    def match_image(self, image: Image.Image) -> list[HashMatch]:
        """Hash the image in its 8 orientations and return the listed entries it matches, nearest first. An image
        whose PDQ quality is below PDQ_MIN_QUALITY matches nothing (a flat black picture would otherwise match
        any flat entry a list holds)."""
        if not self._entries:
            return []
        words, quality = pdq_dihedral(image)
        if quality < PDQ_MIN_QUALITY:
            return []
        return self.match_words(words)

    def nearest(self, image: Image.Image) -> tuple[int, HashEntry | None]:
        """The smallest distance from the image (any orientation) to a listed hash, and that entry."""
        if not self._entries:
            return 257, None
        words, _ = pdq_dihedral(image)
        dist = self._distances(words)
        i = int(np.argmin(dist))
        return int(dist[i]), self._entries[i][1]


def as_matcher(lists: Sequence[str | os.PathLike | HashList] | HashMatcher | None) -> HashMatcher | None:
    """A HashMatcher of hash-list files or loaded lists (one or several), a matcher as given, or None for none.
    Raises HashListError / FileNotFoundError for a bad list."""
    if lists is None or isinstance(lists, HashMatcher):
        return lists
    if isinstance(lists, (str, os.PathLike, HashList)):
        lists = [lists]
    loaded = [hl if isinstance(hl, HashList) else HashList.load(hl) for hl in lists]
    return HashMatcher(loaded) if loaded else None
