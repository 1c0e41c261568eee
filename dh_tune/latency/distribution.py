"""The latency of a profile over its images: mean, p90 and p99 per frame, from a latency table and exit shares.

A per-frame budget is about the slow frames, so budgets can bound a quantile over images rather than the mean;
the distribution follows from each part's timed quantiles and the share of images leaving after each head.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from .table import LatencyTable, PartTiming

BUDGET_STATS = ("mean", "p90", "p99")
"""The latency statistics over images that a budget can bound."""

QUANTILE_KNOTS: tuple[tuple[float, Callable[[PartTiming], float]], ...] = (
    (0.0, lambda t: t.min_ms),
    (0.5, lambda t: t.median_ms),
    (0.9, lambda t: t.p90_ms),
    (0.99, lambda t: t.p99_ms),
)
"""Quantile levels of an exit's cost that a table gives, each with the part statistic it sums."""


def shares_of(exit_levels: np.ndarray) -> np.ndarray:
    """Share (3,) of images leaving after head 1, 2 and 3, from each image's exit level (1, 2 or 3).

    The form `latency_stats` takes: the latency of a profile depends on its images only through it.
    """
    levels = np.asarray(exit_levels).reshape(-1)
    if len(levels) == 0:
        raise ValueError("exit_levels is empty")
    if not np.isin(levels, (1, 2, 3)).all():
        raise ValueError("exit levels must be 1, 2 or 3")
    return np.bincount(levels.astype(np.int64) - 1, minlength=3) / len(levels)


def _checked_shares(exit_shares: Any) -> np.ndarray:
    """The exit shares as a (3,) float array summing to 1; ValueError for anything else."""
    shares = np.asarray(exit_shares, dtype=float).reshape(-1)
    if shares.shape != (3,) or not np.isfinite(shares).all() or (shares < 0).any() or abs(shares.sum() - 1) > 1e-6:
        raise ValueError(f"exit_shares must be three non-negative shares summing to 1, got {exit_shares!r}")
    return shares / shares.sum()


def _cdf(knots: np.ndarray, qs: np.ndarray, xs: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """F(x) (side "right") or F(x-) (side "left") at each of `xs` of the distribution whose quantile function
    runs linearly through (qs, knots) and holds its last value (the remaining probability sits on the last knot)."""
    i = np.searchsorted(knots, xs, side=side) - 1
    j = np.clip(i, 0, len(knots) - 2)
    x0, x1 = knots[j], knots[j + 1]
    inner = qs[j] + (qs[j + 1] - qs[j]) * (xs - x0) / np.where(x1 > x0, x1 - x0, 1.0)  # x0 < x1 where it is used
    return np.where(i < 0, 0.0, np.where(i >= len(knots) - 1, 1.0, inner))


def _mixture_quantile(shares: np.ndarray, qs: np.ndarray, knots: np.ndarray, q: float) -> float:
    """Smallest x with sum_k shares[k] F_k(x) >= q, F_k the distribution through (qs, knots[k]), solved exactly.

    The mixture CDF is linear between the knots of all exits and may jump at them (probability held on a knot).
    """
    live = shares > 0
    points = np.unique(knots[live])
    right = sum(w * _cdf(row, qs, points, "right") for w, row in zip(shares[live], knots[live]))
    left = sum(w * _cdf(row, qs, points, "left") for w, row in zip(shares[live], knots[live]))
    reached = np.asarray(right) >= q - 1e-12
    j = int(np.argmax(reached)) if reached.any() else len(points) - 1
    if j == 0 or left[j] < q:  # q is reached at the first knot, or in the jump at knot j
        return float(points[j])
    return float(points[j - 1] + (q - right[j - 1]) / (left[j] - right[j - 1]) * (points[j] - points[j - 1]))


def latency_stats(exit_shares: Any, table: LatencyTable, thresholds: tuple[float, float]) -> dict[str, float]:
    """Mean, p90 and p99 latency in ms over a profile's images, from the share leaving after each head.

    mean: the images' mean of each exit's summed median part times (what `expected_latency` always gave).
    p90/p99: quantiles over images of the per-frame latency, which is what a per-frame budget is about (the
    slow frames). Each exit's cost is the sum of its parts (or deployed graphs) taken as comonotone, so its
    quantile at 0 (min, else median), 0.5, 0.9 and 0.99 is the sum of the parts' quantiles, linear in
    between and held past the last; the images' latency is the mixture of the exits by share, whose
    quantile is solved exactly. (The 90th percentile over images of each image's p90 cost would count the
    tail twice: the slow images, then the slow run of each.)
    """
    shares = _checked_shares(exit_shares)
    mean = float(shares @ table.exit_cost_ms("median", thresholds))
    knots = np.stack([table.exit_costs(value, thresholds) for _, value in QUANTILE_KNOTS], axis=1)
    qs = np.array([q for q, _ in QUANTILE_KNOTS])
    knots = np.maximum.accumulate(knots, axis=1)  # a min above the median (a disturbed run)
    return {"mean": mean, "p90": _mixture_quantile(shares, qs, knots, 0.9),
            "p99": _mixture_quantile(shares, qs, knots, 0.99)}


def predicted_latency(exit_shares: Any, table: LatencyTable, thresholds: tuple[float, float], stat: str) -> float:
    """One statistic of `latency_stats` ("mean", "p90" or "p99"), for code that budgets on one of them."""
    if stat not in BUDGET_STATS:
        raise ValueError(f"stat must be one of {BUDGET_STATS}, got {stat!r}")
    return latency_stats(exit_shares, table, thresholds)[stat]


def expected_latency(exit_levels: np.ndarray, table: LatencyTable,
                     thresholds: tuple[float, float]) -> tuple[float, float]:
    """Expected (mean_ms, p90_ms) per image of a profile with gate `thresholds`, from each image's exit level.

    The thresholds say which gates run and which graphs a deployment holds (a static configuration computes no
    gate). mean_ms: mean over images of the summed median times of the parts (or deployed graphs) each image
    runs. p90_ms: the 90th percentile of per-frame latency over images (see `latency_stats`).
    """
    shares = shares_of(exit_levels)
    index = np.asarray(exit_levels).reshape(-1).astype(np.int64) - 1
    mean_ms = float(table.exit_cost_ms("median", thresholds)[index].mean())
    return mean_ms, latency_stats(shares, table, thresholds)["p90"]
