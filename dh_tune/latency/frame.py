"""The frame a device is timed reading and pre-processing on: a real image of the data, not noise.

The search, `evaluate` and the latency check pick it the same way, so their tables are timed on the same frame.
"""
from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np

from ..data.images import first_readable

TIMING_CANDIDATES = 20
"""Images of a split tried in order for the timing frame. A few damaged files at its start are stepped over, while
a split whose first images are all unreadable falls back to noise after a bounded number of decodes (each
decodes a whole image) rather than reading through the whole split."""


def timing_frame(paths: Iterable[str | Path]) -> tuple[np.ndarray, Path] | None:
    """The first readable of the first TIMING_CANDIDATES `paths` (a split's images) and its file; None if none is."""
    return first_readable(Path(p) for p in islice(paths, TIMING_CANDIDATES))
