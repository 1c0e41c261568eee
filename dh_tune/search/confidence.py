"""How sure the search is of its choices: bootstrap intervals of the profiles it weighs and exports.

Exported profiles carry intervals on the held-out test images. Within a budget, candidates are compared on
the calibration images they were chosen on: those whose AP interval overlaps the chosen one's cannot be told
apart from it (`indistinguishable`), and `--select safest` takes the fastest of them (`safest`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..evaluate.bootstrap import ProfileIntervals, bootstrap_profile
from ..evaluate.exit_table import ExitTable
from ..latency import LatencyTable
from .records import FrontPoint, TrialResult

Split = Literal["calibration", "test", "all"]


class TrialTables:
    """The cached exit tables of every finished model, loaded once each, cut as its trial cut them."""

    def __init__(self, out: Path, trials: dict[str, TrialResult]) -> None:
        self.out, self.trials = out, trials
        self._whole: dict[tuple[str, int], ExitTable | None] = {}

    def _load(self, trial: TrialResult, imgsz: int) -> ExitTable | None:
        roots = [Path(trial.cache_dir)] if trial.cache_dir else []
        roots += [self.out / "trials" / trial.trial_id / "cache", self.out / "cache"]
        expected = _images(trial)
        for root in roots:
            for f in sorted(root.glob(f"exit-*-{imgsz}.npz")):
                table = ExitTable.load(f)
                if table is not None and (expected is None or table.num_images == expected):
                    return table
        return None

    def table(self, trial_id: str, imgsz: int, split: Split = "all") -> ExitTable | None:
        """The model's exit table at `imgsz` on its calibration or test images, or on all of them."""
        trial = self.trials[trial_id]
        key = (trial_id, imgsz)
        if key not in self._whole:
            self._whole[key] = self._load(trial, imgsz)
        whole = self._whole[key]
        indices = (trial.holdout or {}).get(f"{split}_indices")
        if whole is None or split == "all" or indices is None:
            return whole
        return whole.subset(indices)


def _images(trial: TrialResult) -> int | None:
    """How many images the trial's evaluation ran on (None for results written before the split existed)."""
    holdout = trial.holdout or {}
    if "calibration_indices" not in holdout:
        return None
    return len(holdout["calibration_indices"]) + len(holdout["test_indices"])


class ConfidenceBook:
    """Bootstrap intervals of points (trial, imgsz, thresholds), computed once each."""

    def __init__(self, tables: TrialTables, latency: dict[int, LatencyTable], *, resamples: int, seed: int) -> None:
        self.tables, self.latency, self.resamples, self.seed = tables, latency, resamples, seed
        self._memo: dict[tuple[str, int, float, float, str], ProfileIntervals | None] = {}

    def intervals(self, point: FrontPoint, split: Split) -> ProfileIntervals | None:
        """The point's intervals on the split (None when its exit table is not on disk any more).

        Calibration intervals only compare APs, so they skip the latency statistics (a third of the time).
        """
        trial_id = str(point.trial_id)
        key = (trial_id, point.imgsz, point.t1, point.t2, split)
        if key not in self._memo:
            table = self.tables.table(trial_id, point.imgsz, split)
            latency = None if split == "calibration" else self.latency.get(point.imgsz)
            self._memo[key] = None if table is None or not table.num_images else bootstrap_profile(
                table, point.t1, point.t2, latency=latency, resamples=self.resamples, seed=self.seed)
        return self._memo[key]


def indistinguishable(chosen: FrontPoint, rivals: list[FrontPoint], book: ConfidenceBook,
                      metric: str) -> list[FrontPoint]:
    """The rivals whose calibration AP interval overlaps the chosen point's (the chosen one left out)."""
    mine = book.intervals(chosen, "calibration")
    if mine is None:
        return []
    same = []
    for p in rivals:
        if p is chosen or p.same_profile(chosen):
            continue
        theirs = book.intervals(p, "calibration")
        if theirs is not None and theirs.ap(metric).overlaps(mine.ap(metric)):
            same.append(p)
    return same


def safest(chosen: FrontPoint, rivals: list[FrontPoint], book: ConfidenceBook, metric: str) -> FrontPoint:
    """The fastest point whose AP interval overlaps the chosen (most accurate) one's: as accurate as far as
    the images can tell, with the most latency to spare."""
    same = indistinguishable(chosen, rivals, book, metric)
    return min([chosen, *same], key=lambda p: (p.budget_latency_ms, -p.ap(metric)))
