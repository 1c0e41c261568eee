"""Hand-made latency table documents for the tests: every part timed with all its statistics."""
from __future__ import annotations

from typing import Any

DEVICE_RUNTIME = {"name": "torch", "version": "2.13.0"}


def part(median: float, p90: float, repeats: int = 50, *, low: float | None = None,
         p99: float | None = None) -> dict[str, Any]:
    """One part's timing: min and mean at the median and p99 at the p90 unless given."""
    return {"median_ms": median, "p90_ms": p90, "repeats": repeats, "mean_ms": median,
            "min_ms": median if low is None else low, "p99_ms": p90 if p99 is None else p99}


def table_document(device: dict[str, Any], model: dict[str, Any], parts: dict[str, dict[str, Any]],
                   created_at: str = "2025-01-02T03:04:05+00:00", **extra: Any) -> dict[str, Any]:
    """A latency table document; exit_nms defaults to the full NMS for both early exits."""
    return {"schema_version": 1, "device": {"runtime": dict(DEVICE_RUNTIME), **device}, "model": model,
            "parts": parts, "exit_nms": extra.pop("exit_nms", {"1": dict(parts["nms"]), "2": dict(parts["nms"])}),
            "created_at": created_at, **extra}
