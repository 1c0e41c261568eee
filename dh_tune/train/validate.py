"""Per-epoch validation: AP of all heads and gate accuracy/recall (paper Eq. 16-17) at 0.5."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..data.gate_labels import gate_targets
from ..evaluate import average_precision
from ..model import VAL_NMS, DHNet, NMSConfig, postprocess


@dataclass
class GateCounts:
    """Confusion counts of one gate: positive = the next head is needed."""

    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, pred: np.ndarray, label: np.ndarray) -> None:
        self.tp += int(np.sum(pred & label))
        self.tn += int(np.sum(~pred & ~label))
        self.fp += int(np.sum(pred & ~label))
        self.fn += int(np.sum(~pred & label))

    @property
    def accuracy(self) -> float:
        total = self.tp + self.tn + self.fp + self.fn
        return (self.tp + self.tn) / total if total else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")


def gate_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy and recall of each gate for (N, G) scores and 0/1 labels."""
    out = {}
    for g in range(scores.shape[1]):
        counts = GateCounts()
        counts.add(scores[:, g] >= threshold, labels[:, g].astype(bool))
        out[f"gate{g + 1}_acc"] = counts.accuracy
        out[f"gate{g + 1}_recall"] = counts.recall
    return out


@torch.no_grad()
def validate(model: DHNet, loader, device: torch.device, *, eps: float, nms: NMSConfig = VAL_NMS,
             amp: bool = False) -> dict[str, float]:
    """Run every head on the loader's images; AP50, AP50:95 and gate metrics in one pass."""
    model.eval()
    ground_truth, detections, scores, labels = [], [], [], []
    anchors = model.anchors_px.detach().cpu()
    for images, targets, _ in loader:
        x = images.to(device, non_blocking=True).float() / 255
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            maps, logits = model(x)
        dets = postprocess([m.float() for m in maps], model.anchors_px, model.strides, nms)
        b = images.shape[0]
        t = targets.cpu()
        gl = gate_targets(t[:, 4:6], t[:, 0].long(), b, anchors, eps)
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(gl.numpy())
        for i, d in enumerate(dets):
            rows = t[t[:, 0] == i]
            xywh = rows[:, 2:6].numpy()
            boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            ground_truth.append((boxes, rows[:, 1].numpy().astype(np.int64)))
            detections.append((d.boxes, d.scores, d.classes))
    ap = average_precision(ground_truth, detections, num_classes=model.nc)
    metrics = {"ap50": float(ap["ap50"]), "ap50_95": float(ap["ap50_95"])}
    metrics.update(gate_metrics(np.concatenate(scores), np.concatenate(labels)))
    return metrics


@contextmanager
def cumulative_bn(module: torch.nn.Module) -> Iterator[None]:
    """Inside: `module` in training mode, its BatchNorm statistics reset and averaged over every batch it sees.

    The statistics stay; momenta and the training mode are restored on exit.
    """
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = module.training
    module.train()
    try:
        yield
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        module.train(was_training)


@torch.no_grad()
def precise_bn(model: torch.nn.Module, loader, device: torch.device, batches: int) -> None:
    """Recompute BatchNorm statistics as plain averages over a few training batches (PreciseBN).

    Running statistics with YOLOv5's momentum 0.03 lag behind weights that still move quickly, which
    costs a lot of AP in short schedules; the weights themselves are left untouched.
    """
    if batches <= 0 or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    with cumulative_bn(model):
        for i, (images, _, _) in enumerate(loader):
            if i >= batches:
                break
            model(images.to(device, non_blocking=True).float() / 255)


def fitness(metrics: dict[str, float]) -> float:
    """YOLOv5's model-selection score: 0.1 AP50 + 0.9 AP50:95."""
    return 0.1 * metrics.get("ap50", 0.0) + 0.9 * metrics.get("ap50_95", 0.0)


def gate_fitness(metrics: dict[str, float]) -> float:
    """Model selection when only the gates train (the detector's AP cannot change): mean gate accuracy (Eq. 16).

    A gate without validation images (NaN accuracy) counts as 0.
    """
    accs = [metrics.get(f"gate{g}_acc", float("nan")) for g in (1, 2)]
    return float(np.mean([a if np.isfinite(a) else 0.0 for a in accs]))
