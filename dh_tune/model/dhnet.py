"""DH-Net: YOLOv5 v6/v7 with its three heads run in order (P3, P4, P5) and two gates.

The network reads top-down like the paper's Fig. 2: stage 1 is the backbone, the neck and the
P3 head; gate 1 decides whether stage 2 (P4 head) runs; gate 2 decides stage 3 (P5 head).
Layer indices in `self.model` are YOLOv5's, so YOLOv5 state dicts load by name.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from ..gating import gate_rule
from .blocks import C3, SPPF, Concat, Conv, in_fp32
from .config import DEFAULT_ANCHORS_PX, STRIDES, Scale, resolve_scale
from .gate import Gate, scale_gradient
from .head import Detect

if TYPE_CHECKING:
    from pathlib import Path

    from .yolov5 import YOLOv5Source


def build_yolov5_layers(scale: Scale, nc: int, anchors_px: Sequence) -> nn.ModuleList:
    """The 25 layers of YOLOv5 v6/v7 (models/yolov5s.yaml), index i = YOLOv5's `model.{i}`."""
    ch, n = scale.channels, scale.repeats
    c64, c128, c256, c512, c1024 = ch(64), ch(128), ch(256), ch(512), ch(1024)
    return nn.ModuleList([
        Conv(3, c64, 6, 2, 2),                    # 0  P1/2
        Conv(c64, c128, 3, 2),                    # 1  P2/4
        C3(c128, c128, n(3)),                     # 2
        Conv(c128, c256, 3, 2),                   # 3  P3/8
        C3(c256, c256, n(6)),                     # 4  -> concat at 16
        Conv(c256, c512, 3, 2),                   # 5  P4/16
        C3(c512, c512, n(9)),                     # 6  -> concat at 12
        Conv(c512, c1024, 3, 2),                  # 7  P5/32
        C3(c1024, c1024, n(3)),                   # 8
        SPPF(c1024, c1024, 5),                    # 9
        Conv(c1024, c512, 1, 1),                  # 10 lateral, kept for stage 3
        nn.Upsample(None, 2, "nearest"),          # 11
        Concat(),                                 # 12 [11, 6]
        C3(2 * c512, c512, n(3), shortcut=False), # 13
        Conv(c512, c256, 1, 1),                   # 14 lateral, kept for stage 2
        nn.Upsample(None, 2, "nearest"),          # 15
        Concat(),                                 # 16 [15, 4]
        C3(2 * c256, c256, n(3), shortcut=False), # 17 P3 output (small objects)
        Conv(c256, c256, 3, 2),                   # 18
        Concat(),                                 # 19 [18, 14]
        C3(2 * c256, c512, n(3), shortcut=False), # 20 P4 output (medium objects)
        Conv(c512, c512, 3, 2),                   # 21
        Concat(),                                 # 22 [21, 10]
        C3(2 * c512, c1024, n(3), shortcut=False),# 23 P5 output (large objects)
        Detect(nc, anchors_px, (c256, c512, c1024)),  # 24
    ])


class Stage1(NamedTuple):
    """What stage 1 hands on: P3 features and map, and the two laterals later stages need."""

    p3: torch.Tensor
    p3_map: torch.Tensor
    lateral14: torch.Tensor
    lateral10: torch.Tensor


@dataclass
class DynamicOutput:
    """Result of a dynamic forward over a batch.

    `maps[k]` holds the raw map of head k+1 for the images listed in `rows[k]` (batch indices);
    `exit_level[b]` is 1, 2 or 3; `gate_scores[b]` is NaN for a gate that did not run.
    """

    maps: list[torch.Tensor]
    rows: list[torch.Tensor]
    exit_level: torch.Tensor
    gate_scores: torch.Tensor

    def image_maps(self, b: int) -> list[torch.Tensor]:
        """Raw maps (1, C, h, w) of the heads that ran for image b, in head order."""
        out = []
        for m, r in zip(self.maps, self.rows):
            hit = (r == b).nonzero()
            if hit.numel() == 0:
                break
            out.append(m[hit[0, 0]].unsqueeze(0))
        return out


class DHNet(nn.Module):
    """YOLOv5 with ordered heads and learned gates; `gates=False` gives plain static YOLOv5."""

    yolov5_source: YOLOv5Source | None = None
    """The YOLOv5 file a model made by `from_yolov5` holds the weights of; None otherwise."""

    def __init__(
        self,
        scale: str | Scale | tuple[float, float] = "s",
        nc: int = 80,
        anchors_px: Sequence = DEFAULT_ANCHORS_PX,
        gates: bool = True,
    ) -> None:
        super().__init__()
        self.scale = resolve_scale(scale)
        self.nc = nc
        self.model = build_yolov5_layers(self.scale, nc, anchors_px)
        c_p3, c_p4 = self.scale.channels(256), self.scale.channels(512)
        self.gates = nn.ModuleList([Gate(c_p3), Gate(c_p4)]) if gates else None
        self.strides = STRIDES
        _init_batchnorm(self)

    @property
    def is_fused(self) -> bool:
        """True once `fuse` has folded every BatchNorm into its convolution (inference only)."""
        return not any(isinstance(m, nn.BatchNorm2d) for m in self.modules())

    def fuse(self) -> DHNet:
        """Fold Conv+BatchNorm in place for inference, the way YOLOv5 does; returns self in eval mode.

        Outputs equal the unfused model's within float rounding; the fused model cannot be trained
        or saved as a checkpoint (its state dict has no BatchNorm entries).
        """
        self.eval()
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self

    def fused(self) -> DHNet:
        """A fused copy for inference; this model is left as it is."""
        return self if self.is_fused else copy.deepcopy(self).fuse()

    @property
    def detect(self) -> Detect:
        head = self.model[24]
        assert isinstance(head, Detect)
        return head

    @property
    def anchors_px(self) -> torch.Tensor:
        """Anchors in network-input pixels, (3 levels, 3 anchors, 2)."""
        return self.detect.anchors_px

    # --- the three stages -------------------------------------------------------------------
    def stage1(self, x: torch.Tensor) -> Stage1:
        """Backbone, neck top-down path and the P3 head (layers 0-17)."""
        m = self.model
        x = m[2](m[1](m[0](x)))
        p3_backbone = m[4](m[3](x))
        p4_backbone = m[6](m[5](p3_backbone))
        x = m[9](m[8](m[7](p4_backbone)))
        lateral10 = m[10](x)
        x = m[13](m[12]([m[11](lateral10), p4_backbone]))
        lateral14 = m[14](x)
        p3 = m[17](m[16]([m[15](lateral14), p3_backbone]))
        return Stage1(p3, self.detect.forward_level(0, p3), lateral14, lateral10)

    def stage2(self, p3: torch.Tensor, lateral14: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bottom-up to P4 and the P4 head (layers 18-20); returns (P4 features, P4 map)."""
        m = self.model
        p4 = m[20](m[19]([m[18](p3), lateral14]))
        return p4, self.detect.forward_level(1, p4)

    def stage3(self, p4: torch.Tensor, lateral10: torch.Tensor) -> torch.Tensor:
        """Bottom-up to P5 and the P5 head (layers 21-23); returns the P5 map."""
        m = self.model
        p5 = m[23](m[22]([m[21](p4), lateral10]))
        return self.detect.forward_level(2, p5)

    def gate_logit(self, index: int, features: torch.Tensor) -> torch.Tensor:
        """Raw logit of gate `index` (0 reads P3 and decides stage 2; 1 reads P4, stage 3)."""
        if self.gates is None:
            raise RuntimeError("this DHNet was built without gates (static YOLOv5)")
        return in_fp32(self.gates[index], features)

    # --- forwards ---------------------------------------------------------------------------
    def forward_static(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Plain YOLOv5: the raw P3, P4, P5 maps, each (B, 3*(nc+5), h, w)."""
        s1 = self.stage1(x)
        p4, p4_map = self.stage2(s1.p3, s1.lateral14)
        return [s1.p3_map, p4_map, self.stage3(p4, s1.lateral10)]

    def forward(self, x: torch.Tensor, gate_trunk_grad: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Training forward (paper 2.1): all three maps and both gate logits (B, 2), always.

        `gate_trunk_grad` is the share of the gates' gradient that reaches the trunk: 1 trains end to
        end as the paper does; 0 trains the gates on the detector's features without changing them.
        """
        s1 = self.stage1(x)
        p4, p4_map = self.stage2(s1.p3, s1.lateral14)
        p5_map = self.stage3(p4, s1.lateral10)
        gate_in = (scale_gradient(s1.p3, gate_trunk_grad), scale_gradient(p4, gate_trunk_grad))
        logits = torch.stack([self.gate_logit(0, gate_in[0]), self.gate_logit(1, gate_in[1])], 1)
        return [s1.p3_map, p4_map, p5_map], logits

    @torch.no_grad()
    def forward_dynamic(self, x: torch.Tensor, thresholds: tuple[float, float] = (0.5, 0.5)) -> DynamicOutput:
        """Early-exit inference (Eq. 1-2): an image whose gate score is below its threshold stops.

        Images that exit are dropped from the later stages, so no compute is spent on them. A gate
        whose threshold decides alone (<= 0: all continue, >= 1: all stop) is not computed.
        """
        b = x.shape[0]
        rows1 = torch.arange(b, device=x.device)
        scores = torch.full((b, 2), float("nan"), device=x.device)
        exit_level = torch.ones(b, dtype=torch.int8, device=x.device)

        s1 = self.stage1(x)
        maps, rows = [s1.p3_map], [rows1]
        go2 = self._gate(0, s1.p3, thresholds[0], scores, rows1)
        if go2 is None or go2.any():
            rows2 = rows1 if go2 is None else rows1[go2]
            p3, lat14, lat10 = _take(go2, s1.p3, s1.lateral14, s1.lateral10)
            p4, p4_map = self.stage2(p3, lat14)
            maps.append(p4_map)
            rows.append(rows2)
            exit_level[rows2] = 2
            go3 = self._gate(1, p4, thresholds[1], scores, rows2)
            if go3 is None or go3.any():
                rows3 = rows2 if go3 is None else rows2[go3]
                p4, lat10 = _take(go3, p4, lat10)
                maps.append(self.stage3(p4, lat10))
                rows.append(rows3)
                exit_level[rows3] = 3
        return DynamicOutput(maps, rows, exit_level, scores)

    def _gate(self, index: int, features: torch.Tensor, threshold: float, scores: torch.Tensor,
              rows: torch.Tensor) -> torch.Tensor | None:
        """Which of `rows` continue past gate `index`: None for all, a boolean mask otherwise.

        The gate runs (and its scores are recorded) only when the threshold leaves it a decision.
        """
        rule = gate_rule(threshold)
        if rule == "continue":
            return None
        if rule == "stop":
            return torch.zeros(len(rows), dtype=torch.bool, device=features.device)
        # Scored in fp32 whatever the network's precision (fp16/AMP), so thresholds near 0 or 1 keep their meaning.
        score = torch.sigmoid(self.gate_logit(index, features).float())
        scores[rows, index] = score
        return score >= threshold

    @classmethod
    def from_yolov5(cls, path: str | Path, gates: bool = True, seed: int = 0) -> DHNet:
        """A DH-Net with a YOLOv5 v6.0-v7.0 checkpoint's weights (EMA when present) or a state dict's, in eval mode.

        The file is read without YOLOv5 and without running code from it; the gates start from `seed`.
        """
        from .yolov5 import load_exactly, read_yolov5

        sd, source = read_yolov5(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(source.scale, nc=source.nc, anchors_px=source.anchors_px, gates=gates)
        load_exactly(model, sd, source)
        model.yolov5_source = source
        return model.eval()

    def load_yolov5(self, state_dict_or_path):
        """Load YOLOv5-named weights by name and shape; returns a report of what was loaded and skipped."""
        from .weights import load_yolov5_weights

        return load_yolov5_weights(self, state_dict_or_path)


def _take(keep: torch.Tensor | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows of each tensor where keep is True; untouched tensors when every row is kept (or keep is None)."""
    if keep is None or bool(keep.all()):
        return tensors
    return tuple(t[keep] for t in tensors)


def _init_batchnorm(model: nn.Module) -> None:
    """YOLOv5's BatchNorm settings (eps 1e-3, momentum 0.03)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-3
            m.momentum = 0.03
