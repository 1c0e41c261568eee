"""Learning-rate and momentum schedule: linear warm-up, then cosine decay lr0 -> lr0 * lrf.

Computed from (epoch, iteration) alone, so a resumed run gets exactly the same values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ..pipeline import TrainConfig


def cosine_factor(epoch: int, epochs: int, lrf: float) -> float:
    """YOLOv5's one-cycle cosine: 1 at epoch 0, lrf at the last epoch."""
    return ((1 - math.cos(epoch * math.pi / max(epochs, 1))) / 2) * (lrf - 1) + 1


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Three groups as YOLOv5: weights with decay, BatchNorm weights and biases without."""
    decay, no_decay, biases = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name == "bias":
                biases.append(p)
            elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "kind": "weight"},
            {"params": no_decay, "weight_decay": 0.0, "kind": "bn"},
            {"params": biases, "weight_decay": 0.0, "kind": "bias"}]


def _set_momentum(group: dict, value: float) -> None:
    if "betas" in group:
        group["betas"] = (value, group["betas"][1])
    else:
        group["momentum"] = value


@dataclass(frozen=True)
class Schedule:
    """The settings the schedule reads, with lr_scale already applied to lr0 and warmup_bias_lr."""

    epochs: int
    lr0: float
    lrf: float
    momentum: float
    warmup_epochs: float
    warmup_bias_lr: float

    @classmethod
    def of(cls, tc: TrainConfig) -> Schedule:
        """The schedule of a pipeline's train section."""
        return cls(epochs=tc.epochs, lr0=tc.lr0 * tc.lr_scale, lrf=tc.lrf, momentum=tc.momentum,
                   warmup_epochs=tc.warmup_epochs, warmup_bias_lr=tc.warmup_bias_lr * tc.lr_scale)


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, *, epoch: int, it: int,
                   iters_per_epoch: int) -> float:
    """Set lr and momentum of every group for this iteration; returns the weights' lr."""
    s = schedule
    target = s.lr0 * cosine_factor(epoch, s.epochs, s.lrf)
    n_warm = round(s.warmup_epochs * iters_per_epoch)
    ni = epoch * iters_per_epoch + it
    lr_out = target
    for g in optimizer.param_groups:
        if ni < n_warm:
            start = s.warmup_bias_lr if g.get("kind") == "bias" else 0.0
            g["lr"] = float(np.interp(ni, [0, n_warm], [start, target]))
            _set_momentum(g, float(np.interp(ni, [0, n_warm], [0.8, s.momentum])))
        else:
            g["lr"] = target
            _set_momentum(g, s.momentum)
        if g.get("kind") == "weight":
            lr_out = g["lr"]
    return lr_out


def make_optimizer(model: torch.nn.Module, name: str, lr0: float, momentum: float,
                   weight_decay: float, fused: bool = False) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (YOLOv5 default) or AdamW (beta1 = momentum), decay on weights only; `fused`:
    one kernel updates every parameter (the same update, fewer passes over memory)."""
    groups = param_groups(model, weight_decay)
    speed = {"fused": True} if fused else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr0, betas=(momentum, 0.999), **speed)
    return torch.optim.SGD(groups, lr=lr0, momentum=momentum, nesterov=True, **speed)
