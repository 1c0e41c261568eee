"""Outer search: Ray Tune + OptunaSearch over the gate-loss hyperparameters.

Each Tune trial is a function trainable that trains a DH-Net through Ray Train (a TorchTrainer
inside the trial), builds its exit tables, runs the inner threshold search and reports the best
(AP, latency) point within the first budget. Results are files under OUT/trials, so a re-run
with the same OUT skips finished trials; a trial a killed search left running is marked failed (in its
result file, Optuna's study and MLflow) and the sampler continues from the study's state instead of
repeating the points it already drew.
"""
from __future__ import annotations

import json
import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import fsio
from ..data import load_dataset
from ..latency import LatencyTable
from ..messages import first_line
from ..pipeline import Pipeline
from ..tracking import Tracking
from .inner import front_of, inner_search
from .pareto import select_for_budget
from .space import Dimension, loss_overrides

logger = logging.getLogger(__name__)

# The paper's setting (section 3.3): trained end to end, the gate gradient flowing into the trunk.
PAPER_POINT = {"gate_lambda": 0.2, "lambda_pos_1": 0.28, "lambda_pos_2": 2.0, "eps": 4.0, "gate_trunk_grad": 1.0}
RESULT_FILE = "result.json"
TRIAL_CPU = 0.01


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

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrialSetup:
        """A setup back from `dataclasses.asdict` (the plain form Ray hands to each trial)."""
        tracking = doc.get("tracking")
        return cls(**{**doc, "tracking": Tracking(**tracking) if tracking else None})


def trial_params(config: dict[str, Any], dims: list[Dimension]) -> dict[str, float]:
    return {d.name: float(config[d.name]) for d in dims if d.name in config}


def evaluate_trained(checkpoint: Path, pipeline: Pipeline, dataset: str, latency: dict[int, LatencyTable],
                     cache_dir: Path, eps: float, progress: bool = True, static_only: bool = False):
    """Exit tables + inner search for one trained checkpoint (trials, the base, --checkpoint).

    `static_only` scores just the static networks (a model trained without gate supervision).
    """
    from ..evaluate.holdout import holdout_records
    from .deploy import deployment_space
    from .inner import InnerResult, static_sweep

    ds = load_dataset(dataset, fmt=pipeline.data.format)
    sc, dc = pipeline.search, pipeline.data
    records, holdout = holdout_records(ds, val_split=dc.val_split, test_split=dc.test_split, val_limit=dc.val_limit,
                                       imgsz=dc.imgsz, eps=eps, test_fraction=sc.holdout_fraction,
                                       seed=sc.holdout_seed)
    sizes = sc.deploy_imgsz or [dc.imgsz]
    space = deployment_space(checkpoint, records, sizes, latency, eps=eps, cache_dir=cache_dir, progress=progress,
                             holdout=holdout, budget_stat=sc.budget_stat)
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


def result_fields(result, metric: str, budget_ms: float) -> dict[str, Any]:
    """What a model's result document keeps of its inner search: front, static networks, summary point."""
    return {"front": [c.to_dict() for c in result.front], "static": [c.to_dict() for c in result.static],
            "hv_ratio": result.hv_ratio, "point": summarize_point(result, metric, budget_ms),
            "evaluated": len(result.candidates), "holdout": result.holdout}


def loss_params(loss: dict[str, Any]) -> dict[str, float]:
    """A checkpoint's `train.loss` section as search-space parameters."""
    return {"gate_lambda": float(loss["gate_lambda"]), "lambda_pos_1": float(loss["lambda_pos"][0]),
            "lambda_pos_2": float(loss["lambda_pos"][1]), "eps": float(loss["eps"]),
            "gate_trunk_grad": float(loss.get("gate_trunk_grad", 1.0))}


def summarize_point(result, metric: str, budget_ms: float) -> dict[str, float]:
    """The (AP, latency) a trial reports: its best profile within the budget, or its fastest one."""
    front = result.front
    choice = select_for_budget(np.array([c.ap(metric) for c in front]),
                               np.array([c.budget_latency_ms for c in front]), budget_ms)
    pick = front[choice.index] if choice.index is not None else min(front, key=lambda c: c.budget_latency_ms)
    return {"ap": pick.ap(metric) if choice.feasible else 0.0, "latency_ms": pick.budget_latency_ms,
            "feasible": float(choice.feasible), "hv_ratio": float(result.hv_ratio)}


def write_result(trial_dir: Path, doc: dict[str, Any]) -> None:
    fsio.write_json(trial_dir / RESULT_FILE, doc)


def same_point(a: dict[str, float], b: dict[str, float]) -> bool:
    """True when two hyperparameter points name the same values (up to float round-off)."""
    return a.keys() == b.keys() and all(math.isclose(float(a[k]), float(b[k]), rel_tol=1e-9, abs_tol=1e-12)
                                        for k in a)


def run_trial(config: dict[str, Any], setup: TrialSetup, dims: list[Dimension]) -> dict[str, Any]:
    """Train with the sampled gate-loss hyperparameters, then search its thresholds."""
    import ray.tune

    from ..train.run import run_training

    trial_id = ray.tune.get_context().get_trial_id()
    trial_dir = Path(setup.out_dir) / "trials" / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    params = trial_params(config, dims)
    base = Pipeline.model_validate(setup.pipeline)
    doc: dict[str, Any] = {"trial_id": trial_id, "params": params, "status": "running",
                           "started": time.time()}
    earlier = next((d for d in finished_trials(Path(setup.out_dir)) if same_point(d["params"], params)), None)
    if earlier is not None:  # the sampler drew a point already trained: report its result, train nothing
        doc.update(status="duplicate", duplicate_of=earlier["trial_id"],
                   point=earlier.get("point") or {"ap": 0.0, "latency_ms": 0.0, "feasible": 0.0, "hv_ratio": 0.0})
        write_result(trial_dir, doc)
        return doc
    write_result(trial_dir, doc)
    try:
        train_over: dict[str, Any] = {"loss": loss_overrides(params, base.train.loss.lambda_pos)}
        if setup.base_checkpoint:  # fine-tune at the base schedule's final learning rate
            train_over.update(epochs=base.search.trial_epochs, warmup_epochs=0.0,
                              lr0=base.train.lr0 * base.train.lrf, lrf=1.0)
        pipeline = base.with_overrides(train=train_over, ray={"cpus_per_worker": setup.cpus_per_worker})
        doc["loss"] = loss_params(pipeline.train.loss.model_dump())
        outcome = run_training(
            pipeline, run_dir=trial_dir / "train", dataset=setup.dataset, parent=setup.tracking,
            init_checkpoint=setup.base_checkpoint, track=setup.tracking is not None,
            extra_tags={"trial_id": trial_id, "search_role": "trial"}, run_name=f"trial-{trial_id}")
        latency = {int(s): LatencyTable.load(p) for s, p in setup.latency_tables.items()}
        result = evaluate_trained(outcome.best, pipeline, setup.dataset, latency, trial_dir / "cache",
                                  pipeline.train.loss.eps, progress=False)
        doc.update(status="finished", checkpoint=str(outcome.best), train_metrics=outcome.metrics,
                   mlflow_run_id=outcome.mlflow_run_id, cache_dir=str(trial_dir / "cache"),
                   **result_fields(result, pipeline.search.metric, setup.budget_ms))
        point = doc["point"]
        if outcome.mlflow_run_id and setup.tracking is not None:
            log = Tracking(setup.tracking.uri, outcome.mlflow_run_id).logger()
            log.metrics({"front_hv_ratio": result.hv_ratio, "point_ap": point["ap"],
                         "point_latency_ms": point["latency_ms"]}, step=0)
            fsio.write_json(trial_dir / "front.json", doc["front"])
            log.artifact(trial_dir / "front.json")
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        from ..ray_setup import ray_failure

        # A trial lost with its Ray node or worker was interrupted, not refuted: its point may be tried again.
        lost = ray_failure(exc)
        doc.update(status="interrupted" if lost else "failed", error=lost or f"{type(exc).__name__}: {first_line(exc)}",
                   traceback=traceback.format_exc()[-4000:])
        write_result(trial_dir, doc)
        raise
    write_result(trial_dir, doc)
    return doc


def _trainable(config: dict[str, Any], setup: dict[str, Any], dims: list[dict]) -> None:
    import ray.tune

    dims_ = [Dimension(**d) for d in dims]
    doc = run_trial(config, TrialSetup.from_dict(setup), dims_)
    ray.tune.report({"ap": doc["point"]["ap"], "latency_ms": doc["point"]["latency_ms"],
                     "feasible": doc["point"]["feasible"], "hv_ratio": doc["point"]["hv_ratio"]})


def _result_docs(out_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every trial's result document, oldest first; an unreadable one is reported and skipped."""
    docs = []
    for f in (Path(out_dir) / "trials").glob(f"*/{RESULT_FILE}"):
        try:
            doc = json.loads(fsio.read_text(f, "trial result"))
        except (ValueError, OSError) as exc:
            logger.warning("[search] %s: unreadable trial result (%s); the trial is run again", f, first_line(exc))
            continue
        if isinstance(doc, dict) and isinstance(doc.get("params"), dict):
            docs.append((f, doc))
    return sorted(docs, key=lambda fd: (float(fd[1].get("started", 0.0)), fd[1].get("trial_id", "")))


def finished_trials(out_dir: Path) -> list[dict[str, Any]]:
    """Result documents of every distinct point that finished or failed (across earlier invocations).

    A point tried twice counts once (the first result); a trial still marked running was interrupted.
    """
    docs: list[dict[str, Any]] = []
    for _, doc in _result_docs(out_dir):
        if doc.get("status") in ("finished", "failed") and not any(same_point(d["params"], doc["params"])
                                                                  for d in docs):
            docs.append(doc)
    return docs


def mark_interrupted(out_dir: Path) -> list[dict[str, Any]]:
    """Trials a killed search left `running` become `interrupted` (they are not counted; their point may be
    drawn again). Call only while holding the search folder's lock. Returns the documents changed."""
    changed = []
    for f, doc in _result_docs(out_dir):
        if doc.get("status") == "running":
            doc.update(status="interrupted", error="the search stopped while this trial ran")
            write_result(f.parent, doc)
            changed.append(doc)
    return changed


def close_interrupted_trials(storage, study_name: str) -> int:
    """Mark Optuna trials a killed search left RUNNING (or enqueued and never started) as FAIL; return the
    number of trials the study holds, so the sampler can be seeded past the points it already drew."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(study.trials)


def paper_point(dims: list[Dimension]) -> dict[str, float]:
    """The paper's setting, restricted to the searched dimensions."""
    names = {d.name for d in dims}
    return {k: v for k, v in PAPER_POINT.items() if k in names}


def run_outer(setup: TrialSetup, dims: list[Dimension], n_trials: int, *, sampler: str, seed: int,
              callbacks: list | None = None) -> None:
    """Run n_trials new Tune trials (one at a time on a small machine), Optuna study in sqlite."""
    from dataclasses import asdict

    import optuna
    from optuna.storages import RDBStorage
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    out = Path(setup.out_dir)
    storage = RDBStorage(f"sqlite:///{(out / 'optuna.db').resolve()}")
    study_name = "outer"
    existing = close_interrupted_trials(storage, study_name)
    # Seeded past the draws already made: a resumed search continues the sequence instead of repeating it.
    seed = seed + existing
    sampler_obj = (optuna.samplers.NSGAIISampler(seed=seed) if sampler == "nsga2"
                   else optuna.samplers.RandomSampler(seed=seed) if sampler == "random"
                   else optuna.samplers.TPESampler(seed=seed, n_startup_trials=4))
    paper = paper_point(dims)
    tried = any(same_point(d["params"], paper) for d in finished_trials(out))
    start = None if tried or not paper else [paper]  # tried again if its first attempt was killed
    searcher = OptunaSearch(metric=["ap", "latency_ms"], mode=["max", "min"], sampler=sampler_obj,
                            storage=storage, study_name=study_name, points_to_evaluate=start)
    trainable = tune.with_parameters(_trainable, setup=asdict(setup), dims=[asdict(d) for d in dims])
    # The trial only waits for its TorchTrainer: it holds a token CPU share, the workers the rest.
    trainable = tune.with_resources(trainable, {"CPU": TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space={d.name: d.tune_domain() for d in dims},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="outer", storage_path=str((out / "ray").resolve()),
                                  failure_config=tune.FailureConfig(max_failures=0), verbose=0,
                                  callbacks=callbacks),
    )
    tuner.fit()
