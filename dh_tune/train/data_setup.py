"""Resolve a pipeline's dataset into train/val records (the embedded synthetic set by default)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import DataError, ImageRecord, default_dataset, load_dataset
from ..pipeline import Pipeline


@dataclass
class Splits:
    """The records a run trains and validates on, with the class names and where they came from."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    names: list[str]
    spec: str


def resolve_dataset(pipeline: Pipeline, dataset_spec: str | None = None) -> str:
    """The dataset path a run uses: the override, the pipeline's, or the synthetic default (created once)."""
    spec = dataset_spec or pipeline.data.dataset
    if spec is None:
        s = pipeline.data.synth
        return str(default_dataset(imgsz=pipeline.data.imgsz, train=s.train, val=s.val, seed=s.seed))
    return str(Path(spec).resolve()) if Path(spec).exists() else str(spec)


def load_splits(pipeline: Pipeline, dataset_spec: str | None = None) -> Splits:
    """Read the dataset and pick the pipeline's train and val splits (val capped by data.val_limit)."""
    spec = resolve_dataset(pipeline, dataset_spec)
    dc = pipeline.data
    options: dict[str, Any] = {}
    if dc.min_images_per_class is not None:
        options["min_images"] = dc.min_images_per_class
    if dc.min_instances is not None:
        options["min_instances"] = dc.min_instances
    ds = load_dataset(spec, fmt=dc.format, **options)
    for split in (dc.train_split, dc.val_split):
        if not ds.splits.get(split):
            raise DataError(f"{spec}: split '{split}' is missing or empty (have: {', '.join(ds.splits) or 'none'})")
    val = ds.splits[dc.val_split]
    if dc.val_limit is not None:
        val = val[: dc.val_limit]
    return Splits(ds.splits[dc.train_split], val, list(ds.names), str(Path(spec)))
