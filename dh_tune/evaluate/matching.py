"""COCO-style matching of one image's detections to its ground truth.

Produces, for every detection, whether it is a true positive at each IoU threshold 0.50:0.05:0.95,
exactly as pycocotools' COCOeval.evaluateImg decides it, so cached match flags reproduce the
reference AP without re-running the matching.
"""
from __future__ import annotations

import numpy as np

IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
"""The ten IoU thresholds of AP50:95 (the same floats as COCOeval's ``params.iouThrs``)."""

_IOU_CAP = 1 - 1e-10  # COCOeval clamps each threshold to just below 1.


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    """Return ``boxes`` as a float64 (n, 4) array or raise a ValueError naming the argument.

    Accepts an empty array of any shape for "no boxes". Inverted or non-finite boxes are refused:
    COCOeval would silently ignore a detection of negative area instead of counting it.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (n, 4), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise ValueError(f"{name} must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    return arr


def box_iou_coco(det_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """IoU matrix (m, n) between detections and ground truth, computed the way COCO's maskApi does.

    COCO stores boxes as x, y, w, h and computes ``min(x + w) - max(x)``; doing the same float
    operations keeps IoUs that sit exactly on a threshold on the same side as the reference.
    """
    d = _as_boxes(det_xyxy, "det_xyxy")
    g = _as_boxes(gt_xyxy, "gt_xyxy")
    dx, dy, dw, dh = d[:, 0:1], d[:, 1:2], d[:, 2:3] - d[:, 0:1], d[:, 3:4] - d[:, 1:2]
    gx, gy, gw, gh = g[:, 0], g[:, 1], g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    valid = (w > 0) & (h > 0)
    inter = np.where(valid, w * h, 0.0)
    union = dw * dh + gw * gh - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(valid, inter / np.where(valid, union, 1.0), 0.0)
    return iou


def _greedy_match(iou: np.ndarray) -> np.ndarray:
    """Match detections (rows, already in descending score order) to ground truth (columns).

    Per threshold, each detection takes the unmatched ground truth with the highest IoU at or above
    the threshold (the last one among equal IoUs, as COCOeval's loop does); all ten thresholds
    are handled together per detection.
    """
    m, n = iou.shape
    thr = np.minimum(IOU_THRESHOLDS, _IOU_CAP)[:, None]  # (10, 1)
    taken = np.zeros((len(IOU_THRESHOLDS), n), dtype=bool)
    out = np.zeros((m, len(IOU_THRESHOLDS)), dtype=bool)
    rows = np.arange(len(IOU_THRESHOLDS))
    for d in range(m):
        row = iou[d]
        if row.max(initial=0.0) < thr[0, 0]:
            continue
        cand = np.where(~taken & (row >= thr), row, -1.0)  # (10, n)
        last = n - 1 - np.argmax(cand[:, ::-1], axis=1)  # last index of the maximum
        ok = cand[rows, last] >= 0.0
        out[d] = ok
        taken[rows[ok], last[ok]] = True
    return out


def match_image(
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_classes: np.ndarray,
) -> np.ndarray:
    """True-positive flags (m, 10) of one image's detections at IoU 0.50:0.05:0.95.

    COCOeval's rule: per class, detections in descending score order (stable for equal scores)
    each claim the best unmatched ground truth of their class. Boxes are x1, y1, x2, y2. There are
    no crowd or ignored boxes and no area ranges, and nothing is cut by a per-image maximum: the
    result equals COCOeval with ``maxDets`` at least the number of detections per image and class.
    Row i of the result belongs to detection i in the order given.
    """
    gt_b = _as_boxes(gt_boxes, "gt_boxes")
    det_b = _as_boxes(det_boxes, "det_boxes")
    gt_c = np.asarray(gt_classes).reshape(-1)
    det_s = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    det_c = np.asarray(det_classes).reshape(-1)
    if len(gt_c) != len(gt_b):
        raise ValueError(f"gt_classes has {len(gt_c)} entries for {len(gt_b)} boxes")
    if not len(det_s) == len(det_c) == len(det_b):
        raise ValueError(
            f"detections disagree in length: {len(det_b)} boxes, {len(det_s)} scores, {len(det_c)} classes"
        )
    out = np.zeros((len(det_b), len(IOU_THRESHOLDS)), dtype=bool)
    if len(det_b) == 0 or len(gt_b) == 0:
        return out
    for c in np.intersect1d(det_c, gt_c):
        det_idx = np.flatnonzero(det_c == c)
        det_idx = det_idx[np.argsort(-det_s[det_idx], kind="mergesort")]
        gt_idx = np.flatnonzero(gt_c == c)
        out[det_idx] = _greedy_match(box_iou_coco(det_b[det_idx], gt_b[gt_idx]))
    return out
