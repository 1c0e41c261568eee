"""One outer-search trial: train with the sampled hyperparameters, report each epoch's front, score the result.

A trial is a Ray Tune function trainable that trains in its own process (one worker) or through Ray Train (a
TorchTrainer inside the trial, for several workers), reports every few epochs the hypervolume of its threshold front (which early stopping reads), then builds its
exit tables and runs the inner threshold search. Everything it finds goes to OUT/trials/<id>/result.json; a
trial restarted after its process was lost resumes its training from the run folder's last checkpoint.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import load_dataset
from ..latency import LatencyTable
from ..messages import first_line
from ..model.checkpoint import load_checkpoint
from ..pipeline import Pipeline
from ..tracking import Tracking
from .epoch_front import EpochFront, budget_point, report_records
from .imported import source_tags
from .inner import InnerResult, front_of, inner_search
from .records import ReportedPoint, TrialResult, TrialStatus
from .space import Dimension, loss_params, train_overrides
from .trial_docs import adopt_interrupted, ended_trials, read_result, same_point, write_result

if TYPE_CHECKING:
    from ..train.loop import Reporter


@dataclass
class TrialSetup:
    """Everything a trial needs, as plain data (it travels to the Ray worker running the trial)."""

    pipeline: dict[str, Any]
    out_dir: str
    dataset: str
    base_checkpoint: str | None
    latency_tables: dict[int, str]
    budget_ms: float
    tracking: Tracking | None  # the search's MLflow run, parent of the trials' runs
    cpus_per_worker: float
    in_process: bool = False  # one worker: the training loop runs in the trial's process, not on Ray Train
    base_plain: bool = False  # the base was trained as a plain detector: gates-only trials cannot change it
    base_gates_trained: bool = True  # False for an imported detector, whose gates start untrained
    source: dict[str, Any] | None = None  # an imported base's origin (file, sha256), recorded by every trial

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrialSetup:
        """A setup back from `dataclasses.asdict` (the plain form Ray hands to each trial)."""
        tracking = doc.get("tracking")
        return cls(**{**doc, "tracking": Tracking(**tracking) if tracking else None})


def trial_params(config: dict[str, Any], dims: list[Dimension]) -> dict[str, float]:
    return {d.name: float(config[d.name]) for d in dims if d.name in config}


def _evaluation_records(pipeline: Pipeline, dataset: str, eps: float):
    from ..evaluate.holdout import holdout_records

    ds = load_dataset(dataset, fmt=pipeline.data.format)
    sc, dc = pipeline.search, pipeline.data
    return holdout_records(ds, val_split=dc.val_split, test_split=dc.test_split, val_limit=dc.val_limit,
                           imgsz=dc.imgsz, eps=eps, test_fraction=sc.holdout_fraction, seed=sc.holdout_seed)


def evaluate_trained(checkpoint: Path, pipeline: Pipeline, dataset: str, latency: dict[int, LatencyTable],
                     cache_dir: Path, eps: float, progress: bool = True, static_only: bool = False):
    """Exit tables + inner search for one trained checkpoint (trials, the base, --checkpoint).

    `static_only` scores just the static networks (a model trained without gate supervision).
    """
    from .deploy import EvaluationImages, deployment_space
    from .inner import static_sweep

    sc, dc = pipeline.search, pipeline.data
    records, holdout = _evaluation_records(pipeline, dataset, eps)
    sizes = sc.deploy_imgsz or [dc.imgsz]
    space = deployment_space(checkpoint, EvaluationImages(records, holdout), sizes, latency, eps=eps,
                             cache_dir=cache_dir, progress=progress, budget_stat=sc.budget_stat)
    if static_only:
        static = static_sweep(space)
        result = InnerResult(static, front_of(static, sc.metric), float("nan"), static=static)
    else:
        result = inner_search(space, metric=sc.metric, grid_steps=sc.grid_steps, n_trials=sc.threshold_trials,
                              sampler=sc.sampler, seed=sc.seed)
    result.front = [space.held_out(c) for c in result.front]
    result.static = [space.held_out(c) for c in result.static]
    result.holdout = {**holdout.to_dict(), "calibration_indices": holdout.calibration.tolist(),
                      "test_indices": holdout.test.tolist()}
    return result


def epoch_front(pipeline: Pipeline, dataset: str, latency_tables: dict[int, str], budget_ms: float) -> EpochFront:
    """The per-epoch front report of a trial: calibration images at the deployment size nearest training's."""
    sc = pipeline.search
    eps = pipeline.train.loss.eps
    records, holdout = _evaluation_records(pipeline, dataset, eps)
    size = min(latency_tables, key=lambda s: (abs(int(s) - pipeline.data.imgsz), int(s)))
    return EpochFront(report_records(records, holdout.calibration, sc.report_images), int(size),
                      LatencyTable.load(latency_tables[size]), eps, sc.metric, sc.budget_stat, budget_ms,
                      sc.report_grid_steps, sc.report_every)


def record_scores(doc: TrialResult, result: InnerResult, metric: str, budget_ms: float) -> None:
    """What a model's result document keeps of its inner search: front, static networks, summary point."""
    doc.front, doc.static, doc.hv_ratio = list(result.front), list(result.static), result.hv_ratio
    doc.point, doc.evaluated, doc.holdout = summarize_point(result, metric, budget_ms), len(result.candidates), \
        result.holdout


def summarize_point(result: InnerResult, metric: str, budget_ms: float) -> ReportedPoint:
    """The (AP, latency) a trial reports: its best profile within the budget, or its fastest one."""
    return ReportedPoint(**budget_point(result.front, metric, budget_ms), hv_ratio=float(result.hv_ratio))


def gates_only(base: Pipeline, params: dict[str, float], setup: TrialSetup) -> bool:
    """True when a trial cannot change the detector: a base trained as a plain detector, and no gate gradient
    reaching the trunk (gate_trunk_grad 0, sampled or the pipeline's). Such a trial trains the gates alone."""
    share = float(params.get("gate_trunk_grad", base.train.loss.gate_trunk_grad))
    return bool(setup.base_checkpoint) and setup.base_plain and share == 0.0


def trial_pipeline(base: Pipeline, params: dict[str, float], setup: TrialSetup) -> Pipeline:
    """The pipeline a trial trains: the sampled values, and a fine-tuning schedule when warm-started.

    Gates-only trials freeze the detector; gates that start untrained (an imported detector's) get the whole
    schedule from lr0, trained ones fine-tune at the base schedule's final learning rate as every warm start does.
    """
    train_over: dict[str, Any] = train_overrides(params, base.train.loss.lambda_pos)
    frozen = gates_only(base, params, setup)
    if frozen:
        train_over["freeze"] = "detector"
    if frozen and not setup.base_gates_trained:
        train_over.update(epochs=base.search.trial_epochs, warmup_epochs=0.0)
    elif setup.base_checkpoint:  # fine-tune at the base schedule's final learning rate
        train_over.update(epochs=base.search.trial_epochs, warmup_epochs=0.0,
                          lr0=base.train.lr0 * base.train.lrf, lrf=1.0)
    else:
        train_over.update(epochs=base.search.trial_epochs)
    return base.with_overrides(train=train_over, ray={"cpus_per_worker": setup.cpus_per_worker})


def _resume_from(train_dir: Path, epochs: int) -> tuple[Path | None, bool]:
    """(run folder to resume, training already complete) of a trial restarted after its process was lost."""
    last = train_dir / "weights" / "last.pt"
    if not last.is_file():
        return None, False
    return train_dir, int(load_checkpoint(last)["epoch"]) + 1 >= epochs


def run_trial(config: dict[str, Any], setup: TrialSetup, dims: list[Dimension],
              reports: EpochReports | None = None) -> TrialResult:
    """Train with the sampled hyperparameters, then search its thresholds; the trial's result document.

    A failure is recorded (status failed, with its reason) and returned, never raised: Tune retries only trials
    whose process was lost. `reports` carry the per-epoch reports into Tune.
    """
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    trial_dir = Path(setup.out_dir) / "trials" / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    params = trial_params(config, dims)
    base = Pipeline.model_validate(setup.pipeline)
    before = read_result(trial_dir)
    doc = TrialResult(trial_id, params, TrialStatus.RUNNING, started=time.time(),
                      attempt=(before.attempt or 1) + 1 if before else 1, pid=os.getpid())
    earlier = next((d for d in ended_trials(Path(setup.out_dir))
                    if d.trial_id != trial_id and same_point(d.params, params)), None)
    if earlier is not None:  # the sampler drew a point already trained: report its result, train nothing
        doc.status, doc.duplicate_of, doc.ended = TrialStatus.DUPLICATE, earlier.trial_id, time.time()
        doc.point = earlier.point or ReportedPoint.nothing()
        write_result(trial_dir, doc)
        return doc
    doc.resumed_from = adopt_interrupted(Path(setup.out_dir), trial_dir, params)  # go on from a killed training
    write_result(trial_dir, doc)
    try:
        _train_and_score(doc, base, setup, trial_dir, reports or EpochReports())
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        from ..ray_setup import ray_failure

        lost = ray_failure(exc, f"more often than ray.max_failures ({base.ray.max_failures}) allows")
        doc.status, doc.error = TrialStatus.FAILED, lost or f"{type(exc).__name__}: {first_line(exc)}"
        doc.traceback = traceback.format_exc()[-4000:]
    doc.ended = time.time()
    now = read_result(trial_dir)
    if now is not None and now.status is TrialStatus.PRUNED:  # stopped by the scheduler while it finished an epoch
        return now
    write_result(trial_dir, doc)
    return doc


def _train_and_score(doc: TrialResult, base: Pipeline, setup: TrialSetup, trial_dir: Path,
                     reports: EpochReports) -> None:
    """Train the trial's model (or read back its finished training), score it and record it in `doc`."""
    from ..train.run import TrainOptions, TrainOutcome, read_run, run_training

    trial_id = doc.trial_id
    pipeline = trial_pipeline(base, doc.params, setup)
    doc.loss = loss_params(pipeline.train.loss.model_dump())
    train_dir = trial_dir / "train"
    resume, trained = _resume_from(train_dir, pipeline.train.epochs)
    if trained:
        ckpt = load_checkpoint(train_dir / "weights" / "last.pt")
        outcome = TrainOutcome(train_dir, train_dir / "weights" / "last.pt", train_dir / "weights" / "best.pt",
                               ckpt["metrics"], read_run(train_dir).get("mlflow_run_id"))
    else:
        outcome = run_training(pipeline, TrainOptions(
            run_dir=train_dir, resume=resume, dataset=setup.dataset, parent=setup.tracking, use_ray=not setup.in_process,
            init_checkpoint=setup.base_checkpoint, track=setup.tracking is not None,
            extra_tags={"trial_id": trial_id, "search_role": "trial", "freeze": pipeline.train.freeze,
                        **source_tags(setup.source)}, run_name=f"trial-{trial_id}",
            tune_callbacks=reports.callbacks, report=reports.report, failure_status=lambda _: _stopped_or_failed(trial_dir),
            epoch_scorer=epoch_front(pipeline, setup.dataset, setup.latency_tables, setup.budget_ms)))
    latency = {int(s): LatencyTable.load(p) for s, p in setup.latency_tables.items()}
    result = evaluate_trained(outcome.best, pipeline, setup.dataset, latency, trial_dir / "cache",
                              pipeline.train.loss.eps, progress=False)
    doc.status, doc.checkpoint, doc.train_metrics = TrialStatus.FINISHED, str(outcome.best), outcome.metrics
    doc.freeze, doc.source, doc.mlflow_run_id = pipeline.train.freeze, setup.source or None, outcome.mlflow_run_id
    doc.cache_dir = str(trial_dir / "cache")
    record_scores(doc, result, pipeline.search.metric, setup.budget_ms)
    _log_front(setup, outcome.mlflow_run_id, trial_dir, doc, result.hv_ratio)


def _stopped_or_failed(trial_dir: Path) -> str:
    """How a trial's MLflow run ends when its training raised: KILLED when the scheduler stopped it (the search
    marked it pruned before stopping it: the error is the stop reaching the training), else FAILED."""
    doc = read_result(trial_dir)
    return "KILLED" if doc is not None and doc.status is TrialStatus.PRUNED else "FAILED"


def _log_front(setup: TrialSetup, run_id: str | None, trial_dir: Path, doc: TrialResult, hv_ratio: float) -> None:
    """The trial's MLflow run gets its budget point and its front (as front.json)."""
    from .. import fsio

    if not run_id or setup.tracking is None or doc.point is None:
        return
    run = Tracking(setup.tracking.uri, run_id).logger()
    run.metrics({"front_hv_ratio": hv_ratio, "point_ap": doc.point.ap, "point_latency_ms": doc.point.latency_ms},
                step=0)
    fsio.write_json(trial_dir / "front.json", [c.to_dict() for c in doc.front or []])
    run.artifact(trial_dir / "front.json")


def final_result(doc: TrialResult) -> dict[str, Any]:
    """A trial's last Tune report: its objectives, how it ended, and `final` (what tells it from an epoch's)."""
    point = doc.point or ReportedPoint.nothing()
    metrics = doc.train_metrics or {}
    out: dict[str, Any] = {"final": 1.0, "status": doc.status.value, "ap": point.ap, "latency_ms": point.latency_ms,
                           "feasible": point.feasible, "hv_ratio": point.hv_ratio}
    if "front_hv" in metrics:
        out["front_hv"] = float(metrics["front_hv"])
    if doc.error:
        out["error"] = str(doc.error)[:500]
    return {k: v for k, v in out.items() if not (isinstance(v, float) and np.isnan(v))}


@dataclass
class EpochReports:
    """How a trial's epochs reach Tune: in its own process a report function (the loop's reporter), on Ray Train a
    callback of the trainer; none outside Tune."""

    report: Reporter | None = None
    callbacks: list | None = None

    @classmethod
    def into_tune(cls, in_process: bool) -> EpochReports:
        from .early_stop import epoch_report_callback, report_epoch

        return cls(report=report_epoch) if in_process else cls(callbacks=[epoch_report_callback()])


def trainable(config: dict[str, Any], setup: dict[str, Any], dims: list[dict]) -> None:
    """The Tune function trainable: one trial, then its final report."""
    import ray.tune

    trial_setup = TrialSetup.from_dict(setup)
    doc = run_trial(config, trial_setup, [Dimension(**d) for d in dims],
                    reports=EpochReports.into_tune(trial_setup.in_process))
    ray.tune.report(final_result(doc))
