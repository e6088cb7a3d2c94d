"""`moderation hashes`: keep lists of known violating images as PDQ hashes (argparse only at import: numpy, PIL
and pdqhash load in the handlers).

    moderation hashes add --list known-bad.json --category hate meme1.jpg meme2.png
    moderation hashes import --list known-bad.json shared-hashes.csv      # columns: hash, category[, id, source]
    moderation hashes list --list known-bad.json
    moderation hashes remove --list known-bad.json a1b2c3d4e5f60718
    moderation hashes match --list known-bad.json upload.jpg              # nearest listed hash, distance
    moderation score posts.jsonl --out results.parquet --hash-list known-bad.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from moderation.schema import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `hashes` subcommand and its actions."""
    p = subparsers.add_parser(
        "hashes", help="manage hash lists of known violating images (PDQ): add, import, list, remove, match",
        description="A hash list is a versioned JSON file of PDQ hashes (64 hex digits), each with an id and a "
                    "category. Pass it to `moderation score --hash-list FILE` (or the endpoint's hash_lists): an "
                    "image within the list's distance threshold (default 31 of 256 bits, any rotation or mirror "
                    "image) is flagged for that category, with hash_match in its result, whatever the model says.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="hashes_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="hash images and add them to a list (created when it does not exist)")
    add.add_argument("--list", required=True, metavar="FILE", dest="list_path", help="hash list (JSON)")
    add.add_argument("--category", required=True, help="category the images violate, e.g. hate")
    add.add_argument("--id", default=None, help="id of the entry (one image only; default: the hash's first 16 hex digits)")
    add.add_argument("--min-quality", type=int, default=None,
                     help="refuse an image whose PDQ quality (0-100) is below this (default: 50; flat, featureless "
                          "images hash poorly and would match too much)")
    add.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add.set_defaults(func=_cmd_add)

    imp = sub.add_parser("import", help="add the hashes of a CSV (header: hash, category; optional id, source, quality)")
    imp.add_argument("--list", required=True, metavar="FILE", dest="list_path", help="hash list (JSON)")
    imp.add_argument("--min-quality", type=int, default=None,
                     help="refuse a row whose quality column is below this, or whose hash is degenerate (a flat "
                          "image's: all or nearly all bits zero) (default: 50; 0 imports them anyway)")
    imp.add_argument("csv", metavar="CSV", help="CSV file of hex PDQ hashes")
    imp.set_defaults(func=_cmd_import)

    ls = sub.add_parser("list", help="show a list's version, threshold and entries")
    ls.add_argument("--list", required=True, metavar="FILE", dest="list_path", help="hash list (JSON)")
    ls.add_argument("--json", action="store_true", help="print the list file's JSON")
    ls.set_defaults(func=_cmd_list)

    rm = sub.add_parser("remove", help="remove entries by id or hash")
    rm.add_argument("--list", required=True, metavar="FILE", dest="list_path", help="hash list (JSON)")
    rm.add_argument("keys", nargs="+", metavar="ID_OR_HASH")
    rm.set_defaults(func=_cmd_remove)

    match = sub.add_parser("match", help="hash images and show the nearest listed hash and its distance")
    match.add_argument("--list", required=True, action="append", metavar="FILE", dest="list_paths",
                       help="hash list (repeatable)")
    match.add_argument("images", nargs="+", metavar="IMAGE")
    match.set_defaults(func=_cmd_match)


def _load_image(path: str):
    """Decode an image file given on the command line, with the same limits and checks as posts."""
    from moderation.inputs import load_image  # deferred: numpy, PIL

    full = Path(path).resolve()
    return load_image(full.name, image_root=full.parent)


def _cmd_add(args: argparse.Namespace) -> int:
    from moderation.hashes import PDQ_MIN_QUALITY, HashList, pdq_hash  # deferred: numpy, PIL, pdqhash

    if args.id is not None and len(args.images) > 1:
        print("error: --id names one entry; give one image with it", file=sys.stderr)
        return 2
    min_quality = PDQ_MIN_QUALITY if args.min_quality is None else args.min_quality
    images = []  # hashed before the list is locked (the slow part)
    failed = 0
    for path in args.images:
        try:
            hash_hex, quality = pdq_hash(_load_image(path))
        except InputError as exc:
            print(f"{path}: not added: {exc}", file=sys.stderr)
            failed += 1
            continue
        if quality < min_quality:
            print(f"{path}: not added: PDQ quality {quality} is below {min_quality} (a flat or featureless image "
                  "hashes poorly and would match unrelated images; --min-quality 0 adds it anyway)", file=sys.stderr)
            failed += 1
            continue
        images.append((path, hash_hex, quality))
    with HashList.edit(args.list_path) as hl:
        for path, hash_hex, quality in images:
            entry = hl.add(hash_hex, args.category, id=args.id, quality=quality, source=path)
            if entry is None:
                print(f"{path}: already listed ({hash_hex}) for {args.category}")
            else:
                print(f"{path}: added {entry.id} {entry.hash} {entry.category} (quality {quality})")
    print(f"{hl.path}: {len(hl.entries)} entries, version {hl.version}")
    return 1 if failed else 0


def _cmd_import(args: argparse.Namespace) -> int:
    from moderation.hashes import PDQ_MIN_QUALITY, HashList  # deferred: numpy, PIL, pdqhash

    min_quality = PDQ_MIN_QUALITY if args.min_quality is None else args.min_quality
    with HashList.edit(args.list_path) as hl:
        added, already = hl.import_csv(args.csv, min_quality=min_quality)
    print(f"{args.csv}: {len(added)} added, {already} already listed -> {hl.path}: {len(hl.entries)} entries, "
          f"version {hl.version}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from moderation.hashes import HashList  # deferred: numpy, PIL, pdqhash

    hl = HashList.load(args.list_path)
    if args.json:
        print(json.dumps(hl.to_dict(), indent=1, ensure_ascii=False))
        return 0
    print(f"{hl.name}: {len(hl.entries)} entries, version {hl.version}, match threshold {hl.threshold} (of 256 bits)")
    for e in hl.entries:
        print(f"{e.id:<24} {e.category:<12} {e.hash}  {e.source or ''}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    from moderation.hashes import HashList  # deferred: numpy, PIL, pdqhash

    if not os.path.exists(args.list_path):
        raise FileNotFoundError(f"hash list not found: {args.list_path}")
    with HashList.edit(args.list_path) as hl:
        removed = hl.remove(args.keys)
    found = {e.id.lower() for e in removed} | {e.hash for e in removed}
    missing = [k for k in args.keys if k.strip().lower() not in found]
    for e in removed:
        print(f"removed {e.id} {e.hash} {e.category}")
    for k in missing:
        print(f"not in the list: {k}", file=sys.stderr)
    print(f"{hl.path}: {len(hl.entries)} entries, version {hl.version}")
    return 1 if missing else 0


def _cmd_match(args: argparse.Namespace) -> int:
    from moderation.hashes import HashMatcher  # deferred: numpy, PIL, pdqhash

    matcher = HashMatcher.from_files(args.list_paths)
    status = 0
    for path in args.images:
        try:
            image = _load_image(path)
        except InputError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = 1
            continue
        matches = matcher.match_image(image)
        if matches:
            m = matches[0]
            print(f"{path}: MATCH {m.list}/{m.id} {m.category} distance {m.distance} (threshold {m.threshold})")
        else:
            distance, entry = matcher.nearest(image)
            nearest = f"nearest {entry.id} at distance {distance}" if entry is not None else "the lists are empty"
            print(f"{path}: no match ({nearest})")
    return status
