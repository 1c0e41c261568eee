"""Exponential moving average of the model weights (YOLOv5's ModelEMA)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keeps a smoothed copy of the weights; decay ramps up as 1 - exp(-updates / tau).

    `prefix` limits the average to the state-dict entries whose names start with it ("gates.": the gates alone);
    every other entry stays bit for bit the copy made here (d * w + (1 - d) * w is not always w in floating point).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0,
                 prefix: str = "") -> None:
        self.ema = copy.deepcopy(_unwrap(model)).eval()
        self.updates = updates
        self.decay = decay
        self.tau = tau
        self.prefix = prefix
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._paired_with: nn.Module | None = None
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights in (floating-point tensors only; buffers like counts are copied)."""
        self.updates += 1
        d = self.current_decay()
        for v, w in self.pairs(_unwrap(model)):
            if v.dtype.is_floating_point:
                v.mul_(d).add_(w, alpha=1 - d)
            else:
                v.copy_(w)

    def pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(EMA tensor, model tensor) of every averaged entry, listed once per model: walking both state dicts at
        every optimizer step cost more than the averaging itself (they share storage with the live weights)."""
        if self._paired_with is not model:
            msd = model.state_dict()
            self._pairs = [(v, msd[k]) for k, v in self.ema.state_dict().items() if k.startswith(self.prefix)]
            self._paired_with = model
        return self._pairs


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module
    assert isinstance(inner, nn.Module)
    return inner
