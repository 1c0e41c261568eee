"""Wall time of each phase of a search (device tables, base training, trials, finish), summed over resumes.

The summary ends with it, so a user sees where the minutes went; the search's state file keeps it.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class PhaseClock:
    """Seconds per phase in the order the phases first ran; `earlier` holds those of stopped runs of the search."""

    earlier: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    _running: tuple[str, float] | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time inside under `name` (added to what the phase already took)."""
        t0 = time.perf_counter()
        self._running = (name, t0)
        try:
            yield
        finally:
            self._running = None
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def totals(self) -> dict[str, float]:
        """Seconds per phase so far, the one running counted up to now, stopped runs' included."""
        out = dict(self.earlier)
        now = dict(self.seconds)
        if self._running is not None:
            name, t0 = self._running
            now[name] = now.get(name, 0.0) + time.perf_counter() - t0
        for name, s in now.items():
            out[name] = out.get(name, 0.0) + s
        return out

    def line(self) -> str:
        """One line for the summary: each phase's minutes (seconds under a minute) and the total."""
        totals = self.totals()
        if not totals:
            return "Time per phase: nothing timed"
        parts = [f"{name} {_duration(s)}" for name, s in totals.items()]
        resumed = " (this search's earlier runs included)" if self.earlier else ""
        return f"Time per phase{resumed}: " + ", ".join(parts) + f"; total {_duration(sum(totals.values()))}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
