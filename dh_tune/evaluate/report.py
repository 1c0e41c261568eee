"""Console report and plots of `python -m dh_tune.evaluate` (paper Figures 5 and 7)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..latency import LatencyTable, expected_latency  # noqa: E402
from .exit_table import ExitTable, ProfileMetrics  # noqa: E402
from .. import fsio  # noqa: E402


def print_report(m: ProfileMetrics, full: ProfileMetrics, names: list[str], latency: tuple[float, float],
                 full_ms: float, device: str, n_images: int, imgsz: int) -> None:
    """AP (profile and all heads), per-class AP, gate quality, head usage and expected latency."""
    print(f"{n_images} images at {imgsz} px, thresholds ({m.t1:.2f}, {m.t2:.2f})")
    print(f"  AP50 {m.ap50:.4f}  AP50:95 {m.ap50_95:.4f}   (all heads: AP50 {full.ap50:.4f}  AP50:95 {full.ap50_95:.4f})")
    for g in range(2):
        print(f"  gate {g + 1}: accuracy {m.gate_accuracy[g]:.3f}  recall {m.gate_recall[g]:.3f}")
    s = m.exit_shares
    print(f"  images leaving after head 1 / 2 / 3: {s[0]:.1%} / {s[1]:.1%} / {s[2]:.1%}  "
          f"(mean {m.mean_macs / 1e9:.3f} GMACs, all heads {full.mean_macs / 1e9:.3f})")
    print(f"  expected latency on {device}: mean {latency[0]:.2f} ms, p90 {latency[1]:.2f} ms "
          f"(all heads {full_ms:.2f} ms, {latency[0] / full_ms:.2f}x)")
    if m.per_class:
        print(f"  {'class':<20} {'GT':>6} {'AP50':>7} {'AP50:95':>8}")
        for c, row in sorted(m.per_class.items()):
            name = names[c] if c < len(names) else str(c)
            print(f"  {name:<20} {int(row['gt']):>6} {row['ap50']:7.3f} {row['ap50_95']:8.3f}")


def write_plots(table: ExitTable, latency: LatencyTable, folder: Path, t1: float, t2: float) -> list[Path]:
    """figure5_gates.png (accuracy and recall vs threshold) and figure7_thresholds.png (AP, latency)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ts = np.linspace(0, 1, 41)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for g, ax in enumerate(axes):
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
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for g, ax in enumerate(axes):
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
    plt.close(fig)
    return [p5, p7]
