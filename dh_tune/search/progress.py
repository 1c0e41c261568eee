"""Search progress on the console: trials done / running / failed, best AP per budget, time left."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .pareto import select_for_budget
from .records import TrialResult, TrialStatus

logger = logging.getLogger(__name__)


def best_per_budget(docs: list[TrialResult], budgets: list[float], metric: str) -> dict[float, float | None]:
    """Highest AP within each budget over every finished trial's front (None when nothing fits)."""
    points = [c for d in docs if d.finished for c in d.front or []]
    out: dict[float, float | None] = {}
    for b in budgets:
        if not points:
            out[b] = None
            continue
        choice = select_for_budget(np.array([p.ap(metric) for p in points]),
                                   np.array([p.budget_latency_ms for p in points]), b)
        out[b] = points[choice.index].ap(metric) if choice.index is not None else None
    return out


def progress_line(done: int, failed: int, running: int, total: int, started: float, best: dict[float, float | None],
                  metric: str, pruned: int = 0) -> str:
    elapsed = time.time() - started
    finished = done + failed + pruned
    eta = f"{(elapsed / finished) * (total - finished) / 60:.1f} min" if finished else "?"
    bests = ", ".join(f"{b:g} ms: {v:.3f}" if v is not None else f"{b:g} ms: -" for b, v in best.items())
    return (f"trials {done} done / {pruned} stopped early / {running} running / {failed} failed of {total} | best {metric} "
            f"{bests} | elapsed {elapsed / 60:.1f} min, left ~{eta}")


def make_callback(out_dir: Path, budgets: list[float], metric: str, total: int, already: int):
    """A Ray Tune callback that prints a progress line whenever a trial starts, finishes or fails."""
    from ray.tune import Callback

    from .trial_docs import ended_trials

    class _Progress(Callback):
        def __init__(self) -> None:
            self.started = time.time()
            self.running = 0

        def _print(self) -> None:
            docs = ended_trials(out_dir)
            done, failed, pruned = (sum(d.status is s for d in docs) for s in
                                    (TrialStatus.FINISHED, TrialStatus.FAILED, TrialStatus.PRUNED))
            logger.info("%s", progress_line(done, failed, self.running, total, self.started,
                                            best_per_budget(docs, budgets, metric), metric, pruned))

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running += 1
            self._print()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running = max(self.running - 1, 0)
            self._print()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.running = max(self.running - 1, 0)
            self._print()

    return _Progress()
