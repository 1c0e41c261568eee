"""Training the whole DH-Net (`train.freeze: none`): its batches, optimiser, EMA and loss, one epoch, validation.

loop.train_loop runs the epochs with these parts and the checkpoints, reports and hooks; gates_only.py holds the
same parts for a frozen detector.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..data import DetectionDataset, EpochSampler, collate
from ..data.gate_labels import gate_targets
from ..loss import DHLoss
from ..model import DHNet
from ..pipeline import LossConfig, Pipeline, TrainConfig
from .data_setup import Splits, loader_options
from .ema import ModelEMA
from .gates_only import Place
from .gradients import clip_gradients
from .precision import autocast_dtype
from .schedule import Schedule, apply_schedule, make_optimizer
from .validate import fitness, precise_bn, validate

LOSS_ITEMS = ("box", "obj", "cls", "gate", "total")  # DHLoss's items, summed over an epoch
EPOCH_LOSSES = ("box", "obj", "cls", "gate", "loss")  # their epoch means' names in the metrics


@dataclass
class Batches:
    """This rank's augmented training batches (a DistributedSampler's share), the validation batches, and the
    number of training images (all ranks together)."""

    train: DataLoader
    sampler: EpochSampler
    val: DataLoader
    images: int


@dataclass
class Updates:
    """What changes the weights: the optimiser, the gradient scaler (fp16 AMP, only on CUDA) and the EMA; the
    memory format the model and its inputs are kept in, and the dtype the forward pass autocasts to."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEMA | None
    amp: bool
    memory_format: torch.memory_format = torch.contiguous_format
    autocast: torch.dtype | None = None  # the forward pass's autocast dtype (precision.autocast_dtype), None: fp32


@dataclass
class FullRun:
    """What a full run trains with: the model (DDP-wrapped as `net` under several ranks), its updates, batches,
    loss, gate-label anchors and schedule."""

    model: DHNet
    net: nn.Module
    updates: Updates
    batches: Batches
    criterion: DHLoss
    anchors: Tensor  # anchors in pixels, on the CPU, for the gate labels
    schedule: Schedule
    device: torch.device


def batches(pipeline: Pipeline, place: Place, splits: Splits) -> Batches:
    """Loaders over the training split (augmented, sharded over the ranks) and the validation split."""
    tc, dc = pipeline.train, pipeline.data
    train_ds = DetectionDataset(splits.train, dc.imgsz, augment=True, hyp=tc.augment, cache_images=dc.cache_images,
                                seed=tc.seed)
    val_ds = DetectionDataset(splits.val, dc.imgsz, augment=False, cache_images=dc.cache_images)
    per_rank = max(tc.batch_size // place.world_size, 1)
    sampler = EpochSampler(DistributedSampler(train_ds, num_replicas=place.world_size, rank=place.rank, shuffle=True,
                                              seed=tc.seed, drop_last=False))
    feeding = loader_options(pipeline, place.device)
    train = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, collate_fn=collate, **feeding)
    val = DataLoader(val_ds, batch_size=per_rank * 2, collate_fn=collate, **feeding)
    return Batches(train, sampler, val, len(train_ds))


def updates(tc: TrainConfig, model: DHNet, device: torch.device) -> Updates:
    """The optimiser over the whole model, its gradient scaler and (train.ema) the EMA; with train.channels_last
    the model (and so its EMA) is moved to NHWC first."""
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)  # type: ignore[call-overload]  # Module.to takes it; the stubs do not say so
    optimizer = make_optimizer(model, tc.optimizer, tc.lr0, tc.momentum, tc.weight_decay, tc.fused_optimizer)
    dtype = autocast_dtype(tc, device)
    amp = dtype is torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    return Updates(optimizer, scaler, ModelEMA(model) if tc.ema else None, amp, memory_format, dtype)


def assemble(pipeline: Pipeline, model: DHNet, opt: Updates, data: Batches, place: Place) -> FullRun:
    """The run from its parts once the model holds its starting (or resumed) weights: DDP wrapper and loss."""
    net: nn.Module = model
    if place.world_size > 1 and dist.is_initialized():
        net = DistributedDataParallel(model, device_ids=[place.device.index] if place.device.type == "cuda" else None)
    tc = pipeline.train
    criterion = DHLoss(model.nc, model.anchors_px.detach().cpu(), model.strides, pipeline.data.imgsz, tc.loss)
    return FullRun(model, net, opt, data, criterion, model.anchors_px.detach().cpu(), Schedule.of(tc), place.device)


def _step(run: FullRun, images: Tensor, targets: Tensor, ls: LossConfig, where: str) -> dict[str, Tensor]:
    """One optimiser step on the DH-Net loss (Eq. 15) of a batch, then the EMA update; returns the loss items."""
    device, opt = run.device, run.updates
    x = (images.to(device, non_blocking=True).float() / 255).contiguous(memory_format=opt.memory_format)
    gl = gate_targets(targets[:, 4:6], targets[:, 0].long(), images.shape[0], run.anchors, ls.eps)
    with torch.autocast(device.type, dtype=opt.autocast, enabled=opt.autocast is not None):
        maps, logits = run.net(x, gate_trunk_grad=ls.gate_trunk_grad)
    loss, items = run.criterion([m.float() for m in maps], logits.float(), targets.to(device), gl.to(device))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {float(loss)} at {where}")
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.optimizer)
    clip_gradients(run.model)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    if opt.ema is not None:
        opt.ema.update(run.model)
    return items


def train_epoch(run: FullRun, tc: TrainConfig, epoch: int, progress: bool) -> dict[str, float]:
    """Train the whole DH-Net for one epoch (a progress bar when `progress` and a terminal); the epoch's mean
    losses, last lr and number."""
    run.net.train()
    loader = run.batches.train
    run.batches.sampler.set_epoch(epoch)
    nb = len(loader)
    sums = torch.zeros(5)
    bar = tqdm(loader, total=nb, desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
               disable=not (progress and sys.stderr.isatty()))
    lr = tc.lr0
    for it, (images, targets, _) in enumerate(bar):
        lr = apply_schedule(run.updates.optimizer, run.schedule, epoch=epoch, it=it, iters_per_epoch=nb)
        items = _step(run, images, targets, tc.loss, f"epoch {epoch + 1}, iteration {it + 1}")
        sums += torch.stack([items[k].detach().cpu().float() for k in LOSS_ITEMS])
        bar.set_postfix(loss=f"{float(items['total']):.3f}")
    metrics = dict(zip(EPOCH_LOSSES, (sums / max(nb, 1)).tolist()))
    metrics.update(lr=lr, epoch=epoch + 1)
    return metrics


def validate_epoch(run: FullRun, tc: TrainConfig, metrics: dict[str, float]) -> DHNet:
    """Rank 0: PreciseBN, then validation of the EMA (or the model) into `metrics` with its fitness; returns the
    validated model."""
    ema = run.updates.ema
    eval_model = ema.ema if ema is not None else run.model
    assert isinstance(eval_model, DHNet)  # the EMA is a copy of the model
    precise_bn(eval_model, run.batches.train, run.device, tc.precise_bn_batches)
    metrics.update(validate(eval_model, run.batches.val, run.device, eps=tc.loss.eps, amp=run.updates.amp))
    metrics["fitness"] = fitness(metrics)
    return eval_model
