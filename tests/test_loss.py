"""Hand-checkable properties of the DH-Net loss: gate BCE, CIoU, target assignment and the totals."""
from __future__ import annotations

import math

import pytest
import torch

from dh_tune.loss import DHLoss, LevelTargets, bbox_ciou, build_targets, gate_loss
from dh_tune.model.config import DEFAULT_ANCHORS_PX, STRIDES
from dh_tune.pipeline import LossConfig

IMGSZ = 64
ANCHORS = torch.tensor(DEFAULT_ANCHORS_PX, dtype=torch.float32)


def _zero_maps(batch: int, nc: int, imgsz: int = IMGSZ, requires_grad: bool = False) -> list[torch.Tensor]:
    """All-zero raw Detect maps for P3, P4, P5."""
    return [
        torch.zeros(batch, 3 * (nc + 5), imgsz // s, imgsz // s, requires_grad=requires_grad) for s in STRIDES
    ]


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def _grids(imgsz: int = IMGSZ) -> list[tuple[int, int]]:
    return [(imgsz // s, imgsz // s) for s in STRIDES]


def _cells(t: LevelTargets, anchor: int) -> set[tuple[int, int]]:
    keep = t.anchor == anchor
    return {(int(j), int(i)) for j, i in zip(t.gj[keep], t.gi[keep])}


# Two targets: a small one in image 0 (matches P3 only) and a larger one in image 1 (P3, P4 and P5).
TARGETS = torch.tensor([[0, 1, 21.0, 27.0, 12.0, 15.0], [1, 0, 37.0, 45.0, 50.0, 40.0]])


def test_gate_loss_equals_weighted_bce_by_hand() -> None:
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.7], [-0.4, -3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lambda_pos = (0.28, 2.0)
    expected = 0.0
    for z_row, y_row in zip(logits.tolist(), labels.tolist()):
        for z, y, w in zip(z_row, y_row, lambda_pos):
            s = 1 / (1 + math.exp(-z))
            expected += -(w * y * math.log(s) + (1 - y) * math.log(1 - s))
    expected /= logits.shape[0]  # summed over gates, mean over images
    assert gate_loss(logits, labels, lambda_pos).item() == pytest.approx(expected, rel=1e-6)


def test_gate_loss_is_finite_for_saturated_logits() -> None:
    logits = torch.tensor([[200.0, -200.0]], requires_grad=True)
    labels = torch.tensor([[0.0, 1.0]])
    value = gate_loss(logits, labels, (0.28, 2.0))
    value.backward()
    assert value.item() == pytest.approx(200.0 + 2.0 * 200.0, rel=1e-6)  # label 0 on gate 1, label 1 on gate 2
    assert torch.isfinite(logits.grad).all()


def test_ciou_matches_hand_calculation() -> None:
    box1 = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    box2 = torch.tensor([[1.0, 0.0, 2.0, 4.0]])
    inter = 1.0 * 2.0  # x overlap [0, 1], y overlap [-1, 1]
    iou = inter / (4.0 + 8.0 - inter)
    enclose_diag2 = 3.0**2 + 4.0**2  # x [-1, 2], y [-2, 2]
    rho2 = 1.0
    v = 4 / math.pi**2 * (math.atan(2.0 / 4.0) - math.atan(1.0)) ** 2
    alpha = v / (1 - iou + v)
    expected = iou - rho2 / enclose_diag2 - alpha * v
    assert bbox_ciou(box1, box2).item() == pytest.approx(expected, abs=1e-6)
    assert bbox_ciou(box2, box2).item() == pytest.approx(1.0, abs=1e-6)


def test_anchor_t_rule_matches_just_below_and_rejects_just_above() -> None:
    aw, ah = DEFAULT_ANCHORS_PX[0][0]  # P3 anchor 0, 10x13 px

    def matched(w: float, h: float) -> bool:
        t = torch.tensor([[0, 0, 20.0, 20.0, w, h]])
        levels = build_targets(t, ANCHORS, STRIDES, _grids(), anchor_t=4.0)
        return bool((levels[0].anchor == 0).any())

    assert matched(aw * 3.99, ah)
    assert not matched(aw * 4.01, ah)
    assert matched(aw, ah / 3.99)
    assert not matched(aw, ah / 4.01)
    # A looser threshold admits the same box.
    t = torch.tensor([[0, 0, 20.0, 20.0, aw * 4.01, ah]])
    assert (build_targets(t, ANCHORS, STRIDES, _grids(), anchor_t=4.1)[0].anchor == 0).any()


@pytest.mark.parametrize(
    ("gx", "gy", "cells"),
    [
        (3.3, 5.2, {(5, 3), (5, 2), (4, 3)}),  # left/top half: left and upper neighbours
        (3.7, 5.8, {(5, 3), (5, 4), (6, 3)}),  # right/bottom half: right and lower neighbours
        (0.3, 7.8, {(7, 0)}),  # at the image border no neighbour outside the grid is used
    ],
)
def test_neighbour_cells_follow_yolov5_rule(gx: float, gy: float, cells: set[tuple[int, int]]) -> None:
    stride = STRIDES[0]
    t = torch.tensor([[0, 0, gx * stride, gy * stride, 10.0, 13.0]])
    level = build_targets(t, ANCHORS, STRIDES, _grids(), anchor_t=4.0)[0]
    assert _cells(level, 0) == cells
    keep = level.anchor == 0
    # Decoding (offset + cell) * stride gives back the target centre; offsets lie in (-0.5, 1.5).
    xy = level.box[keep, :2]
    assert ((xy > -0.5) & (xy < 1.5)).all()
    centre = (xy + torch.stack((level.gi[keep], level.gj[keep]), 1)) * stride
    assert torch.allclose(centre, torch.tensor([[gx, gy]]) * stride, atol=1e-4)


def test_build_targets_levels_anchors_and_classes() -> None:
    levels = build_targets(TARGETS, ANCHORS, STRIDES, _grids(), anchor_t=4.0)
    small = [lvl.image == 0 for lvl in levels]
    assert {int(a) for a in levels[0].anchor[small[0]]} == {0, 1, 2}
    assert not small[1].any() and not small[2].any()
    assert {int(a) for a in levels[2].anchor[levels[2].image == 1]} == {0}
    assert (levels[0].cls[small[0]] == 1).all() and (levels[1].cls == 0).all()
    assert torch.allclose(levels[2].anchor_wh, ANCHORS[2, 0] / STRIDES[2])


def _perfect_maps(nc: int, levels: list[LevelTargets]) -> list[torch.Tensor]:
    """Zero maps whose box logits at every matched cell decode exactly to the matched target."""
    maps = _zero_maps(2, nc)
    for p, t in zip(maps, levels):
        view = p.view(2, 3, nc + 5, *p.shape[2:])
        sig_xy = (t.box[:, :2] + 0.5) / 2
        sig_wh = torch.sqrt(t.box[:, 2:] / t.anchor_wh) / 2
        view[t.image, t.anchor, 0:2, t.gj, t.gi] = _logit(sig_xy)
        view[t.image, t.anchor, 2:4, t.gj, t.gi] = _logit(sig_wh)
    return [p.requires_grad_() for p in maps]


def _obj_targets_from_gradient(loss: DHLoss, maps: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """Objectness targets recovered from d total / d obj logit at logit 0: t = 0.5 - grad * N / (B * gain)."""
    out = []
    for level, p in enumerate(maps):
        view = p.grad.view(batch, 3, loss.nc + 5, *p.shape[2:])[:, :, 4]
        scale = batch * loss.obj_gain * loss.balance[level] / view.numel()
        out.append(0.5 - view / scale)
    return out


def test_perfect_box_gives_zero_box_loss_and_unit_objectness_target() -> None:
    nc = 2
    loss = DHLoss(nc, ANCHORS, STRIDES, IMGSZ, LossConfig())
    levels = build_targets(TARGETS, ANCHORS, STRIDES, _grids(), 4.0)
    assert all(len(t) for t in levels)
    maps = _perfect_maps(nc, levels)
    total, items = loss(maps, torch.zeros(2, 2), TARGETS, torch.zeros(2, 2))
    assert items["box"].item() < 1e-4
    total.backward()
    for tobj, t in zip(_obj_targets_from_gradient(loss, maps, 2), levels):
        assert torch.allclose(tobj[t.image, t.anchor, t.gj, t.gi], torch.ones(len(t)), atol=1e-4)
        unmatched = torch.ones_like(tobj, dtype=torch.bool)
        unmatched[t.image, t.anchor, t.gj, t.gi] = False
        assert tobj[unmatched].abs().max().item() < 1e-4


def test_objectness_target_is_clamped_ciou_of_imperfect_box() -> None:
    nc = 2
    loss = DHLoss(nc, ANCHORS, STRIDES, IMGSZ, LossConfig())
    levels = build_targets(TARGETS, ANCHORS, STRIDES, _grids(), 4.0)
    maps = _zero_maps(2, nc, requires_grad=True)  # every matched cell predicts (0.5, 0.5, anchor)
    total, items = loss(maps, torch.zeros(2, 2), TARGETS, torch.zeros(2, 2))
    total.backward()
    box_sum = 0.0
    for tobj, t in zip(_obj_targets_from_gradient(loss, maps, 2), levels):
        pred = torch.cat((torch.full((len(t), 2), 0.5), t.anchor_wh), 1)
        ciou = bbox_ciou(pred, t.box)
        assert torch.allclose(tobj[t.image, t.anchor, t.gj, t.gi], ciou.clamp(min=0), atol=1e-4)
        box_sum += (1 - ciou).mean().item()
    assert items["box"].item() == pytest.approx(box_sum * loss.box_gain, rel=1e-5)


def test_empty_targets_give_only_objectness_loss() -> None:
    cfg = LossConfig()
    loss = DHLoss(3, ANCHORS, STRIDES, IMGSZ, cfg)
    maps = _zero_maps(2, 3, requires_grad=True)
    gate_logits = torch.tensor([[0.5, -0.5], [1.0, 2.0]])
    gate_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    total, items = loss(maps, gate_logits, torch.zeros(0, 6), gate_labels)
    assert items["box"].item() == 0.0 and items["cls"].item() == 0.0
    # Every objectness logit is 0 with target 0: BCE = log 2 per cell, summed over balanced levels.
    expected_obj = math.log(2) * sum(loss.balance) * loss.obj_gain
    assert items["obj"].item() == pytest.approx(expected_obj, rel=1e-6)
    gate = gate_loss(gate_logits, gate_labels, cfg.lambda_pos).item()
    assert items["gate"].item() == pytest.approx(gate, rel=1e-6)
    assert total.item() == pytest.approx((expected_obj + cfg.gate_lambda * gate) * 2, rel=1e-6)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in maps)


def test_total_is_eq15_times_batch_and_items_add_up() -> None:
    torch.manual_seed(0)
    cfg = LossConfig(gate_lambda=0.7)
    loss = DHLoss(2, ANCHORS, STRIDES, IMGSZ, cfg)
    maps = [torch.randn(2, 21, IMGSZ // s, IMGSZ // s) for s in STRIDES]
    total, items = loss(maps, torch.randn(2, 2), TARGETS, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert items["det"].item() == pytest.approx((items["box"] + items["obj"] + items["cls"]).item(), rel=1e-6)
    assert items["total"].item() == pytest.approx((items["det"] + 0.7 * items["gate"]).item(), rel=1e-6)
    assert total.item() == pytest.approx(2 * items["total"].item(), rel=1e-6)
    assert items["cls"].item() > 0


def test_single_class_skips_class_loss_and_gains_rescale() -> None:
    maps = [torch.randn(2, 18, IMGSZ // s, IMGSZ // s) for s in STRIDES]
    _, items = DHLoss(1, ANCHORS, STRIDES, IMGSZ)(maps, torch.zeros(2, 2), TARGETS, torch.zeros(2, 2))
    assert items["cls"].item() == 0.0
    small, big = DHLoss(40, ANCHORS, STRIDES, 640), DHLoss(40, ANCHORS, STRIDES, 1280)
    assert big.obj_gain == pytest.approx(4 * small.obj_gain)
    assert small.cls_gain == pytest.approx(0.5 * 40 / 80) and small.box_gain == pytest.approx(0.05)


def test_one_sgd_step_on_random_logits_lowers_the_loss() -> None:
    torch.manual_seed(1)
    loss = DHLoss(2, ANCHORS, STRIDES, IMGSZ)
    maps = [torch.randn(2, 21, IMGSZ // s, IMGSZ // s, requires_grad=True) for s in STRIDES]
    gate_logits = torch.randn(2, 2, requires_grad=True)
    gate_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    opt = torch.optim.SGD([*maps, gate_logits], lr=0.05)
    before, _ = loss(maps, gate_logits, TARGETS, gate_labels)
    opt.zero_grad()
    before.backward()
    assert gate_logits.grad.abs().sum() > 0 and all(p.grad.abs().sum() > 0 for p in maps)
    opt.step()
    after, _ = loss(maps, gate_logits, TARGETS, gate_labels)
    assert after.item() < before.item()


def test_bad_shapes_are_rejected() -> None:
    loss = DHLoss(2, ANCHORS, STRIDES, IMGSZ)
    with pytest.raises(ValueError, match="map of level 0"):
        loss(_zero_maps(2, 3), torch.zeros(2, 2), TARGETS, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="lambda_pos"):
        loss(_zero_maps(2, 2), torch.zeros(2, 3), TARGETS, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="targets"):
        loss(_zero_maps(2, 2), torch.zeros(2, 2), torch.zeros(3, 5), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="anchor_t"):
        LossConfig(anchor_t=1.0)
    for bad in ({"box": -0.1}, {"gate_lambda": -1.0}, {"lambda_pos": (0.0, 2.0)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LossConfig(**bad)
    with pytest.raises(ValueError, match="2 balance weights for 3 levels"):
        DHLoss(2, ANCHORS, STRIDES, IMGSZ, balance=(4.0, 1.0))
