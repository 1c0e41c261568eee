"""The search from start to end: base training, Tune trials, global front, profiles, MLflow.

State lives under OUT (run folders, trial results, Optuna's sqlite study), so re-running the
same command with the same OUT resumes: finished work is read back, not redone.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.cache import dh_tune_home
from ..latency import LatencyTable
from ..model import DHNet
from ..pipeline import Pipeline
from ..tracking import resolve_tracking_uri, start_run, SafeLogger
from ..train.checkpoint import load_checkpoint, load_model
from ..train.data_setup import resolve_dataset
from .deploy import local_latency_tables, tables_from_files
from .outer import TrialSetup, evaluate_trained, finished_trials, run_outer, summarize_point, write_result
from .pareto import select_for_budget
from .space import load_space

STATE_FILE = "search.json"


@dataclass
class SearchRequest:
    """What the user asked for (the command line, parsed)."""

    pipeline: Pipeline
    budgets: list[float]
    out: Path
    trials: int | None = None
    device_tables: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    ray_address: str | None = None
    tracking_uri: str | None = None
    track: bool = True
    remeasure: bool = False


@dataclass
class BudgetResult:
    budget_ms: float
    feasible: bool
    reason: str
    candidate: dict | None
    trial: dict | None
    profile_path: Path | None = None


@dataclass
class SearchOutcome:
    out: Path
    front: list[dict]
    budgets: list[BudgetResult]
    trials: list[dict]
    parent_run_id: str | None
    index_path: Path | None


def _log(msg: str) -> None:
    print(f"[search] {msg}", file=sys.stderr, flush=True)


def _load_state(out: Path) -> dict:
    f = out / STATE_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


def _save_state(out: Path, state: dict) -> None:
    (out / STATE_FILE).write_text(json.dumps(state, indent=1))


def _latency_tables(req: SearchRequest, model: DHNet, sizes: list[int]) -> dict[int, LatencyTable]:
    if req.device_tables:
        tables = tables_from_files(req.device_tables, sizes)
        if not tables:
            raise ValueError(f"no --device-table covers the deployment sizes {sizes} "
                             "(measure them with python -m dh_tune.profile_device --imgsz ...)")
        dropped = sorted(set(sizes) - set(tables))
        if dropped:
            _log(f"no device table for sizes {dropped}: they are left out")
        return tables
    return local_latency_tables(model, sizes, dh_tune_home() / "devices", remeasure=req.remeasure)


def _base_training(req: SearchRequest, dataset: str, tracking: dict | None) -> Path:
    """Train (or finish training) the shared base model of a warm-started search."""
    from ..train.run import run_training

    run_dir = req.out / "base"
    last = run_dir / "weights" / "last.pt"
    p = req.pipeline
    if last.is_file():
        ckpt = load_checkpoint(last)
        if int(ckpt["epoch"]) + 1 >= p.train.epochs:
            _log(f"base model already trained: {run_dir}")
            return run_dir / "weights" / "best.pt"
        _log(f"resuming the base training at epoch {int(ckpt['epoch']) + 2}/{p.train.epochs}")
        resume = run_dir
    else:
        _log(f"training the base model ({p.train.epochs} epochs) into {run_dir}")
        resume = None
    t = tracking or {}
    outcome = run_training(p, run_dir=run_dir, resume=resume, dataset=dataset, tracking_uri=t.get("uri"),
                           ray_address=req.ray_address, parent_run_id=t.get("parent_run_id"),
                           experiment=t.get("experiment"), track=bool(tracking),
                           extra_tags={"search_role": "base"}, run_name="base")
    return outcome.best


def run_search(req: SearchRequest) -> SearchOutcome:
    """Run (or resume) the whole search and export one profile per budget."""
    from ..ray_setup import init_ray

    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    p = req.pipeline
    out = req.out
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out)
    started = time.time()
    sizes = p.search.deploy_imgsz or [p.data.imgsz]

    logger, uri = None, None
    if req.track:
        uri = resolve_tracking_uri(req.tracking_uri)
        if state.get("parent_run_id"):
            logger = SafeLogger(uri, state["parent_run_id"])
        else:
            logger = start_run(uri, p.name, f"search-{out.name}", tags={"search_role": "parent", "out": str(out.resolve())})
            if logger is not None:
                state["parent_run_id"] = logger.run_id
    tracking = {"uri": uri, "parent_run_id": logger.run_id, "experiment": p.name} if logger else None
    state.update(pipeline=p.model_dump(mode="json"), budgets=req.budgets)
    _save_state(out, state)

    if req.checkpoint is not None:
        model, ckpt = load_model(req.checkpoint)
        dataset = resolve_dataset(p, ckpt.get("dataset") if Path(str(ckpt.get("dataset"))).exists() else None)
        latency = _latency_tables(req, model, sizes)
        eps = float(ckpt["config"]["train"]["loss"]["eps"])
        trial_dir = out / "trials" / "checkpoint"
        trial_dir.mkdir(parents=True, exist_ok=True)
        _log(f"searching thresholds for {req.checkpoint} at sizes {sorted(latency)}")
        result = evaluate_trained(req.checkpoint, p, dataset, latency, out / "cache", eps)
        loss = ckpt["config"]["train"]["loss"]
        doc = {"trial_id": "checkpoint", "status": "finished", "checkpoint": str(req.checkpoint),
               "params": {"gate_lambda": loss["gate_lambda"], "lambda_pos_1": loss["lambda_pos"][0],
                          "lambda_pos_2": loss["lambda_pos"][1], "eps": loss["eps"]},
               "front": [c.to_dict() for c in result.front], "hv_ratio": result.hv_ratio,
               "point": summarize_point(result, p.search.metric, req.budgets[0]), "train_metrics": ckpt["metrics"]}
        write_result(trial_dir, doc)
        docs = [doc]
    else:
        dataset = resolve_dataset(p)
        # Time the architecture before Ray starts: its background processes would inflate the numbers.
        latency = _latency_tables(req, DHNet(p.model.scale, nc=_num_classes(dataset, p)), sizes)
        init_ray(req.ray_address)
        base = _base_training(req, dataset, tracking) if p.search.warm_start else None
        dims = load_space(p.search.search_space)
        total = req.trials or p.search.trials
        docs = finished_trials(out)
        remaining = total - len(docs)
        if remaining > 0:
            _log(f"{len(docs)} trial(s) already finished; running {remaining} more")
            cpus = _cpus_per_worker(p)
            setup = TrialSetup(pipeline=p.model_dump(mode="json"), out_dir=str(out.resolve()), dataset=dataset,
                               base_checkpoint=str(base) if base else None,
                               latency_tables={s: str(_table_path(out, t, s, req)) for s, t in latency.items()},
                               budget_ms=req.budgets[0], tracking=tracking, cpus_per_worker=cpus)
            from .progress import make_callback

            run_outer(setup, dims, remaining, sampler=p.search.sampler, seed=p.search.seed,
                      callbacks=[make_callback(out, req.budgets, p.search.metric, total, len(docs))])
        else:
            _log(f"all {total} trials already finished")
        docs = finished_trials(out)

    from .report import finish

    return finish(req, docs, latency, logger, started)


def _num_classes(dataset: str, p: Pipeline) -> int:
    from ..data import load_dataset

    return load_dataset(dataset, fmt=p.data.format).nc


def _cpus_per_worker(p: Pipeline) -> float:
    """Workers inside a Tune trial leave the trial its token CPU share."""
    import ray

    from .outer import TRIAL_CPU

    total = float(ray.cluster_resources().get("CPU", 1))
    return min(p.ray.cpus_per_worker, (total - TRIAL_CPU) / p.ray.workers)


def _table_path(out: Path, table: LatencyTable, size: int, req: SearchRequest) -> Path:
    path = out / "devices" / f"table-{size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return path
