"""Does an exported folder compute what PyTorch computes? Raw maps, gate scores and exit decisions per image."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model import DHNet
from .dhnet_runtime import Detector, preprocess


@dataclass
class Agreement:
    """How far a runtime's outputs are from PyTorch's over a set of images."""

    images: int
    max_abs_diff: float
    """Largest absolute difference of any raw map value of a head both ran."""
    max_scaled_diff: float
    """The same, each map's difference divided by max(1, its largest magnitude): fp32 rounding grows with it."""
    max_score_diff: float
    decisions_differ: int
    """Images that left at a different head although no gate score lay within `tolerance` of its threshold."""
    near_threshold: int
    """Images with a gate score within `tolerance` of its threshold (a decision there may flip legitimately)."""

    @property
    def decisions_equal(self) -> bool:
        return self.decisions_differ == 0


@torch.inference_mode()
def agreement(model: DHNet, detector: Detector, images_bgr: Sequence[np.ndarray], tolerance: float = 1e-5) -> Agreement:
    """Run every image through the detector's graphs and through PyTorch's early exit with the same input."""
    net = model.cpu().fused()
    max_diff = max_scaled = max_score = 0.0
    differ = near = 0
    for img in images_bgr:
        x, _ = preprocess(img, detector.imgsz)
        maps, level, scores = detector.run_network(x)
        out = net.forward_dynamic(torch.from_numpy(x), detector.thresholds)
        ref_maps, ref_scores = out.image_maps(0), out.gate_scores[0].tolist()
        for a, b in zip(maps, ref_maps):
            diff = float(np.abs(a - b.numpy()).max())
            max_diff = max(max_diff, diff)
            max_scaled = max(max_scaled, diff / max(1.0, float(b.abs().max())))
        is_near = False
        for s, r, t in zip(scores, ref_scores, detector.thresholds):
            if math.isnan(s) != math.isnan(r):
                continue
            if not math.isnan(s):
                max_score = max(max_score, abs(s - r))
                is_near |= abs(r - t) <= tolerance
        near += is_near
        differ += int(level != int(out.exit_level[0]) and not is_near)
    return Agreement(len(images_bgr), max_diff, max_scaled, max_score, differ, near)


def compare_with_torch(model: DHNet, folder: str | Path, *, images: int = 4, runtime: str | None = None,
                       seed: int = 0) -> Agreement:
    """Agreement on random images (a quick self-check after export; the tests use real validation images)."""
    detector = Detector(folder, runtime, allow_other_runtime=True)
    rng = np.random.default_rng(seed)
    imgs = [rng.integers(0, 255, (detector.imgsz, detector.imgsz, 3), dtype=np.uint8) for _ in range(images)]
    return agreement(model, detector, imgs)
