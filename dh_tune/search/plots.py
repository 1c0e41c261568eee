"""Search plots: the AP-latency Pareto front with budgets, and the paper's Figure 7 of a chosen profile."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .. import fsio
from ..evaluate.bootstrap import ProfileIntervals
from ..latency import LatencyTable, expected_latency
from .confidence import TrialTables
from .records import FrontPoint


def plot_front(points: list[FrontPoint], front: list[FrontPoint], chosen: dict[float, FrontPoint | None], metric: str,
               path: str | Path, title: str, intervals: dict[float, ProfileIntervals | None] | None = None,
               budget_stat: str = "mean") -> Path:
    """Gated profiles (grey dots), static networks (squares), the global front (line), each budget
    (dashed) and its choice (star, calibration images) with what it gives on the test images (diamond,
    95% bootstrap intervals as error bars)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    gated = [p for p in points if not p.is_static]
    static = [p for p in points if p.is_static]
    ax.scatter([p.budget_latency_ms for p in gated], [p.ap(metric) for p in gated], s=6, c="0.75",
               label=f"gated profiles ({len(gated)})")
    markers = {1: "v", 2: "s", 3: "D"}
    for level, name in ((1, "P3 head"), (2, "P3+P4 heads"), (3, "all heads")):
        pts = [p for p in static if p.static_exit == level]
        if pts:
            ax.scatter([p.budget_latency_ms for p in pts], [p.ap(metric) for p in pts], s=28, marker=markers[level],
                       facecolors="none", edgecolors="tab:orange", label=f"static YOLOv5, {name} (no gate)")
    fx = [p.budget_latency_ms for p in front]
    ax.plot(fx, [p.ap(metric) for p in front], "-o", ms=3, c="tab:blue", label="Pareto front")
    colors = colormaps["tab10"](np.linspace(0.2, 0.9, max(len(chosen), 1)))
    for (budget, pick), color in zip(sorted(chosen.items()), colors):
        ax.axvline(budget, ls="--", c=color, lw=1)
        if pick is not None:
            ax.scatter([pick.budget_latency_ms], [pick.ap(metric)], marker="*", s=160, color=color, zorder=5,
                       label=f"{budget:g} ms: imgsz {pick.imgsz}, t=({pick.t1:.2f}, {pick.t2:.2f})")
            _test_point(ax, pick, (intervals or {}).get(budget), metric, budget_stat, color)
    ax.set_xlabel(f"predicted {budget_stat} latency per image (ms)")
    ax.set_ylabel(metric.upper().replace("_", ":").replace("AP50:95", "AP50:95"))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fsio.save_figure(fig, path, dpi=110)
    return Path(path)


def _test_point(ax, pick: FrontPoint, ci: ProfileIntervals | None, metric: str, stat: str, color) -> None:
    """The chosen profile on the held-out test images, with its intervals, joined to its calibration star."""
    test = pick.test
    if test is None:
        return
    x, y = test.latency(stat), test.ap(metric)
    xerr = yerr = None
    if ci is not None:
        lat, ap = ci.latency_ms.get(stat), ci.ap(metric)
        if lat is not None and np.isfinite([lat.low, lat.high]).all():
            xerr = [[max(x - lat.low, 0.0)], [max(lat.high - x, 0.0)]]
        if np.isfinite([ap.low, ap.high]).all():
            yerr = [[max(y - ap.low, 0.0)], [max(ap.high - y, 0.0)]]
    ax.plot([pick.budget_latency_ms, x], [pick.ap(metric), y], ":", c=color, lw=1)
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


def figure7(tables: TrialTables, cand: FrontPoint, table: LatencyTable, metric: str, path: Path) -> Path | None:
    """AP and latency as gate 1's threshold moves, gate 2 fixed at the chosen value (calibration images)."""
    et = tables.table(str(cand.trial_id), cand.imgsz, "calibration")
    if et is None:
        return None
    ts = np.linspace(0, 1, 41)
    ap, lat, share = [], [], []
    for t in ts:
        m = et.evaluate(t, cand.t2)
        ap.append(m.ap50 if metric == "ap50" else m.ap50_95)
        lat.append(expected_latency(et.exit_levels(t, cand.t2), table, (t, cand.t2))[0])
        share.append(m.exit_shares[0])
    return plot_threshold_sweep(ts, np.array(ap), np.array(lat), np.array(share), 1, cand.t2, path,
                                f"{metric} and latency vs gate-1 threshold (imgsz {cand.imgsz})")
