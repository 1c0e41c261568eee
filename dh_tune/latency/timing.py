"""The timing loop every latency measurement shares, in eager torch or in a deployment runtime.

Steps run in pipeline order inside every repeat, so drift of the machine (clock, other load) hits
all of them alike; the frame they are timed on is chosen here too.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .table import PARTS

Step = Callable[[], None]
"""One timed piece of work; it leaves its result where the next step reads it."""


EXIT_NMS_STEPS = ("nms:1", "nms:2")
"""Names of the timed decode-and-NMS steps of an image leaving after head 1 and head 2."""


def timing_image(imgsz: int, image: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The frame a table is timed on: `image` when given (a representative one: its size sets the resize
    cost of pre-processing, its content the NMS load), else uniform noise of the input size."""
    if image is not None:
        return image
    return np.random.default_rng(seed).integers(0, 255, (imgsz, imgsz, 3), dtype=np.uint8)


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
