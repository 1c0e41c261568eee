"""YOLOv5 v6/v7 building blocks: Conv, Bottleneck, C3, SPPF and Concat.

Attribute names (conv, bn, cv1, cv2, cv3, m) follow YOLOv5 so state dicts load by name.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def in_fp32(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` computed in fp32 even inside CPU bf16 autocast (training's), unchanged elsewhere.

    For the small layers whose outputs a bf16 mantissa (8 bits) would blur: gate scores and the head's maps.
    """
    if x.is_cpu and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            return module(x.float())
    return module(x)


def autopad(k: int, p: int | None = None) -> int:
    """Padding that keeps the spatial size for stride 1 ('same')."""
    return k // 2 if p is None else p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU, the unit of every YOLOv5 layer."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), bias=False)
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c2)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(x if self.bn is None else self.bn(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution for inference (as YOLOv5's `fuse_conv_and_bn`).

        y = gamma * (Wx - mean) / sqrt(var + eps) + beta becomes one convolution with a bias.
        """
        if self.bn is None:
            return
        bn, mean, var = self.bn, self.bn.running_mean, self.bn.running_var
        assert mean is not None and var is not None, "BatchNorm2d keeps running statistics"
        fused = copy.deepcopy(self.conv)
        scale = bn.weight / torch.sqrt(var + bn.eps)
        fused.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = fused.bias if fused.bias is not None else torch.zeros_like(mean)
        fused.bias = nn.Parameter((bias - mean) * scale + bn.bias)
        self.conv, self.bn = fused, None


class Bottleneck(nn.Module):
    """1x1 then 3x3 convolution, with a residual connection when shapes allow."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 1.0) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convolutions: two branches, n bottlenecks on one, then fused."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained max-pools concatenated with their input."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along the channel dimension."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)
