"""What the inner search needs for one trained model: its exit tables at every deployment size that has
a device latency table (the tables themselves come from dh_tune.latency.table_sources).
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import ImageRecord
from ..evaluate.exit_cache import cached_exit_table
from ..evaluate.holdout import Holdout
from ..latency import LatencyTable
from ..model.checkpoint import file_sha256, load_model
from .inner import DeploymentSpace


@dataclass(frozen=True)
class EvaluationImages:
    """The images a model is scored on and, when given, their split into calibration and held-out test images."""

    records: Sequence[ImageRecord]
    holdout: Holdout | None = None


def deployment_space(checkpoint: str | Path, images: EvaluationImages, sizes: Sequence[int],
                     latency: dict[int, LatencyTable], *, eps: float, cache_dir: Path, progress: bool = True,
                     budget_stat: str = "mean") -> DeploymentSpace:
    """Exit tables of the checkpoint on the evaluation images at every size that has a latency table; with
    a holdout, profiles are scored on its calibration images and reported on its test images."""
    records, holdout = images.records, images.holdout
    model, _ = load_model(checkpoint)
    sha = file_sha256(checkpoint)
    wanted = sorted((s for s in sizes if s in latency), reverse=True)  # largest first: the longest job starts early

    def build(size: int):
        return cached_exit_table(model, sha, records, size, eps=eps, cache_dir=cache_dir, progress=progress)

    # One size per core, one torch thread each: NMS, matching and Python overhead run in parallel too
    # (about 1.5x faster than one size at a time with all threads on 2 cores).
    workers = max(1, min(len(wanted), torch.get_num_threads()))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, previous // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            tables = dict(zip(wanted, pool.map(build, wanted)))
    finally:
        torch.set_num_threads(previous)
    sizes_done = sorted(tables)
    if holdout is None:
        return DeploymentSpace({s: tables[s] for s in sizes_done}, {s: latency[s] for s in sizes_done},
                               budget_stat=budget_stat)
    return DeploymentSpace({s: tables[s].subset(holdout.calibration) for s in sizes_done},
                           {s: latency[s] for s in sizes_done},
                           test_tables={s: tables[s].subset(holdout.test) for s in sizes_done}, budget_stat=budget_stat)
