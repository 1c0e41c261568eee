"""`python -m dh_tune.latency`: measure DH-Net's parts on this device into a latency table (JSON).

Copy the table to another machine and pass it as --device-table to target this device from there.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..input_size import check_imgsz
from ..messages import InputError, command_prog, finite_float, run_command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=command_prog("latency"), description=__doc__.split(":", 1)[1].strip())
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="dh-tune checkpoint whose architecture is timed")
    src.add_argument("--scale", help="time an untrained model of this scale instead (n, s, m, l, x or DEPTH,WIDTH)")
    p.add_argument("--nc", type=int, default=80, help="classes, with --scale (default 80)")
    p.add_argument("--imgsz", type=int, required=True, help="square network input size (multiple of 32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    p.add_argument("--batch", type=int, default=1, help="images per forward (times are per image)")
    p.add_argument("--repeats", type=int, default=60, help="timed repeats after warm-up (default 60)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up repeats (default 10)")
    p.add_argument("--max-seconds", type=finite_float, default=60.0, help="stop repeating after this long (default 60)")
    p.add_argument("--retries", type=int, default=2,
                   help="re-time a measurement whose parts spread out (p90 over 1.5x the median and 0.25 ms above "
                        "it) up to this many times; parts that stay so are marked unstable (default 2)")
    p.add_argument("--image", type=Path, default=None,
                   help="a representative input frame: reading its file, pre-processing and NMS are timed on it "
                        "(default: noise at the input size, so no read and no resize is timed)")
    p.add_argument("--gpu", action="store_true", help="measure on the CUDA device (torch runtime)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="runtime to time the parts in (default: the fastest installed; torch: eager PyTorch)")
    p.add_argument("--out", type=Path, required=True, help="where to write the table, e.g. devices/jetson-orin.json")
    return p.parse_args(argv)


def _scale(text: str) -> str | tuple[float, float]:
    """--scale: a YOLOv5 scale letter or DEPTH,WIDTH (InputError naming the flag otherwise)."""
    from ..model.config import SCALES

    if "," not in text:
        if text not in SCALES:
            raise InputError(f"--scale {text!r}: choose one of {', '.join(SCALES)} or give DEPTH,WIDTH")
        return text
    try:
        depth, width = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--scale {text!r}: DEPTH,WIDTH must be two numbers") from None
    if not (0 < depth and 0 < width):
        raise InputError(f"--scale {text!r}: DEPTH and WIDTH must be positive")
    return depth, width


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_command(lambda: time_device(args))


def time_device(args: argparse.Namespace) -> int:
    """Time the parts and graphs of the network, write the latency table and print its summary."""
    from ..gating import STATIC_THRESHOLDS
    from ..model import DHNet
    from ..model.checkpoint import file_sha256, load_model
    from ..runtimes import resolve
    from .measure import latency_table

    check_imgsz(args.imgsz, "--imgsz", InputError)
    if args.retries < 0:
        raise InputError(f"--retries {args.retries}: give 0 or more")
    if args.gpu and not torch.cuda.is_available():
        raise InputError("--gpu: no CUDA device is visible to torch")
    sha = None
    runtime = resolve(args.runtime)
    frame = None
    if args.image is not None:
        from ..data.images import read_image

        frame = read_image(args.image) if args.image.is_file() else None
        if frame is None:
            raise InputError(f"{args.image}: not a readable image")
    if args.gpu and runtime != "torch":
        raise InputError(f"--gpu times the torch runtime; leave out --gpu or use --runtime torch (not {runtime})")
    if args.checkpoint is not None:
        model, _ = load_model(args.checkpoint)
        sha = file_sha256(args.checkpoint)
    else:
        model = DHNet(_scale(args.scale), nc=args.nc)
    device = torch.device("cuda" if args.gpu else "cpu")
    table = latency_table(model, args.imgsz, device=device, threads=args.threads, batch=args.batch,
                          repeats=args.repeats, warmup=args.warmup, max_seconds=args.max_seconds,
                          checkpoint_sha256=sha, runtime=runtime, image=frame,
                          image_file=args.image if frame is not None else None, retries=args.retries)
    table.save(args.out)
    print(f"{table.device_name}, {runtime} {table.runtime['version']}, input {args.imgsz}, batch {args.batch}")
    for name, part in table.parts.items():
        print(f"  {name:<10} median {part.median_ms:8.3f} ms   p90 {part.p90_ms:8.3f} ms   p99 {part.p99_ms:8.3f} ms   "
              f"({part.repeats} runs)")
    for name, part in table.graphs.items():
        print(f"  graph {name:<17} median {part.median_ms:8.3f} ms   p90 {part.p90_ms:8.3f} ms")
    exits = table.exit_cost_ms("median", (0.5, 0.5))
    print("  exit after head 1 / 2 / 3, through the gates: " + " / ".join(f"{v:.2f} ms" for v in exits))
    static = [table.exit_cost_ms("median", STATIC_THRESHOLDS[k])[k - 1] for k in (1, 2, 3)]
    print("  static YOLOv5 with 1 / 2 / 3 heads (no gate):  " + " / ".join(f"{v:.2f} ms" for v in static))
    if table.unstable_parts:
        print(f"  unstable (spread out after {table.measurement['attempts']} attempts; measure again on a quiet "
              f"machine): {', '.join(table.unstable_parts)}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
