"""Decode raw Detect maps and run class-aware NMS: a torch edge over the deployment module's numpy code.

Validation uses conf 0.001 / IoU 0.6 / 300 detections, multi-label; deployment 0.25 / 0.45.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..export import dhnet_runtime


@dataclass(frozen=True)
class NMSConfig:
    """Thresholds of the non-maximum suppression."""

    conf: float = 0.001
    iou: float = 0.6
    max_det: int = 300
    multi_label: bool = True
    max_candidates: int = 30000


VAL_NMS = NMSConfig()
DEPLOY_NMS = NMSConfig(conf=0.25, iou=0.45, max_det=300, multi_label=False)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as a float32 numpy array in host memory (one copy from a GPU, none on the CPU)."""
    return t.detach().to("cpu", torch.float32).numpy()


def decode_numpy(maps: Sequence[torch.Tensor], anchors_px: torch.Tensor, strides: Sequence[float]) -> np.ndarray:
    """Maps (B, na*(nc+5), h, w) of the heads that ran -> (B, n, nc+5) numpy: xywh px, obj, cls."""
    return dhnet_runtime.decode_batch([to_numpy(m) for m in maps], to_numpy(anchors_px), [float(s) for s in strides])


def decode(maps: Sequence[torch.Tensor], anchors_px: torch.Tensor, strides: Sequence[float]) -> torch.Tensor:
    """Decode the maps of the heads that ran (any prefix of P3, P4, P5) to (B, n, nc+5) on their device."""
    return torch.from_numpy(decode_numpy(maps, anchors_px, strides)).to(maps[0].device)


@dataclass
class Detections:
    """Final detections of one image in network-input pixels."""

    boxes: np.ndarray  # (m, 4) xyxy float32
    scores: np.ndarray  # (m,) float32
    classes: np.ndarray  # (m,) int64

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def nms_image(pred: torch.Tensor | np.ndarray, cfg: NMSConfig = VAL_NMS) -> Detections:
    """Score = obj x cls, confidence filter, class-aware NMS, at most max_det boxes (best first)."""
    rows = pred if isinstance(pred, np.ndarray) else to_numpy(pred)
    return Detections(*dhnet_runtime.nms(rows, cfg.conf, cfg.iou, cfg.max_det, cfg.multi_label, cfg.max_candidates))


def postprocess(maps: Sequence[torch.Tensor], anchors_px: torch.Tensor, strides: Sequence[float],
                cfg: NMSConfig = VAL_NMS) -> list[Detections]:
    """Detections per image for a batch whose images all ran the same heads."""
    return [nms_image(pred, cfg) for pred in decode_numpy(maps, anchors_px, strides)]
