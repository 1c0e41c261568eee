"""Ray Train around the plain loop: a TorchTrainer whose workers run `train_loop` under DDP.

Rank 0 validates, writes the checkpoint into the run folder and reports it to Ray, so that a
crashed worker group restarts from the latest epoch (FailureConfig).
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..model.checkpoint import load_checkpoint
from ..pipeline import Pipeline
from ..tracking import Tracking
from .loop import EpochScorer, Reporter, RunContext, train_loop


@dataclass(frozen=True)
class FitOptions:
    """What a run's workers start from besides the pipeline: run folder, dataset, the checkpoints to resume or
    start from, the MLflow run to log epochs into and the epoch scorer (each picklable: Ray ships them)."""

    run_dir: Path
    dataset: str | None = None
    resume_from: str | None = None  # a last.pt to continue
    init_checkpoint: str | None = None  # a dh-tune checkpoint to start from (warm start)
    tracking: Tracking | None = None
    epoch_scorer: EpochScorer | None = None
    report: Reporter | None = None  # in-process runs only: gets each epoch's metrics (Ray Train reports its own)


def _epoch_metrics_sink(tracking: Tracking | None) -> Callable[[dict[str, float], int], None] | None:
    """Where rank 0 logs each epoch's metrics: the MLflow run's metrics, or nowhere without tracking."""
    return tracking.logger().metrics if tracking is not None else None


def ray_worker_loop(config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker (plain PyTorch inside)."""
    import ray.train
    import ray.train.torch

    from ..ray_setup import setup_worker_logs

    setup_worker_logs()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    pipeline = Pipeline.model_validate(config["pipeline"])
    device = ray.train.torch.get_device() if pipeline.ray.gpu else torch.device("cpu")
    if not pipeline.train.threads:
        torch.set_num_threads(max(1, round(pipeline.ray.cpus_per_worker)))
    resume_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume_state = load_checkpoint(Path(d) / "last.pt")
    elif config.get("resume_from"):
        resume_state = load_checkpoint(config["resume_from"])

    def report(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
        if ckpt_dir is None:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy2(ckpt_dir / "last.pt", Path(tmp) / "last.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    init_state = load_checkpoint(config["init_checkpoint"]) if config.get("init_checkpoint") else None
    run_ctx = RunContext(run_dir=Path(config["run_dir"]), rank=rank, world_size=world, device=device,
                         report=report, resume_state=resume_state, init_state=init_state,
                         log_metrics=_epoch_metrics_sink(config["tracking"]) if rank == 0 else None,
                         epoch_scorer=config.get("epoch_scorer"))
    train_loop(pipeline, run_ctx, config.get("dataset"))


def _worker_config(pipeline: Pipeline, fit: FitOptions) -> dict[str, Any]:
    """The `train_loop_config` every Ray Train worker gets: the pipeline as JSON and the fit options."""
    return {"pipeline": pipeline.model_dump(mode="json"), "run_dir": str(fit.run_dir), "dataset": fit.dataset,
            "resume_from": fit.resume_from, "init_checkpoint": fit.init_checkpoint, "tracking": fit.tracking,
            "epoch_scorer": fit.epoch_scorer}


def fit_with_ray(pipeline: Pipeline, fit: FitOptions, *, callbacks: list | None = None, name: str = "train"):
    """Run the training on Ray Train workers; returns Ray's Result (raises on final failure)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    rc = pipeline.ray
    resources: dict[str, float] = {"CPU": rc.cpus_per_worker}
    if rc.gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config=_worker_config(pipeline, fit),
        scaling_config=ScalingConfig(num_workers=rc.workers, use_gpu=rc.gpu, resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=str((fit.run_dir / "ray").resolve()),
                             failure_config=FailureConfig(max_failures=rc.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             logging_config=LoggingConfig(log_level="WARNING"), callbacks=callbacks),
    )
    return trainer.fit()


def fit_local(pipeline: Pipeline, fit: FitOptions) -> dict[str, float]:
    """The same loop in this process, without Ray Train (one worker; in a Tune trial, on the threads Ray gives
    the trial's CPUs)."""
    device = torch.device("cuda" if pipeline.ray.gpu and torch.cuda.is_available() else "cpu")
    ctx = RunContext(run_dir=fit.run_dir, device=device, report=fit.report,
                     resume_state=load_checkpoint(fit.resume_from) if fit.resume_from else None,
                     init_state=load_checkpoint(fit.init_checkpoint) if fit.init_checkpoint else None,
                     log_metrics=_epoch_metrics_sink(fit.tracking), epoch_scorer=fit.epoch_scorer)
    return train_loop(pipeline, ctx, fit.dataset)
