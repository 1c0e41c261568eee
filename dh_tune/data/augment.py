"""Training augmentation in network-input pixels: HSV jitter, flips, scale/translate, mosaic.

Strengths come from the pipeline's `train.augment` (AugmentConfig). Boxes move with the pixels, so gate labels computed
from the augmented targets stay consistent with what the network sees.
"""
from __future__ import annotations

import cv2
import numpy as np

from .letterbox import PAD_VALUE

# A transformed box survives when it keeps >= 2 px per side and >= 10 % of its area (YOLOv5).
MIN_SIDE_PX = 2.0
MIN_AREA_KEPT = 0.1


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """Random hue/saturation/value gains applied through lookup tables (BGR uint8 in and out)."""
    if not (hgain or sgain or vgain):
        return img
    gains = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    merged = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)


def flip(img: np.ndarray, boxes: np.ndarray, horizontal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an image and its xyxy boxes left-right (horizontal) or top-bottom."""
    boxes = boxes.copy()
    if horizontal:
        width = img.shape[1]
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        return np.ascontiguousarray(img[:, ::-1]), boxes
    height = img.shape[0]
    boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
    return np.ascontiguousarray(img[::-1]), boxes


def random_affine(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator, out_size: int,
                  scale: float, translate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zoom by 1 +- scale about the centre, shift by +- translate, crop to out_size x out_size.

    Boxes are transformed, clipped, and dropped when less than 2 px wide/high or under 10 % of
    their transformed area remains.
    """
    height, width = img.shape[:2]
    zoom = rng.uniform(1 - scale, 1 + scale)
    shift = rng.uniform(0.5 - translate, 0.5 + translate, 2) * out_size
    matrix = np.array([[zoom, 0, shift[0] - zoom * width / 2], [0, zoom, shift[1] - zoom * height / 2]])
    if (out_size, out_size) != (width, height) or not np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]):
        img = cv2.warpAffine(img, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR,
                             borderValue=(PAD_VALUE,) * 3)
    moved = boxes * zoom + np.tile(matrix[:, 2], 2)
    clipped = np.clip(moved, 0, out_size)
    size = clipped[:, 2:] - clipped[:, :2]
    area_before = np.prod(moved[:, 2:] - moved[:, :2], axis=1)
    keep = (size > MIN_SIDE_PX).all(1) & (np.prod(size, axis=1) > MIN_AREA_KEPT * np.maximum(area_before, 1e-9))
    return img, clipped[keep], classes[keep]


def mosaic_canvas(images: list[np.ndarray], boxes: list[np.ndarray], imgsz: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv5 mosaic: four fitted images meet at a random centre on a 2*imgsz grey canvas.

    `images` are already resized so their longer side is imgsz and `boxes` are in their pixels;
    returns the canvas and all boxes clipped to it in canvas pixels (crop with `random_affine`).
    """
    canvas = np.full((2 * imgsz, 2 * imgsz, 3), PAD_VALUE, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(imgsz / 2, 3 * imgsz / 2, 2))
    placed = []
    for quadrant, (img, b) in enumerate(zip(images, boxes)):
        h, w = img.shape[:2]
        x0 = xc - w if quadrant in (0, 2) else xc
        y0 = yc - h if quadrant in (0, 1) else yc
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, 2 * imgsz), min(y0 + h, 2 * imgsz)
        canvas[cy0:cy1, cx0:cx1] = img[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        placed.append(b + [x0, y0, x0, y0])
    return canvas, np.clip(np.concatenate(placed).reshape(-1, 4), 0, 2 * imgsz)
