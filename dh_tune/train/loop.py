"""The DH-Net training loop: plain PyTorch over a pipeline, with or without Ray around it.

Ray Train only supplies the process group and a `report` function; run locally, the same loop
gets a local context. Every epoch ends with validation of the EMA model and a checkpoint.
"""
from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..data import DetectionDataset, collate
from ..data.gate_labels import gate_targets
from ..loss import DHLoss
from ..model import DHNet
from ..model.checkpoint import model_args, save_checkpoint
from ..pipeline import Pipeline
from . import gates_only
from .data_setup import Splits, load_splits
from .ema import ModelEMA
from .epoch_hooks import EpochEnd, epoch_hooks
from .gradients import clip_gradients
from .schedule import apply_schedule, make_optimizer
from .validate import fitness, precise_bn, validate

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


def _make_loader(ds, batch: int, ctx: RunContext, seed: int, shuffle: bool, workers: int) -> DataLoader:
    sampler: DistributedSampler = DistributedSampler(ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed,
                                 drop_last=False)
    return DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=collate, num_workers=workers,
                      pin_memory=ctx.device.type == "cuda")


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
    hooks = epoch_hooks()
    seed_everything(tc.seed + ctx.rank)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    splits = load_splits(pipeline, dataset_spec)
    model = init_model(pipeline, ctx, len(splits.names))
    if ctx.init_state is None and ctx.resume_state is None and not pipeline.model.init_from:
        logger.warning("train.freeze: detector with no detector to start from (init checkpoint or model.init_from): "
                       "the gates train on an untrained detector")
    budget = gates_only.CacheBudget.of(pipeline, model)
    run = gates_only.setup(pipeline, model, splits.train, ctx, budget)
    record = EpochRecord(ctx, run_entries(pipeline, ctx, splits, model))
    start_epoch = 0
    if ctx.resume_state is not None:
        start_epoch, record.best_fit, record.history = restore_state(ctx.resume_state, model, run.ema, run.optimizer,
                                                                     run.scaler)
    if run.ema is not None:
        run.ema.ema.to(ctx.device)
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


def train_loop(pipeline: Pipeline, ctx: RunContext, dataset_spec: str | None = None) -> dict[str, float]:
    """Train a DH-Net as the pipeline says; returns the last epoch's metrics.

    After every epoch (and its report) the hooks named by $DH_TUNE_EPOCH_HOOKS run (epoch_hooks).
    With `train.freeze: detector` only the gates train, on the frozen detector (train_gates_only).
    """
    tc, dc = pipeline.train, pipeline.data
    if tc.freeze == "detector":
        return train_gates_only(pipeline, ctx, dataset_spec)
    hooks = epoch_hooks()
    seed_everything(tc.seed + ctx.rank)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device, main = ctx.device, ctx.rank == 0

    splits = load_splits(pipeline, dataset_spec)
    train_ds = DetectionDataset(splits.train, dc.imgsz, augment=True, hyp=tc.augment,
                                cache_images=dc.cache_images)
    val_ds = DetectionDataset(splits.val, dc.imgsz, augment=False, cache_images=dc.cache_images)
    per_rank = max(tc.batch_size // ctx.world_size, 1)
    train_loader = _make_loader(train_ds, per_rank, ctx, tc.seed, True, dc.loader_workers)
    train_sampler = train_loader.sampler
    assert isinstance(train_sampler, DistributedSampler)
    val_loader = DataLoader(val_ds, batch_size=per_rank * 2, collate_fn=collate, num_workers=dc.loader_workers)

    model = init_model(pipeline, ctx, len(splits.names))
    optimizer = make_optimizer(model, tc.optimizer, tc.lr0, tc.momentum, tc.weight_decay)
    use_amp = tc.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    ema = ModelEMA(model) if tc.ema else None
    record = EpochRecord(ctx, run_entries(pipeline, ctx, splits, model))
    start_epoch = 0
    if ctx.resume_state is not None:
        start_epoch, record.best_fit, record.history = restore_state(ctx.resume_state, model, ema, optimizer, scaler)
    if ema is not None:
        ema.ema.to(device)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if ctx.world_size > 1 and dist.is_initialized() else model
    ls = tc.loss
    criterion = DHLoss(model.nc, model.anchors_px.detach().cpu(), model.strides, dc.imgsz, ls)
    anchors_cpu = model.anchors_px.detach().cpu()
    metrics: dict[str, float] = record.history[-1] if record.history else {}
    nb = len(train_loader)

    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        net.train()
        train_sampler.set_epoch(epoch)
        # Augmentation draws from torch's generator: reseeding per epoch makes a resumed run identical.
        seed_everything(tc.seed + 1000 * epoch + ctx.rank)
        sums = torch.zeros(5)
        bar = tqdm(train_loader, total=nb, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=not (main and sys.stderr.isatty()))
        lr = tc.lr0
        for it, (images, targets, _) in enumerate(bar):
            lr = apply_schedule(optimizer, epoch=epoch, it=it, iters_per_epoch=nb, epochs=tc.epochs,
                                lr0=tc.lr0 * tc.lr_scale, lrf=tc.lrf, momentum=tc.momentum,
                                warmup_epochs=tc.warmup_epochs, warmup_bias_lr=tc.warmup_bias_lr * tc.lr_scale)
            x = images.to(device, non_blocking=True).float() / 255
            gl = gate_targets(targets[:, 4:6], targets[:, 0].long(), images.shape[0], anchors_cpu, ls.eps)
            with torch.autocast(device.type, enabled=use_amp):
                maps, logits = net(x, gate_trunk_grad=ls.gate_trunk_grad)
            loss, items = criterion([m.float() for m in maps], logits.float(), targets.to(device), gl.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at epoch {epoch + 1}, iteration {it + 1}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            clip_gradients(model)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            sums += torch.stack([items[k].detach().cpu().float() for k in ("box", "obj", "cls", "gate", "total")])
            bar.set_postfix(loss=f"{float(items['total']):.3f}")
        train_time = time.time() - t0
        means = (sums / max(nb, 1)).tolist()
        metrics = dict(zip(("box", "obj", "cls", "gate", "loss"), means))
        metrics.update(lr=lr, epoch=epoch + 1)
        ckpt_dir = None
        if main:
            eval_model = ema.ema if ema is not None else model
            assert isinstance(eval_model, DHNet)  # the EMA is a copy of the model
            precise_bn(eval_model, train_loader, device, tc.precise_bn_batches)
            metrics.update(validate(eval_model, val_loader, device, eps=ls.eps, amp=use_amp))
            metrics["fitness"] = fitness(metrics)
            finish_metrics(ctx, eval_model, metrics, epoch, tc.epochs, (t0, train_time, len(train_ds)))
            ckpt_dir = record.save(epoch, metrics, weight_entries(model, ema, optimizer, scaler, use_amp))
        end_epoch(ctx, hooks, epoch, metrics, ckpt_dir, model)
    return metrics
