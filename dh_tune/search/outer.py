"""Outer search: Ray Tune + OptunaSearch over the gate-loss hyperparameters, trials sized from the cluster.

Each Tune trial trains a DH-Net, in its own process or (several workers) through Ray Train (dh_tune.search.trial). As many trials run at once as the
cluster holds (dh_tune.search.cluster); they report every few epochs and ASHA stops those whose front lags
(dh_tune.search.early_stop). Results are files under OUT/trials, so a re-run with the same OUT skips ended
trials; a trial a killed search left running is marked failed in Optuna's study and the sampler continues
from the study's state instead of repeating the points it already drew.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .cluster import ConcurrencyPlan
from .records import TrialStatus
from .space import Dimension, paper_point
from .trial import TrialSetup, trainable
from .trial_docs import ended_trials, result_docs, same_point


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


def points_to_evaluate(out: Path, dims: list[Dimension], first: list[dict[str, float]]) -> list[dict[str, float]]:
    """The paper's point, the pipeline's first points, then the points of trials a killed search interrupted
    (each new trial takes over its interrupted training), less those an earlier invocation already ended."""
    tried = [d.params for d in ended_trials(out)]
    names = {d.name for d in dims}
    points = [paper_point(dims)] if len(paper_point(dims)) == len(dims) else []
    points += [{k: float(v) for k, v in p.items()} for p in first]
    points += [dict(d.params) for _, d in result_docs(out)
               if d.status is TrialStatus.INTERRUPTED and d.resumed_by is None and set(d.params) == names]
    todo: list[dict[str, float]] = []
    for p in points:
        if not any(same_point(p, q) for q in tried + todo):
            todo.append(p)
    return todo


def run_outer(setup: TrialSetup, dims: list[Dimension], n_trials: int, plan: ConcurrencyPlan,
              callbacks: list | None = None) -> str:
    """Run n_trials new Tune trials, `plan.concurrent` at once, Optuna's study in sqlite; the sampler, its seed,
    the first points and the retries come from the setup's pipeline. Returns one line on early stopping."""
    import optuna
    from optuna.storages import RDBStorage
    from ray import tune

    from ..pipeline import Pipeline
    from .early_stop import asha_scheduler, optuna_search_class, trial_end_callback

    out = Path(setup.out_dir)
    pipeline = Pipeline.model_validate(setup.pipeline)
    sampler, seed = pipeline.search.sampler, pipeline.search.seed
    storage = RDBStorage(f"sqlite:///{(out / 'optuna.db').resolve()}")
    study_name = "outer"
    existing = close_interrupted_trials(storage, study_name)
    # Seeded past the draws already made: a resumed search continues the sequence instead of repeating it.
    seed = seed + existing
    sampler_obj = (optuna.samplers.NSGAIISampler(seed=seed) if sampler == "nsga2"
                   else optuna.samplers.RandomSampler(seed=seed) if sampler == "random"
                   else optuna.samplers.TPESampler(seed=seed, n_startup_trials=4))
    start = points_to_evaluate(out, dims, pipeline.search.first_points)
    searcher = optuna_search_class()(metric=["ap", "latency_ms"], mode=["max", "min"], sampler=sampler_obj,
                                     storage=storage, study_name=study_name, points_to_evaluate=start or None)
    scheduler, stopping = asha_scheduler(pipeline.search, pipeline.search.trial_epochs)
    fn = tune.with_parameters(trainable, setup=asdict(setup), dims=[asdict(d) for d in dims])
    # A one-worker trial trains in its process, which holds the worker's resources; a trial of several waits
    # for its TorchTrainer with a token CPU share, its workers hold the rest.
    fn = tune.with_resources(fn, plan.shape.resources())
    tracking_uri = setup.tracking.uri if setup.tracking is not None else None
    ends = trial_end_callback(out, tracking_uri)
    tuner = tune.Tuner(
        fn,
        param_space={d.name: d.tune_domain() for d in dims},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n_trials,
                                    max_concurrent_trials=plan.concurrent),
        run_config=tune.RunConfig(name="outer", storage_path=str((out / "ray").resolve()),
                                  # a trial whose process (or node) is lost starts again, resuming its training
                                  failure_config=tune.FailureConfig(max_failures=pipeline.ray.max_failures), verbose=0,
                                  callbacks=[ends, *(callbacks or [])]),
    )
    try:
        tuner.fit()
    finally:
        ends.settle()
    return stopping
