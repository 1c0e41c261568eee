"""One training run, end to end: run folder, MLflow run, Ray Train (or in-process), artifacts."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import fsio
from ..messages import InputError, loads_finite, redact_uri
from ..model.checkpoint import load_checkpoint
from ..pipeline import Pipeline
from ..tracking import SafeLogger, Tracking, flatten, resolve_tracking_uri, start_run
from .data_setup import resolve_dataset
from .plots import plot_history

if TYPE_CHECKING:
    from .loop import EpochScorer

RUN_FILE = "run.json"


@dataclass
class TrainOutcome:
    """Where a finished run left its results."""

    run_dir: Path
    last: Path
    best: Path
    metrics: dict[str, float]
    mlflow_run_id: str | None


def new_run_dir(pipeline: Pipeline, root: str | Path = "runs/train") -> Path:
    """runs/train/<pipeline>-<timestamp>, never an existing folder."""
    base = Path(root) / f"{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def read_run(run_dir: Path) -> dict:
    """The run's record (pipeline, dataset, MLflow run id); InputError if the folder is not a readable run."""
    f = run_dir / RUN_FILE
    if not f.is_file():
        raise InputError(f"{run_dir}: not a dh-tune run folder (no {RUN_FILE})")
    try:
        doc = loads_finite(fsio.read_text(f, "run record"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{f}: not JSON ({exc.msg} at line {exc.lineno}); the run record is damaged") from None
    if not isinstance(doc, dict):
        raise InputError(f"{f}: not a run record (expected a JSON object)")
    return doc


def run_training(pipeline: Pipeline, *, run_dir: Path | None = None, resume: Path | None = None,
                 dataset: str | None = None, tracking_uri: str | None = None, ray_address: str | None = None,
                 use_ray: bool = True, parent: Tracking | None = None, tune_callbacks: list | None = None,
                 track: bool = True, init_checkpoint: str | None = None,
                 extra_tags: dict[str, str] | None = None, run_name: str | None = None,
                 epoch_scorer: EpochScorer | None = None,
                 failure_status: Callable[[BaseException], str] | None = None) -> TrainOutcome:
    """Train as the pipeline says and return where the checkpoints are; resume continues a run folder.

    With `parent`, the MLflow run is started in its store, nested under its run and in its experiment.
    `epoch_scorer` adds its numbers to the epochs it names (validation's model, rank 0), and so to their reports.
    `failure_status` says how the MLflow run ends when training raises (default FAILED; KILLED on Ctrl-C).
    """
    resume_from, mlflow_run_id = None, None
    if resume is not None:
        run_dir = Path(resume).resolve()
        record = read_run(run_dir)
        dataset = dataset or record.get("dataset")
        mlflow_run_id = record.get("mlflow_run_id")
        last = run_dir / "weights" / "last.pt"
        resume_from = str(last) if last.is_file() else None
    # Absolute: Ray Train workers run in their own working directory.
    run_dir = Path(run_dir or new_run_dir(pipeline)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = resolve_dataset(pipeline, dataset)

    logger, uri = None, None
    if track:
        uri = parent.uri if parent is not None else resolve_tracking_uri(tracking_uri)
        if mlflow_run_id:
            logger = SafeLogger(uri, mlflow_run_id)
        else:
            experiment = parent.experiment if parent is not None else None
            logger = start_run(uri, experiment or pipeline.name, run_name or run_dir.name,
                               parent_run_id=parent.run_id if parent is not None else None, tags={
                "dataset": dataset, "scale": str(pipeline.model.scale), "imgsz": str(pipeline.data.imgsz),
                "workers": str(pipeline.ray.workers), "device": "gpu" if pipeline.ray.gpu else "cpu",
                "run_dir": str(run_dir.resolve()), **(extra_tags or {})})
            if logger is not None:
                logger.params(flatten(pipeline.model_dump(mode="json")))
                mlflow_run_id = logger.run_id
    fsio.write_json(run_dir / RUN_FILE, {
        "pipeline": pipeline.model_dump(mode="json"), "dataset": dataset, "mlflow_run_id": mlflow_run_id,
        "tracking_uri": redact_uri(uri) if uri else uri}, indent=2)
    tracking = Tracking(uri, logger.run_id) if logger is not None and uri else None

    try:
        if use_ray:
            from ..ray_setup import check_resources, init_ray
            from .ray_runner import fit_with_ray

            init_ray(ray_address)
            check_resources(pipeline.ray.workers, pipeline.ray.cpus_per_worker, pipeline.ray.gpu)
            fit_with_ray(pipeline, run_dir, dataset=dataset, resume_from=resume_from,
                         init_checkpoint=init_checkpoint, tracking=tracking, callbacks=tune_callbacks, name="train",
                         epoch_scorer=epoch_scorer)
        else:
            from .ray_runner import fit_local

            fit_local(pipeline, run_dir, dataset=dataset, resume_from=resume_from,
                      init_checkpoint=init_checkpoint, tracking=tracking, epoch_scorer=epoch_scorer)
    except BaseException as exc:
        if logger is not None:
            logger.end("KILLED" if isinstance(exc, KeyboardInterrupt) else
                       failure_status(exc) if failure_status is not None else "FAILED")
        raise

    last, best = run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"
    ckpt = load_checkpoint(last)
    curves = plot_history(ckpt["history"], run_dir / "training_curves.png")
    if logger is not None:
        for path in (last, best, curves):
            logger.artifact(path)
        logger.end("FINISHED")
    return TrainOutcome(run_dir, last, best, ckpt["metrics"], mlflow_run_id)
