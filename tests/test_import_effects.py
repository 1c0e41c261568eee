"""Importing dh_tune changes nothing process-wide: tracking leaves the environment and the warning filters alone,
and the plots draw without pyplot (no backend switch, no global figure state). Each check runs in a fresh Python."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TRACKING = """
import os, warnings
env, filters = dict(os.environ), list(warnings.filters)
import dh_tune.tracking
assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())
assert warnings.filters == filters, [f for f in warnings.filters if f not in filters]
"""

PLOTS = """
import sys
from pathlib import Path
import numpy as np
from dh_tune.evaluate import figures
from dh_tune.search.plots import plot_front, plot_threshold_sweep
from dh_tune.search.records import FrontPoint
from dh_tune.train.plots import plot_history
out = Path(sys.argv[1])
history = [{"epoch": e, "box": 0.1, "obj": 0.2, "cls": 0.0, "gate": 0.3, "ap50": 0.1 * e, "lr": 0.01} for e in (1, 2)]
points = [FrontPoint(64, 0.5, 0.5, 0.1 * i, 0.05 * i, 1.0 + i, 1.1 + i, (0.3, 0.3, 0.4), (0.9, 0.9), (0.9, 0.9), 0.05)
          for i in range(3)]
t = np.linspace(0, 1, 5)
paths = [plot_history(history, out / "curves.png"),
         plot_front(points, points, {2.0: points[1]}, "ap50", out / "front.png", "front"),
         plot_threshold_sweep(t, t, 2 * t, t / 2, 1, 0.5, out / "sweep.png", "sweep")]
assert all(p.stat().st_size > 0 and p.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n" for p in paths), paths
assert "matplotlib.pyplot" not in sys.modules, "a plot module imported pyplot"
"""


def _run(code: str, *args: str) -> None:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_importing_tracking_changes_no_environment_variable_or_warning_filter() -> None:
    _run(TRACKING)


def test_plots_are_drawn_without_pyplot(tmp_path: Path) -> None:
    _run(PLOTS, str(tmp_path))
