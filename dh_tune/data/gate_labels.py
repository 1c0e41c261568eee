"""Gate labels of DH-Net (paper Eq. 3-7): which heads each image needs.

A head is responsible for an object when one of its anchors matches the object's width and
height within a factor eps (strictly); an image needs head i when it needs head i+1 or one of
its objects is head i's responsibility. Gate i is trained on phi^{i+1}.
"""
from __future__ import annotations

import numpy as np
import torch

from dh_tune.model.config import DEFAULT_ANCHORS_PX

ArrayLike = torch.Tensor | np.ndarray | list | tuple


def _tensor(x: ArrayLike, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device if device is not None else x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def head_responsibility(wh: ArrayLike, anchors_px: ArrayLike = DEFAULT_ANCHORS_PX, eps: float = 4.0) -> torch.Tensor:
    """phi_k^i of Eq. 3-6: (n, L) bool, True when some anchor of head i fits object k.

    wh: (n, 2) object widths and heights in network-input pixels; anchors_px: (L, A, 2) in the
    same pixels. Fit means max(w/wa, wa/w) < eps and max(h/ha, ha/h) < eps (strict).
    """
    wh = _tensor(wh, torch.float32)
    anchors = _tensor(anchors_px, torch.float32, wh.device)
    if wh.ndim != 2 or wh.shape[1] != 2 or anchors.ndim != 3 or anchors.shape[2] != 2:
        raise ValueError(f"expected wh (n, 2) and anchors (L, A, 2), got {tuple(wh.shape)} and {tuple(anchors.shape)}")
    objects, boxes = wh[:, None, None, :], anchors[None]
    ratio = torch.maximum(objects / boxes, boxes / objects)
    return (ratio < eps).all(dim=-1).any(dim=-1)


def cascade_labels(resp: ArrayLike, image_index: ArrayLike, batch_size: int) -> torch.Tensor:
    """phi^i of Eq. 7 per image: (batch_size, L) bool, phi^i = OR_k phi_k^i OR phi^{i+1}.

    resp: (n, L) per-object responsibility; image_index: (n,) image of each object. Images
    without objects get all zeros; phi^{L+1} = 0.
    """
    resp = _tensor(resp, torch.bool)
    index = _tensor(image_index, torch.long, resp.device).reshape(-1)
    if resp.ndim != 2 or index.shape[0] != resp.shape[0]:
        raise ValueError(f"expected resp (n, L) and image_index (n,), got {tuple(resp.shape)} and {tuple(index.shape)}")
    if index.numel() and (index.min() < 0 or index.max() >= batch_size):
        raise ValueError(f"image_index must lie in [0, {batch_size}), got [{int(index.min())}, {int(index.max())}]")
    per_image = torch.zeros(batch_size, resp.shape[1], dtype=torch.int32, device=resp.device)
    per_image.index_add_(0, index, resp.to(torch.int32))
    # Reverse cumulative OR over heads: a head is needed when it or any later head is.
    return (per_image > 0).flip(1).to(torch.int32).cummax(dim=1).values.flip(1).bool()


def gate_targets(wh: ArrayLike, image_index: ArrayLike, batch_size: int,
                 anchors_px: ArrayLike = DEFAULT_ANCHORS_PX, eps: float = 4.0) -> torch.Tensor:
    """Gate training targets (batch_size, L-1) float: column i-1 is phi^{i+1}, gate i's label.

    wh in network-input pixels; with the default three heads, column 0 trains gate 1 (run head 2?)
    and column 1 trains gate 2 (run head 3?).
    """
    resp = head_responsibility(wh, anchors_px, eps)
    return cascade_labels(resp, image_index, batch_size)[:, 1:].float()


def deepest_head(wh: ArrayLike, anchors_px: ArrayLike = DEFAULT_ANCHORS_PX, eps: float = 4.0) -> torch.Tensor:
    """Deepest responsible head of each object, (n,) int64 in 1..L (0 when no head fits it).

    By Eq. 7 an image needs exactly the heads up to the largest of these over its objects.
    """
    resp = head_responsibility(wh, anchors_px, eps)
    levels = torch.arange(1, resp.shape[1] + 1, device=resp.device)
    return (resp * levels).amax(dim=1) if len(resp) else torch.zeros(0, dtype=torch.long, device=resp.device)
