"""Training curves as a PNG (losses, AP, gate accuracy and learning rate per epoch)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from .. import fsio


def plot_history(history: list[dict[str, float]], path: str | Path) -> Path:
    """Four panels: losses, AP50 and AP50:95, gate accuracy/recall, learning rate."""
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    panels = [
        ("loss", ("box", "obj", "cls", "gate")),
        ("AP (all heads)", ("ap50", "ap50_95")),
        ("gates at 0.5", ("gate1_acc", "gate2_acc", "gate1_recall", "gate2_recall")),
        ("learning rate", ("lr",)),
    ]
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            ax.plot(epochs, [h.get(k, float("nan")) for h in history], marker="o", ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fsio.save_figure(fig, path, dpi=100)
    return path
