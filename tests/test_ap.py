"""AP and matching agree with faster-coco-eval (the COCOeval reference) on hard cases."""
from __future__ import annotations

import numpy as np
import pytest
from reference import coco_reference

from dh_tune.evaluate import average_precision
from dh_tune.evaluate.ap import ap_from_matches, class_ap_from_tp
from dh_tune.evaluate.matching import IOU_THRESHOLDS, box_iou_coco, match_image


def random_case(rng, n_images, num_classes, n_gt_max=8, fp_per_image=6, jitter=4.0,
                empty_share=0.2, tie_levels=None, skip_class=None):
    """Synthetic GT and detections: jittered copies of GT, duplicates and false positives."""
    gts, dets = [], []
    for _ in range(n_images):
        n = 0 if rng.random() < empty_share else int(rng.integers(1, n_gt_max + 1))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(8, 120, (n, 2))
        gb = np.concatenate([xy, xy + wh], axis=1)
        gc = rng.integers(0, num_classes, n)
        if skip_class is not None:
            gc[gc == skip_class] = (skip_class + 1) % num_classes
        keep = rng.random(n) < 0.8
        copies = np.concatenate([gb[keep], gb[keep][: max(1, keep.sum() // 3)]])
        cc = np.concatenate([gc[keep], gc[keep][: max(1, keep.sum() // 3)]])
        db = copies + rng.normal(0, jitter, copies.shape)
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], axis=1)
        k = int(rng.integers(0, fp_per_image + 1))
        fxy = rng.uniform(0, 300, (k, 2))
        db = np.concatenate([db, np.concatenate([fxy, fxy + rng.uniform(8, 120, (k, 2))], axis=1)])
        dc = np.concatenate([cc, rng.integers(0, num_classes, k)])
        if skip_class is not None:
            dc[dc == skip_class] = (skip_class + 1) % num_classes
        ds = rng.random(len(db))
        if tie_levels:
            ds = np.round(ds * tie_levels) / tie_levels
        gts.append((gb, gc))
        dets.append((db, ds, dc))
    return gts, dets


def assert_matches_reference(gts, dets, num_classes):
    ours = average_precision(gts, dets, num_classes=num_classes)
    ref50, ref5095, ref_pc = coco_reference(gts, dets, num_classes)
    assert ours["ap50"] == pytest.approx(ref50, abs=1e-3)
    assert ours["ap50_95"] == pytest.approx(ref5095, abs=1e-3)
    assert set(ours["per_class"]) == set(np.flatnonzero(~np.isnan(ref_pc[:, 0])).tolist())
    for c, row in ours["per_class"].items():
        assert row["ap50"] == pytest.approx(ref_pc[c, 0], abs=1e-3)
        assert row["ap50_95"] == pytest.approx(ref_pc[c].mean(), abs=1e-3)
    return ours


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_detections_equal_reference(seed):
    rng = np.random.default_rng(seed)
    gts, dets = random_case(rng, 40, 5)
    ours = assert_matches_reference(gts, dets, 5)
    assert 0.05 < ours["ap50"] < 0.95  # a non-trivial case, not all-or-nothing


def test_near_perfect_detections_equal_reference():
    rng = np.random.default_rng(3)
    gts, dets = random_case(rng, 30, 4, fp_per_image=0, jitter=0.3)
    dets = [(b, 0.5 + 0.5 * s, c) for b, s, c in dets]
    ours = assert_matches_reference(gts, dets, 4)
    assert ours["ap50"] > 0.7


def test_images_without_objects_and_classes_without_detections():
    rng = np.random.default_rng(4)
    gts, dets = random_case(rng, 30, 6, empty_share=0.5)
    # Class 5 has ground truth but no detections; class 4 detections only, no ground truth.
    gts = [(b, np.where(c == 4, 5, c)) for b, c in gts]
    dets = [(b, s, np.where(c == 5, 4, c)) for b, s, c in dets]
    ours = assert_matches_reference(gts, dets, 6)
    assert 4 not in ours["per_class"]
    assert ours["per_class"][5]["ap50"] == 0.0 and ours["per_class"][5]["gt"] > 0


@pytest.mark.parametrize("seed", [5, 6])
def test_tied_scores_equal_reference(seed):
    rng = np.random.default_rng(seed)
    gts, dets = random_case(rng, 40, 3, tie_levels=4)
    assert_matches_reference(gts, dets, 3)


def test_exact_iou_boundaries_and_equal_iou_ground_truth():
    # Integer boxes give IoUs of exactly 0.5, 0.6, 0.75, 0.9; two identical GT boxes tie in IoU.
    gt_boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 40, 10], [50, 0, 70, 20]], float)
    gt_cls = np.array([0, 0, 1, 1])
    det_boxes = np.array([[0, 0, 10, 5], [0, 0, 10, 6], [20, 0, 35, 10], [50, 0, 70, 18],
                          [0, 0, 10, 10], [0, 0, 10, 7.5]], float)
    det_scores = np.array([0.9, 0.9, 0.8, 0.7, 0.6, 0.6])
    det_cls = np.array([0, 0, 1, 1, 0, 0])
    gts = [(gt_boxes, gt_cls), (np.zeros((0, 4)), np.zeros(0, int))]
    dets = [(det_boxes, det_scores, det_cls), (det_boxes[:2], det_scores[:2], det_cls[:2])]
    assert_matches_reference(gts, dets, 2)
    m = match_image(gt_boxes, gt_cls, det_boxes, det_scores, det_cls)
    assert m[0].tolist() == [True] + [False] * 9  # IoU exactly 0.5
    assert m[2, :6].all() and not m[2, 6:].any()  # IoU 0.75 is a match at 0.75, not at 0.8


def test_match_image_greedy_by_score_takes_best_unmatched():
    gt = np.array([[0, 0, 10, 10], [1, 0, 11, 10]], float)
    det = np.array([[1, 0, 11, 10], [0, 0, 10, 10]], float)
    # The higher-scored detection (index 1) fits GT 0 perfectly and takes it; detection 0 then
    # takes GT 1 at every threshold.
    m = match_image(gt, np.array([0, 0]), det, np.array([0.4, 0.9]), np.array([0, 0]))
    assert m.all()
    # With one GT the lower-scored duplicate is a false positive at every threshold.
    m = match_image(gt[:1], np.array([0]), det, np.array([0.4, 0.9]), np.array([0, 0]))
    assert m[1].all() and not m[0].any()
    # A detection of another class never matches.
    m = match_image(gt[:1], np.array([0]), det[1:], np.array([0.9]), np.array([1]))
    assert not m.any()


def test_box_iou_matches_definition():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(box_iou_coco(a, b), [[25 / 175, 0.0, 1.0]])
    assert box_iou_coco(np.zeros((0, 4)), b).shape == (0, 3)


def test_ap_from_matches_hand_computed():
    # One class, 2 GT; detections by score: TP, FP, TP at every threshold.
    matches = np.array([[True] * 10, [False] * 10, [True] * 10])
    out = ap_from_matches(np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]), matches, np.array([2]))
    # Precision 1 up to recall 0.5 (51 points), then 2/3 up to recall 1 (50 points).
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert out["ap50"] == pytest.approx(expected, abs=1e-12)
    assert out["ap50_95"] == pytest.approx(expected, abs=1e-12)


def test_no_ground_truth_gives_nan_and_empty_inputs_work():
    out = average_precision([(np.zeros((0, 4)), np.zeros(0))],
                            [(np.array([[0, 0, 1, 1.0]]), np.array([0.5]), np.array([0]))])
    assert np.isnan(out["ap50"]) and out["per_class"] == {}
    out = average_precision([(np.array([[0, 0, 5, 5.0]]), np.array([2]))],
                            [(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], num_classes=3)
    assert out["ap50"] == 0.0 and list(out["per_class"]) == [2]


def test_bad_inputs_are_rejected():
    box = np.array([[0, 0, 1, 1.0]])
    with pytest.raises(ValueError, match="ground-truth entries"):
        average_precision([(box, np.array([0]))], [])
    with pytest.raises(ValueError, match="integer class ids"):
        average_precision([(box, np.array([0.5]))], [(box, np.array([0.5]), np.array([0]))])
    with pytest.raises(ValueError, match="num_classes"):
        average_precision([(box, np.array([3]))], [(box, np.array([0.5]), np.array([0]))], num_classes=2)
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        match_image(np.zeros((1, 3)), np.array([0]), box, np.array([1.0]), np.array([0]))
    with pytest.raises(ValueError, match="x2 >= x1"):
        match_image(box, np.array([0]), np.array([[0, 2, 1, 1.0]]), np.array([1.0]), np.array([0]))
    with pytest.raises(ValueError, match="NaN"):
        match_image(box, np.array([0]), np.array([[0, np.nan, 1, 1.0]]), np.array([1.0]), np.array([0]))


def test_class_ap_from_tp_restarts_interpolation_per_class():
    # Class 0: FP then TP (precision 0, 0.5); class 1: TP at rank 1 (precision 1). The running
    # maximum must not leak class 1's precision into class 0, at any threshold.
    t = np.repeat(np.arange(len(IOU_THRESHOLDS)), 2)
    group = t * 2 + np.tile([0, 1], len(IOU_THRESHOLDS))
    rank = np.tile([2, 1], len(IOU_THRESHOLDS))
    ap = class_ap_from_tp(group, rank, np.array([1, 1]))
    np.testing.assert_allclose(ap[0], 0.5, rtol=1e-12)
    np.testing.assert_allclose(ap[1], 1.0, rtol=1e-12)
    # No true positives at all: zero where there is ground truth, NaN where there is none.
    ap = class_ap_from_tp(np.zeros(0), np.zeros(0), np.array([3, 0]))
    assert (ap[0] == 0).all() and np.isnan(ap[1]).all()
