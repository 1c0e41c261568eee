"""Plots of `python -m dh_tune.evaluate --plots`: paper Figure 5 (gate quality) and Figure 7 (AP and latency
as each threshold moves)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .. import fsio
from ..latency import LatencyTable, expected_latency
from .exit_table import ExitTable


def write_plots(table: ExitTable, latency: LatencyTable, folder: Path, t1: float, t2: float) -> list[Path]:
    """figure5_gates.png (accuracy and recall vs threshold) and figure7_thresholds.png (AP, latency)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ts = np.linspace(0, 1, 41)
    fig = Figure(figsize=(10, 3.8))
    for g, ax in enumerate(fig.subplots(1, 2)):
        acc, rec = [], []
        for t in ts:
            m = table.evaluate(t, t) if g else table.evaluate(t, t2)
            acc.append(m.gate_accuracy[g])
            rec.append(m.gate_recall[g])
        ax.plot(ts, acc, "-o", ms=3, label="accuracy (Eq. 16)")
        ax.plot(ts, rec, "-s", ms=3, label="recall (Eq. 17)")
        ax.axvline((t1, t2)[g], ls="--", c="0.5", lw=1)
        ax.set_title(f"gate {g + 1}")
        ax.set_xlabel("threshold")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    p5 = folder / "figure5_gates.png"
    fsio.save_figure(fig, p5, dpi=110)

    fig = Figure(figsize=(11, 3.8))
    for g, ax in enumerate(fig.subplots(1, 2)):
        ap, lat = [], []
        for t in ts:
            a, b = (t, t2) if g == 0 else (t1, t)
            ap.append(table.evaluate(a, b).ap50_95)
            lat.append(expected_latency(table.exit_levels(a, b), latency, (a, b))[0])
        ax.plot(ts, ap, "-o", ms=3, c="tab:blue")
        ax.set_ylabel("AP50:95", color="tab:blue")
        ax.set_xlabel(f"gate {g + 1} threshold (gate {2 - g} at {(t2, t1)[g]:.2f})")
        ax2 = ax.twinx()
        ax2.plot(ts, lat, "-s", ms=3, c="tab:red")
        ax2.set_ylabel("expected latency (ms)", color="tab:red")
        ax.grid(alpha=0.3)
    fig.suptitle(f"AP and latency as each threshold moves ({latency.device_name})", fontsize=10)
    fig.tight_layout()
    p7 = folder / "figure7_thresholds.png"
    fsio.save_figure(fig, p7, dpi=110)
    return [p5, p7]
