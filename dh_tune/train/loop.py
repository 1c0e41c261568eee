"""The DH-Net training loop: plain PyTorch over a pipeline, with or without Ray around it.

Ray Train only supplies the process group and a `report` function; run locally, the same loop
gets a local context. Every epoch ends with validation of the EMA model and a checkpoint.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..model import DHNet
from ..model.checkpoint import model_args, save_checkpoint
from ..pipeline import Pipeline, TrainConfig
from . import full_run, gates_only
from .data_setup import Splits, load_splits
from .ema import ModelEMA
from .epoch_hooks import EpochEnd, EpochHook, epoch_hooks

logger = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float], "Path | None"], None]


class EpochScorer(Protocol):
    """Scores the validated (EMA) model on rank 0 after the epochs it names; its numbers join the epoch's metrics
    and report (a search trial's front hypervolume, which early stopping reads)."""

    def due(self, epoch: int, epochs: int) -> bool: ...

    def __call__(self, model: DHNet, device: torch.device) -> dict[str, Any]: ...


@dataclass
class RunContext:
    """Where the loop runs: rank, world size, device, how to report and what to resume from."""

    run_dir: Path
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    report: Reporter | None = None
    resume_state: dict[str, Any] | None = None
    init_state: dict[str, Any] | None = None  # a dh-tune checkpoint to start from (warm start)
    log_metrics: Callable[[dict[str, float], int], None] | None = None
    epoch_scorer: EpochScorer | None = None


def seed_everything(seed: int) -> None:
    """Same seed, same run: Python, NumPy and torch generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def restore_state(state: dict[str, Any], model: torch.nn.Module, ema: ModelEMA | None, optimizer,
                  scaler) -> tuple[int, float, list]:
    """Load a checkpoint to resume from; returns (first epoch to train, best fitness, history)."""
    model.load_state_dict(state["model"])
    if ema is not None and state.get("ema") is not None:
        ema.ema.load_state_dict(state["ema"])
        ema.updates = int(state.get("ema_updates", 0))
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return int(state["epoch"]) + 1, float(state.get("best_fitness", -1.0)), list(state.get("history", []))


def begin(tc: TrainConfig, ctx: RunContext) -> list[EpochHook]:
    """Every run's start on this rank: its epoch hooks, then the run's seed and thread count."""
    hooks = epoch_hooks()
    seed_everything(tc.seed + ctx.rank)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    return hooks


def resume(ctx: RunContext, record: EpochRecord, model: torch.nn.Module, ema: ModelEMA | None,
           optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> int:
    """Load the state the context resumes from (if any) into the run and its record, and move the EMA to the
    run's device; returns the first epoch to train."""
    start_epoch = 0
    if ctx.resume_state is not None:
        start_epoch, record.best_fit, record.history = restore_state(ctx.resume_state, model, ema, optimizer, scaler)
    if ema is not None:
        ema.ema.to(ctx.device)
    return start_epoch


def epoch_line(epoch: int, epochs: int, m: dict[str, float]) -> str:
    """The one-line summary printed after each epoch."""
    front = f"  front hv {m['front_hv']:.4f}" if "front_hv" in m else ""
    return (f"epoch {epoch + 1}/{epochs}  loss box {m['box']:.4f} obj {m['obj']:.4f} cls {m['cls']:.4f} "
            f"gate {m['gate']:.4f}  AP50 {m['ap50']:.3f} AP50:95 {m['ap50_95']:.3f}  "
            f"gate acc {m['gate1_acc']:.3f}/{m['gate2_acc']:.3f}{front}  lr {m['lr']:.5f}  {m['epoch_time_s']:.1f}s")


def init_model(pipeline: Pipeline, ctx: RunContext, nc: int) -> DHNet:
    """The DH-Net a run starts from, on the run's device: the init state's weights (its EMA when present), else
    YOLOv5's named by `model.init_from`, else fresh; a resumed run loads its own state later."""
    model = DHNet(pipeline.model.scale, nc=nc).to(ctx.device)
    if ctx.init_state is not None and ctx.resume_state is None:
        model.load_state_dict(ctx.init_state.get("ema") or ctx.init_state["model"])
    elif pipeline.model.init_from and ctx.resume_state is None:
        report = model.load_yolov5(pipeline.model.init_from)
        if ctx.rank == 0:
            logger.info("init from %s: %s", pipeline.model.init_from, report.summary())
    return model


def run_entries(pipeline: Pipeline, ctx: RunContext, splits: Splits, model: DHNet) -> dict[str, Any]:
    """Checkpoint entries that stay the same through a run, with `source` (an imported detector's origin) carried
    over from the state the run resumes or starts from."""
    fixed: dict[str, Any] = {"epochs": pipeline.train.epochs, "config": pipeline.model_dump(mode="json"),
                             "names": splits.names, "model_args": model_args(model), "dataset": splits.spec}
    source = next((s["source"] for s in (ctx.resume_state, ctx.init_state) if s and s.get("source")), None)
    if source:
        fixed["source"] = source
    return fixed


def weight_entries(model: torch.nn.Module, ema: ModelEMA | None, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, use_amp: bool) -> dict[str, Any]:
    """Checkpoint entries that change every epoch: model, EMA, optimizer and (with AMP) scaler states."""
    return {"model": model.state_dict(), "ema": ema.ema.state_dict() if ema else None,
            "ema_updates": ema.updates if ema else 0, "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if use_amp else None}


@dataclass
class EpochRecord:
    """Rank 0's end of every epoch: history and best fitness, last.pt (best.pt when the fitness improved),
    the log line and the tracker."""

    ctx: RunContext
    fixed: dict[str, Any]  # run_entries
    best_fit: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, epoch: int, metrics: dict[str, float], weights: dict[str, Any]) -> Path:
        """Record the epoch and write its checkpoints; returns their folder."""
        self.history.append(metrics)
        improved = metrics["fitness"] > self.best_fit
        self.best_fit = max(self.best_fit, metrics["fitness"])
        state = {**weights, "epoch": epoch, "metrics": metrics, "best_fitness": self.best_fit,
                 "history": self.history, **self.fixed}
        ckpt_dir = self.ctx.run_dir / "weights"
        save_checkpoint(ckpt_dir / "last.pt", state)
        if improved:
            save_checkpoint(ckpt_dir / "best.pt", state)
        logger.info("%s", epoch_line(epoch, self.fixed["epochs"], metrics))
        if self.ctx.log_metrics is not None:
            self.ctx.log_metrics(metrics, epoch + 1)
        return ckpt_dir


def finish_metrics(ctx: RunContext, eval_model: DHNet, metrics: dict[str, float], epoch: int, epochs: int,
                   times: tuple[float, float, int]) -> None:
    """Add the epoch scorer's numbers (when due) and the timings; times = (epoch start, training s, images)."""
    if ctx.epoch_scorer is not None and ctx.epoch_scorer.due(epoch, epochs):
        metrics.update(ctx.epoch_scorer(eval_model, ctx.device))
    t0, train_time, images = times
    metrics["epoch_time_s"] = time.time() - t0
    metrics["train_time_s"] = train_time
    metrics["images_per_s"] = images / max(train_time, 1e-9)  # all ranks together


def end_epoch(ctx: RunContext, hooks: list, epoch: int, metrics: dict[str, float], ckpt_dir: Path | None,
              model: torch.nn.Module) -> None:
    """Every rank after its epoch: the report (with rank 0's checkpoint folder), then the epoch hooks."""
    if ctx.report is not None:
        ctx.report(metrics, ckpt_dir)
    for hook in hooks:
        hook(EpochEnd(ctx.run_dir, ctx.rank, ctx.world_size, epoch, model))


def train_gates_only(pipeline: Pipeline, ctx: RunContext, dataset_spec: str | None = None) -> dict[str, float]:
    """Train only the gates on the frozen detector (train.freeze: detector; gates_only.py): the last epoch's metrics.

    Run folder, checkpoints, reports and hooks are train_loop's; a resumed run equals an uninterrupted one.
    """
    tc = pipeline.train
    hooks = begin(tc, ctx)
    splits = load_splits(pipeline, dataset_spec)
    model = init_model(pipeline, ctx, len(splits.names))
    if ctx.init_state is None and ctx.resume_state is None and not pipeline.model.init_from:
        logger.warning("train.freeze: detector with no detector to start from (init checkpoint or model.init_from): "
                       "the gates train on an untrained detector")
    budget = gates_only.CacheBudget.of(pipeline, model)
    run = gates_only.setup(pipeline, model, splits.train, ctx, budget)
    record = EpochRecord(ctx, run_entries(pipeline, ctx, splits, model))
    start_epoch = resume(ctx, record, model, run.ema, run.optimizer, run.scaler)
    metrics: dict[str, float] = record.history[-1] if record.history else {}
    checking = None if ctx.rank else gates_only.gate_validation(pipeline, splits.val, run, budget, metrics)
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        seed_everything(tc.seed + 1000 * epoch + ctx.rank)
        metrics = gates_only.train_epoch(run, tc, epoch)
        train_time = time.time() - t0
        ckpt_dir = None
        if checking is not None:
            eval_model, validated = gates_only.validate_gates(run, checking, tc, epoch)
            metrics.update(validated)
            finish_metrics(ctx, eval_model, metrics, epoch, tc.epochs, (t0, train_time, len(splits.train)))
            weights = weight_entries(model, run.ema, run.optimizer, run.scaler, run.scaler.is_enabled())
            ckpt_dir = record.save(epoch, metrics, weights)
        end_epoch(ctx, hooks, epoch, metrics, ckpt_dir, model)
    return metrics


def prepare_full_run(pipeline: Pipeline, ctx: RunContext,
                     splits: Splits) -> tuple[full_run.FullRun, EpochRecord, int]:
    """This rank's parts of a full run, resumed when the context says; also the epoch record and first epoch."""
    data = full_run.batches(pipeline, ctx, splits)
    model = init_model(pipeline, ctx, len(splits.names))
    opt = full_run.updates(pipeline.train, model, ctx.device)
    record = EpochRecord(ctx, run_entries(pipeline, ctx, splits, model))
    start_epoch = resume(ctx, record, model, opt.ema, opt.optimizer, opt.scaler)
    return full_run.assemble(pipeline, model, opt, data, ctx), record, start_epoch


def validate_and_save(run: full_run.FullRun, tc: TrainConfig, ctx: RunContext, record: EpochRecord, epoch: int,
                      metrics: dict[str, float], times: tuple[float, float, int]) -> Path:
    """Rank 0 after a full epoch: validation, the scorer's numbers and the timings, then the checkpoints (their
    folder is returned); times as finish_metrics takes them."""
    eval_model = full_run.validate_epoch(run, tc, metrics)
    finish_metrics(ctx, eval_model, metrics, epoch, tc.epochs, times)
    opt = run.updates
    return record.save(epoch, metrics, weight_entries(run.model, opt.ema, opt.optimizer, opt.scaler, opt.amp))


def train_loop(pipeline: Pipeline, ctx: RunContext, dataset_spec: str | None = None) -> dict[str, float]:
    """Train a DH-Net as the pipeline says; returns the last epoch's metrics.

    After every epoch (and its report) the hooks named by $DH_TUNE_EPOCH_HOOKS run (epoch_hooks).
    With `train.freeze: detector` only the gates train, on the frozen detector (train_gates_only).
    """
    tc = pipeline.train
    if tc.freeze == "detector":
        return train_gates_only(pipeline, ctx, dataset_spec)
    hooks = begin(tc, ctx)
    splits = load_splits(pipeline, dataset_spec)
    run, record, start_epoch = prepare_full_run(pipeline, ctx, splits)
    metrics: dict[str, float] = record.history[-1] if record.history else {}
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        # Augmentation draws from torch's generator: reseeding per epoch makes a resumed run identical.
        seed_everything(tc.seed + 1000 * epoch + ctx.rank)
        metrics = full_run.train_epoch(run, tc, epoch, progress=ctx.rank == 0)
        times = (t0, time.time() - t0, run.batches.images)
        ckpt_dir = validate_and_save(run, tc, ctx, record, epoch, metrics, times) if ctx.rank == 0 else None
        end_epoch(ctx, hooks, epoch, metrics, ckpt_dir, run.model)
    return metrics
