"""Build the exit-level evaluation cache: one pass of every head, detections of every exit.

For each image the pass records both gate scores and, for k = 1, 2, 3, the detections after NMS
over heads 1..k with their COCO match flags, so any threshold profile scores from the cache alone.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import DetectionDataset, ImageRecord, collate
from ..data.gate_labels import gate_targets
from ..model import VAL_NMS, DHNet, NMSConfig, postprocess
from ..model.summary import EXIT_PARTS, part_costs
from .exit_table import ExitDetections, ExitTable, ExitTableError
from .matching import match_image

CACHE_VERSION = 2  # 2: tables built with the inference-folded (Conv+BN fused) model


def dataset_hash(records: Sequence[ImageRecord]) -> str:
    """Content hash of the images' paths, sizes and labels (what the cache was computed on)."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.path.name}|{r.width}|{r.height}|".encode())
        h.update(np.ascontiguousarray(r.boxes, np.float32).tobytes())
        h.update(np.ascontiguousarray(r.classes, np.int64).tobytes())
    return h.hexdigest()


def exit_macs(model: DHNet, imgsz: int) -> tuple[np.ndarray, np.ndarray]:
    """MACs of the stages an image leaving after head 1, 2, 3 runs, and of gate 1 and gate 2."""
    parts = part_costs(model, imgsz)
    stages = np.array([sum(parts[p].gmacs for p in EXIT_PARTS[k] if p.startswith("stage")) * 1e9 for k in (1, 2, 3)])
    gates = np.array([parts[g].gmacs * 1e9 if g in parts else 0.0 for g in ("gate1", "gate2")])
    return stages, gates


def _boxes_xyxy(rows: torch.Tensor) -> np.ndarray:
    xywh = rows[:, 2:6].numpy().astype(np.float64)
    return np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)


@torch.no_grad()
def build_exit_table(model: DHNet, records: Sequence[ImageRecord], imgsz: int, *, eps: float,
                     nms: NMSConfig = VAL_NMS, batch_size: int = 16, device: torch.device | None = None,
                     metadata: dict | None = None, progress: bool = True) -> ExitTable:
    """Run all heads once over the records and tabulate every exit's detections and match flags.

    The model runs inference-folded (Conv+BN fused), as every deployment path runs it.
    """
    device = device or torch.device("cpu")
    model = model.to(device).eval().fused()
    loader = DataLoader(DetectionDataset(records, imgsz, augment=False), batch_size=batch_size, collate_fn=collate)
    anchors = model.anchors_px.detach().cpu()
    nc = model.nc
    scores, labels, gt_counts = [], [], []
    per_level: list[list[tuple[np.ndarray, ...]]] = [[], [], []]
    offset = 0
    for images, targets, _ in tqdm(loader, desc=f"exit table @{imgsz}", leave=False, disable=not progress or None):
        maps, logits = model(images.to(device).float() / 255)
        b = images.shape[0]
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(gate_targets(targets[:, 4:6], targets[:, 0].long(), b, anchors, eps).numpy().astype(bool))
        gts = []
        for i in range(b):
            rows = targets[targets[:, 0] == i]
            classes = rows[:, 1].numpy().astype(np.int64)
            gts.append((_boxes_xyxy(rows), classes))
            gt_counts.append(np.bincount(classes, minlength=nc)[:nc])
        for k in range(3):
            for i, det in enumerate(postprocess([m.float() for m in maps[: k + 1]], model.anchors_px, model.strides, nms)):
                flags = match_image(gts[i][0], gts[i][1], det.boxes, det.scores, det.classes)
                per_level[k].append((np.full(len(det), offset + i, np.int32), det.scores, det.classes, flags))
        offset += b

    def flat(items: list[tuple[np.ndarray, ...]]) -> ExitDetections:
        if not items:
            return ExitDetections(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 10), bool))
        return ExitDetections(*(np.concatenate([it[j] for it in items]) for j in range(4)))

    stage_macs, gate_macs = exit_macs(model, imgsz)
    return ExitTable(
        gate_scores=np.concatenate(scores).astype(np.float32) if scores else np.zeros((0, 2), np.float32),
        gate_labels=np.concatenate(labels) if labels else np.zeros((0, 2), bool),
        gt_counts=np.stack(gt_counts) if gt_counts else np.zeros((0, nc), np.int64),
        levels=tuple(flat(items) for items in per_level),  # type: ignore[arg-type]
        macs_per_exit=stage_macs,
        gate_macs=gate_macs,
        metadata=metadata or {},
    )


def cache_key(checkpoint_sha256: str, records: Sequence[ImageRecord], imgsz: int, eps: float,
              nms: NMSConfig = VAL_NMS) -> dict:
    """What an exit table depends on; a cached table is reused only when all of it matches."""
    return {"cache_version": CACHE_VERSION, "checkpoint_sha256": checkpoint_sha256,
            "dataset_hash": dataset_hash(records), "imgsz": imgsz, "eps": eps, "nms": asdict(nms)}


def cached_exit_table(model: DHNet, checkpoint_sha256: str, records: Sequence[ImageRecord], imgsz: int, *,
                      eps: float, cache_dir: Path, nms: NMSConfig = VAL_NMS, device: torch.device | None = None,
                      progress: bool = True) -> ExitTable:
    """The exit table from `cache_dir` when its key matches, else built now and saved there."""
    key = cache_key(checkpoint_sha256, records, imgsz, eps, nms)
    path = Path(cache_dir) / f"exit-{checkpoint_sha256[:12]}-{key['dataset_hash'][:12]}-{imgsz}.npz"
    if path.is_file():
        try:
            table = ExitTable.load(path, expect=key)
        except ExitTableError:  # an older format or a damaged file: built again below
            table = None
        if table is not None:
            return table
    table = build_exit_table(model, records, imgsz, eps=eps, nms=nms, device=device, metadata=key, progress=progress)
    table.save(path)
    return table
