"""Perceptual hashes (PDQ) of images, and lists of known violating images whose re-uploads are blocked.

Platforms keep lists of images they have already judged violating (their own, or shared through industry
hash-sharing programmes) and block re-uploads before any model runs. Three modules, one question each:

    pdq        what is an image's PDQ hash, and how far apart are two? (hashing in 8 orientations, hex, Hamming)
    lists      what does a hash list file hold? (the versioned JSON format, safe reading, locked edits, CSV import)
    matcher    which listed images does this image match? (every list packed for vectorised distances)

    matcher = HashMatcher.from_files(["known-bad.json"])
    matcher.match_image(pil_image)          # -> [HashMatch(list=..., id=..., category=..., distance=12, ...)]

Everything public is importable from `moderation.hashes` itself.
"""

from moderation.hashes.lists import (
    FORMAT,
    FORMAT_VERSION,
    HASH_TYPE,
    MAX_LIST_BYTES,
    HashEntry,
    HashList,
    read_list_file,
)
from moderation.hashes.matcher import HashMatcher, as_matcher
from moderation.hashes.pdq import (
    HASH_MAX_SIDE,
    PDQ_MATCH_THRESHOLD,
    PDQ_MIN_QUALITY,
    HashListError,
    check_hex,
    degenerate,
    hamming,
    hex_distance,
    hex_to_words,
    pdq_dihedral,
    pdq_hash,
    popcount,
)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "HASH_MAX_SIDE", "HASH_TYPE", "MAX_LIST_BYTES", "PDQ_MATCH_THRESHOLD",
    "PDQ_MIN_QUALITY", "HashEntry", "HashList", "HashListError", "HashMatcher", "as_matcher", "check_hex", "degenerate",
    "hamming", "hex_distance", "hex_to_words", "pdq_dihedral", "pdq_hash", "popcount", "read_list_file",
]
