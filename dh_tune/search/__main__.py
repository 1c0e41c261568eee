"""`python -m dh_tune.search`: Pareto-optimal gate-threshold profiles for each device latency budget.

Trains DH-Nets over the gate-loss hyperparameters (Ray Tune + Optuna, Ray Train inside each trial),
searches the per-gate thresholds of each against the device's latency table, and exports the most
accurate profile within every --budget-ms, logged to MLflow.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..messages import command_prog, finite_float

if TYPE_CHECKING:
    from .records import SearchOutcome


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=command_prog("search"), description=__doc__.split(":", 1)[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-ms", type=finite_float, action="append", required=True, dest="budgets",
                   help="latency budget per image in ms on the target device (repeat for several)")
    p.add_argument("--pipeline", default=None, help="pipeline YAML, or the name of a packaged one "
                                                    "(default: pipelines/quickstart.yaml)")
    p.add_argument("--trials", type=int, default=None, help="training trials of the outer search (default: pipeline)")
    p.add_argument("--device-table", type=Path, action="append", default=[], dest="device_tables",
                   help="latency table measured on the target device (python -m dh_tune.latency); "
                        "repeat for several image sizes. Default: this machine, timed once per model "
                        "architecture and size and kept under $DH_TUNE_HOME/devices")
    p.add_argument("--runtime", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="runtime the device is timed in, and the profiles are for (default: the fastest "
                        "installed, or the one the --device-table files were timed in; torch: eager PyTorch)")
    p.add_argument("--remeasure", action="store_true", help="time this machine afresh instead of reusing its tables")
    p.add_argument("--checkpoint", type=Path, default=None, help="skip training: search thresholds for this checkpoint")
    p.add_argument("--from-yolov5", type=Path, default=None, metavar="BEST.pt",
                   help="a YOLOv5 v6.0-v7.0 checkpoint (best.pt of YOLOv5's train.py, or a YOLOv5-named state "
                        "dict), read without running its code: it is the base and the static reference, the trials "
                        "train its gates on the frozen detector, and deployment sizes default to a range up to the "
                        "size it was trained at")
    p.add_argument("--data", default=None, help="dataset to train and score on (YOLO data YAML, COCO JSON or folder, "
                                                "TT100K folder), replacing the pipeline's; with --from-yolov5, the "
                                                "dataset the checkpoint was trained on")
    p.add_argument("--metric", choices=["ap50", "ap50_95"], default=None, help="AP to maximise (default: pipeline, ap50_95)")
    p.add_argument("--budget-stat", choices=["mean", "p90", "p99"], default=None,
                   help="latency statistic over images that a budget bounds (default: pipeline, p90: a per-frame "
                        "budget is about the slow frames, and p90 lets at most one frame in ten overrun while "
                        "still resting on enough images of a held-out split; p99 would rest on one or two)")
    p.add_argument("--select", choices=["best", "safest"], default=None,
                   help="within a budget, 'best': highest AP on the calibration images (default); 'safest': the "
                        "fastest profile whose 95%% AP interval overlaps the best one's")
    p.add_argument("--out", type=Path, default=None, help="search folder (default: runs/search/<pipeline>); "
                                                          "re-running with the same folder resumes")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting Ray in-process")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store under ./mlflow)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (profiles are still exported)")
    p.epilog = ("exit status: 0 every budget met; 1 the search failed; 2 bad input (one line names it); "
                "3 some budget cannot be met (its profile is exported, marked infeasible)")
    return p.parse_args(argv)


INFEASIBLE_STATUS = 3
"""Exit status when every input was fine but some budget could not be met (its profile is marked infeasible)."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    from ..messages import InputError, run_command
    from ..pipeline import load_pipeline
    from ..ray_setup import ResourceError, ray_failure
    from ..resources import default_pipeline, find_file
    from .driver import run_search
    from .imported import search_name
    from .records import SearchRequest
    from .summary import SearchFailed

    out = args.out

    def search() -> int:
        nonlocal out
        bad = [b for b in args.budgets if not b > 0]
        if bad:
            raise InputError(f"--budget-ms {bad[0]:g}: a budget must be a positive number of milliseconds")
        pipeline = load_pipeline(find_file(args.pipeline, "pipelines") if args.pipeline else default_pipeline())
        overrides = {k: v for k, v in (("metric", args.metric), ("budget_stat", args.budget_stat),
                                       ("select", args.select)) if v is not None}
        if overrides:
            pipeline = pipeline.with_overrides(search=overrides)
        if args.data is not None:
            data = Path(args.data).expanduser()
            pipeline = pipeline.with_overrides(data={"dataset": str(data.resolve() if data.exists() else data),
                                                     "format": None})
        if args.from_yolov5 is not None and args.checkpoint is not None:
            raise InputError("--from-yolov5 and --checkpoint: give one (an imported YOLOv5 trains its gates; a "
                             "dh-tune checkpoint is searched as it is)")
        name = pipeline.name if args.from_yolov5 is None else search_name(pipeline.name, args.from_yolov5)
        out = (args.out or Path("runs/search") / name).resolve()
        req = SearchRequest(pipeline=pipeline, budgets=sorted(set(args.budgets)), out=out, trials=args.trials,
                            device_tables=args.device_tables, checkpoint=args.checkpoint,
                            ray_address=args.ray_address, tracking_uri=args.tracking_uri, track=not args.no_mlflow,
                            remeasure=args.remeasure, runtime=args.runtime, from_yolov5=args.from_yolov5,
                            pipeline_named=args.pipeline is not None)
        outcome = run_search(req)
        print(outcome.summary)
        return report_budgets(outcome)

    return run_command(search, refused=(ResourceError,), failed=(SearchFailed,), explain=lambda exc: ray_failure(
        exc, f"the finished work is kept under {out}: re-run the same command to resume"))


def report_budgets(outcome: SearchOutcome) -> int:
    """Exit status of a finished search: 0, or INFEASIBLE_STATUS with one line naming the budgets not met."""
    missed = [r.budget_ms for r in outcome.budgets if not r.feasible]
    if missed:
        print(f"error: no profile meets --budget-ms {', '.join(f'{b:g}' for b in missed)}: their profiles are "
              f"exported marked infeasible (detect refuses them without --allow-infeasible)", file=sys.stderr)
        return INFEASIBLE_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
