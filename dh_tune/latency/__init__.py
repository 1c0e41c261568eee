"""Device latency tables and the expected latency of a threshold profile on a device.

Pure schema, file and arithmetic code (numpy and jsonschema only); the timing itself lives elsewhere.
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
