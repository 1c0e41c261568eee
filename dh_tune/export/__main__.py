"""`python -m dh_tune.export`: write a profile as a self-contained deployment folder (ONNX or OpenVINO).

One graph per stage with its gate (a static profile is one graph), the profile, a manifest with
checksums, and dhnet_runtime.py, which runs the folder with numpy, OpenCV and the runtime alone.
"""
from __future__ import annotations

import argparse
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
    return p.parse_args(argv)


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
    heads = profile.doc.get("configuration", {}).get("heads", "gated")
    print(f"exporting {args.profile} ({heads}, {profile.imgsz} px, thresholds {profile.thresholds[0]:g} {profile.thresholds[1]:g}) as {args.format} ...",
          file=sys.stderr, flush=True)
    names = ckpt.get("names") or [str(i) for i in range(model.nc)]
    out = export_deployment(model, profile, args.out, args.format, names=names,
                            allow_other_runtime=args.any_runtime)
    if args.check_images:
        report = compare_with_torch(model, out, images=args.check_images)
        print(f"checked on {args.check_images} random images: largest map difference {report.max_abs_diff:.2e}, "
              f"gate decisions equal: {report.decisions_equal}", file=sys.stderr)
        if report.max_abs_diff > 1e-3 or not report.decisions_equal:
            raise DeploymentError(f"{out}: the exported graphs disagree with PyTorch "
                                  f"(map difference {report.max_abs_diff:.2e})")
    files = sorted(p.name for p in out.iterdir())
    print(f"wrote {out}: {', '.join(files)}")
    print(f"run it without torch: python {out / 'dhnet_runtime.py'} {out} IMAGE ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
