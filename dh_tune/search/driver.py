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

from ..data.cache import dh_tune_home
from ..latency import LatencyTable
from ..model import DHNet
from ..pipeline import Pipeline
from ..runtimes import resolve as resolve_runtime, version as runtime_version
from ..tracking import resolve_tracking_uri, start_run, SafeLogger
from ..train.checkpoint import load_checkpoint, load_model
from ..train.data_setup import resolve_dataset
from .deploy import local_latency_tables, tables_from_files
from .outer import TrialSetup, finished_trials, run_outer
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
    runtime: str | None = None
    """Runtime the device is timed in (None: the fastest installed, or the --device-table files' own)."""


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


def _latency_tables(req: SearchRequest, model: DHNet, sizes: list[int], dataset: str) -> dict[int, LatencyTable]:
    if req.device_tables:
        tables = tables_from_files(req.device_tables, sizes, runtime=req.runtime)
        if not tables:
            raise ValueError(f"no --device-table covers the deployment sizes {sizes} "
                             "(measure them with python -m dh_tune.profile_device --imgsz ...)")
        dropped = sorted(set(sizes) - set(tables))
        if dropped:
            _log(f"no device table for sizes {dropped}: they are left out")
        return tables
    runtime = resolve_runtime(req.runtime)
    _log(f"timing runtime: {runtime} {runtime_version(runtime)}")
    return local_latency_tables(model, sizes, dh_tune_home() / "devices", remeasure=req.remeasure, runtime=runtime,
                                image=_timing_frame(dataset, req.pipeline.data.val_split))


def _timing_frame(dataset: str, split: str):
    """The first readable validation image: the device is timed pre-processing frames of the data's size."""
    from ..data import load_dataset
    from ..data.images import read_image

    ds = load_dataset(dataset)
    split = split if split in ds.splits else next(iter(ds.splits))
    return next((img for img in map(read_image, (r.path for r in ds.splits[split][:20])) if img is not None), None)


def _train_once(req: SearchRequest, pipeline: Pipeline, name: str, dataset: str, tracking: dict | None) -> Path:
    """Train (or finish training) one model the search shares: the base, or the static reference."""
    from ..train.run import run_training

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
    t = tracking or {}
    outcome = run_training(pipeline, run_dir=run_dir, resume=resume, dataset=dataset, tracking_uri=t.get("uri"),
                           ray_address=req.ray_address, parent_run_id=t.get("parent_run_id"),
                           experiment=t.get("experiment"), track=bool(tracking),
                           extra_tags={"search_role": name}, run_name=name)
    return outcome.best


def _plain_detector(loss) -> bool:
    """True when the gate loss cannot have changed the detector (no weight, or gates on detached features)."""
    return loss.gate_lambda == 0.0 or loss.gate_trunk_grad == 0.0


def _evaluated(req: SearchRequest, role: str, checkpoint: Path, dataset: str, latency: dict[int, LatencyTable],
               static_only: bool = False) -> dict:
    """Result document of a model the search did not sample (base, static reference, --checkpoint), kept under
    OUT/reference/<role> and read back on a re-run while its checkpoint, device tables and search settings
    are unchanged."""
    from ..train.checkpoint import file_sha256
    from .outer import evaluate_trained, loss_params, result_fields, write_result

    folder = req.out / "reference" / role
    folder.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(checkpoint)
    p = req.pipeline
    key = {"checkpoint_sha256": sha, "tables": {str(s): t.digest() for s, t in sorted(latency.items())},
           "search": p.search.model_dump(mode="json"), "budget_ms": req.budgets[0], "static_only": static_only}
    previous = folder / "result.json"
    if previous.is_file():
        try:
            doc = json.loads(previous.read_text())
            if doc.get("key") == key and doc.get("status") == "finished":
                return doc
        except json.JSONDecodeError:
            pass
    ckpt = load_checkpoint(checkpoint)
    loss = ckpt["config"]["train"]["loss"]
    what = "static networks" if static_only else "thresholds"
    _log(f"scoring the {what} of the {role} model at sizes {sorted(latency)}")
    result = evaluate_trained(checkpoint, p, dataset, latency, folder / "cache", float(loss["eps"]),
                              static_only=static_only)
    doc = {"trial_id": role, "role": role, "status": "finished", "checkpoint": str(checkpoint), "key": key,
           "checkpoint_sha256": sha, "params": loss_params(loss), "loss": loss_params(loss),
           "train_metrics": ckpt["metrics"], "cache_dir": str(folder / "cache"),
           **result_fields(result, p.search.metric, req.budgets[0])}
    write_result(folder, doc)
    return doc


def _reference_docs(req: SearchRequest, dataset: str, latency: dict[int, LatencyTable], base: Path | None,
                    tracking: dict | None) -> list[dict]:
    """The base model's profiles and the static YOLOv5 the dynamic profiles are compared with.

    The static YOLOv5 is the base itself when the gate loss cannot have changed its detector; otherwise
    the same schedule is trained once more with gate weight 0.
    """
    p = req.pipeline
    docs = [_evaluated(req, "base", base, dataset, latency)] if base is not None else []
    if base is None or not _plain_detector(p.train.loss):
        plain = p.with_overrides(train={"loss": {"gate_lambda": 0.0}})
        static = _train_once(req, plain, "static", dataset, tracking)
        docs.append(_evaluated(req, "static", static, dataset, latency, static_only=True))
    return docs


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
        latency = _latency_tables(req, model, sizes, dataset)
        docs = [_evaluated(req, "checkpoint", req.checkpoint, dataset, latency)]
    else:
        dataset = resolve_dataset(p)
        # Time the architecture before Ray starts: its background processes would inflate the numbers.
        latency = _latency_tables(req, DHNet(p.model.scale, nc=_num_classes(dataset, p)), sizes, dataset)
        dims = load_space(p.search.search_space)  # a bad search space fails before any training
        init_ray(req.ray_address)
        base = _train_once(req, p, "base", dataset, tracking) if p.search.warm_start else None
        references = _reference_docs(req, dataset, latency, base, tracking)
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
        docs = references + finished_trials(out)

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
