"""Dynamic profiles against static networks, budget by budget, and each trained model's share of the front.

Pure functions over the front points the search pools from every model: a point whose `static_exit` is set is
a network run without gates (one, two or all heads).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .pareto import hypervolume, pareto_front, select_for_budget
from .records import FrontPoint, TrialResult
from .space import is_paper_point


def best_within(points: list[FrontPoint], budget_ms: float, metric: str) -> FrontPoint | None:
    """The highest-AP point whose budget latency (mean, p90 or p99) fits the budget (ties: faster), or None."""
    if not points:
        return None
    choice = select_for_budget(np.array([p.ap(metric) for p in points]),
                               np.array([p.budget_latency_ms for p in points]), budget_ms)
    return points[choice.index] if choice.index is not None else None


COMPARED_KEYS = ("trial_id", "imgsz", "t1", "t2", "heads", "static_exit", "ap50", "ap50_95", "latency_ms",
                 "budget_latency_ms")
"""What a profile's comparison records of the best static and the best gated point."""


@dataclass(frozen=True)
class BudgetComparison:
    """The best static network and the best gated profile within one budget, and the AP between them."""

    budget_ms: float
    metric: str
    best_static: FrontPoint | None
    best_dynamic: FrontPoint | None
    min_gain: float = 0.0

    @property
    def dynamic_gain(self) -> float | None:
        """AP of the best gated profile minus AP of the best static network (None if either is missing)."""
        if self.best_static is None or self.best_dynamic is None:
            return None
        return float(self.best_dynamic.ap(self.metric) - self.best_static.ap(self.metric))

    @property
    def static_wins(self) -> bool:
        """True when no gated profile beats the best static network within the budget by more than `min_gain`."""
        gain = self.dynamic_gain
        return self.best_static is not None and (gain is None or gain <= self.min_gain)

    def to_dict(self) -> dict[str, Any]:
        def pick(p: FrontPoint | None) -> dict[str, Any] | None:
            doc = p.to_dict() if p is not None else None
            return None if doc is None else {k: doc.get(k) for k in COMPARED_KEYS}

        return {"metric": self.metric, "best_static": pick(self.best_static),
                "best_dynamic": pick(self.best_dynamic), "dynamic_gain": self.dynamic_gain,
                "min_dynamic_gain": self.min_gain, "static_wins": self.static_wins}

    def choice(self, best: FrontPoint) -> FrontPoint:
        """The point to export: `best` (the most accurate within the budget) unless a static network wins."""
        return self.best_static if self.static_wins and self.best_static is not None else best


def compare_budget(points: list[FrontPoint], budget_ms: float, metric: str, min_gain: float = 0.0) -> BudgetComparison:
    """Best static and best gated point within `budget_ms`; gated must beat static by more than `min_gain`."""
    static = [p for p in points if p.is_static]
    dynamic = [p for p in points if not p.is_static]
    return BudgetComparison(budget_ms, metric, best_within(static, budget_ms, metric),
                            best_within(dynamic, budget_ms, metric), min_gain)


@dataclass(frozen=True)
class ModelSummary:
    """One trained model in the summary and the index: role, setting, AP with all heads, its front's volume."""

    trial_id: str
    role: str
    checkpoint: str | None
    params: dict[str, float]
    paper_point: bool
    ap50_all_heads: float | None
    ap50_95_all_heads: float | None
    gate_accuracy: tuple[float | None, float | None]
    hypervolume: float
    gated_front_points: int
    front_points: int

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "role": self.role, "checkpoint": self.checkpoint, "params": self.params,
                "paper_point": self.paper_point, "ap50_all_heads": self.ap50_all_heads,
                "ap50_95_all_heads": self.ap50_95_all_heads, "gate_accuracy": list(self.gate_accuracy),
                "hypervolume": self.hypervolume, "gated_front_points": self.gated_front_points,
                "front_points": self.front_points}


def model_summaries(docs: list[TrialResult], metric: str, ref_latency: float) -> list[ModelSummary]:
    """Per trained model: role, hyperparameters, AP with all heads and gate accuracy (training-size
    validation), and the hypervolume of its own front (static networks included) up to `ref_latency`."""
    rows = []
    for d in docs:
        if not d.finished:
            continue
        pts = (d.front or []) + (d.static or [])
        ap, lat = np.array([p.ap(metric) for p in pts]), np.array([p.budget_latency_ms for p in pts])
        hv = hypervolume(ap, lat, ref_latency) if len(pts) else 0.0
        m = d.train_metrics or {}
        gated = [p for p in d.front or [] if not p.is_static]
        rows.append(ModelSummary(
            d.trial_id, d.role or "trial", d.checkpoint, d.hyperparameters,
            d.role is None and is_paper_point(d.params), m.get("ap50"), m.get("ap50_95"),
            (m.get("gate1_acc"), m.get("gate2_acc")), hv, len(gated), len(pareto_front(ap, lat)) if len(pts) else 0))
    return rows
