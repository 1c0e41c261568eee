"""Inference pre-processing: one BGR frame to the network's input tensor, as every torch path feeds it.

The deployment module's numpy `preprocess` does the work, so prediction, the device timing and a
deployment folder run the same letterbox and scaling.
"""
from __future__ import annotations

import numpy as np
import torch

from ..export import dhnet_runtime
from ..input_size import check_imgsz


def preprocess(img_bgr: np.ndarray, imgsz: int, device: torch.device) -> torch.Tensor:
    """Letterbox, BGR->RGB, HWC->CHW, scale to [0, 1], add the batch dimension; ValueError for a bad imgsz."""
    x, _ = dhnet_runtime.preprocess(img_bgr, check_imgsz(imgsz))
    return torch.from_numpy(x).to(device)
