"""What a search is asked for and what it returns: the records the driver and the summary both use.

Kept apart from both so the driver, which runs the search, and the summary, which builds the outcome,
import them from one place and never each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..pipeline import Pipeline

if TYPE_CHECKING:
    from .imported import ImportedBase


@dataclass
class SearchRequest:
    """What the user asked for (the command line, parsed)."""

    pipeline: Pipeline
    budgets: list[float]
    out: Path
    trials: int | None = None
    device_tables: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    ray_address: str | None = None
    tracking_uri: str | None = None
    track: bool = True
    remeasure: bool = False
    runtime: str | None = None
    """Runtime the device is timed in (None: the fastest installed, or the --device-table files' own)."""
    from_yolov5: Path | None = None
    """A YOLOv5 checkpoint to import as the base and static reference (its gates are trained by the trials)."""
    pipeline_named: bool = False
    """The user named the pipeline (its deployment sizes and search space then hold for an imported detector)."""
    imported: ImportedBase | None = None
    """The imported detector, once the search has read `from_yolov5`."""


@dataclass
class BudgetResult:
    """The profile chosen for one latency budget, why, and where it was exported."""

    budget_ms: float
    feasible: bool
    reason: str
    candidate: dict | None
    trial: dict | None
    profile_path: Path | None = None


@dataclass
class SearchOutcome:
    """What a finished search returns: the global front, one result per budget, every trial, the index file."""

    out: Path
    front: list[dict]
    budgets: list[BudgetResult]
    trials: list[dict]
    parent_run_id: str | None
    index_path: Path | None
    summary: str = ""  # the table the command prints
