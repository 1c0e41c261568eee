"""`python -m dh_tune.evaluate`: AP, per-class AP, gate quality, head usage and expected latency of a profile.

One pass of every head fills the exit-level cache (reused while checkpoint, data, size and NMS
are unchanged); the thresholds are then applied to the cache.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..input_size import check_imgsz
from ..messages import InputError, command_prog, finite_float, run_command

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=command_prog("evaluate"), description=__doc__.split(":", 1)[1].strip())
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="dh-tune checkpoint (best.pt or last.pt) to score")
    what.add_argument("--compare", type=Path, nargs="+", metavar="PROFILE",
                      help="print exported profiles side by side (device, budget, AP with its 95%% interval, "
                           "latency, exit shares) and flag the pairs whose AP intervals do not overlap")
    what.add_argument("--check-latency", type=Path, metavar="PROFILE",
                      help="re-time this device now for the profile and report how far its latency has drifted "
                           "from the profile's promise (and when the profile's table was timed)")
    p.add_argument("--data", default=None, help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the pipeline's val split)")
    p.add_argument("--thresholds", type=finite_float, nargs=2, default=(0.5, 0.5), metavar=("T1", "T2"),
                   help="gate thresholds: an image stops after head k when gate k's score is below Tk (default 0.5 0.5)")
    p.add_argument("--imgsz", type=int, default=None, help="network input size (default: the training size)")
    p.add_argument("--device-table", type=Path, default=None, help="latency table of the target device "
                                                                     "(default: measure this machine)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="runtime this machine is timed in without --device-table (default: the fastest installed)")
    p.add_argument("--plots", type=Path, default=None, help="write Figure 5 (gates) and Figure 7 (thresholds) PNGs here")
    p.add_argument("--resamples", type=int, default=1000,
                   help="bootstrap resamples of the images behind each 95%% interval (default 1000; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        return run_command(lambda: compare(args.compare))
    if args.check_latency:
        return run_command(lambda: check(args.check_latency))
    return run_command(lambda: evaluate(args))


def compare(paths: list[Path]) -> int:
    """Print the profiles side by side; pairs whose AP intervals do not overlap are named."""
    from ..threshold_profiles import load_profile
    from .profile_comparison import compare_profiles

    text, _ = compare_profiles([load_profile(p) for p in paths])
    print(text)
    return 0


def check(path: Path) -> int:
    """Re-time this device for the profile and print the drift of its latency from the profile's promise."""
    from .latency_check import check_latency, format_latency_check

    print(format_latency_check(check_latency(path)))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Score the checkpoint's profile at the given thresholds, print the report and draw the plots."""
    from ..data import DataError, dh_tune_home, load_dataset
    from ..latency import LatencyTable, latency_stats
    from ..latency.frame import timing_frame
    from ..latency.table_sources import local_latency_tables
    from ..model.checkpoint import (
        checkpoint_data_format,
        checkpoint_eps,
        checkpoint_imgsz,
        checkpoint_val_split,
        file_sha256,
        load_model,
    )
    from ..runtimes import resolve
    from .bootstrap import bootstrap_profile
    from .console import print_report
    from .exit_cache import cached_exit_table
    from .figures import write_plots

    t1, t2 = args.thresholds
    if not (0 <= t1 <= 1 and 0 <= t2 <= 1):
        raise InputError(f"--thresholds {t1} {t2}: thresholds lie in [0, 1]")
    if args.resamples < 0:
        raise InputError(f"--resamples {args.resamples}: give 0 (no intervals) or more")
    model, ckpt = load_model(args.checkpoint)
    imgsz = args.imgsz or checkpoint_imgsz(ckpt)
    check_imgsz(imgsz, "--imgsz", InputError)
    ds = load_dataset(args.data or ckpt["dataset"], fmt=None if args.data else checkpoint_data_format(ckpt))
    split = args.split or checkpoint_val_split(ckpt)
    if split not in ds.splits:
        raise DataError(f"{ds.root}: no split '{split}' (have: {', '.join(ds.splits)})")
    records = ds.splits[split]
    table = cached_exit_table(model, file_sha256(args.checkpoint), records, imgsz, eps=checkpoint_eps(ckpt),
                              cache_dir=dh_tune_home() / "cache" / "exit_tables")
    if args.device_table:
        latency = LatencyTable.load(args.device_table)
        if int(latency.model["imgsz"]) != imgsz:
            logger.warning("%s was measured at %s px, evaluating at %s", args.device_table, latency.model["imgsz"],
                           imgsz)
    else:
        frame, frame_file = timing_frame(r.path for r in records) or (None, None)
        latency = local_latency_tables(model, [imgsz], dh_tune_home() / "devices", runtime=resolve(args.runtime),
                                       image=frame, image_file=frame_file)[imgsz]
    metrics = table.evaluate(t1, t2, per_class=True)
    full = table.evaluate(0.0, 0.0)
    stats = latency_stats(metrics.exit_shares, latency, (t1, t2))
    full_ms = latency_stats(full.exit_shares, latency, (0.0, 0.0))["mean"]
    ci = bootstrap_profile(table, t1, t2, latency=latency, resamples=args.resamples, seed=args.seed) \
        if args.resamples and table.num_images else None
    print_report(metrics, full, ds.names, stats, full_ms, latency.device_name, len(records), imgsz, ci)
    if args.plots:
        for path in write_plots(table, latency, args.plots, t1, t2):
            print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
