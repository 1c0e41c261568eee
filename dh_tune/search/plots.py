"""Search plots: the AP-latency Pareto front with budgets, and the paper's Figure 7."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .. import fsio
from ..evaluate.bootstrap import ProfileIntervals
from .inner import LATENCY_FIELDS, budget_latency


def plot_front(points: list[dict], front: list[dict], chosen: dict[float, dict | None], metric: str,
               path: str | Path, title: str, intervals: dict[float, ProfileIntervals | None] | None = None,
               budget_stat: str = "mean") -> Path:
    """Gated profiles (grey dots), static networks (squares), the global front (line), each budget
    (dashed) and its choice (star, calibration images) with what it gives on the test images (diamond,
    95% bootstrap intervals as error bars)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    gated = [p for p in points if p.get("static_exit") is None]
    static = [p for p in points if p.get("static_exit") is not None]
    ax.scatter([budget_latency(p) for p in gated], [p[metric] for p in gated], s=6, c="0.75",
               label=f"gated profiles ({len(gated)})")
    markers = {1: "v", 2: "s", 3: "D"}
    for level, name in ((1, "P3 head"), (2, "P3+P4 heads"), (3, "all heads")):
        pts = [p for p in static if p["static_exit"] == level]
        if pts:
            ax.scatter([budget_latency(p) for p in pts], [p[metric] for p in pts], s=28, marker=markers[level],
                       facecolors="none", edgecolors="tab:orange", label=f"static YOLOv5, {name} (no gate)")
    fx = [budget_latency(p) for p in front]
    ax.plot(fx, [p[metric] for p in front], "-o", ms=3, c="tab:blue", label="Pareto front")
    colors = colormaps["tab10"](np.linspace(0.2, 0.9, max(len(chosen), 1)))
    for (budget, pick), color in zip(sorted(chosen.items()), colors):
        ax.axvline(budget, ls="--", c=color, lw=1)
        if pick is not None:
            ax.scatter([budget_latency(pick)], [pick[metric]], marker="*", s=160, color=color, zorder=5,
                       label=f"{budget:g} ms: imgsz {pick['imgsz']}, t=({pick['t1']:.2f}, {pick['t2']:.2f})")
            _test_point(ax, pick, (intervals or {}).get(budget), metric, budget_stat, color)
    ax.set_xlabel(f"predicted {budget_stat} latency per image (ms)")
    ax.set_ylabel(metric.upper().replace("_", ":").replace("AP50:95", "AP50:95"))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fsio.save_figure(fig, path, dpi=110)
    return Path(path)


def _test_point(ax, pick: dict, ci: ProfileIntervals | None, metric: str, stat: str, color) -> None:
    """The chosen profile on the held-out test images, with its intervals, joined to its calibration star."""
    test = pick.get("test")
    if not test:
        return
    x, y = test[LATENCY_FIELDS[stat]], test[metric]
    xerr = yerr = None
    if ci is not None:
        lat, ap = ci.latency_ms.get(stat), ci.ap(metric)
        if lat is not None and np.isfinite([lat.low, lat.high]).all():
            xerr = [[max(x - lat.low, 0.0)], [max(lat.high - x, 0.0)]]
        if np.isfinite([ap.low, ap.high]).all():
            yerr = [[max(y - ap.low, 0.0)], [max(ap.high - y, 0.0)]]
    ax.plot([budget_latency(pick), x], [pick[metric], y], ":", c=color, lw=1)
    ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="D", ms=6, color=color, capsize=3, zorder=6,
                label="  on held-out test images (95% intervals)")


def plot_threshold_sweep(t: np.ndarray, ap: np.ndarray, latency: np.ndarray, share1: np.ndarray, gate: int,
                         fixed: float, path: str | Path, title: str) -> Path:
    """Paper Fig. 7: AP and latency as one gate's threshold moves (the other fixed)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(t, ap, "-o", ms=3, c="tab:blue", label="AP")
    ax.set_xlabel(f"threshold of gate {gate} (gate {3 - gate} fixed at {fixed:.2f})")
    ax.set_ylabel("AP", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(t, latency, "-s", ms=3, c="tab:red", label="latency")
    ax2.set_ylabel("expected latency (ms)", color="tab:red")
    ax.plot(t, share1 * (np.nanmax(ap) if len(ap) else 1), ":", c="0.5", label="share exiting early (scaled)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fsio.save_figure(fig, path, dpi=110)
    return Path(path)
