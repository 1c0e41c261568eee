"""Square letterbox to the network input size and the exact box mappings both ways.

Training, validation and the gate-label statistics all see objects at the same scale: the image
is resized keeping its aspect ratio so its longer side is `imgsz`, then padded with grey 114. The
pixel work is the deployment module's, so a deployment letterboxes exactly as training did.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..export import dhnet_runtime
from ..input_size import check_imgsz

if TYPE_CHECKING:  # tensors are handled by duck typing, so torch is not imported here
    import torch

PAD_VALUE = dhnet_runtime.PAD_VALUE


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was placed in the network input: network = stored * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int


def letterbox_scale(width: int, height: int, imgsz: int) -> float:
    """Scale that makes the longer side of a width x height image exactly imgsz."""
    return dhnet_runtime.fit_size(width, height, imgsz)[0]


def resize_to_fit(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio so the longer side is imgsz; returns (image, scale).

    Shrinking uses area averaging (small signs survive a 2048 -> 1024 reduction), enlarging is linear.
    """
    return dhnet_runtime.resize_to_fit(img, imgsz)


def letterbox_info(width: int, height: int, imgsz: int) -> LetterboxInfo:
    """Placement of a width x height image in the letterbox, without touching its pixels."""
    scale, (fitted_w, fitted_h) = dhnet_runtime.fit_size(width, height, imgsz)
    return LetterboxInfo(scale, (imgsz - fitted_w) // 2, (imgsz - fitted_h) // 2)


def pad_to_square(img: np.ndarray, imgsz: int, scale: float) -> tuple[np.ndarray, LetterboxInfo]:
    """Centre an already resized image on an imgsz x imgsz canvas of grey 114."""
    out, pad_x, pad_y = dhnet_runtime.pad_to_square(img, imgsz)
    return out, LetterboxInfo(scale, pad_x, pad_y)


def letterbox(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, LetterboxInfo]:
    """Letterbox an (H, W, 3) image to (imgsz, imgsz, 3); ValueError for an imgsz `check_imgsz` refuses."""
    check_imgsz(imgsz)
    resized, scale = resize_to_fit(img, imgsz)
    return pad_to_square(resized, imgsz, scale)


def _offset(info: LetterboxInfo) -> list[float]:
    return [info.pad_x, info.pad_y, info.pad_x, info.pad_y]


def boxes_to_network(boxes_xyxy: np.ndarray | torch.Tensor, info: LetterboxInfo) -> np.ndarray | torch.Tensor:
    """Map (..., 4) xyxy boxes from stored-image to network-input pixels (exact inverse below).

    NumPy input gives float64 NumPy; a tensor stays a tensor of its own dtype and device.
    """
    if hasattr(boxes_xyxy, "new_tensor"):
        return boxes_xyxy * info.scale + boxes_xyxy.new_tensor(_offset(info))
    return np.asarray(boxes_xyxy, dtype=np.float64) * info.scale + np.array(_offset(info), dtype=np.float64)


def boxes_from_network(boxes_xyxy: np.ndarray | torch.Tensor, info: LetterboxInfo) -> np.ndarray | torch.Tensor:
    """Map (..., 4) xyxy boxes from network-input pixels back to stored-image pixels."""
    if hasattr(boxes_xyxy, "new_tensor"):
        return (boxes_xyxy - boxes_xyxy.new_tensor(_offset(info))) / info.scale
    return (np.asarray(boxes_xyxy, dtype=np.float64) - np.array(_offset(info), dtype=np.float64)) / info.scale
