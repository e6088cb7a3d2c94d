"""Worst-case cost of OCR on hostile images, after the caps of issue 22 (H1): CPU seconds and peak memory.

Each image runs in a fresh child process (so its peak RSS is its own): the process loads the OCR engine, reads
a small caption to warm up, records its peak RSS, then reads the hostile image. Images (those the issue
reproduced): a 1x100 white PNG (77 bytes), a 200x20000 strip of text lines, and a 2000x2000 page of tiny text;
plus a normal 640x160 caption for reference. The CPU time is the reading thread's (onnxruntime runs in it: one
intra-op thread), so other load on the machine inflates it less than the wall time.

    python -m benchmarks.ocr_caps [--json runs/ocr_caps.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from moderation.ocr import OcrEngine, OcrSettings
from moderation.schema import InputError

#: "+budget": the same image with the OCR aspect cap lifted to the input limit's 100:1, so that only the pixel
#: budget and the deadline bound it.
CASES = ("caption_640x160", "blank_1x100", "blank_1x100+budget", "strip_200x20000", "strip_200x20000+budget",
         "tiny_text_2000x2000")


def _image(case: str):
    from PIL import Image, ImageDraw

    if case == "caption_640x160":
        from tests.imagegen import caption

        return caption("YOU ARE A WORTHLESS IDIOT")
    if case == "blank_1x100":
        return Image.new("RGB", (1, 100), (255, 255, 255))
    if case == "strip_200x20000":
        img = Image.new("RGB", (200, 20000), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for y in range(0, 20000, 40):
            draw.text((5, y), "hello world you idiot", fill=(0, 0, 0))
        return img
    img = Image.new("RGB", (2000, 2000), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for y in range(0, 2000, 12):
        draw.text((0, y), "idiot worthless hello world " * 12, fill=(0, 0, 0))
    return img


def _child(case: str) -> dict:
    import resource
    import time

    from tests.imagegen import caption

    name, _, variant = case.partition("+")
    engine = OcrEngine(OcrSettings(max_aspect=100) if variant == "budget" else OcrSettings())
    engine.read(caption("WARM UP"))
    image = _image(name)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        text, outcome = engine.read(image), "read"
    except InputError as exc:
        text, outcome = "", exc.code.value
    return {"case": case, "size": list(image.size), "outcome": outcome, "chars": len(text),
            "cpu_s": round(time.thread_time() - cpu, 3), "wall_s": round(time.perf_counter() - wall, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_mb": round(base)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.ocr_caps", "--child", case], capture_output=True,
                             text=True, check=True, timeout=600)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['case']:<22} {row['outcome']:<16} chars {row['chars']:>5}  cpu {row['cpu_s']:6.2f} s  "
              f"wall {row['wall_s']:6.2f} s  peak RSS {row['peak_rss_mb']} MB (after warm-up {row['rss_before_mb']} MB)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
