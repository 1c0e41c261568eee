"""Two-objective Pareto math for threshold profiles: maximise AP, minimise latency.

Pure functions on arrays of (AP, latency) points, shared by the exact threshold sweep, the
Optuna search (hypervolume ratio against the sweep) and the per-budget profile choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _points(ap: np.ndarray, latency: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return AP and latency as equal-length float64 vectors.

    NaN or infinite values are refused: they have no place on a front and would break ties silently.
    """
    a = np.asarray(ap, dtype=np.float64).reshape(-1)
    lat = np.asarray(latency, dtype=np.float64).reshape(-1)
    if a.shape != lat.shape:
        raise ValueError(f"ap and latency differ in length: {a.shape[0]} vs {lat.shape[0]}")
    if not (np.isfinite(a).all() and np.isfinite(lat).all()):
        raise ValueError("ap and latency must be finite (no NaN or infinity)")
    return a, lat


def pareto_front(ap: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, ordered by increasing latency (and so increasing AP).

    A point is dominated when another has AP >= and latency <= with one strict. Identical points
    appear once, as the lowest index; the result is deterministic for any input order.
    """
    a, lat = _points(ap, latency)
    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(a)), -a, lat))  # latency up, then AP down, then index up
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(a[order])[:-1]])
    return order[a[order] > best_before].astype(np.int64)


def hypervolume(ap: np.ndarray, latency: np.ndarray, ref_latency: float, ref_ap: float = 0.0) -> float:
    """Area (AP x ms) dominated by the points and bounded by the reference point (ref_latency, ref_ap).

    Points slower than ``ref_latency`` or below ``ref_ap`` add nothing; the empty set has volume 0.
    """
    a, lat = _points(ap, latency)
    if not (np.isfinite(ref_latency) and np.isfinite(ref_ap)):
        raise ValueError("the reference point must be finite")
    inside = (lat < ref_latency) & (a > ref_ap)
    a, lat = a[inside], lat[inside]
    front = pareto_front(a, lat)
    if len(front) == 0:
        return 0.0
    steps = np.diff(np.concatenate([[ref_ap], a[front]]))  # AP gained by each front point
    return float(np.sum((ref_latency - lat[front]) * steps))


@dataclass(frozen=True)
class BudgetChoice:
    """The profile chosen for one latency budget, or why none could be.

    ``index`` is None when nothing fits; ``fastest_latency`` is the quickest point on offer.
    """

    budget_ms: float
    index: int | None
    feasible: bool
    all_feasible: bool
    fastest_latency: float | None
    reason: str


def select_for_budget(ap: np.ndarray, latency: np.ndarray, budget_ms: float) -> BudgetChoice:
    """The highest-AP point with latency <= budget; ties go to lower latency, then lower index.

    When nothing fits, says so with the fastest latency available; ``all_feasible`` flags budgets
    that every point meets (the deepest, most accurate setting then wins).
    """
    a, lat = _points(ap, latency)
    if not np.isfinite(budget_ms) or budget_ms <= 0:
        raise ValueError(f"budget_ms must be a positive number, got {budget_ms}")
    if len(a) == 0:
        return BudgetChoice(budget_ms, None, False, False, None, "no profiles to choose from")
    fastest = float(lat.min())
    fits = np.flatnonzero(lat <= budget_ms)
    if len(fits) == 0:
        reason = (f"no profile fits the {budget_ms:g} ms budget: the fastest takes {fastest:.3g} ms; "
                  "a smaller model scale or image size would help")
        return BudgetChoice(budget_ms, None, False, False, fastest, reason)
    best = int(fits[np.lexsort((fits, lat[fits], -a[fits]))[0]])
    all_fit = len(fits) == len(a)
    reason = f"highest AP {a[best]:.4g} at {lat[best]:.3g} ms within the {budget_ms:g} ms budget"
    if all_fit:
        reason += " (every profile fits)"
    return BudgetChoice(budget_ms, best, True, all_fit, fastest, reason)
