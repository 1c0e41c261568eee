"""One profile per budget: every finished model's points pooled, their global front, and each budget's choice.

The most accurate point within the budget on the calibration images, unless a static network matches it (then
the static network) or `--select safest` prefers the fastest point whose AP interval overlaps it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluate.bootstrap import ProfileIntervals
from ..pipeline import SearchConfig
from .compare import BudgetComparison, compare_budget
from .confidence import ConfidenceBook, indistinguishable, safest
from .pareto import pareto_front, select_for_budget
from .records import BudgetResult, FrontPoint, TrialResult

REFERENCE_MARGIN = 1.05
"""The hypervolume reference latency lies this much above the slowest pooled point."""


@dataclass
class Pooled:
    """Every finished model's front and static points, each tagged with its model, and their global front."""

    finished: list[TrialResult]
    points: list[FrontPoint]
    front: list[FrontPoint]
    metric: str

    @property
    def by_trial(self) -> dict[str, TrialResult]:
        return {d.trial_id: d for d in self.finished}

    @property
    def ref_latency_ms(self) -> float:
        """The reference latency of every hypervolume the search reports."""
        return max(p.budget_latency_ms for p in self.points) * REFERENCE_MARGIN

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(AP, budget latency) of every pooled point."""
        return (np.array([p.ap(self.metric) for p in self.points]),
                np.array([p.budget_latency_ms for p in self.points]))


def pool(finished: list[TrialResult], metric: str) -> Pooled:
    """The pooled points of the finished models and their Pareto front."""
    points = [p for d in finished if d.finished for p in d.points()]
    ap = np.array([p.ap(metric) for p in points])
    lat = np.array([p.budget_latency_ms for p in points])
    return Pooled(finished, points, [points[i] for i in pareto_front(ap, lat)], metric)


@dataclass
class BudgetChoice:
    """One budget's chosen profile, how it stands against the static networks, and how sure the choice is."""

    result: BudgetResult
    comparison: BudgetComparison
    intervals: ProfileIntervals | None  # of the chosen point on the held-out test images
    indistinguishable: int
    compared_with: int

    @property
    def chosen(self) -> FrontPoint | None:
        """The point that met the budget (None when nothing did)."""
        return self.result.candidate if self.result.feasible else None

    def confidence(self, search: SearchConfig) -> dict[str, Any]:
        """What the profile records of how it was chosen and how sure that is."""
        return {"budget_stat": search.budget_stat, "select": search.select,
                "intervals": self.intervals.to_dict() if self.intervals is not None else None,
                "indistinguishable": self.indistinguishable, "compared_with": self.compared_with}


def choose_budget(pooled: Pooled, budget_ms: float, book: ConfidenceBook, search: SearchConfig) -> BudgetChoice:
    """The profile exported for one budget (the fastest point, marked infeasible, when none fits)."""
    metric, points = pooled.metric, pooled.points
    ap, lat = pooled.arrays()
    choice = select_for_budget(ap, lat, budget_ms)
    idx = choice.index if choice.index is not None else int(np.argmin(lat))
    comparison = compare_budget(points, budget_ms, metric, search.min_dynamic_gain)
    cand = comparison.choice(points[idx]) if choice.feasible else points[idx]
    reason = choice.reason
    if choice.all_feasible and cand.t1 == 0.0 and cand.t2 == 0.0:
        reason += "; all heads run"
    reason = budget_reason(reason, cand, comparison, metric) if choice.feasible else reason
    rivals = [p for p in pooled.front if p.budget_latency_ms <= budget_ms] if choice.feasible else []
    if search.select == "safest" and rivals:
        safe = safest(cand, rivals, book, metric)
        if safe is not cand:
            reason += (f"; --select safest: {safe.ap(metric):.4g} at {safe.budget_latency_ms:.3g} ms, the fastest "
                       "profile whose AP interval overlaps the best one's")
            cand = safe
    same = indistinguishable(cand, rivals, book, metric)
    trial = pooled.by_trial[str(cand.trial_id)]
    result = BudgetResult(budget_ms, choice.feasible, reason, cand, trial)
    return BudgetChoice(result, comparison, book.intervals(cand, "test"), len(same), len(rivals))


def budget_reason(choice_reason: str, cand: FrontPoint, comparison: BudgetComparison, metric: str) -> str:
    """Why this profile: the budget rule, and how it stands against the best static network."""
    reason = choice_reason
    if comparison.static_wins and cand.is_static:
        dyn = comparison.best_dynamic
        versus = (f" vs {dyn.ap(metric):.4g} for the best gated profile (gain {comparison.dynamic_gain:+.4f} <= "
                  f"{comparison.min_gain:g})" if dyn else " (no gated profile fits)")
        reason = (f"a static network wins the {comparison.budget_ms:g} ms budget ({cand.heads} at {cand.imgsz} px, "
                  f"no gate computed: {metric} {cand.ap(metric):.4g} at {cand.latency_ms:.3g} ms{versus}), so the "
                  "profile is that static network")
    elif comparison.dynamic_gain is not None:
        reason += f"; dynamic gain over the best static network {comparison.dynamic_gain:+.4f} {metric}"
    return reason
