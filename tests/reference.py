"""The reference COCO evaluator (faster-coco-eval, same numbers as pycocotools) for the tests."""
from __future__ import annotations

import logging

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster


def coco_reference(ground_truth, detections, num_classes):
    """AP50, AP50:95 and per-class AP (C, 10) from faster-coco-eval, built in memory."""
    images = [{"id": i + 1, "width": 1000, "height": 1000} for i in range(len(ground_truth))]
    cats = [{"id": c + 1, "name": f"c{c}"} for c in range(num_classes)]
    anns, res = [], []
    for i, (boxes, classes) in enumerate(ground_truth):
        for b, c in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), classes):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
    for i, (boxes, scores, classes) in enumerate(detections):
        for b, s, c in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), scores, classes):
            res.append({"image_id": i + 1, "category_id": int(c) + 1,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    gt = COCO({"images": images, "annotations": anns, "categories": cats})
    gt.print_function = logging.debug
    dt = gt.loadRes(res)
    ev = COCOeval_faster(gt, dt, "bbox", print_function=logging.debug)
    ev.params.maxDets = [1, 10, 100000]
    ev.evaluate()
    ev.accumulate()
    prec = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]  # (T, R, K)
    valid = prec[0, 0, :] > -1
    per_class = np.where(valid[:, None], prec.mean(axis=1).T, np.nan)
    return float(prec[0][:, valid].mean()), float(prec[:, :, valid].mean()), per_class
