"""`python -m dh_tune.train`: train a DH-Net from a pipeline file with Ray Train (CPU or GPU workers)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..messages import command_prog
from ..pipeline import Pipeline, load_pipeline
from ..resources import default_pipeline, find_file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=command_prog("train"), description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--pipeline", default=None, help="pipeline YAML, or the name of a packaged one "
                                                    "(default: pipelines/quickstart.yaml)")
    p.add_argument("--data", default=None, help="dataset (YOLO data YAML, COCO JSON, TT100K root); overrides the pipeline")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (default: the pipeline's ray.workers)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (overrides the pipeline)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/train/<pipeline>-<time>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite store under ./mlflow)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting Ray in-process")
    p.add_argument("--no-ray", action="store_true", help="run the loop in this process without Ray (one worker)")
    return p.parse_args(argv)


def default_pipeline_path() -> Path | None:
    """./pipelines/quickstart.yaml when present, else the packaged quickstart pipeline."""
    return default_pipeline()


def build_pipeline(args: argparse.Namespace) -> Pipeline:
    """The pipeline file (or the resumed run's pipeline) with command-line overrides applied."""
    if args.resume is not None:
        from .run import read_run

        pipeline = Pipeline.model_validate(read_run(args.resume)["pipeline"])
    else:
        pipeline = load_pipeline(find_file(args.pipeline, "pipelines") if args.pipeline else default_pipeline_path())
    overrides: dict[str, dict] = {}
    if args.epochs is not None:
        overrides.setdefault("train", {})["epochs"] = args.epochs
    if args.workers is not None:
        overrides.setdefault("ray", {})["workers"] = args.workers
    if args.gpu:
        overrides.setdefault("ray", {})["gpu"] = True
    return pipeline.with_overrides(**overrides) if overrides else pipeline


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..messages import run_command
    from ..ray_setup import ResourceError, ray_failure

    return run_command(lambda: train(args), refused=(ResourceError,),
                       explain=lambda exc: ray_failure(exc, "continue from the last finished epoch with --resume RUN_DIR"))


def train(args: argparse.Namespace) -> int:
    """Train as the arguments say and print the result and where the checkpoints are."""
    from .run import TrainOptions, run_training

    pipeline = build_pipeline(args)
    options = TrainOptions(run_dir=args.out, resume=args.resume, dataset=args.data, tracking_uri=args.tracking_uri,
                           ray_address=args.ray_address, use_ray=not args.no_ray)
    outcome = run_training(pipeline, options)
    m = outcome.metrics
    print(f"done: AP50 {m.get('ap50', float('nan')):.3f}  AP50:95 {m.get('ap50_95', float('nan')):.3f}  "
          f"gate acc {m.get('gate1_acc', float('nan')):.3f}/{m.get('gate2_acc', float('nan')):.3f}\n"
          f"checkpoints: {outcome.last} (last), {outcome.best} (best)\n"
          f"MLflow run: {outcome.mlflow_run_id or 'not logged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
