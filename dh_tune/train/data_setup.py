"""Resolve a pipeline's dataset into train/val records (the embedded synthetic set by default)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import torch

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


def loader_workers(pipeline: Pipeline) -> int:
    """`data.loader_workers`, or where it is "auto" one loader process per CPU the run's worker has
    (`ray.cpus_per_worker`) beyond those its compute threads take (`train.threads`, else all of them; one thread
    feeding a GPU), at least LOADER_WORKERS_MIN."""
    workers = pipeline.data.loader_workers
    if workers != "auto":
        return int(workers)
    cpus = pipeline.ray.cpus_per_worker
    compute = 1 if pipeline.ray.gpu else pipeline.train.threads or max(1, round(cpus))
    return max(LOADER_WORKERS_MIN, int(cpus) - compute)


LOADER_WORKERS_MIN = 0
"""Loader processes where the compute threads take every CPU: none, since a loader process then only takes
CPU time from the step it would overlap (benchmarks/bench_train_throughput.py measures it)."""


def loader_options(pipeline: Pipeline, device: torch.device) -> dict[str, Any]:
    """DataLoader settings of a run's batches: its workers (kept across epochs, each prefetching a few batches)
    and pinned memory on CUDA."""
    workers = loader_workers(pipeline)
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers:
        options.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=_quiet_worker)
    return options


def _quiet_worker(_: int) -> None:
    """A loader worker augments on one OpenCV thread: the training threads already hold the CPUs."""
    cv2.setNumThreads(1)
