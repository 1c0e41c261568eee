"""The search from start to end: base training, Tune trials, global front, profiles, MLflow.

State lives under OUT (run folders, trial results, Optuna's sqlite study), so re-running the
same command with the same OUT resumes: finished work is read back, not redone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import fsio
from ..data.home import dh_tune_home
from ..latency import LatencyTable
from ..latency.table_sources import local_latency_tables, tables_from_files
from ..messages import InputError, first_line, loads_finite
from ..model import DHNet
from ..model.checkpoint import CheckpointPipeline, load_checkpoint, load_model
from ..pipeline import Pipeline
from ..runtimes import resolve as resolve_runtime
from ..runtimes import version as runtime_version
from ..tracking import SafeLogger, Tracking, close_stale_runs, find_run, resolve_tracking_uri, start_run
from ..train.data_setup import resolve_dataset
from .cluster import ConcurrencyPlan
from .imported import check_classes, fit_pipeline, import_once, static_ap
from .lock import search_lock
from .outer import run_outer
from .phases import PhaseClock
from .records import SearchOutcome, SearchRequest, TrialResult, TrialStatus
from .space import check_points, load_space
from .trial import TrialSetup
from .trial_docs import ended_trials, mark_interrupted, most_at_once

STATE_FILE = "search.json"

logger = logging.getLogger(__name__)


def _log(msg: str) -> None:
    logger.info("%s", msg)


def _warn(msg: str) -> None:
    logger.warning("%s", msg)


def _load_state(out: Path) -> dict:
    """The search's state file; a truncated or corrupt one is named and started afresh (it only caches ids)."""
    f = out / STATE_FILE
    if not f.exists():
        return {}
    try:
        state = loads_finite(fsio.read_text(f, "search state"))
    except ValueError as exc:
        _warn(f"{f}: unreadable ({first_line(exc)}); starting a new state file (finished work is kept)")
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(out: Path, state: dict) -> None:
    fsio.write_json(out / STATE_FILE, state)


def _latency_tables(req: SearchRequest, model: DHNet, sizes: list[int], dataset: str) -> dict[int, LatencyTable]:
    if req.device_tables:
        tables = tables_from_files(req.device_tables, sizes, runtime=req.runtime)
        if not tables:
            raise InputError(f"no --device-table covers the deployment sizes {sizes} "
                             "(measure them with python -m dh_tune.latency --imgsz ...)")
        dropped = sorted(set(sizes) - set(tables))
        if dropped:
            _log(f"no device table for sizes {dropped}: they are left out")
        return tables
    runtime = resolve_runtime(req.runtime)
    _log(f"timing runtime: {runtime} {runtime_version(runtime)}")
    image, image_file = _timing_frame(dataset, req.pipeline.data.val_split)
    return local_latency_tables(model, sizes, dh_tune_home() / "devices", remeasure=req.remeasure, runtime=runtime,
                                image=image, image_file=image_file)


def _timing_frame(dataset: str, split: str):
    """The first readable validation image and its file: the device is timed reading and pre-processing frames
    as the data stores them."""
    from ..data import load_dataset
    from ..latency.frame import timing_frame

    ds = load_dataset(dataset)
    split = split if split in ds.splits else next(iter(ds.splits))
    return timing_frame(r.path for r in ds.splits[split]) or (None, None)


def _train_once(req: SearchRequest, pipeline: Pipeline, name: str, dataset: str, tracking: Tracking | None) -> Path:
    """Train (or finish training) one model the search shares: the base, or the static reference."""
    from ..train.run import TrainOptions, run_training

    run_dir = req.out / name
    last = run_dir / "weights" / "last.pt"
    epochs = pipeline.train.epochs
    if last.is_file():
        ckpt = load_checkpoint(last)
        if int(ckpt["epoch"]) + 1 >= epochs:
            _log(f"{name} model already trained: {run_dir}")
            return run_dir / "weights" / "best.pt"
        _log(f"resuming the {name} training at epoch {int(ckpt['epoch']) + 2}/{epochs}")
        resume = run_dir
    else:
        _log(f"training the {name} model ({epochs} epochs) into {run_dir}")
        resume = None
    outcome = run_training(pipeline, TrainOptions(run_dir=run_dir, resume=resume, dataset=dataset, parent=tracking,
                                                  ray_address=req.ray_address, track=tracking is not None,
                                                  extra_tags={"search_role": name}, run_name=name))
    return outcome.best


def _plain_detector(loss) -> bool:
    """True when the gate loss cannot have changed the detector (no weight, or gates on detached features)."""
    return loss.gate_lambda == 0.0 or loss.gate_trunk_grad == 0.0


def _evaluated(req: SearchRequest, role: str, checkpoint: Path, dataset: str, latency: dict[int, LatencyTable],
               static_only: bool = False) -> TrialResult:
    """Result document of a model the search did not sample (base, static reference, --checkpoint), kept under
    OUT/reference/<role> and read back on a re-run while its checkpoint, device tables and search settings
    are unchanged."""
    from ..model.checkpoint import file_sha256
    from .space import loss_params
    from .trial import evaluate_trained, record_scores
    from .trial_docs import read_result, write_result

    folder = req.out / "reference" / role
    folder.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(checkpoint)
    p = req.pipeline
    key = {"checkpoint_sha256": sha, "tables": {str(s): t.digest() for s, t in sorted(latency.items())},
           "search": p.search.model_dump(mode="json"), "budget_ms": req.budgets[0], "static_only": static_only}
    previous = read_result(folder)
    if previous is not None and previous.key == key and previous.finished:
        return previous
    ckpt = load_checkpoint(checkpoint)
    trained = CheckpointPipeline.of(ckpt)
    what = "static networks" if static_only else "thresholds"
    _log(f"scoring the {what} of the {role} model at sizes {sorted(latency)}")
    result = evaluate_trained(checkpoint, p, dataset, latency, folder / "cache", trained.eps,
                              static_only=static_only)
    hyperparameters = loss_params(trained.loss)  # a reference model's parameters are its whole loss section
    doc = TrialResult(role, hyperparameters, TrialStatus.FINISHED, role=role, checkpoint=str(checkpoint), key=key,
                      checkpoint_sha256=sha, loss=hyperparameters, train_metrics=ckpt["metrics"],
                      cache_dir=str(folder / "cache"))
    record_scores(doc, result, p.search.metric, req.budgets[0])
    write_result(folder, doc)
    return doc


def _reference_docs(req: SearchRequest, dataset: str, latency: dict[int, LatencyTable], base: Path | None,
                    tracking: Tracking | None) -> list[TrialResult]:
    """The base model's profiles and the static YOLOv5 the dynamic profiles are compared with.

    The static YOLOv5 is the base itself when the gate loss cannot have changed its detector; otherwise
    the same schedule is trained once more with gate weight 0.
    """
    p = req.pipeline
    if req.imported is not None:  # a detector trained elsewhere: static as imported, its gates untrained
        doc = _evaluated(req, "static", req.imported.checkpoint, dataset, latency, static_only=True)
        ap = static_ap(req.imported, p, dataset, req.out / "reference" / "static" / "cache")
        return [replace(doc, source=req.imported.source, train_metrics=ap)]
    docs = [_evaluated(req, "base", base, dataset, latency)] if base is not None else []
    if base is None or not _plain_detector(p.train.loss):
        plain = p.with_overrides(train={"loss": {"gate_lambda": 0.0}})
        static = _train_once(req, plain, "static", dataset, tracking)
        docs.append(_evaluated(req, "static", static, dataset, latency, static_only=True))
    return docs


def run_search(req: SearchRequest) -> SearchOutcome:
    """Run (or resume) the whole search and export one profile per budget, holding OUT's lock."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    with search_lock(req.out):
        return _run_locked(req)


@dataclass
class _Inputs:
    """What the search reads before it starts anything (a bad input stops it here, with nothing started)."""

    dataset: str
    latency: dict[int, LatencyTable]
    dims: list = field(default_factory=list)
    plan: ConcurrencyPlan | None = None  # trials at once (None: --checkpoint, no trials)


def _read_inputs(req: SearchRequest) -> _Inputs:
    p = req.pipeline
    sizes = p.search.deploy_imgsz or [p.data.imgsz]
    if req.checkpoint is not None:
        model, ckpt = load_model(req.checkpoint)
        dataset = resolve_dataset(p, ckpt.get("dataset") if Path(str(ckpt.get("dataset"))).exists() else None)
        return _Inputs(dataset, _latency_tables(req, model, sizes, dataset))
    dataset = resolve_dataset(p)
    if req.imported is not None:
        check_classes(req.imported, dataset, p.data.format)
    dims = load_space(p.search.search_space)
    check_points(p.search.first_points, dims, "search.first_points")
    # Time the architecture before Ray starts: its background processes would inflate the numbers.
    latency = _latency_tables(req, DHNet(p.model.scale, nc=_num_classes(dataset, p)), sizes, dataset)
    return _Inputs(dataset, latency, dims)


def _with_import(req: SearchRequest) -> SearchRequest:
    """With --from-yolov5: the request over the imported detector (imported once into OUT, the pipeline fitted)."""
    if req.from_yolov5 is None:
        return req
    base = import_once(req.from_yolov5, req.out)
    _log(f"imported {req.from_yolov5} (sha256 {base.source['sha256'][:12]}, {len(base.names)} classes, "
         f"{base.source.get('weights')} weights) as {base.checkpoint}")
    return replace(req, pipeline=fit_pipeline(req.pipeline, base, req.pipeline_named), imported=base)


def _run_locked(req: SearchRequest) -> SearchOutcome:
    req = _with_import(req)
    p, out = req.pipeline, req.out
    state = _load_state(out)
    clock = PhaseClock(earlier=dict(state.get("phases") or {}))
    with clock.phase("device tables"):
        inputs = _read_inputs(req)
    if req.checkpoint is None:  # refused here, before any training or MLflow run, when no trial fits the cluster
        inputs.plan = _plan_trials(req)
    interrupted = mark_interrupted(out)
    if interrupted:
        _log(f"{len(interrupted)} trial(s) of an earlier, stopped search marked interrupted")

    run: SafeLogger | None = None
    uri: str | None = None
    if req.track:
        run, uri = _parent_run(req, state)
    tracking = Tracking(uri, run.run_id, experiment=p.name) if run and uri else None
    state.update(pipeline=p.model_dump(mode="json"), budgets=req.budgets)
    _save_state(out, state)
    try:
        docs = _models(req, inputs, tracking, state, clock)
        state["phases"] = clock.totals()
        _save_state(out, state)
        from .summary import finish

        with clock.phase("finish"):
            return finish(req, docs, inputs.latency, run, clock, state.get("concurrency"))
    except BaseException as exc:
        if run is not None:
            run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise


def _parent_run(req: SearchRequest, state: dict) -> tuple[SafeLogger | None, str]:
    """The search's MLflow run (reopened on a resume, its stale child runs closed) and the tracking URI.

    The state file names the run; lost with a damaged state file, it is found by its tag."""
    uri, p, out = resolve_tracking_uri(req.tracking_uri), req.pipeline, req.out
    parent_id = state.get("parent_run_id") or find_run(uri, p.name, {"search_role": "parent",
                                                                      "out": str(out.resolve())})
    if parent_id:
        state["parent_run_id"] = parent_id
        closed = close_stale_runs(uri, parent_id)
        if closed:
            _log(f"{closed} MLflow run(s) of an earlier, stopped search marked FAILED")
        return SafeLogger(uri, parent_id), uri
    run = start_run(uri, p.name, f"search-{out.name}", tags={
        "search_role": "parent", "out": str(out.resolve()), **(req.imported.tags() if req.imported else {})})
    if run is not None:
        state["parent_run_id"] = run.run_id
    return run, uri


def _models(req: SearchRequest, inputs: _Inputs, tracking: Tracking | None, state: dict,
            clock: PhaseClock) -> list[TrialResult]:
    """Result documents of every model the search scores: the references and the distinct trials (each part
    timed on `clock`)."""
    p, out, dataset, latency, plan = req.pipeline, req.out, inputs.dataset, inputs.latency, inputs.plan
    if req.checkpoint is not None or plan is None:
        return [_evaluated(req, "checkpoint", req.checkpoint, dataset, latency)] if req.checkpoint else []
    total = req.trials or p.search.trials
    with clock.phase("base training"):
        base = req.imported.checkpoint if req.imported is not None else \
            _train_once(req, p, "base", dataset, tracking) if p.search.warm_start else None
    with clock.phase("reference models"):
        references = _reference_docs(req, dataset, latency, base, tracking)
    if len(ended_trials(out)) >= total:
        _log(f"all {total} trials already ended")
    with clock.phase("trials"):
        _run_trials(req, inputs, tracking, base, total)
    docs = ended_trials(out)
    state["concurrency"] = {"planned": plan.concurrent, "cluster_fits": plan.cluster_fits,
                            "limited_by": plan.limited_by, "trial": plan.shape.describe(),
                            "most_at_once": most_at_once(docs)}
    if len(docs) < total:
        _warn(f"the sampler kept drawing points already trained: {len(docs)} distinct of {total}")
    return references + docs


def _run_trials(req: SearchRequest, inputs: _Inputs, tracking: Tracking | None, base: Path | None, total: int) -> None:
    """Run trials in Ray Tune until `total` have ended (a few rounds at most: the sampler may repeat points)."""
    p, out, dataset, latency, plan = req.pipeline, req.out, inputs.dataset, inputs.latency, inputs.plan
    assert plan is not None
    for _ in range(MAX_ROUNDS):
        done = len(ended_trials(out))
        if done >= total:
            break
        _log(f"{done} trial(s) already ended; running {total - done} more, {plan.describe()}")
        setup = TrialSetup(pipeline=p.model_dump(mode="json"), out_dir=str(out.resolve()), dataset=dataset,
                           base_checkpoint=str(base) if base else None,
                           latency_tables={s: str(_table_path(out, t, s, req)) for s, t in latency.items()},
                           budget_ms=req.budgets[0], tracking=tracking, cpus_per_worker=plan.shape.cpus_per_worker,
                           in_process=plan.shape.in_process,
                           base_plain=req.imported is not None or _plain_detector(p.train.loss),
                           base_gates_trained=req.imported is None and p.train.loss.gate_lambda > 0,
                           source=req.imported.source if req.imported is not None else None)
        from .progress import make_callback

        stopping = run_outer(setup, inputs.dims, total - done, plan,
                             callbacks=[make_callback(out, req.budgets, p.search.metric, total, done)])
        _log(stopping)


MAX_ROUNDS = 3


def _plan_trials(req: SearchRequest) -> ConcurrencyPlan:
    """Start (or join) Ray and size the trials at once from its nodes; ResourceError when none fits."""
    from ..ray_setup import init_ray
    from .cluster import cluster_nodes, plan_concurrency, trial_shape

    p = req.pipeline
    init_ray(req.ray_address)
    nodes = cluster_nodes()
    left = (req.trials or p.search.trials) - len(ended_trials(req.out))
    return plan_concurrency(nodes, trial_shape(p.ray.workers, p.ray.cpus_per_worker, p.ray.gpu, nodes),
                            max(left, 1), p.search.max_concurrent)
"""Rounds of Tune trials the search runs to reach the requested number of distinct points."""


def _num_classes(dataset: str, p: Pipeline) -> int:
    from ..data import load_dataset

    return load_dataset(dataset, fmt=p.data.format).nc


def _table_path(out: Path, table: LatencyTable, size: int, req: SearchRequest) -> Path:
    path = out / "devices" / f"table-{size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return path
