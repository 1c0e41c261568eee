"""The timing loop every latency measurement shares, in eager torch or in a deployment runtime.

Steps run in pipeline order inside every repeat, so drift of the machine (clock, other load) hits
all of them alike; the frame they are timed on is chosen here too. A step whose repeats spread out
(another process took the CPU part of the time) is timed again, and named when it stays so.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .table import PARTS, READ

Step = Callable[[], None]
"""One timed piece of work; it leaves its result where the next step reads it."""


EXIT_NMS_STEPS = ("nms:1", "nms:2")
"""Names of the timed decode-and-NMS steps of an image leaving after head 1 and head 2."""

# When a step counts as disturbed: its p90 more than SPREAD_LIMIT above its median, by more than SPREAD_FLOOR_MS.
# The median shrugs off a burst of other load, but the p90 (and p99) that tail budgets are priced with takes it
# in whole, so the check is on p90/median; a MAD would miss exactly such a burst (a minority of repeats). The
# floor spares sub-millisecond steps (gates, NMS on a few boxes) whose scheduler jitter is a large ratio of
# nothing a budget would notice. Measured on a shared 2-core EPYC at load 9 (DHNet (0.33, 0.25), 96 and 160 px,
# 1 thread, 40 repeats): stages at p90/median 1.09-1.38 and sub-ms steps up to 2.28 but at most 0.17 ms above
# their median pass; 3 of 72 step timings (stage1, 1.66-1.94x, 3.7-4.3 ms above) failed and passed on retry.
SPREAD_LIMIT = 0.5
SPREAD_FLOOR_MS = 0.25
RETRIES = 2
"""Times a disturbed measurement is repeated before its steps are recorded as unstable."""

Timings = dict[str, list[float]]
"""Milliseconds of each named step over the repeats of one measurement."""


def timing_image(imgsz: int, image: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The frame a table is timed on: `image` when given (a representative one: its size sets the resize
    cost of pre-processing, its content the NMS load), else uniform noise of the input size."""
    if image is not None:
        return image
    return np.random.default_rng(seed).integers(0, 255, (imgsz, imgsz, 3), dtype=np.uint8)


def read_steps(image_file: Path | None) -> list[tuple[str, Step]]:
    """The step that reads the timing frame from its file, as a deployment reads each frame it is given
    (none when the table is timed on noise or on pixels without a file)."""
    if image_file is None:
        return []
    from ..data.images import read_image

    path = Path(image_file)

    def read() -> None:
        read_image(path)
    return [(READ, read)]


def time_steps(steps: list[Step], *, repeats: int, warmup: int, max_seconds: float,
               sync: Step = lambda: None, names: tuple[str, ...] = PARTS) -> dict[str, list[float]]:
    """Milliseconds of each step (named by `names`, default one per part in PARTS order) over `repeats` runs
    of the whole pipeline.

    Fewer repeats are kept when max_seconds runs out (at least 5). `sync` waits for queued device work.
    """
    if len(names) != len(steps):
        raise ValueError(f"{len(steps)} steps but {len(names)} names")
    times: dict[str, list[float]] = {p: [] for p in names}
    start = time.perf_counter()
    for r in range(warmup + repeats):
        sync()
        stamps = [time.perf_counter_ns()]
        for step in steps:
            step()
            sync()
            stamps.append(time.perf_counter_ns())
        if r >= warmup:
            for part, (a, b) in zip(names, zip(stamps, stamps[1:])):
                times[part].append((b - a) / 1e6)
            if time.perf_counter() - start > max_seconds and r - warmup + 1 >= 5:
                break
    return times


def tail_excess(samples: list[float]) -> tuple[float, float]:
    """(p90 - median, median) of one step's milliseconds: how far its slow repeats sit above its typical one."""
    median = float(np.median(samples))
    return float(np.percentile(samples, 90)) - median, median


def is_unstable(samples: list[float], limit: float = SPREAD_LIMIT, floor_ms: float = SPREAD_FLOOR_MS) -> bool:
    """True when a step's p90 exceeds its median by more than `limit` of it and by more than `floor_ms`.

    See SPREAD_LIMIT for why the check is on the p90 and why small steps get an absolute floor.
    """
    excess, median = tail_excess(samples)
    return excess > limit * median and excess > floor_ms


def time_until_stable(run: Callable[[], Timings], *, retries: int = RETRIES, limit: float = SPREAD_LIMIT,
                      floor_ms: float = SPREAD_FLOOR_MS) -> tuple[Timings, list[str], int]:
    """Timings of `run` (one whole measurement), re-run up to `retries` times while some step is unstable.

    A step takes the samples of its first steady attempt, else of its least spread one and is listed as
    unstable. Returns (timings, unstable step names, attempts made).
    """
    times = run()
    bad = [name for name, v in times.items() if is_unstable(v, limit, floor_ms)]
    attempts = 1
    while bad and attempts <= retries:
        again = run()
        attempts += 1
        for name in list(bad):
            if not is_unstable(again[name], limit, floor_ms):
                times[name] = again[name]
                bad.remove(name)
            elif _relative_excess(again[name]) < _relative_excess(times[name]):
                times[name] = again[name]
    return times, bad, attempts


def _relative_excess(samples: list[float]) -> float:
    excess, median = tail_excess(samples)
    return excess / median if median > 0 else float("inf")
