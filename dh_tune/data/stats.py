"""Dataset statistics in the paper's Table 1 form: images needing the small, medium, large heads.

Boxes are scaled to the letterboxed network input of a given size before the gate labels of
Eq. 3-7 are computed, so the counts are what training at that size will see.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dh_tune.model.config import DEFAULT_ANCHORS_PX

from .gate_labels import ArrayLike, cascade_labels, head_responsibility
from .letterbox import letterbox_scale
from .records import Dataset, ImageRecord

HEAD_NAMES = ("small", "medium", "large")


@dataclass
class SplitStats:
    """Counts of one split: images, images whose cascaded phi^i is 1 per head, objects per class."""

    images: int
    heads: list[int]
    empty: int
    instances: list[int]

    def as_dict(self) -> dict:
        """JSON-ready form: {'images', 'heads', 'empty', 'instances'}."""
        return {"images": self.images, "heads": self.heads, "empty": self.empty, "instances": self.instances}


def image_head_labels(records: Sequence[ImageRecord], imgsz: int, eps: float = 4.0,
                      anchors_px: ArrayLike = DEFAULT_ANCHORS_PX) -> torch.Tensor:
    """Cascaded labels phi^1..phi^L (Eq. 7) of every image, (len(records), L) bool.

    Each image's boxes are scaled as the letterbox to imgsz scales them.
    """
    sizes, owners = [], []
    for index, record in enumerate(records):
        if len(record.boxes):
            scale = letterbox_scale(record.width, record.height, imgsz)
            sizes.append((record.boxes[:, 2:] - record.boxes[:, :2]).astype(np.float64) * scale)
            owners.append(np.full(len(record.boxes), index))
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    image_index = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    return cascade_labels(head_responsibility(wh, anchors_px, eps), image_index, len(records))


def split_stats(records: Sequence[ImageRecord], nc: int, imgsz: int, eps: float = 4.0,
                anchors_px: ArrayLike = DEFAULT_ANCHORS_PX) -> SplitStats:
    """Table 1 counts and per-class instance counts of one split."""
    labels = image_head_labels(records, imgsz, eps, anchors_px)
    classes = np.concatenate([r.classes for r in records]) if records else np.zeros(0, np.int64)
    return SplitStats(images=len(records), heads=[int(v) for v in labels.sum(0)],
                      empty=sum(1 for r in records if not len(r.boxes)),
                      instances=[int(v) for v in np.bincount(classes, minlength=nc)[:nc]])


def dataset_stats(dataset: Dataset, imgsz: int, eps: float = 4.0) -> dict[str, SplitStats]:
    """`split_stats` for every split of a dataset, with the default anchors."""
    return {name: split_stats(records, dataset.nc, imgsz, eps) for name, records in dataset.splits.items()}


def head_shares(stats: SplitStats) -> dict[str, float]:
    """Shares of images by the deepest head they need: only head 1 (incl. no object), head 2, head 3."""
    if stats.images == 0:
        return {"head1_only": 0.0, "no_object": 0.0, "up_to_head2": 0.0, "head3": 0.0}
    n = stats.images
    return {"head1_only": (n - stats.heads[1]) / n, "no_object": stats.empty / n,
            "up_to_head2": (stats.heads[1] - stats.heads[2]) / n, "head3": stats.heads[2] / n}


def format_table(stats: dict[str, SplitStats], names: list[str], imgsz: int, eps: float) -> str:
    """Plain-text Table 1 (images per split needing each head) and per-class instance counts."""
    lines = [f"Images needing each head (imgsz {imgsz}, eps {eps:g}; phi^i of Eq. 7)",
             f"{'split':<10}{'images':>8}{'no object':>11}" + "".join(f"{h:>9}" for h in HEAD_NAMES)]
    for split, s in stats.items():
        lines.append(f"{split:<10}{s.images:>8}{s.empty:>11}" + "".join(f"{v:>9}" for v in s.heads))
    width = max([len(n) for n in names] + [5])
    lines += ["", f"{'class':<{width}}" + "".join(f"{split:>10}" for split in stats)]
    for index, name in enumerate(names):
        lines.append(f"{name:<{width}}" + "".join(f"{s.instances[index]:>10}" for s in stats.values()))
    return "\n".join(lines)
