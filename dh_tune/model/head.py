"""The YOLOv5 Detect head: one 1x1 convolution per level, plus the anchors it decodes with.

Raw outputs are (B, 3*(nc+5), h, w), per anchor [x, y, w, h, obj, cls...], exactly as YOLOv5.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .config import STRIDES


class Detect(nn.Module):
    """Per-level prediction convolutions; `anchors` is stored in grid units as YOLOv5 stores it."""

    stride: torch.Tensor  # (levels,) buffer
    anchors: torch.Tensor  # (levels, anchors, 2) buffer, grid units

    def __init__(self, nc: int, anchors_px: Sequence[Sequence[Sequence[float]]], channels: Sequence[int]) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors_px)
        self.na = len(anchors_px[0])
        stride = torch.tensor(STRIDES[: self.nl], dtype=torch.float32)
        anchors = torch.tensor(anchors_px, dtype=torch.float32).view(self.nl, self.na, 2)
        self.register_buffer("stride", stride, persistent=False)
        self.register_buffer("anchors", anchors / stride.view(-1, 1, 1))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
        self._init_biases()

    @property
    def anchors_px(self) -> torch.Tensor:
        """Anchors in network-input pixels, shape (levels, anchors, 2)."""
        return self.anchors * self.stride.view(-1, 1, 1)

    def _init_biases(self) -> None:
        """YOLOv5's prior: ~8 objects per 640 image for objectness, 0.6 spread over classes."""
        for conv, s in zip(self.m, self.stride.tolist()):
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            b = conv.bias.detach().view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99999)) if self.nc > 1 else 0.0
            conv.bias = nn.Parameter(b.view(-1))

    def forward_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Raw prediction map of one level (0 = P3, 1 = P4, 2 = P5)."""
        return self.m[level](x)
