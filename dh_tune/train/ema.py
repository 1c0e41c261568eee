"""Exponential moving average of the model weights (YOLOv5's ModelEMA)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keeps a smoothed copy of the weights; decay ramps up as 1 - exp(-updates / tau)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(_unwrap(model)).eval()
        self.updates = updates
        self.decay = decay
        self.tau = tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights in (floating-point tensors only; buffers like counts are copied)."""
        self.updates += 1
        d = self.current_decay()
        msd = _unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module
    assert isinstance(inner, nn.Module)
    return inner
