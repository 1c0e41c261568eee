"""What `python -m dh_tune.evaluate` prints: AP, per-class AP, gate quality, head usage and latency of a
profile, beside the same network with all heads."""
from __future__ import annotations

from .exit_table import ProfileMetrics


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
