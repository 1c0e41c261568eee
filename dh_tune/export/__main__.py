"""`python -m dh_tune.export`: write a profile as a self-contained deployment folder (ONNX or OpenVINO).

One graph per stage with its gate (a static profile is one graph), the profile, a manifest with
checksums, and dhnet_runtime.py, which runs the folder with numpy, OpenCV and the runtime alone.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..messages import command_prog


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=command_prog("export"), description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--profile", type=Path, required=True, help="profile JSON written by python -m dh_tune.search")
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx",
                   help="onnx (ONNX Runtime or OpenVINO) or openvino (OpenVINO IR); default onnx")
    p.add_argument("--out", type=Path, required=True, help="deployment folder to write (replaced if it exists)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (default: the profile's own copy)")
    p.add_argument("--any-runtime", action="store_true",
                   help="export a profile chosen with another runtime's timings (its budget may not hold)")
    p.add_argument("--check-images", type=int, default=4,
                   help="random images to compare the exported graphs with PyTorch on (0: skip; default 4)")
    q = p.add_argument_group("lower precision (its AP is measured against the fp32 graphs and recorded)")
    q.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="fp32 (default), or int8: the trunk quantized after training, gates and output "
                        "convolutions kept fp32 (ONNX format only)")
    q.add_argument("--data", type=Path, default=None,
                   help="dataset to calibrate and score int8 on (default: the checkpoint's own dataset)")
    q.add_argument("--calibration-images", type=int, default=64,
                   help="training images whose activation ranges set the int8 scales (default 64)")
    q.add_argument("--accuracy-images", type=int, default=300,
                   help="validation images the int8 AP is measured on, beside the fp32 AP (default 300)")
    args = p.parse_args(argv)
    if args.precision == "int8" and (args.calibration_images < 1 or args.accuracy_images < 1):
        p.error("--calibration-images and --accuracy-images must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..messages import run_command
    from .dhnet_runtime import DeploymentError

    return run_command(lambda: export(args), refused=(DeploymentError,))


def export(args: argparse.Namespace) -> int:
    """Write the deployment folder, check its graphs against PyTorch and print what it holds."""
    from ..model.checkpoint import file_sha256, load_model
    from ..threshold_profiles import check_checkpoint, load_profile
    from .bundle import export_deployment, target_runtime
    from .dhnet_runtime import DeploymentError
    from .verify import compare_with_torch

    profile = load_profile(args.profile)
    target_runtime(profile, args.format, args.any_runtime)  # refuse before any work
    checkpoint = args.checkpoint or profile.checkpoint_path()
    check_checkpoint(profile, checkpoint, file_sha256(checkpoint))
    model, ckpt = load_model(checkpoint)
    heads = profile.doc["configuration"]["heads"]
    print(f"exporting {args.profile} ({heads}, {profile.imgsz} px, thresholds {profile.thresholds[0]:g} {profile.thresholds[1]:g}) as {args.format} ...",
          file=sys.stderr, flush=True)
    names = ckpt.get("names") or [str(i) for i in range(model.nc)]
    if args.precision == "int8" and args.format != "onnx":
        raise DeploymentError("--precision int8 writes ONNX graphs (OpenVINO runs them too): use --format onnx")
    fp32_out = args.out if args.precision == "fp32" else args.out.parent / f".{args.out.name}-fp32"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        out = export_deployment(model, profile, fp32_out, args.format, names=names,
                                allow_other_runtime=args.any_runtime)
        if args.check_images:
            report = compare_with_torch(model, out, images=args.check_images)
            print(f"checked on {args.check_images} random images: largest map difference {report.max_abs_diff:.2e}, "
                  f"gate decisions equal: {report.decisions_equal}", file=sys.stderr)
            if report.max_abs_diff > 1e-3 or not report.decisions_equal:
                raise DeploymentError(f"{out}: the exported graphs disagree with PyTorch "
                                      f"(map difference {report.max_abs_diff:.2e})")
        if args.precision == "int8":
            out = _int8(args, model, ckpt, profile, fp32_out)
    finally:
        if fp32_out != args.out:
            shutil.rmtree(fp32_out, ignore_errors=True)
    files = sorted(p.name for p in out.iterdir())
    print(f"wrote {out}: {', '.join(files)}")
    print(f"run it without torch: python {out / 'dhnet_runtime.py'} {out} IMAGE ...")
    return 0


def _int8(args: argparse.Namespace, model, ckpt: dict, profile, fp32_folder: Path) -> Path:
    """Quantize the fp32 folder with calibration images from the training split; score both on validation images."""
    from .bundle import load_manifest, target_runtime
    from .int8 import export_int8

    runtime = target_runtime(profile, "onnx", args.any_runtime)
    print(f"quantizing to int8 ({args.calibration_images} training images), scoring int8 and fp32 on up to "
          f"{args.accuracy_images} validation images with {runtime} ...", file=sys.stderr, flush=True)
    out = export_int8(model, ckpt, fp32_folder, args.out, runtime=runtime, imgsz=profile.imgsz, data=args.data,
                      calibration_images=args.calibration_images, accuracy_images=args.accuracy_images)
    acc = load_manifest(out)["accuracy"]
    print(f"int8 AP50:95 {acc['int8']['ap50_95']:.4f} vs fp32 {acc['fp32']['ap50_95']:.4f} "
          f"({acc['ap50_95_change']:+.4f}), AP50 {acc['int8']['ap50']:.4f} vs {acc['fp32']['ap50']:.4f}, "
          f"on {acc['images']} images under {runtime} (recorded in {out / 'deploy.json'})")
    return out


if __name__ == "__main__":
    sys.exit(main())
