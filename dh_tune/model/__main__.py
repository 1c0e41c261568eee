"""`python -m dh_tune.model`: parameters and GMACs per exit (the paper's Table 2) for any scale."""
from __future__ import annotations

import argparse
import json
import sys

from ..input_size import check_imgsz
from ..messages import InputError, command_prog, run_command
from .config import SCALES
from .dhnet import DHNet
from .summary import format_summary, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_prog("model"),
        description="Print parameters and GMACs of a DH-Net when images exit after head 1, 2 or 3.")
    parser.add_argument("--scale", default="s", help=f"YOLOv5 scale ({', '.join(SCALES)}) or DEPTH,WIDTH (default s)")
    parser.add_argument("--nc", type=int, default=33, help="number of classes (default 33, TT100K as in the paper)")
    parser.add_argument("--imgsz", type=int, default=1024, help="square input size, a multiple of 32 (default 1024)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    return run_command(lambda: summary(args))


def summary(args: argparse.Namespace) -> int:
    """Print the parameters and GMACs per exit of the network the arguments describe."""
    check_imgsz(args.imgsz, "--imgsz", InputError)
    if args.nc < 1:
        raise InputError(f"--nc {args.nc}: must be at least 1")
    scale = args.scale
    if scale not in SCALES:
        try:
            depth, width = (float(v) for v in scale.split(","))
        except ValueError:
            raise InputError(f"--scale {scale!r}: expected one of {', '.join(SCALES)} or DEPTH,WIDTH") from None
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
