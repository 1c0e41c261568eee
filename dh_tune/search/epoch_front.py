"""The scalar a search trial reports as it trains: the hypervolume of its threshold front on a few images.

An exit table of `report_images` calibration images at one deployment size scores a grid of gate thresholds
(and the static networks) against the device's latency table. The share of the (AP, latency) box that the
front dominates, up to a reference point fixed for the whole search (AP 0, 1.05 x the slowest profile), is
what early stopping compares between trials at equal epochs: one number that rises with AP at every speed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import ImageRecord
from ..evaluate.exit_cache import build_exit_table
from ..latency import LatencyTable, latency_stats
from ..model import DHNet
from .inner import DeploymentSpace, front_hypervolume, front_of, grid_sweep, static_sweep
from .pareto import select_for_budget
from .records import FrontPoint

REFERENCE_MARGIN = 1.05
"""The reference latency is this much above the slowest profile, so that profile still adds area."""


def reference_latency(table: LatencyTable, budget_stat: str) -> float:
    """The fixed reference latency of a size: every image through all heads with both gates computed."""
    return REFERENCE_MARGIN * latency_stats(np.array([0.0, 0.0, 1.0]), table, (0.5, 0.5))[budget_stat]


def budget_point(front: list[FrontPoint], metric: str, budget_ms: float) -> dict[str, float]:
    """The best profile of a front within the budget (AP and latency), or its fastest one with AP 0."""
    choice = select_for_budget(np.array([c.ap(metric) for c in front]),
                               np.array([c.budget_latency_ms for c in front]), budget_ms)
    pick = front[choice.index] if choice.index is not None else min(front, key=lambda c: c.budget_latency_ms)
    return {"ap": pick.ap(metric) if choice.feasible else 0.0, "latency_ms": pick.budget_latency_ms,
            "feasible": float(choice.feasible)}


def report_records(records: list[ImageRecord], calibration: np.ndarray, count: int) -> list[ImageRecord]:
    """`count` calibration images spread evenly over the calibration set (all of them when it is smaller)."""
    picked = calibration[np.unique(np.linspace(0, len(calibration) - 1, min(count, len(calibration))).round()
                                   .astype(np.int64))]
    return [records[i] for i in picked]


@dataclass
class EpochFront:
    """Scores a model every `every` epochs (and at the last): front hypervolume and its budget point.

    Plain data, handed to the training loop (a Ray Train worker too), which calls it on rank 0 after validation.
    """

    records: list[ImageRecord]
    imgsz: int
    latency: LatencyTable
    eps: float
    metric: str
    budget_stat: str
    budget_ms: float
    grid_steps: int
    every: int

    @property
    def reference_ms(self) -> float:
        return reference_latency(self.latency, self.budget_stat)

    def due(self, epoch: int, epochs: int) -> bool:
        """True after the epochs this scorer reports on (0-based `epoch`)."""
        return (epoch + 1) % self.every == 0 or epoch + 1 == epochs

    def __call__(self, model: DHNet, device: torch.device) -> dict[str, Any]:
        """front_hv (share of the reference box dominated, 0..1) and the best profile within the budget
        (budget_ap, budget_latency_ms, budget_feasible)."""
        table = build_exit_table(model, self.records, self.imgsz, eps=self.eps, device=device, progress=False)
        space = DeploymentSpace({self.imgsz: table}, {self.imgsz: self.latency}, budget_stat=self.budget_stat)
        front = front_of(static_sweep(space) + grid_sweep(space, self.grid_steps), self.metric)
        reference = self.reference_ms
        point = budget_point(front, self.metric, self.budget_ms)
        return {"front_hv": front_hypervolume(front, self.metric, reference) / reference,
                **{f"budget_{k}": v for k, v in point.items()}}
