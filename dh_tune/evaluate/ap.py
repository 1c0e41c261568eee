"""Average precision exactly as pycocotools' COCOeval computes it, from cached match flags.

COCOeval's accumulate step (101 recall points, interpolated precision, mean over the classes that
have ground truth) runs vectorised over all classes and IoU thresholds at once, so the exit
cache can score a threshold profile in milliseconds and outside code can score its own boxes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dh_tune.evaluate.matching import IOU_THRESHOLDS, match_image

RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.0, 101)
"""COCOeval's ``params.recThrs``: precision is read at these 101 recall levels."""

_EPS = np.spacing(1)  # COCOeval adds this to the precision denominator.


def _first_count_reaching(gt_counts: np.ndarray) -> np.ndarray:
    """Smallest true-positive count k per (class, recall point) with ``k / gt >= r`` in float64.

    Reproduces COCOeval's ``searchsorted(tp / npig, recThrs)`` on integer counts, including the
    rounding of the float division, so boundary recalls fall on the same side as in the reference.
    """
    gt = np.maximum(gt_counts, 1).astype(np.float64)[:, None]  # (C, 1)
    r = RECALL_POINTS[None, :]
    k = np.ceil(r * gt)
    k = np.where((k > 0) & ((k - 1) / gt >= r), k - 1, k)
    k = np.where(k / gt < r, k + 1, k)
    return k.astype(np.int64)


def class_ap_from_tp(
    tp_group: np.ndarray, tp_rank: np.ndarray, gt_counts: np.ndarray, n_thr: int = len(IOU_THRESHOLDS)
) -> np.ndarray:
    """Per-class AP (C, T) from the true positives alone, exactly as COCOeval accumulates it.

    Entry e is a true positive of class c at threshold t: ``tp_group[e] = t * C + c`` (non-decreasing)
    and ``tp_rank[e]`` is its 1-based place among all of class c's detections by descending score
    (increasing within a group). Classes without ground truth get NaN (COCO's -1).
    """
    group = np.asarray(tp_group).reshape(-1)
    rank = np.asarray(tp_rank).reshape(-1)
    if len(group) == 0:  # an empty list of any dtype means "no true positives"
        group, rank = group.astype(np.int64), rank.astype(np.int64)
    if not (np.issubdtype(group.dtype, np.integer) and np.issubdtype(rank.dtype, np.integer)):
        raise ValueError("tp_group and tp_rank must be integer arrays")
    gt_counts = np.asarray(gt_counts, dtype=np.int64).reshape(-1)
    n_cls = len(gt_counts)
    n_groups = n_thr * n_cls
    if len(group) != len(rank):
        raise ValueError(f"tp_group has {len(group)} entries but tp_rank {len(rank)}")
    if len(group) and (group[0] < 0 or group[-1] >= n_groups or (np.diff(group) < 0).any()):
        raise ValueError(f"tp_group must be non-decreasing within [0, {n_groups})")
    starts = np.searchsorted(group, np.arange(n_groups + 1), side="left")
    found = np.diff(starts).reshape(n_thr, n_cls)  # true positives per (threshold, class)
    # Precision where the j-th true positive is the n-th detection: COCOeval's tp / (tp + fp + eps).
    # Interpolated precision (the maximum to the right) only ever peaks at a true positive, since
    # every false positive lowers precision; so the false positives never need to be visited.
    j = (np.arange(len(group)) - starts[group] + 1).astype(np.float64)
    precision = j / (rank.astype(np.float64) + _EPS)
    # Running maximum from the right that restarts at each group: lift every group by an offset
    # above any precision of the groups to its right, then subtract it again (the rounding this
    # costs stays below 1e-11 for up to a thousand classes).
    offset = 2.0 * (n_groups - 1 - group)
    suffix_max = np.maximum.accumulate((precision + offset)[::-1])[::-1] - offset
    # Recall point r of class c is reached at the need[c, r]-th true positive (the first detection
    # for r = 0, whose maximum runs over all true positives as well).
    need = np.maximum(_first_count_reaching(gt_counts), 1)[None, :, :]  # (1, C, R)
    reached = need <= found[:, :, None]  # (T, C, R)
    at = starts[:-1].reshape(n_thr, n_cls)[:, :, None] + need - 1
    q = np.zeros(reached.shape)
    q[reached] = suffix_max[at[reached]]
    result = q.mean(axis=2).T  # (C, T)
    result[gt_counts <= 0] = np.nan
    return result


def summarize(class_ap: np.ndarray, gt_counts: np.ndarray, per_class: bool = True) -> dict:
    """Turn per-class AP (C, 10) into COCO's summary numbers.

    Means run over classes with ground truth only (COCO skips its -1 entries); with no ground
    truth at all the means are NaN, where COCO prints -1.
    """
    gt_counts = np.asarray(gt_counts, dtype=np.int64)
    valid = gt_counts > 0
    ap = class_ap[valid]
    out: dict = {
        "ap50": float(ap[:, 0].mean()) if len(ap) else float("nan"),
        "ap75": float(ap[:, 5].mean()) if len(ap) else float("nan"),
        "ap50_95": float(ap.mean()) if len(ap) else float("nan"),
        "classes_with_gt": int(valid.sum()),
    }
    if per_class:
        out["per_class"] = {
            int(c): {
                "ap50": float(class_ap[c, 0]),
                "ap50_95": float(class_ap[c].mean()),
                "gt": int(gt_counts[c]),
            }
            for c in np.flatnonzero(valid)
        }
    return out


def ap_from_matches(
    scores: np.ndarray, classes: np.ndarray, matches: np.ndarray, gt_counts: np.ndarray
) -> dict:
    """COCO AP summary from flat per-detection match flags of a whole dataset.

    Entries must be in image order, each image's detections in the order they were matched, so
    that equal scores are broken like COCOeval's mergesort. ``gt_counts[c]`` = ground truths of c.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = _as_class_ids(classes, "classes")
    matches = np.asarray(matches, dtype=bool)
    gt_counts = np.asarray(gt_counts, dtype=np.int64).reshape(-1)
    if matches.shape != (len(scores), len(IOU_THRESHOLDS)) or len(classes) != len(scores):
        raise ValueError(
            f"need scores (M,), classes (M,) and matches (M, {len(IOU_THRESHOLDS)}); got "
            f"{scores.shape}, {classes.shape}, {matches.shape}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if len(classes) and classes.max() >= len(gt_counts):
        raise ValueError(f"class id {classes.max()} is outside gt_counts of length {len(gt_counts)}")
    order = np.lexsort((-scores, classes))
    sorted_cls = classes[order]
    class_start = np.searchsorted(sorted_cls, np.arange(len(gt_counts)), side="left")
    thr, pos = np.nonzero(matches[order].T)  # by threshold, then by class and descending score
    cls = sorted_cls[pos]
    class_ap = class_ap_from_tp(thr * len(gt_counts) + cls, pos - class_start[cls] + 1, gt_counts)
    return summarize(class_ap, gt_counts)


def _as_class_ids(classes: np.ndarray, name: str) -> np.ndarray:
    """Class ids as int64, accepting integral floats (as NMS outputs them); reject anything else.

    Negative or fractional ids are errors, since they would silently land in the wrong class.
    """
    arr = np.asarray(classes).reshape(-1)
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    ids = arr.astype(np.int64)
    if not np.array_equal(ids, arr) or ids.min() < 0:
        raise ValueError(f"{name} must hold non-negative integer class ids")
    return ids


def average_precision(
    ground_truth: Sequence[tuple[np.ndarray, np.ndarray]],
    detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int | None = None,
) -> dict:
    """COCO AP50, AP75 and AP50:95 plus per-class AP for boxes given per image as numpy arrays.

    ``ground_truth[i] = (boxes_xyxy (n, 4), classes (n,))``, ``detections[i] = (boxes_xyxy (m, 4),
    scores (m,), classes (m,))``. Equals COCOeval (bbox, area 'all', maxDets not cutting).
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth entries but {len(detections)} detection entries")
    scores, classes, matches, gt_classes = [], [], [], []
    for i, ((gt_boxes, gt_cls), (det_boxes, det_scores, det_cls)) in enumerate(zip(ground_truth, detections)):
        g = _as_class_ids(gt_cls, f"ground_truth[{i}] classes")
        d = _as_class_ids(det_cls, f"detections[{i}] classes")
        matches.append(match_image(gt_boxes, g, det_boxes, det_scores, d))
        scores.append(np.asarray(det_scores, dtype=np.float64).reshape(-1))
        classes.append(d)
        gt_classes.append(g)
    all_gt = np.concatenate(gt_classes) if gt_classes else np.zeros(0, dtype=np.int64)
    all_cls = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)
    seen = int(max(all_gt.max(initial=-1), all_cls.max(initial=-1))) + 1
    if num_classes is None:
        num_classes = seen
    elif seen > num_classes:
        raise ValueError(f"class id {seen - 1} is outside num_classes={num_classes}")
    gt_counts = np.bincount(all_gt, minlength=num_classes)
    return ap_from_matches(
        np.concatenate(scores) if scores else np.zeros(0),
        all_cls,
        np.concatenate(matches) if matches else np.zeros((0, len(IOU_THRESHOLDS)), dtype=bool),
        gt_counts,
    )
