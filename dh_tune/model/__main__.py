"""`python -m dh_tune.model`: parameters and GMACs per exit (the paper's Table 2) for any scale."""
from __future__ import annotations

import argparse
import json
import sys

from .config import SCALES
from .dhnet import DHNet
from .summary import format_summary, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dh_tune.model",
        description="Print parameters and GMACs of a DH-Net when images exit after head 1, 2 or 3.")
    parser.add_argument("--scale", default="s", help=f"YOLOv5 scale ({', '.join(SCALES)}) or DEPTH,WIDTH (default s)")
    parser.add_argument("--nc", type=int, default=33, help="number of classes (default 33, TT100K as in the paper)")
    parser.add_argument("--imgsz", type=int, default=1024, help="square input size, a multiple of 32 (default 1024)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.imgsz <= 0 or args.imgsz % 32:
        parser.exit(2, f"error: --imgsz {args.imgsz}: must be a positive multiple of 32\n")
    if args.nc < 1:
        parser.exit(2, f"error: --nc {args.nc}: must be at least 1\n")
    scale = args.scale
    if scale not in SCALES:
        try:
            depth, width = (float(v) for v in scale.split(","))
        except ValueError:
            parser.exit(2, f"error: --scale {scale!r}: expected one of {', '.join(SCALES)} or DEPTH,WIDTH\n")
        scale = (depth, width)
    doc = summarize(DHNet(scale, nc=args.nc), args.imgsz)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print(format_summary(doc, f"DH-Net scale {args.scale}, nc={args.nc}, input {args.imgsz}x{args.imgsz}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
