"""Inference pre-processing: one BGR frame to the network's input tensor, as every torch path feeds it.

Prediction and the device timing run this same function, so the timed pre-processing is the one deployed.
"""
from __future__ import annotations

import numpy as np
import torch

from .letterbox import letterbox


def preprocess(img_bgr: np.ndarray, imgsz: int, device: torch.device) -> torch.Tensor:
    """Letterbox, BGR->RGB, HWC->CHW, scale to [0, 1], add the batch dimension."""
    boxed, _ = letterbox(img_bgr, imgsz)
    x = torch.from_numpy(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))).to(device)
    return x.float().div_(255).unsqueeze_(0)
