"""The DH-Net gate (paper Fig. 3): decides from a head's features whether the next head is needed.

Two Conv+BN+SiLU layers shrink the channels (1x1, then 3x3 stride 2), global average pooling
gives a vector, and two linear layers reduce it to one logit; sigmoid(logit) is the gate score.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import Conv


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by a constant."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` unchanged, but only `scale` of the gradient flows back through it (0: detached, 1: unchanged).

    The gate reads the trunk's features through this, so the share of the gate loss that reaches
    the shared backbone and neck is a training setting rather than a side effect of lambda.
    """
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return _ScaleGradient.apply(x, float(scale))


class Gate(nn.Module):
    """Gate over a feature map with c channels: c -> c/2 -> c/2 (stride 2) -> pool -> c/4 -> 1."""

    def __init__(self, c: int) -> None:
        super().__init__()
        c_half, c_quarter = max(c // 2, 1), max(c // 4, 1)
        self.cv1 = Conv(c, c_half, 1, 1)
        self.cv2 = Conv(c_half, c_half, 3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(c_half, c_quarter)
        self.act = nn.SiLU(inplace=True)
        self.fc2 = nn.Linear(c_quarter, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one raw logit per image, shape (B,)."""
        x = self.pool(self.cv2(self.cv1(x))).flatten(1)
        return self.fc2(self.act(self.fc1(x))).squeeze(1)
