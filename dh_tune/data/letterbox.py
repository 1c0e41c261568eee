"""Square letterbox to the network input size and the exact box mappings both ways.

Training, validation and the gate-label statistics all see objects at the same scale: the image
is resized keeping its aspect ratio so its longer side is `imgsz`, then padded with grey 114.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # tensors are handled by duck typing, so torch is not imported here
    import torch

PAD_VALUE = 114
STRIDE_MULTIPLE = 32


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was placed in the network input: network = stored * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int


def check_imgsz(imgsz: int) -> int:
    """Return imgsz if it is a positive multiple of 32 (the largest stride), else raise ValueError."""
    if imgsz <= 0 or imgsz % STRIDE_MULTIPLE:
        raise ValueError(f"image size {imgsz} must be a positive multiple of {STRIDE_MULTIPLE}")
    return imgsz


def letterbox_scale(width: int, height: int, imgsz: int) -> float:
    """Scale that makes the longer side of a width x height image exactly imgsz."""
    return imgsz / max(width, height)


def resize_to_fit(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio so the longer side is imgsz; returns (image, scale).

    Shrinking uses area averaging (small signs survive a 2048 -> 1024 reduction), enlarging is linear.
    """
    height, width = img.shape[:2]
    scale = letterbox_scale(width, height, imgsz)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != (width, height):
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return img, scale


def letterbox_info(width: int, height: int, imgsz: int) -> LetterboxInfo:
    """Placement of a width x height image in the letterbox, without touching its pixels."""
    scale = letterbox_scale(width, height, imgsz)
    fitted_w, fitted_h = max(1, round(width * scale)), max(1, round(height * scale))
    return LetterboxInfo(scale, (imgsz - fitted_w) // 2, (imgsz - fitted_h) // 2)


def pad_to_square(img: np.ndarray, imgsz: int, scale: float) -> tuple[np.ndarray, LetterboxInfo]:
    """Centre an already resized image on an imgsz x imgsz canvas of grey 114."""
    height, width = img.shape[:2]
    pad_x, pad_y = (imgsz - width) // 2, (imgsz - height) // 2
    out = np.full((imgsz, imgsz, img.shape[2]), PAD_VALUE, dtype=img.dtype)
    out[pad_y:pad_y + height, pad_x:pad_x + width] = img
    return out, LetterboxInfo(scale, pad_x, pad_y)


def letterbox(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, LetterboxInfo]:
    """Letterbox an (H, W, 3) image to (imgsz, imgsz, 3); imgsz must be a multiple of 32."""
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
