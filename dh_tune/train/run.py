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
    from .loop import EpochScorer, Reporter

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


@dataclass(frozen=True)
class TrainOptions:
    """Where a run writes, what it starts from, how it runs and how MLflow tracks it; the defaults train a new run
    on Ray into runs/train/, tracked in the default store."""

    run_dir: Path | None = None  # default: runs/train/<pipeline>-<time>
    resume: Path | None = None  # a run folder to continue: its folder, dataset and MLflow run
    dataset: str | None = None  # overrides the pipeline's
    init_checkpoint: str | None = None  # a dh-tune checkpoint to start from (warm start)
    use_ray: bool = True  # False: the loop in this process, one worker
    ray_address: str | None = None  # join this Ray cluster instead of starting Ray in-process
    tune_callbacks: list | None = None  # the Ray trainer's callbacks
    report: Reporter | None = None  # in this process (use_ray False): gets each epoch's metrics (a Tune trial's)
    epoch_scorer: EpochScorer | None = None  # adds its numbers to the epochs it names (validation's model, rank 0)
    track: bool = True  # log to MLflow
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or the local store
    parent: Tracking | None = None  # start the MLflow run in its store, nested under its run and in its experiment
    extra_tags: dict[str, str] | None = None  # added to the new MLflow run's tags
    run_name: str | None = None  # the new MLflow run's name (default: the run folder's)
    failure_status: Callable[[BaseException], str] | None = None  # MLflow status when training raises (FAILED)


@dataclass(frozen=True)
class _Place:
    """A run's folder and dataset, the last.pt it continues and the MLflow run id its record names."""

    run_dir: Path
    dataset: str
    resume_from: str | None = None
    mlflow_run_id: str | None = None


def _place(pipeline: Pipeline, opts: TrainOptions) -> _Place:
    """The run folder (created; the resumed one, else the given or a new one) and what a resumed run continues."""
    run_dir, dataset, resume_from, mlflow_run_id = opts.run_dir, opts.dataset, None, None
    if opts.resume is not None:
        run_dir = Path(opts.resume).resolve()
        record = read_run(run_dir)
        dataset = dataset or record.get("dataset")
        mlflow_run_id = record.get("mlflow_run_id")
        last = run_dir / "weights" / "last.pt"
        resume_from = str(last) if last.is_file() else None
    # Absolute: Ray Train workers run in their own working directory.
    run_dir = Path(run_dir or new_run_dir(pipeline)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return _Place(run_dir, resolve_dataset(pipeline, dataset), resume_from, mlflow_run_id)


def _run_tags(pipeline: Pipeline, opts: TrainOptions, place: _Place) -> dict[str, str]:
    """Tags of a new MLflow run: dataset, model and resources, run folder, then the options' extra tags."""
    return {"dataset": place.dataset, "scale": str(pipeline.model.scale), "imgsz": str(pipeline.data.imgsz),
            "workers": str(pipeline.ray.workers), "device": "gpu" if pipeline.ray.gpu else "cpu",
            "run_dir": str(place.run_dir.resolve()), **(opts.extra_tags or {})}


def _open_mlflow_run(pipeline: Pipeline, opts: TrainOptions, place: _Place) -> tuple[SafeLogger | None, str | None]:
    """The MLflow run to log into (the resumed one, else a new one with the pipeline as params) and its store's URI;
    (None, None) untracked, and no run when the store cannot be reached."""
    if not opts.track:
        return None, None
    parent = opts.parent
    uri = parent.uri if parent is not None else resolve_tracking_uri(opts.tracking_uri)
    if place.mlflow_run_id:
        return SafeLogger(uri, place.mlflow_run_id), uri
    experiment = parent.experiment if parent is not None else None
    run_log = start_run(uri, experiment or pipeline.name, opts.run_name or place.run_dir.name,
                        parent_run_id=parent.run_id if parent is not None else None,
                        tags=_run_tags(pipeline, opts, place))
    if run_log is not None:
        run_log.params(flatten(pipeline.model_dump(mode="json")))
    return run_log, uri


def _fit(pipeline: Pipeline, opts: TrainOptions, place: _Place, tracking: Tracking | None) -> None:
    """Run the training loop: on Ray Train workers (after checking the cluster's resources) or in this process."""
    from .ray_runner import FitOptions

    fit = FitOptions(place.run_dir, dataset=place.dataset, resume_from=place.resume_from,
                     init_checkpoint=opts.init_checkpoint, tracking=tracking, epoch_scorer=opts.epoch_scorer,
                     report=opts.report)
    if opts.use_ray:
        from ..ray_setup import check_resources, init_ray
        from .ray_runner import fit_with_ray

        init_ray(opts.ray_address)
        check_resources(pipeline.ray.workers, pipeline.ray.cpus_per_worker, pipeline.ray.gpu)
        fit_with_ray(pipeline, fit, callbacks=opts.tune_callbacks, name="train")
    else:
        from .ray_runner import fit_local

        fit_local(pipeline, fit)


def _finish(place: _Place, run_log: SafeLogger | None, mlflow_run_id: str | None) -> TrainOutcome:
    """After training: the curves plot, the checkpoints and plot logged to MLflow (run ended FINISHED), the outcome."""
    last, best = place.run_dir / "weights" / "last.pt", place.run_dir / "weights" / "best.pt"
    ckpt = load_checkpoint(last)
    curves = plot_history(ckpt["history"], place.run_dir / "training_curves.png")
    if run_log is not None:
        for path in (last, best, curves):
            run_log.artifact(path)
        run_log.end("FINISHED")
    return TrainOutcome(place.run_dir, last, best, ckpt["metrics"], mlflow_run_id)


def run_training(pipeline: Pipeline, options: TrainOptions | None = None) -> TrainOutcome:
    """Train as the pipeline says and return where the checkpoints are; `options.resume` continues a run folder.

    When training raises, the MLflow run ends KILLED on Ctrl-C, else as `options.failure_status` says (FAILED).
    """
    opts = options or TrainOptions()
    place = _place(pipeline, opts)
    run_log, uri = _open_mlflow_run(pipeline, opts, place)
    mlflow_run_id = run_log.run_id if run_log is not None else place.mlflow_run_id
    fsio.write_json(place.run_dir / RUN_FILE, {
        "pipeline": pipeline.model_dump(mode="json"), "dataset": place.dataset, "mlflow_run_id": mlflow_run_id,
        "tracking_uri": redact_uri(uri) if uri else uri}, indent=2)
    tracking = Tracking(uri, run_log.run_id) if run_log is not None and uri else None
    try:
        _fit(pipeline, opts, place, tracking)
    except BaseException as exc:
        if run_log is not None:
            run_log.end("KILLED" if isinstance(exc, KeyboardInterrupt) else
                        opts.failure_status(exc) if opts.failure_status is not None else "FAILED")
        raise
    return _finish(place, run_log, mlflow_run_id)
