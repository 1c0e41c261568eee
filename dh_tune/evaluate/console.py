"""What `python -m dh_tune.evaluate` prints: AP, per-class AP, gate quality, head usage and latency of a
profile, beside the same network with all heads."""
from __future__ import annotations

import math

from .bootstrap import Interval, ProfileIntervals
from .exit_table import ProfileMetrics


def _ci(interval: Interval | None, fmt: str = ".3f") -> str:
    if interval is None or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return ""
    return f" [{interval.low:{fmt}}, {interval.high:{fmt}}]"


def print_report(m: ProfileMetrics, full: ProfileMetrics, names: list[str], latency: dict[str, float],
                 full_ms: float, device: str, n_images: int, imgsz: int, ci: ProfileIntervals | None = None) -> None:
    """AP (profile and all heads), per-class AP, gate quality, head usage and predicted latency, each with its
    95% bootstrap interval when `ci` is given."""
    print(f"{n_images} images at {imgsz} px, thresholds ({m.t1:.2f}, {m.t2:.2f})"
          + (f"; [95% intervals: {ci.resamples} bootstrap resamples of the images, seed {ci.seed}]" if ci else ""))
    print(f"  AP50 {m.ap50:.4f}{_ci(ci.ap50 if ci else None)}  AP50:95 {m.ap50_95:.4f}{_ci(ci.ap50_95 if ci else None)}   "
          f"(all heads: AP50 {full.ap50:.4f}  AP50:95 {full.ap50_95:.4f})")
    for g in range(2):
        print(f"  gate {g + 1}: accuracy {m.gate_accuracy[g]:.3f}  recall {m.gate_recall[g]:.3f}")
    s = m.exit_shares
    shares = [f"{s[k]:.1%}{_ci(ci.exit_shares[k] if ci else None, '.1%')}" for k in range(3)]
    print(f"  images leaving after head 1 / 2 / 3: {' / '.join(shares)}  "
          f"(mean {m.mean_macs / 1e9:.3f} GMACs, all heads {full.mean_macs / 1e9:.3f})")
    stats = ", ".join(f"{k} {v:.2f} ms{_ci(ci.latency_ms.get(k) if ci else None, '.2f')}"
                      for k, v in latency.items() if math.isfinite(v))
    print(f"  predicted latency on {device}: {stats} (all heads: mean {full_ms:.2f} ms, "
          f"{latency['mean'] / full_ms:.2f}x)")
    if m.per_class:
        print(f"  {'class':<20} {'GT':>6} {'AP50':>7} {'AP50:95':>8}")
        for c, row in sorted(m.per_class.items()):
            name = names[c] if c < len(names) else str(c)
            print(f"  {name:<20} {int(row['gt']):>6} {row['ap50']:7.3f} {row['ap50_95']:8.3f}")
