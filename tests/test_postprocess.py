"""Decoding of raw Detect maps and class-aware NMS."""
from __future__ import annotations

import math

import numpy as np
import torch

from dh_tune.model import DEPLOY_NMS, VAL_NMS, NMSConfig, decode
from dh_tune.model.postprocess import nms_image


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_decode_places_box_with_yolov5_formula() -> None:
    nc, stride = 2, 8
    anchors = torch.tensor([[[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]])
    raw = torch.full((1, 3 * (nc + 5), 4, 4), -20.0)
    # anchor 1, cell (gx=2, gy=1): sigmoid(x)=0.5 -> centre at cell + 0.5; sigmoid(w)=0.5 -> w = anchor
    view = raw.view(1, 3, nc + 5, 4, 4)
    view[0, 1, 0:4, 1, 2] = 0.0
    view[0, 1, 4, 1, 2] = _logit(0.9)
    out = decode([raw], anchors, [stride])[0]
    row = out[1 * 16 + 1 * 4 + 2]
    torch.testing.assert_close(row[:4], torch.tensor([2.5 * 8, 1.5 * 8, 16.0, 30.0]))
    assert abs(float(row[4]) - 0.9) < 1e-6


def _pred(rows: list[tuple[float, float, float, float, float, list[float]]]) -> torch.Tensor:
    return torch.tensor([[cx, cy, w, h, obj, *cls] for cx, cy, w, h, obj, cls in rows])


def test_nms_is_class_aware_and_sorted() -> None:
    pred = _pred([
        (50, 50, 20, 20, 0.9, [1.0, 0.0]),   # class 0, best
        (51, 50, 20, 20, 0.8, [1.0, 0.0]),   # class 0, overlaps -> suppressed
        (51, 50, 20, 20, 0.7, [0.0, 1.0]),   # class 1, same place -> kept
        (150, 150, 10, 10, 0.6, [1.0, 0.0]), # class 0, far away -> kept
    ])
    det = nms_image(pred, NMSConfig(conf=0.01, iou=0.5, multi_label=False))
    assert det.classes.tolist() == [0, 1, 0]
    np.testing.assert_allclose(det.scores, [0.9, 0.7, 0.6], rtol=1e-6)
    np.testing.assert_allclose(det.boxes[0], [40, 40, 60, 60])


def test_nms_multi_label_confidence_and_max_det() -> None:
    pred = _pred([(50, 50, 20, 20, 0.9, [0.5, 0.4])] + [(10 + 30 * i, 200, 10, 10, 0.5, [0.9, 0.0]) for i in range(8)])
    det = nms_image(pred, VAL_NMS)
    assert sorted(det.classes[:2].tolist()) == [0, 0] or 1 in det.classes.tolist()
    assert (det.classes == 1).sum() == 1  # the first box is also reported as class 1 (multi-label)
    capped = nms_image(pred, NMSConfig(conf=0.001, iou=0.6, max_det=3))
    assert len(capped) == 3 and np.all(np.diff(capped.scores) <= 0)
    assert len(nms_image(pred, DEPLOY_NMS)) == 9  # 0.45 and 0.45*... above 0.25; class 1 at 0.36 not best
    assert len(nms_image(pred[:, :] * torch.tensor([1, 1, 1, 1, 0, 1, 1]), VAL_NMS)) == 0
