"""An int8 deployment folder from a checkpoint's own dataset: calibrated on training images, scored on validation.

A lower-precision folder is only written with its AP beside the fp32 graphs' AP on the same images in
the same runtime (validation's NMS settings); `accuracy_check` measures both for its manifest.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..data import DataError, ImageRecord, load_dataset
from ..data.images import read_image
from ..evaluate.ap import average_precision
from ..model import VAL_NMS, DHNet
from ..model.checkpoint import CheckpointPipeline
from .dhnet_runtime import Detector, preprocess
from .quantize import AccuracyCheck, quantize_folder

NMS = {"conf": VAL_NMS.conf, "iou": VAL_NMS.iou, "max_det": VAL_NMS.max_det, "multi_label": VAL_NMS.multi_label,
       "max_candidates": VAL_NMS.max_candidates}


def read_images(records: Sequence[ImageRecord]) -> list[np.ndarray]:
    """The records' images as BGR uint8; an unreadable image is an error naming its file."""
    images = []
    for r in records:
        img = read_image(r.path)
        if img is None:
            raise DataError(f"{r.path}: unreadable image")
        images.append(img)
    return images


def folder_ap(folder: Path, runtime: str, records: Sequence[ImageRecord], images: Sequence[np.ndarray],
              num_classes: int, desc: str = "AP") -> dict[str, float]:
    """AP50 and AP50:95 of the folder's early exit on `images` (labels from `records`) under `runtime`."""
    detector = Detector(folder, runtime, allow_other_runtime=True, nms_override=NMS)
    preds = []
    for img in tqdm(images, desc=desc, unit="img", leave=False, disable=None):
        r = detector(img)
        preds.append((r.boxes, r.scores, r.classes))
    ap = average_precision([(r.boxes, r.classes) for r in records], preds, num_classes=num_classes)
    return {"ap50": round(float(ap["ap50"]), 5), "ap50_95": round(float(ap["ap50_95"]), 5)}


def accuracy_check(records: Sequence[ImageRecord], runtime: str, num_classes: int, source: str) -> AccuracyCheck:
    """A check that scores the fp32 and the int8 folder on `records` and returns the manifest's record."""
    images = read_images(records)

    def check(fp32: Path, int8: Path) -> dict[str, Any]:
        a, b = (folder_ap(f, runtime, records, images, num_classes, desc=f"AP {name}")
                for f, name in ((fp32, "fp32"), (int8, "int8")))
        return {"images": len(records), "source": source, "runtime": runtime, "fp32": a, "int8": b,
                "ap50_95_change": round(b["ap50_95"] - a["ap50_95"], 5)}
    return check


def export_int8(model: DHNet, ckpt: dict[str, Any], fp32_folder: Path, out: Path, *, runtime: str, imgsz: int,
                data: str | Path | None = None, calibration_images: int = 64, accuracy_images: int = 300,
                seed: int = 0) -> Path:
    """Quantize `fp32_folder` into `out`, calibrated on `calibration_images` training images drawn with `seed`;
    both folders' AP on the first `accuracy_images` validation images (under `runtime`) go in its manifest.

    The dataset is `data`, or the checkpoint's own; its splits are the checkpoint's pipeline's.
    """
    trained = CheckpointPipeline.of(ckpt)
    ds = load_dataset(data or ckpt["dataset"], fmt=None if data else trained.data_format)
    train, val = trained.train_split, trained.val_split
    for split in (train, val):
        if not ds.splits.get(split):
            raise DataError(f"{ds.root}: no images in split '{split}' (int8 calibrates on '{train}', scores on '{val}')")
    pool = ds.splits[train]
    picked = np.random.default_rng(seed).choice(len(pool), size=min(calibration_images, len(pool)), replace=False)
    calibration = [preprocess(img, imgsz)[0] for img in read_images([pool[i] for i in sorted(picked)])]
    scored = list(ds.splits[val])[:accuracy_images]
    return quantize_folder(model, fp32_folder, out, calibration,
                           calibration_source=f"{len(calibration)} images of split '{train}' of {ds.root}",
                           measure=accuracy_check(scored, runtime, model.nc, f"split '{val}' of {ds.root}"))
