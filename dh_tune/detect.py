"""`python -m dh_tune.detect`: run a DH-Net (optionally with a threshold profile) on images.

Writes annotated images and detections.json to --out and prints each image's exit level and time.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from .input_size import imgsz_problem
from .messages import command_prog, finite_float, run_command

PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with flags that do not go together refused by argparse (exit status 2)."""
    p = argparse.ArgumentParser(prog=command_prog("detect"), description=__doc__.split(":", 1)[1].strip())
    p.add_argument("sources", nargs="+", type=Path, help="images or folders of images")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (default: the profile's own copy)")
    p.add_argument("--profile", type=Path, default=None,
                   help="threshold profile JSON from dh_tune.search, or a folder from dh_tune.export")
    p.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="runtime with --profile (default: the one the profile was chosen with); without: torch")
    p.add_argument("--any-runtime", action="store_true", help="run a profile under another runtime than its own")
    p.add_argument("--allow-infeasible", action="store_true",
                   help="run a profile that meets no configuration's latency within its budget (refused otherwise)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of onnxruntime/openvino (default: theirs)")
    p.add_argument("--thresholds", type=finite_float, nargs=2, default=None, metavar=("T1", "T2"),
                   help="gate thresholds without a profile (default 0.5 0.5)")
    p.add_argument("--imgsz", type=int, default=None, help="input size without a profile (default: training size)")
    p.add_argument("--conf", type=finite_float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    args = p.parse_args(argv)
    if args.profile is not None:
        if args.thresholds is not None or args.imgsz is not None:
            p.error("--thresholds and --imgsz come from the profile; leave them out with --profile")
    elif args.checkpoint is None:
        p.error("give --checkpoint or --profile")
    else:
        if args.runtime not in (None, "torch"):
            p.error(f"--runtime {args.runtime} runs a profile: give --profile")
        problem = None if args.imgsz is None else imgsz_problem(args.imgsz)
        if problem is not None:
            p.error(f"--imgsz {args.imgsz}: {problem}")
    return args


def collect_images(sources: list[Path]) -> list[Path]:
    """The images named or found under folders; DataError names a missing source or a folder without any."""
    from .data import DataError
    from .data.images import IMAGE_SUFFIXES, list_images

    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = list_images(src)
            if not found:
                raise DataError(f"{src}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif src.is_file():
            files.append(src)
        else:
            raise DataError(f"{src}: {'not a regular file or folder' if src.exists() else 'no such file or folder'}")
    return files


def draw(img: np.ndarray, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, names: list[str],
         exit_level: int) -> np.ndarray:
    """Boxes with class and score, and the exit level in the corner."""
    out = img.copy()
    for (x1, y1, x2, y2), s, c in zip(boxes.astype(int), scores, classes):
        color = PALETTE[int(c) % len(PALETTE)]
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        cv2.putText(out, f"{names[int(c)] if int(c) < len(names) else c} {s:.2f}", (x1, max(y1 - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    cv2.putText(out, f"exit after head {exit_level}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .export.dhnet_runtime import DeploymentError

    # profile, checkpoint, image, runtime: one line; others: traceback
    return run_command(lambda: detect(args), refused=(DeploymentError,))


def detect(args: argparse.Namespace) -> int:
    """Run the profile's (or checkpoint's) network on every image; write annotated images and detections.json."""
    from .data.images import read_image
    from .fsio import write_json
    from .model import NMSConfig
    from .predict import Predictor

    nms = NMSConfig(conf=args.conf, iou=0.45, max_det=300, multi_label=False)
    files = collect_images(args.sources)
    if args.profile is not None:
        predictor = Predictor.from_profile(args.profile, args.checkpoint, nms=nms, runtime=args.runtime,
                                           allow_other_runtime=args.any_runtime,
                                           allow_infeasible=args.allow_infeasible, threads=args.threads)
    else:
        predictor = Predictor.from_checkpoint(args.checkpoint, args.imgsz, tuple(args.thresholds or (0.5, 0.5)),
                                              nms=nms)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for f in files:
        img = read_image(f)
        if img is None:
            print(f"{f}: cannot be decoded, skipped", file=sys.stderr)
            continue
        pred = predictor(img)
        d = pred.detections
        cv2.imwrite(str(args.out / f.name), draw(img, d.boxes, d.scores, d.classes, predictor.names, pred.exit_level))
        gate_scores = [float(s) if math.isfinite(s) else None for s in pred.gate_scores]  # NaN: that gate did not run
        results.append({"image": str(f), "exit_level": pred.exit_level, "gate_scores": gate_scores,
                        "time_ms": pred.time_ms,
                        "detections": [{"box_xyxy": [float(v) for v in b], "score": float(s), "class": int(c),
                                        "name": predictor.names[int(c)]}
                                       for b, s, c in zip(d.boxes, d.scores, d.classes)]})
        print(f"{f.name}: exit after head {pred.exit_level}, {len(d)} objects, {pred.time_ms:.1f} ms ({predictor.runtime})")
    write_json(args.out / "detections.json", results, allow_nan=False)
    print(f"wrote {len(results)} annotated images and detections.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
