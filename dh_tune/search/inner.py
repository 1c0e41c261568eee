"""Inner search: per-gate thresholds (and deployment image size) against the exit-level cache.

Each profile costs a millisecond or two (ExitTable.evaluate plus the device's latency table), so
Optuna runs in-process; an exact sweep over a threshold grid is the reference front. The static
networks (one, two or all heads, no gate computed) are scored at every size beside them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..evaluate.exit_table import ExitTable
from ..gating import STATIC_THRESHOLDS
from ..latency import BUDGET_STATS, LatencyTable, LatencyTableError, latency_stats
from .pareto import hypervolume, pareto_front
from .records import LATENCY_FIELDS, FrontPoint, HeldOut


class DeploymentSpace:
    """Exit tables and latency tables per deployment image size; scores any (imgsz, t1, t2).

    `tables` choose (the calibration images); `test_tables`, when given, report each chosen profile on
    held-out images. Budgets compare the latency statistic `budget_stat` (mean, p90 or p99 over images).
    """

    def __init__(self, tables: dict[int, ExitTable], latency: dict[int, LatencyTable], *,
                 test_tables: dict[int, ExitTable] | None = None, budget_stat: str = "mean") -> None:
        missing = set(tables) - set(latency)
        if missing:
            raise ValueError(f"no latency table for image size(s) {sorted(missing)}")
        if budget_stat not in BUDGET_STATS:
            raise ValueError(f"budget_stat must be one of {BUDGET_STATS}, got {budget_stat!r}")
        self.tables, self.latency, self.test_tables = tables, latency, test_tables or {}
        self.budget_stat = budget_stat
        self.sizes = sorted(tables)
        self._memo: dict[tuple[int, float, float], FrontPoint] = {}

    def _latency(self, imgsz: int, shares: np.ndarray, t1: float, t2: float) -> dict[str, float]:
        stats = latency_stats(shares, self.latency[imgsz], (t1, t2))
        if not np.isfinite(stats[self.budget_stat]):
            raise LatencyTableError(f"the latency table of {self.latency[imgsz].device_name} at {imgsz} px cannot "
                                    f"give the {self.budget_stat} latency; re-measure the device (--remeasure)")
        return stats

    def evaluate(self, imgsz: int, t1: float, t2: float, source: str = "grid") -> FrontPoint:
        key = (imgsz, float(t1), float(t2))
        if key not in self._memo:
            m = self.tables[imgsz].evaluate(t1, t2)
            ms = self._latency(imgsz, m.exit_shares, t1, t2)
            share1, share2, share3 = (float(s) for s in m.exit_shares)
            accuracy1, accuracy2 = (float(v) for v in m.gate_accuracy)
            recall1, recall2 = (float(v) for v in m.gate_recall)
            self._memo[key] = FrontPoint(
                imgsz, float(t1), float(t2), _num(m.ap50), _num(m.ap50_95), ms["mean"], ms["p90"],
                (share1, share2, share3), (accuracy1, accuracy2), (recall1, recall2), m.mean_macs / 1e9, source,
                latency_p99_ms=ms["p99"], budget_stat=self.budget_stat)
        return self._memo[key]

    def held_out(self, c: FrontPoint) -> FrontPoint:
        """The candidate with what its profile gives on the held-out test images (unchanged without them)."""
        if c.imgsz not in self.test_tables:
            return c
        m = self.test_tables[c.imgsz].evaluate(c.t1, c.t2)
        ms = self._latency(c.imgsz, m.exit_shares, c.t1, c.t2)
        share1, share2, share3 = (float(s) for s in m.exit_shares)
        test = HeldOut(_num(m.ap50), _num(m.ap50_95), (share1, share2, share3),
                       **{field_: ms[stat] for stat, field_ in LATENCY_FIELDS.items()})
        return replace(c, test=test)


def static_sweep(space: DeploymentSpace) -> list[FrontPoint]:
    """The trained network run statically at every size: P3 head only, P3+P4, all heads (no gate)."""
    return [space.evaluate(s, *STATIC_THRESHOLDS[level], "static") for s in space.sizes for level in (1, 2, 3)]


def _num(v: float) -> float:
    return 0.0 if v != v else float(v)  # no ground truth at all -> AP counts as 0


def grid_sweep(space: DeploymentSpace, steps: int) -> list[FrontPoint]:
    """Every (imgsz, t1, t2) on an evenly spaced threshold grid over [0, 1]."""
    grid = np.linspace(0.0, 1.0, steps)
    return [space.evaluate(s, t1, t2, "grid") for s in space.sizes for t1 in grid for t2 in grid]


EDGE = 0.05  # share of each threshold's sampling range that falls on "gate not computed" at either end


def _sampler(name: str, seed: int):
    import optuna

    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=40)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=30)


def optuna_search(space: DeploymentSpace, n_trials: int, *, metric: str, sampler: str = "tpe",
                  seed: int = 0) -> list[FrontPoint]:
    """Multi-objective Optuna over (imgsz, t1, t2): maximise AP, minimise the budget statistic (mean, p90 or p99
    latency, the space's `budget_stat`)."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=_sampler(sampler, seed))
    for s in space.sizes:  # the static networks of every size: all heads, P3+P4, head 1 only
        for t1, t2 in STATIC_THRESHOLDS.values():
            study.enqueue_trial({"imgsz": s, "t1": t1, "t2": t2})
    found: list[FrontPoint] = []

    def threshold(trial, name: str) -> float:
        # Sampled a little past [0, 1] and clamped: a gate that is not computed (threshold 0 or 1) is
        # cheaper than any threshold near it, so the sampler must be able to land exactly there.
        return min(max(trial.suggest_float(name, -EDGE, 1.0 + EDGE), 0.0), 1.0)

    def objective(trial) -> tuple[float, float]:
        imgsz = trial.suggest_categorical("imgsz", space.sizes)
        c = space.evaluate(imgsz, threshold(trial, "t1"), threshold(trial, "t2"), "optuna")
        found.append(c)
        return c.ap(metric), c.budget_latency_ms

    study.optimize(objective, n_trials=max(n_trials, 2 * len(space.sizes)))
    return found


@dataclass
class InnerResult:
    """All evaluated profiles, their Pareto front, and how close Optuna's front came to the sweep's."""

    candidates: list[FrontPoint]
    front: list[FrontPoint]
    hv_ratio: float
    grid_front: list[FrontPoint] = field(default_factory=list)
    optuna_front: list[FrontPoint] = field(default_factory=list)
    static: list[FrontPoint] = field(default_factory=list)
    holdout: dict[str, Any] = field(default_factory=dict)  # the calibration/test split (Holdout.to_dict + indices)


def front_of(candidates: list[FrontPoint], metric: str) -> list[FrontPoint]:
    """The non-dominated candidates, by increasing latency."""
    if not candidates:
        return []
    idx = pareto_front(np.array([c.ap(metric) for c in candidates]),
                       np.array([c.budget_latency_ms for c in candidates]))
    return [candidates[i] for i in idx]


def front_hypervolume(front: list[FrontPoint], metric: str, ref_latency: float) -> float:
    """Area dominated by a front up to (ref_latency, AP 0)."""
    if not front:
        return 0.0
    return hypervolume(np.array([c.ap(metric) for c in front]), np.array([c.budget_latency_ms for c in front]),
                       ref_latency)


def inner_search(space: DeploymentSpace, *, metric: str, grid_steps: int, n_trials: int, sampler: str = "tpe",
                 seed: int = 0) -> InnerResult:
    """Score the static networks, sweep the grid, run Optuna; the combined front and the hypervolume ratio."""
    static = static_sweep(space)
    grid = grid_sweep(space, grid_steps)
    found = optuna_search(space, n_trials, metric=metric, sampler=sampler, seed=seed)
    everything = static + grid + found
    ref = max(c.budget_latency_ms for c in everything) * 1.05
    grid_front, optuna_front = front_of(grid, metric), front_of(found, metric)
    hv_grid = front_hypervolume(grid_front, metric, ref)
    ratio = front_hypervolume(optuna_front, metric, ref) / hv_grid if hv_grid > 0 else float("nan")
    return InnerResult(everything, front_of(everything, metric), ratio, grid_front, optuna_front, static)
