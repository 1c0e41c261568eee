"""Architecture constants of YOLOv5 v6/v7 as used by DH-Net.

Scales, default anchors and strides in one place, so that the model, the loss and the gate
labels (paper Eq. 3-7) agree on what each head is responsible for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """Depth and width multiples of a YOLOv5 scale."""

    depth: float
    width: float

    def channels(self, c: int) -> int:
        """Scaled channel count, rounded up to a multiple of 8 (YOLOv5's make_divisible)."""
        return int(math.ceil(c * self.width / 8) * 8)

    def repeats(self, n: int) -> int:
        """Scaled number of bottlenecks in a C3 block."""
        return max(round(n * self.depth), 1) if n > 1 else n


SCALES: dict[str, Scale] = {
    "n": Scale(0.33, 0.25),
    "s": Scale(0.33, 0.50),
    "m": Scale(0.67, 0.75),
    "l": Scale(1.00, 1.00),
    "x": Scale(1.33, 1.25),
}

# Strides of the three detection levels: P3 (small objects), P4, P5 (large objects).
STRIDES: tuple[int, int, int] = (8, 16, 32)

# Default anchors in pixels of the network input, (level, anchor, (w, h)).
DEFAULT_ANCHORS_PX: tuple[tuple[tuple[float, float], ...], ...] = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)


def resolve_scale(scale: str | Scale | tuple[float, float]) -> Scale:
    """Accept a named scale ('n'..'x'), a Scale, or a (depth, width) pair."""
    if isinstance(scale, Scale):
        return scale
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)} or give (depth, width)")
        return SCALES[scale]
    depth, width = scale
    return Scale(float(depth), float(width))
