"""Training the two gates alone on a frozen detector (`train.freeze: detector`): the gate term of Eq. 15 only.

The detector's weights and BatchNorm statistics stay bit for bit as they start, in the model and in its EMA: its
layers stay in eval mode and run without autograd, and only the gates are optimised, averaged and re-normalised.
loop.train_gates_only runs the epochs with these parts and the checkpoints, reports and hooks train_loop uses.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..data import DetectionDataset, ImageRecord, collate
from ..data.gate_labels import gate_targets
from ..loss import gate_loss
from ..model import DHNet
from ..model.gate import Gate
from ..pipeline import LossConfig, Pipeline, TrainConfig
from .data_setup import loader_workers
from .ema import ModelEMA
from .schedule import Schedule, apply_schedule, make_optimizer
from .validate import cumulative_bn, gate_fitness, gate_metrics, validate

logger = logging.getLogger(__name__)

GATES = "gates."  # state-dict prefix of the gates' entries: all that this mode changes
MAX_GRAD_NORM = 10.0  # YOLOv5's gradient clipping, as clip_gradients applies it to the gates
Batch = tuple[Tensor, Tensor, Tensor]  # P3 features, P4 features, gate labels (B, 2)


class Place(Protocol):
    """Where a run trains: this process's rank, the world size and the device (a loop.RunContext)."""

    rank: int
    world_size: int
    device: torch.device


class GateHeads(nn.Module):
    """The two gates as one module, (P3, P4) features -> logits (B, 2): what DDP wraps when only they train."""

    def __init__(self, gates: nn.ModuleList) -> None:
        super().__init__()
        self.gates = gates

    def forward(self, p3: Tensor, p4: Tensor) -> Tensor:
        return torch.stack([self.gates[0](p3), self.gates[1](p4)], 1)


@dataclass(frozen=True)
class FeatureSpec:
    """How gate batches are made: device and precision of the frozen forward, and the gate labels' eps and anchors."""

    device: torch.device
    amp: bool
    eps: float
    anchors: Tensor  # (levels, anchors, 2) in input pixels, on the CPU
    workers: int = 0


@torch.no_grad()
def gate_inputs(model: DHNet, images: Tensor, spec: FeatureSpec) -> tuple[Tensor, Tensor]:
    """What the gates read of a batch: stage 1's P3 and stage 2's P4 features, without autograd and without stage 3.

    (Stages 1 and 2 also apply their heads' 1x1 output convolutions, a small share of their cost.)
    """
    model.model.eval()  # the detector's layers (not the gates): BatchNorm must never update its statistics here
    x = images.to(spec.device, non_blocking=True).float() / 255
    with torch.autocast(spec.device.type, enabled=spec.amp):
        s1 = model.stage1(x)
        p4, _ = model.stage2(s1.p3, s1.lateral14)
    return s1.p3, p4


def rank_shard(n: int, rank: int, world: int) -> list[int]:
    """This rank's fixed share of n images: every world-th, padded by repeats to equal shares (DistributedSampler
    without shuffling), so that every rank runs the same number of steps and keeps the same images all run long."""
    total = math.ceil(n / world) * world
    padded = (list(range(n)) * math.ceil(total / n))[:total]
    return padded[rank::world]


def epoch_order(count: int, batch: int, seed: int, epoch: int) -> list[Tensor]:
    """Positions 0..count-1 shuffled from (seed, epoch) alone, in batches: a resumed run draws the same ones."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return list(torch.randperm(count, generator=generator).split(batch))


def feature_bytes(model: DHNet, imgsz: int) -> int:
    """Memory one image's gate inputs take when kept: fp32 P3 and P4 features of the square input, and two labels."""
    assert model.gates is not None
    values = 2
    for gate, stride in zip(model.gates, model.strides):
        assert isinstance(gate, Gate)
        values += gate.cv1.conv.in_channels * (imgsz // stride) ** 2
    return 4 * values


@dataclass
class CacheBudget:
    """Memory for gate inputs kept between epochs (train.gate_cache_mib), handed out first come, first served."""

    left: int  # bytes
    per_image: int

    @classmethod
    def of(cls, pipeline: Pipeline, model: DHNet) -> CacheBudget:
        """The pipeline's train.gate_cache_mib, for this model's gate inputs at the pipeline's input size."""
        return cls(pipeline.train.gate_cache_mib * 2**20, feature_bytes(model, pipeline.data.imgsz))

    def take(self, images: int, what: str) -> bool:
        """True (and the memory reserved) when the gate inputs of `images` images fit in what is left."""
        need = images * self.per_image
        keep = need <= self.left
        if keep:
            self.left -= need
        logger.info("gate inputs of %d %s images (%.0f MiB): %s", images, what, need / 2**20,
                    "kept in memory after their first pass" if keep else
                    "recomputed every epoch (over train.gate_cache_mib)")
        return keep


@dataclass
class FeatureCache:
    """Gate inputs and labels of a fixed list of images; row i belongs to image i of the list."""

    p3: Tensor
    p4: Tensor
    labels: Tensor

    def take(self, rows: Tensor) -> Batch:
        rows = rows.to(self.p3.device)
        return self.p3[rows], self.p4[rows], self.labels[rows]


class GateFeatures:
    """(P3, P4, labels) batches of a fixed list of un-augmented, letterboxed images, made by the frozen detector.

    With `keep` they are made once, in a first pass over the list in its order, and taken from memory after that:
    the detector then runs once per image in the whole run, and the batches are the same as when recomputed (within
    float rounding). What that trades: no augmentation for gate training, recomputed or not.
    """

    def __init__(self, ds: DetectionDataset, indices: list[int], batch: int, spec: FeatureSpec, keep: bool) -> None:
        self.ds, self.indices, self.batch, self.spec, self.keep = ds, indices, batch, spec, keep
        self.cache: FeatureCache | None = None

    def in_order(self) -> list[Tensor]:
        """Positions of the list in its own order, in batches (the first pass's and validation's order)."""
        return list(torch.arange(len(self.indices)).split(self.batch))

    def batches(self, model: DHNet, order: list[Tensor] | None = None) -> Iterator[Batch]:
        """The batches of `order` (positions in the list; default in_order), each (P3, P4, labels) on the device."""
        order = self.in_order() if order is None else order
        if not self.keep:
            yield from self._computed(model, order)
            return
        if self.cache is None:
            self.cache = self._fill(model)
        for rows in order:
            yield self.cache.take(rows)

    def _computed(self, model: DHNet, order: list[Tensor]) -> Iterator[Batch]:
        sampler = [[self.indices[i] for i in rows.tolist()] for rows in order]
        loader = DataLoader(self.ds, batch_sampler=sampler, collate_fn=collate, num_workers=self.spec.workers,
                            pin_memory=self.spec.device.type == "cuda")
        for images, targets, _ in loader:
            p3, p4 = gate_inputs(model, images, self.spec)
            labels = gate_targets(targets[:, 4:6], targets[:, 0].long(), images.shape[0], self.spec.anchors,
                                  self.spec.eps)
            yield p3, p4, labels.to(self.spec.device)

    def _fill(self, model: DHNet) -> FeatureCache:
        cache, start = None, 0
        for batch in self._computed(model, self.in_order()):
            if cache is None:  # allocated once, so memory never holds the features twice
                cache = FeatureCache(*(t.new_empty((len(self.indices), *t.shape[1:])) for t in batch))
            for dst, src in zip((cache.p3, cache.p4, cache.labels), batch):
                dst[start:start + len(src)] = src
            start += len(batch[0])
        assert cache is not None
        return cache


@torch.no_grad()
def gate_scores(heads: GateHeads, batches: Iterator[Batch], amp: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid gate scores (N, 2) of the gates in eval mode, with the batches' labels (N, 2)."""
    heads.eval()
    scores, labels = [], []
    for p3, p4, y in batches:
        with torch.autocast(p3.device.type, enabled=amp):
            logits = heads(p3, p4)
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(scores), np.concatenate(labels)


@torch.no_grad()
def gate_precise_bn(heads: GateHeads, batches: Iterator[Batch], amp: bool) -> None:
    """PreciseBN (validate.precise_bn) of the gates alone: their BatchNorm statistics averaged over the batches;
    the detector's are never touched."""
    with cumulative_bn(heads):
        for p3, p4, _ in batches:
            with torch.autocast(p3.device.type, enabled=amp):
                heads(p3, p4)


class GateValidation:
    """Validation on a frozen detector: its AP once (it cannot change; a resumed run carries it over), gate accuracy
    and recall every epoch from the val images' gate inputs (kept in memory when they fit)."""

    def __init__(self, loader: DataLoader, features: GateFeatures, carried: dict[str, float]) -> None:
        self.loader, self.features, self.spec = loader, features, features.spec
        self.ap = {k: carried[k] for k in ("ap50", "ap50_95")} if {"ap50", "ap50_95"} <= carried.keys() else None

    def __call__(self, model: DHNet) -> dict[str, float]:
        assert model.gates is not None
        if self.ap is None:
            m = validate(model, self.loader, self.spec.device, eps=self.spec.eps, amp=self.spec.amp)
            self.ap = {"ap50": m["ap50"], "ap50_95": m["ap50_95"]}
        scores, labels = gate_scores(GateHeads(model.gates), self.features.batches(model), self.spec.amp)
        return {**self.ap, **gate_metrics(scores, labels)}


@dataclass
class GateRun:
    """What a gates-only run trains with: the model, its gates (DDP-wrapped under several ranks) and their data."""

    model: DHNet
    heads: nn.Module
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train: GateFeatures


def setup(pipeline: Pipeline, model: DHNet, records: list[ImageRecord], place: Place, budget: CacheBudget) -> GateRun:
    """The model frozen but for its gates, their optimiser, EMA and scaler, and this rank's training images."""
    tc, dc = pipeline.train, pipeline.data
    assert model.gates is not None
    model.eval()  # for good: the detector's BatchNorm layers never update their statistics
    spec = FeatureSpec(place.device, tc.amp and place.device.type == "cuda", tc.loss.eps,
                       model.anchors_px.detach().cpu(), loader_workers(pipeline))
    shard = rank_shard(len(records), place.rank, place.world_size)
    keep = budget.take(len(shard), "training")
    # Kept gate inputs need each image once: decoding it in that pass beats holding the image as well.
    ds = DetectionDataset(records, dc.imgsz, augment=False, cache_images=dc.cache_images and not keep)
    heads: nn.Module = GateHeads(model.gates)
    if place.world_size > 1 and dist.is_initialized():  # only the gates have gradients, so only they are wrapped
        heads = DistributedDataParallel(heads, device_ids=[place.device.index] if place.device.type == "cuda" else None)
    optimizer = make_optimizer(model.gates, tc.optimizer, tc.lr0, tc.momentum, tc.weight_decay,
                               tc.fused_optimizer)
    ema = ModelEMA(model, prefix=GATES) if tc.ema else None
    scaler = torch.amp.GradScaler(place.device.type, enabled=spec.amp)
    per_rank = max(tc.batch_size // place.world_size, 1)
    return GateRun(model, heads, ema, optimizer, scaler, GateFeatures(ds, shard, per_rank, spec, keep))


def gate_validation(pipeline: Pipeline, records: list[ImageRecord], run: GateRun, budget: CacheBudget,
                    carried: dict[str, float]) -> GateValidation:
    """Rank 0's validation of a gates-only run on these images; `carried`: the last epoch's metrics when resumed."""
    dc, batch = pipeline.data, 2 * run.train.batch
    ds = DetectionDataset(records, dc.imgsz, augment=False, cache_images=dc.cache_images)
    loader = DataLoader(ds, batch_size=batch, collate_fn=collate, num_workers=loader_workers(pipeline))
    features = GateFeatures(ds, list(range(len(ds))), batch, run.train.spec, budget.take(len(ds), "validation"))
    return GateValidation(loader, features, carried)


def _step(run: GateRun, batch: Batch, ls: LossConfig, where: str) -> Tensor:
    """One optimiser step on lambda * L_gate (Eq. 14-15) times the batch size, as DHLoss scales it; returns L_gate."""
    p3, p4, labels = batch
    with torch.autocast(p3.device.type, enabled=run.scaler.is_enabled()):
        logits = run.heads(p3, p4)
    lgate = gate_loss(logits.float(), labels, ls.lambda_pos)
    if not torch.isfinite(lgate):
        raise FloatingPointError(f"gate loss became {float(lgate)} at {where}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(ls.gate_lambda * lgate * labels.shape[0]).backward()
    run.scaler.unscale_(run.optimizer)
    assert run.model.gates is not None
    torch.nn.utils.clip_grad_norm_(run.model.gates.parameters(), max_norm=MAX_GRAD_NORM)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.model)
    return lgate.detach()


def train_epoch(run: GateRun, tc: TrainConfig, epoch: int) -> dict[str, float]:
    """Train the gates for one epoch; the epoch's loss metrics (box/obj/cls 0: no detection loss is computed)."""
    run.heads.train()  # the gates; the detector's layers stay in eval mode (gate_inputs)
    order = epoch_order(len(run.train.indices), run.train.batch, tc.seed, epoch)
    total, lr, schedule = 0.0, tc.lr0, Schedule.of(tc)
    for it, batch in enumerate(run.train.batches(run.model, order)):
        lr = apply_schedule(run.optimizer, schedule, epoch=epoch, it=it, iters_per_epoch=len(order))
        total += float(_step(run, batch, tc.loss, f"epoch {epoch + 1}, iteration {it + 1}"))
    gate = total / max(len(order), 1)
    return {"box": 0.0, "obj": 0.0, "cls": 0.0, "gate": gate, "loss": tc.loss.gate_lambda * gate, "lr": lr,
            "epoch": epoch + 1}


def validate_gates(run: GateRun, checking: GateValidation, tc: TrainConfig,
                   epoch: int) -> tuple[DHNet, dict[str, float]]:
    """Rank 0: the gates' PreciseBN on the epoch's first batches, then validation of the EMA (or the model)."""
    eval_model = run.ema.ema if run.ema is not None else run.model
    assert isinstance(eval_model, DHNet) and eval_model.gates is not None  # the EMA is a copy of the model
    if tc.precise_bn_batches > 0:
        order = epoch_order(len(run.train.indices), run.train.batch, tc.seed, epoch)[: tc.precise_bn_batches]
        gate_precise_bn(GateHeads(eval_model.gates), run.train.batches(run.model, order), checking.spec.amp)
    metrics = checking(eval_model)
    metrics["fitness"] = gate_fitness(metrics)  # the detector's AP is the same every epoch
    return eval_model, metrics
