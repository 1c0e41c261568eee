"""Command line of the data package: check a dataset, generate synthetic signs, print Table 1.

    python -m dh_tune.data check --data DATA [--strict] [--report FILE] [--decode]
    python -m dh_tune.data synth --out DIR --train 2000 --val 500 --imgsz 416 --seed 0
    python -m dh_tune.data stats --data DATA --imgsz 1024 --eps 4 [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from ..input_size import check_imgsz
from ..messages import command_prog, finite_float, run_command
from .images import read_image
from .loader import FORMATS, load_dataset
from .problems import summarize_problems, write_problems
from .records import DataError, Dataset, Problem
from .stats import dataset_stats, format_table, head_shares
from .synth import generate

SYNTH_DEFAULT_IMGSZ = 416
PAPER_IMGSZ = 1024
REPORT_NAME = "data_problems.tsv"


def _imgsz(text: str) -> int:
    """argparse type: a network input size (`check_imgsz`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid image size {text!r}") from None
    return check_imgsz(value, error=argparse.ArgumentTypeError)


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="data YAML, COCO JSON/folder or TT100K folder/JSON "
                        "(default: the built-in synthetic signs, generated once under $DH_TUNE_HOME)")
    parser.add_argument("--format", choices=FORMATS, help="skip format detection")
    parser.add_argument("--strict", action="store_true", help="stop at the first data problem")
    parser.add_argument("--images", type=Path, help="COCO: folder the file_name entries are relative to")
    parser.add_argument("--min-images", type=int, help="TT100K: drop classes seen in fewer images (default 15)")
    parser.add_argument("--min-instances", type=int, help="TT100K: keep classes with at least this many objects "
                        "(100 gives the common 45-class setting)")


def _load(args: argparse.Namespace) -> Dataset:
    options = {key: value for key, value in (("images", args.images), ("min_images", args.min_images),
                                             ("min_instances", args.min_instances)) if value is not None}
    return load_dataset(args.data, strict=args.strict, fmt=args.format, **options)


def _decode_all(dataset: Dataset) -> list[Problem]:
    problems = []
    records = [r for split in dataset.splits.values() for r in split]
    for record in tqdm(records, desc="decoding", disable=None, leave=False):
        img = read_image(record.path)
        if img is None:
            problems.append(Problem(str(record.path), "OpenCV cannot decode the image", "unreadable_image",
                                    "image will train as grey without objects"))
        elif img.shape[:2] != (record.height, record.width):
            problems.append(Problem(str(record.path), f"decodes to {img.shape[1]}x{img.shape[0]} but the header says "
                                    f"{record.width}x{record.height}", "size_mismatch", "boxes may be misplaced"))
    return problems


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a dataset; exit 0 when clean, 1 when problems were found (all in the report, or all printed)."""
    logging.getLogger("dh_tune.data.loader").setLevel(logging.ERROR)  # the summary is printed below
    dataset = _load(args)
    problems = dataset.problems + (_decode_all(dataset) if args.decode else [])
    if args.strict and problems:
        raise DataError(f"{problems[0].file}: {problems[0].reason}")
    sizes = ", ".join(f"{split} {len(r)} images / {sum(len(x.boxes) for x in r)} objects"
                      for split, r in dataset.splits.items())
    print(f"{dataset.name}: {dataset.nc} classes; {sizes}")
    if not problems:
        print("no problems found")
        return 0
    report = _write_report(problems, args.report, dataset.root)
    if report is None:
        print(summarize_problems(problems, limit=len(problems)))
        print(f"no report written ({dataset.root} is not writable): --report FILE writes the list to FILE")
    else:
        print(summarize_problems(problems))
        print(f"full list: {report}")
    return 1


def _write_report(problems: list[Problem], report: Path | None, dataset_root: Path) -> Path | None:
    """Write the problem list to --report, else next to the dataset when that folder is writable (None: not written).

    Never into the current folder unasked: a check run anywhere leaves its report with the dataset it read.
    """
    if report is not None:
        return write_problems(problems, report)
    if not (dataset_root.is_dir() and os.access(dataset_root, os.W_OK)):
        return None
    try:
        return write_problems(problems, dataset_root / REPORT_NAME)
    except OSError:
        return None


def cmd_synth(args: argparse.Namespace) -> int:
    """Generate the synthetic dataset and print its speed and head shares."""
    report = generate(args.out, train=args.train, val=args.val, imgsz=args.imgsz, seed=args.seed,
                      workers=args.workers, overwrite=args.overwrite)
    total = sum(report.images.values())
    print(f"wrote {total} images to {report.out} in {report.seconds:.1f} s ({report.images_per_second:.0f} images/s)")
    for split, s in report.shares.items():
        print(f"{split}: heads needed at imgsz {args.imgsz}, eps 4: head 1 only {s['head1_only']:.1%} "
              f"(no sign {s['no_object']:.1%}), up to head 2 {s['up_to_head2']:.1%}, head 3 {s['head3']:.1%}")
    print(f"data YAML: {report.out / 'data.yaml'}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print Table 1 (images needing each head per split) and per-class instance counts."""
    imgsz = args.imgsz or (PAPER_IMGSZ if args.data is not None else SYNTH_DEFAULT_IMGSZ)
    dataset = _load(args)
    stats = dataset_stats(dataset, imgsz, args.eps)
    if args.json:
        print(json.dumps({split: {**s.as_dict(), "shares": head_shares(s),
                                  "classes": dict(zip(dataset.names, s.instances))} for split, s in stats.items()}))
    else:
        print(format_table(stats, dataset.names, imgsz, args.eps))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with the check, synth and stats subcommands."""
    parser = argparse.ArgumentParser(prog=command_prog("data"), description="dh-tune datasets")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a dataset and list every bad file")
    _dataset_arguments(check)
    check.add_argument("--report", type=Path, default=None,
                       help=f"where to write the full problem list (.json or tab-separated; default: {REPORT_NAME} "
                            "in the dataset's folder when writable, else every problem is printed)")
    check.add_argument("--decode", action="store_true", help="also decode every image (slow, thorough)")
    check.set_defaults(run=cmd_check)
    synth = sub.add_parser("synth", help="generate the synthetic traffic-sign dataset")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument("--train", type=int, default=2000, help="training images (default %(default)s)")
    synth.add_argument("--val", type=int, default=500, help="validation images (default %(default)s)")
    synth.add_argument("--imgsz", type=_imgsz, default=SYNTH_DEFAULT_IMGSZ, help="image side, multiple of 32")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--workers", type=int, help="processes (default: all cores)")
    synth.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    synth.set_defaults(run=cmd_synth)
    stats = sub.add_parser("stats", help="images needing each head (paper Table 1) and class counts")
    _dataset_arguments(stats)
    stats.add_argument("--imgsz", type=_imgsz, help=f"network input size (default {PAPER_IMGSZ} with --data, "
                       f"{SYNTH_DEFAULT_IMGSZ} for the built-in dataset)")
    stats.add_argument("--eps", type=finite_float, default=4.0, help="anchor ratio threshold epsilon (default 4)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    stats.set_defaults(run=cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; data errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.run(args), refused=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
