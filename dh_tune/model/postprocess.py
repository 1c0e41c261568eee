"""Decode raw Detect maps to boxes and run class-aware NMS (OpenCV's batched NMS).

Validation uses conf 0.001 / IoU 0.6 / 300 detections, multi-label; deployment 0.25 / 0.45.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


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


def decode_level(raw: torch.Tensor, anchors_px: torch.Tensor, stride: float) -> torch.Tensor:
    """One raw map (B, na*(nc+5), h, w) -> (B, na*h*w, nc+5): xywh in pixels, obj and cls probabilities."""
    b, _, h, w = raw.shape
    na = anchors_px.shape[0]
    p = raw.view(b, na, -1, h, w).permute(0, 1, 3, 4, 2).float().sigmoid()
    gy, gx = torch.meshgrid(torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij")
    grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2).float()
    xy = (p[..., :2] * 2 - 0.5 + grid) * stride
    wh = (p[..., 2:4] * 2) ** 2 * anchors_px.view(1, na, 1, 1, 2).to(p.dtype)
    return torch.cat((xy, wh, p[..., 4:]), -1).view(b, -1, p.shape[-1])


def decode(maps: list[torch.Tensor], anchors_px: torch.Tensor, strides) -> torch.Tensor:
    """Decode the maps of the heads that ran (any prefix of P3, P4, P5) and concatenate them."""
    return torch.cat([decode_level(m, anchors_px[i], strides[i]) for i, m in enumerate(maps)], 1)


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


def nms_image(pred: torch.Tensor, cfg: NMSConfig = VAL_NMS) -> Detections:
    """Score = obj x cls, confidence filter, class-aware NMS, at most max_det boxes (best first)."""
    pred = pred[pred[:, 4] > cfg.conf]
    if pred.shape[0] == 0:
        return Detections.empty()
    scores_all = pred[:, 5:] * pred[:, 4:5]
    if cfg.multi_label:
        i, j = (scores_all > cfg.conf).nonzero(as_tuple=True)
        boxes, scores, classes = pred[i, :4], scores_all[i, j], j
    else:
        scores, classes = scores_all.max(1)
        keep = scores > cfg.conf
        boxes, scores, classes = pred[keep, :4], scores[keep], classes[keep]
    if scores.numel() == 0:
        return Detections.empty()
    if scores.numel() > cfg.max_candidates:
        top = scores.topk(cfg.max_candidates).indices
        boxes, scores, classes = boxes[top], scores[top], classes[top]
    xywh = boxes.detach().cpu().numpy().astype(np.float64)
    tl = xywh[:, :2] - xywh[:, 2:] / 2
    s = scores.detach().cpu().numpy().astype(np.float32)
    c = classes.detach().cpu().numpy().astype(np.int64)
    # OpenCV's stubs name Sequence[...] where the function takes numpy arrays.
    found = cv2.dnn.NMSBoxesBatched(np.concatenate([tl, xywh[:, 2:]], 1), s, c.astype(np.int32),  # type: ignore[arg-type]
                                    cfg.conf, cfg.iou)
    kept = np.asarray(found, dtype=np.int64).reshape(-1)
    kept = kept[np.argsort(-s[kept], kind="stable")][: cfg.max_det]
    xyxy = np.concatenate([tl[kept], tl[kept] + xywh[kept, 2:]], 1).astype(np.float32)
    return Detections(xyxy, s[kept], c[kept])


def postprocess(maps: list[torch.Tensor], anchors_px: torch.Tensor, strides, cfg: NMSConfig = VAL_NMS) -> list[Detections]:
    """Detections per image for a batch whose images all ran the same heads."""
    pred = decode(maps, anchors_px, strides)
    return [nms_image(p, cfg) for p in pred]
