"""Dynamic profiles against static networks, budget by budget, and each trained model's share of the front.

Pure functions over the point dictionaries the search keeps (`Candidate.to_dict()` plus `trial_id`):
a point with `static_exit` set is a network run without gates (one, two or all heads).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inner import budget_latency
from .outer import PAPER_POINT
from .pareto import hypervolume, pareto_front, select_for_budget


def is_static(point: dict) -> bool:
    """True for a static network (no gate computed)."""
    return point.get("static_exit") is not None


def best_within(points: list[dict], budget_ms: float, metric: str) -> dict | None:
    """The highest-AP point whose budget latency (mean, p90 or p99) fits the budget (ties: faster), or None."""
    if not points:
        return None
    choice = select_for_budget(np.array([p[metric] for p in points]), np.array([budget_latency(p) for p in points]),
                               budget_ms)
    return points[choice.index] if choice.index is not None else None


@dataclass(frozen=True)
class BudgetComparison:
    """The best static network and the best gated profile within one budget, and the AP between them."""

    budget_ms: float
    metric: str
    best_static: dict | None
    best_dynamic: dict | None
    min_gain: float = 0.0

    @property
    def dynamic_gain(self) -> float | None:
        """AP of the best gated profile minus AP of the best static network (None if either is missing)."""
        if self.best_static is None or self.best_dynamic is None:
            return None
        return float(self.best_dynamic[self.metric] - self.best_static[self.metric])

    @property
    def static_wins(self) -> bool:
        """True when no gated profile beats the best static network within the budget by more than `min_gain`."""
        gain = self.dynamic_gain
        return self.best_static is not None and (gain is None or gain <= self.min_gain)

    def to_dict(self) -> dict:
        keep = ("trial_id", "imgsz", "t1", "t2", "heads", "static_exit", "ap50", "ap50_95", "latency_ms",
                "budget_latency_ms")
        pick = (lambda p: None if p is None else {k: p.get(k) for k in keep})
        return {"metric": self.metric, "best_static": pick(self.best_static),
                "best_dynamic": pick(self.best_dynamic), "dynamic_gain": self.dynamic_gain,
                "min_dynamic_gain": self.min_gain, "static_wins": self.static_wins}

    def choice(self, best: dict) -> dict:
        """The point to export: `best` (the most accurate within the budget) unless a static network wins."""
        return self.best_static if self.static_wins and self.best_static is not None else best


def compare_budget(points: list[dict], budget_ms: float, metric: str, min_gain: float = 0.0) -> BudgetComparison:
    """Best static and best gated point within `budget_ms`; gated must beat static by more than `min_gain`."""
    static = [p for p in points if is_static(p)]
    dynamic = [p for p in points if not is_static(p)]
    return BudgetComparison(budget_ms, metric, best_within(static, budget_ms, metric),
                            best_within(dynamic, budget_ms, metric), min_gain)


def is_paper_point(params: dict) -> bool:
    """True when a trial's sampled hyperparameters are the paper's (section 3.3)."""
    shared = [k for k in params if k in PAPER_POINT]
    return bool(shared) and all(abs(float(params[k]) - PAPER_POINT[k]) < 1e-9 for k in shared)


def model_summaries(docs: list[dict], metric: str, ref_latency: float) -> list[dict]:
    """Per trained model: role, hyperparameters, AP with all heads and gate accuracy (training-size
    validation), and the hypervolume of its own front (static networks included) up to `ref_latency`."""
    rows = []
    for d in docs:
        if d.get("status") != "finished":
            continue
        pts = d.get("front", []) + d.get("static", [])
        ap, lat = np.array([p[metric] for p in pts]), np.array([budget_latency(p) for p in pts])
        hv = hypervolume(ap, lat, ref_latency) if len(pts) else 0.0
        m = d.get("train_metrics", {})
        gated = [p for p in d.get("front", []) if not is_static(p)]
        rows.append({"trial_id": d["trial_id"], "role": d.get("role", "trial"), "checkpoint": d.get("checkpoint"), "params": d.get("loss") or d.get("params", {}),
                     "paper_point": d.get("role") is None and is_paper_point(d.get("params", {})),
                     "ap50_all_heads": m.get("ap50"), "ap50_95_all_heads": m.get("ap50_95"),
                     "gate_accuracy": [m.get("gate1_acc"), m.get("gate2_acc")], "hypervolume": hv,
                     "gated_front_points": len(gated), "front_points": len(pareto_front(ap, lat)) if len(pts) else 0})
    return rows
