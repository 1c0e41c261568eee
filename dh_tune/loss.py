"""Training loss of DH-Net: YOLOv5's detection loss plus the weighted gate BCE (paper Eq. 8-15).

L = L_det + lambda * L_gate (Eq. 15); like YOLOv5, the value handed to the optimiser is L times
the batch size. L_det follows YOLOv5 v6/v7 (hyp.scratch-low) exactly: anchor_t matching with two
neighbour cells, CIoU box loss, IoU-valued objectness with per-level balance, class BCE.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dh_tune.model.config import DEFAULT_ANCHORS_PX, STRIDES
from dh_tune.pipeline import LossConfig

# YOLOv5's neighbour-cell bias: a centre within g of a cell edge also trains the cell across it.
NEIGHBOUR_BIAS = 0.5
# Offsets (x, y) in grid cells: own cell, then left, up, right, down neighbours (scaled by g).
_CELL_OFFSETS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1))
# YOLOv5's objectness weight of each level P3, P4, P5 (hyp.scratch-low).
OBJ_BALANCE = (4.0, 1.0, 0.4)


@dataclass(frozen=True)
class LevelTargets:
    """Prediction cells that one detection level must fit, one row per (target, anchor, cell) match.

    Boxes and anchors are in grid units of the level; box xy is the centre relative to the cell corner.
    """

    image: Tensor  # (m,) long, image index in the batch
    anchor: Tensor  # (m,) long, anchor index within the level
    gj: Tensor  # (m,) long, grid row
    gi: Tensor  # (m,) long, grid column
    box: Tensor  # (m, 4) float, (x, y) in (-0.5, 1.5) and (w, h) in grid units
    anchor_wh: Tensor  # (m, 2) float, matched anchor size in grid units
    cls: Tensor  # (m,) long, class index

    def __len__(self) -> int:
        """Number of matched cells."""
        return int(self.image.shape[0])


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (paper Eq. 11-13) of paired (x, y, w, h) boxes, shape (n, 4) each -> (n,).

    As in YOLOv5, the trade-off weight alpha is treated as a constant in the backward pass.
    """
    x1, y1, w1, h1 = box1.unbind(-1)
    x2, y2, w2, h2 = box2.unbind(-1)
    h1, h2 = h1.clamp(min=eps), h2.clamp(min=eps)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(min=0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclose_w = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)
    enclose_h = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    diag2 = enclose_w**2 + enclose_h**2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / diag2 + v * alpha)


def gate_loss(gate_logits: Tensor, gate_labels: Tensor, lambda_pos: Sequence[float]) -> Tensor:
    """Paper Eq. 14 as a binary cross-entropy on raw gate logits, summed over gates, mean over images.

    Per gate i: -(lambda_pos_i * y * log sigmoid(z) + (1 - y) * log(1 - sigmoid(z))), computed stably.
    """
    if gate_logits.ndim != 2 or gate_logits.shape != gate_labels.shape:
        raise ValueError(
            f"gate logits {tuple(gate_logits.shape)} and labels {tuple(gate_labels.shape)} must both be (B, G)"
        )
    if gate_logits.shape[1] != len(lambda_pos):
        raise ValueError(f"{gate_logits.shape[1]} gates but {len(lambda_pos)} lambda_pos weights")
    logits = gate_logits.float()
    pos_weight = torch.tensor(tuple(lambda_pos), dtype=logits.dtype, device=logits.device)
    per_gate = F.binary_cross_entropy_with_logits(
        logits, gate_labels.to(logits), pos_weight=pos_weight, reduction="none"
    )
    return per_gate.sum(dim=1).mean()


def _empty_level(device: torch.device) -> LevelTargets:
    """Targets of a level that matched nothing."""
    long = torch.zeros(0, dtype=torch.long, device=device)
    return LevelTargets(
        long, long, long, long, torch.zeros(0, 4, device=device), torch.zeros(0, 2, device=device), long
    )


def build_targets(
    targets: Tensor,
    anchors_px: Tensor,
    strides: Sequence[int],
    grid_shapes: Sequence[tuple[int, int]],
    anchor_t: float,
) -> list[LevelTargets]:
    """Assign ground-truth boxes to anchors and cells of every level, as YOLOv5's build_targets.

    targets: (n, 6) [image, cls, cx, cy, w, h] in input pixels; anchors_px: (levels, anchors, 2) pixels;
    grid_shapes: (height, width) in cells per level. A box matches an anchor when max(r, 1/r) < anchor_t
    for both sides (r = box size / anchor size); each match also trains the neighbour cell in x and in y
    whose shared edge lies within 0.5 cell of the centre, so centre offsets lie in (-0.5, 1.5).
    """
    device = anchors_px.device
    targets = targets.to(device=device, dtype=torch.float32)
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must have shape (n, 6) [image, cls, cx, cy, w, h], got {tuple(targets.shape)}")
    g = NEIGHBOUR_BIAS
    offsets = torch.tensor(_CELL_OFFSETS, dtype=torch.float32, device=device) * g
    levels: list[LevelTargets] = []
    for anchors_lvl, stride, (grid_h, grid_w) in zip(anchors_px, strides, grid_shapes):
        if targets.shape[0] == 0:
            levels.append(_empty_level(device))
            continue
        anchors = anchors_lvl.float() / stride  # (na, 2) grid units
        gxy_all = targets[:, 2:4] / stride
        gwh_all = targets[:, 4:6] / stride
        ratio = gwh_all[None] / anchors[:, None]  # (na, n, 2)
        matched = torch.maximum(ratio, 1 / ratio).amax(dim=2) < anchor_t  # (na, n)
        a_idx, t_idx = matched.nonzero(as_tuple=True)
        gxy, gwh, tgt = gxy_all[t_idx], gwh_all[t_idx], targets[t_idx]

        inverse = torch.tensor((grid_w, grid_h), dtype=torch.float32, device=device) - gxy
        left, up = ((gxy % 1 < g) & (gxy > 1)).T
        right, down = ((inverse % 1 < g) & (inverse > 1)).T
        use = torch.stack((torch.ones_like(left), left, up, right, down))  # (5, m)
        which, row = use.nonzero(as_tuple=True)
        gxy, gwh, tgt, a_sel = gxy[row], gwh[row], tgt[row], a_idx[row]
        cell = (gxy - offsets[which]).long()
        gi = cell[:, 0].clamp(0, grid_w - 1)
        gj = cell[:, 1].clamp(0, grid_h - 1)
        box_xy = gxy - torch.stack((gi, gj), dim=1).float()
        levels.append(
            LevelTargets(
                image=tgt[:, 0].long(),
                anchor=a_sel,
                gj=gj,
                gi=gi,
                box=torch.cat((box_xy, gwh), dim=1),
                anchor_wh=anchors[a_sel],
                cls=tgt[:, 1].long(),
            )
        )
    return levels


class DHLoss:
    """DH-Net training loss: YOLOv5 detection loss on the P3/P4/P5 maps plus lambda times the gate loss.

    Returns (L_det + lambda * L_gate) * batch_size, the scale YOLOv5's optimiser settings assume.
    """

    def __init__(
        self,
        nc: int,
        anchors_px: Tensor | Sequence[Sequence[Sequence[float]]] = DEFAULT_ANCHORS_PX,
        strides: Sequence[int] = STRIDES,
        imgsz: int = 640,
        cfg: LossConfig | None = None,
        *,
        balance: Sequence[float] = OBJ_BALANCE,
        label_smoothing: float = 0.0,
        cls_pw: float = 1.0,
        obj_pw: float = 1.0,
    ) -> None:
        """Fix the class count, anchors, strides, input size and gains (the pipeline's `train.loss`).

        Gains are rescaled as YOLOv5: box * 3/nl, cls * nc/80 * 3/nl, obj * (imgsz/640)^2 * 3/nl (nl = levels);
        balance weighs each level's objectness, cls_pw/obj_pw are the BCE positive weights.
        """
        cfg = cfg or LossConfig()
        anchors = torch.as_tensor(anchors_px, dtype=torch.float32)
        if nc < 1:
            raise ValueError(f"nc must be >= 1, got {nc}")
        if imgsz <= 0:
            raise ValueError(f"imgsz must be > 0, got {imgsz}")
        if anchors.ndim != 3 or anchors.shape[2] != 2 or anchors.shape[0] != len(strides):
            raise ValueError(
                f"anchors_px must be (levels, anchors, 2) with one level per stride, got {tuple(anchors.shape)}"
            )
        if len(balance) != len(strides):
            raise ValueError(f"{len(balance)} balance weights for {len(strides)} levels")
        if any(b < 0 for b in balance):
            raise ValueError("loss settings balance must be >= 0")
        if cls_pw <= 0 or obj_pw <= 0:
            raise ValueError(f"loss settings cls_pw and obj_pw must be > 0, got {cls_pw}, {obj_pw}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"loss setting label_smoothing must be in [0, 1), got {label_smoothing}")
        nl = len(strides)
        self.nc = nc
        self.na = int(anchors.shape[1])
        self.anchors_px = anchors
        self.strides = tuple(int(s) for s in strides)
        self.cfg = cfg
        self.balance = tuple(float(b) for b in balance)
        self.cls_pw, self.obj_pw = float(cls_pw), float(obj_pw)
        self.box_gain = cfg.box * 3 / nl
        self.cls_gain = cfg.cls * nc / 80 * 3 / nl
        self.obj_gain = cfg.obj * (imgsz / 640) ** 2 * 3 / nl
        self.cls_pos = 1.0 - 0.5 * label_smoothing
        self.cls_neg = 0.5 * label_smoothing

    def _split_maps(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Reshape raw Detect maps (B, na*(nc+5), h, w) to (B, na, h, w, nc+5) in float32."""
        if len(maps) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} detection maps, got {len(maps)}")
        out = []
        no = self.nc + 5
        for level, p in enumerate(maps):
            if p.ndim != 4 or p.shape[1] != self.na * no:
                raise ValueError(
                    f"map of level {level} must be (B, {self.na * no}, h, w) for nc={self.nc}, got {tuple(p.shape)}"
                )
            b, _, h, w = p.shape
            out.append(p.float().view(b, self.na, no, h, w).permute(0, 1, 3, 4, 2))
        return out

    def terms(
        self, maps: Sequence[Tensor], gate_logits: Tensor, targets: Tensor, gate_labels: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(L_det, L_gate, items) of one batch, per image and with their graphs (Eq. 8 and Eq. 14).

        maps P3..P5, gate logits (B, G), targets (n, 6) in pixels, gate labels (B, G); items holds the
        detached box, obj and cls parts of L_det.
        """
        preds = self._split_maps(maps)
        device = preds[0].device
        batch = preds[0].shape[0]
        if gate_logits.shape[0] != batch:
            raise ValueError(f"gate logits cover {gate_logits.shape[0]} images, maps cover {batch}")
        grids = [(p.shape[2], p.shape[3]) for p in preds]
        level_targets = build_targets(
            targets, self.anchors_px.to(device), self.strides, grids, self.cfg.anchor_t
        )
        obj_pos_weight = torch.tensor([self.obj_pw], device=device)
        cls_pos_weight = torch.tensor([self.cls_pw], device=device)
        zero = preds[0].new_zeros(())
        lbox, lobj, lcls = zero, zero, zero
        for level, (p, t) in enumerate(zip(preds, level_targets)):
            tobj = torch.zeros(p.shape[:4], dtype=p.dtype, device=device)
            if len(t):
                sel = p[t.image, t.anchor, t.gj, t.gi]  # (m, nc+5)
                pxy = sel[:, 0:2].sigmoid() * 2 - 0.5
                pwh = (sel[:, 2:4].sigmoid() * 2) ** 2 * t.anchor_wh
                ciou = bbox_ciou(torch.cat((pxy, pwh), dim=1), t.box)
                lbox = lbox + (1.0 - ciou).mean()
                tobj[t.image, t.anchor, t.gj, t.gi] = ciou.detach().clamp(min=0).to(tobj.dtype)
                if self.nc > 1:
                    cls_target = torch.full_like(sel[:, 5:], self.cls_neg)
                    cls_target[torch.arange(len(t), device=device), t.cls] = self.cls_pos
                    lcls = lcls + F.binary_cross_entropy_with_logits(
                        sel[:, 5:], cls_target, pos_weight=cls_pos_weight
                    )
            lobj = lobj + self.balance[level] * F.binary_cross_entropy_with_logits(
                p[..., 4], tobj, pos_weight=obj_pos_weight
            )
        lbox = lbox * self.box_gain
        lobj = lobj * self.obj_gain
        lcls = lcls * self.cls_gain
        lgate = gate_loss(gate_logits.to(device), gate_labels.to(device), self.cfg.lambda_pos)
        items = {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}
        return lbox + lobj + lcls, lgate, items

    def __call__(
        self, maps: Sequence[Tensor], gate_logits: Tensor, targets: Tensor, gate_labels: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one batch: maps P3..P5, gate logits (B, G), targets (n, 6) in pixels, gate labels (B, G).

        Items (detached, per image, i.e. before the batch-size factor): box, obj, cls, det, gate, total.
        """
        det, lgate, items = self.terms(maps, gate_logits, targets, gate_labels)
        per_image = det + self.cfg.gate_lambda * lgate  # Eq. 15
        items.update(det=det.detach(), gate=lgate.detach(), total=per_image.detach())
        return per_image * gate_logits.shape[0], items
