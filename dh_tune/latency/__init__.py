"""Latency tables of devices and the expected latency of a threshold profile on a device.

What this package exports is pure schema, file and arithmetic code (numpy and jsonschema only); the timing itself
(measure, timing, runtime_parts, frame and `python -m dh_tune.latency`) needs torch or OpenCV and is imported
by name.
"""
from __future__ import annotations

from dh_tune.latency.distribution import BUDGET_STATS, expected_latency, latency_stats, predicted_latency, shares_of
from dh_tune.latency.table import (
    EXIT_PARTS,
    PARTS,
    SCHEMA,
    SCHEMA_VERSION,
    LatencyTable,
    LatencyTableError,
    PartTiming,
)

__all__ = [
    "BUDGET_STATS",
    "EXIT_PARTS",
    "PARTS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "LatencyTable",
    "LatencyTableError",
    "PartTiming",
    "expected_latency",
    "latency_stats",
    "predicted_latency",
    "shares_of",
]
