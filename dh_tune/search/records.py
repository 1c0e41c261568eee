"""The records the search hands around: what it is asked for, the points it scores, each model's result and
what it returns. They become JSON (`to_dict`, `from_dict`) only where files are written and read, in the shape
every earlier search wrote, so a resumed search reads what an earlier one left.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..gating import STATIC_NAMES, static_exit
from ..pipeline import Pipeline

if TYPE_CHECKING:
    from .imported import ImportedBase

LATENCY_FIELDS = {"mean": "latency_ms", "p90": "latency_p90_ms", "p99": "latency_p99_ms"}
"""Budget statistic -> the field (and JSON key) holding it."""

DERIVED = ("static_exit", "heads", "budget_latency_ms")
"""JSON keys of a point computed from its other fields (written for readers, never read back)."""


def _pair(v: Any) -> tuple[float, float]:
    a, b = (float(x) for x in v)
    return a, b


def _triple(v: Any) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in v)
    return a, b, c


@dataclass(frozen=True)
class HeldOut:
    """What a point's profile gives on the held-out test images."""

    ap50: float
    ap50_95: float
    exit_shares: tuple[float, float, float]
    latency_ms: float
    latency_p90_ms: float
    latency_p99_ms: float = math.nan

    def ap(self, metric: str) -> float:
        return self.ap50 if metric == "ap50" else self.ap50_95

    def latency(self, stat: str) -> float:
        """The held-out latency statistic (mean, p90 or p99)."""
        return float(getattr(self, LATENCY_FIELDS[stat]))

    def to_dict(self) -> dict[str, Any]:
        return {"ap50": self.ap50, "ap50_95": self.ap50_95, "exit_shares": list(self.exit_shares),
                "latency_ms": self.latency_ms, "latency_p90_ms": self.latency_p90_ms,
                "latency_p99_ms": self.latency_p99_ms}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> HeldOut:
        p99 = doc.get("latency_p99_ms")
        return cls(float(doc["ap50"]), float(doc["ap50_95"]), _triple(doc["exit_shares"]), float(doc["latency_ms"]),
                   float(doc["latency_p90_ms"]), math.nan if p99 is None else float(p99))


@dataclass(frozen=True)
class FrontPoint:
    """One deployment profile, scored on the calibration images; `trial_id` names its model once it is pooled
    with other models' points, `test` holds the held-out numbers of points on a model's front."""

    imgsz: int
    t1: float
    t2: float
    ap50: float
    ap50_95: float
    latency_ms: float
    latency_p90_ms: float
    exit_shares: tuple[float, float, float]
    gate_accuracy: tuple[float, float]
    gate_recall: tuple[float, float]
    mean_gmacs: float
    source: str = "grid"
    latency_p99_ms: float = math.nan
    budget_stat: str = "mean"  # the latency statistic budgets are compared with
    test: HeldOut | None = None
    trial_id: str | None = None

    def ap(self, metric: str) -> float:
        """The AP the search optimises: 'ap50' or 'ap50_95'."""
        return self.ap50 if metric == "ap50" else self.ap50_95

    @property
    def budget_latency_ms(self) -> float:
        """The predicted latency statistic that budgets are compared with (mean, p90 or p99)."""
        return float(getattr(self, LATENCY_FIELDS[self.budget_stat]))

    @property
    def static_exit(self) -> int | None:
        """1, 2 or 3 when no gate decides anything (a static network with that many heads), else None."""
        return static_exit(self.t1, self.t2)

    @property
    def is_static(self) -> bool:
        return self.static_exit is not None

    @property
    def heads(self) -> str:
        level = self.static_exit
        return STATIC_NAMES[level] if level else "gated"

    def of_trial(self, trial_id: str) -> FrontPoint:
        """The same point, named as a point of model `trial_id`."""
        return replace(self, trial_id=trial_id)

    def same_profile(self, other: FrontPoint) -> bool:
        """True when both name the same model, size and thresholds."""
        return (self.trial_id, self.imgsz, self.t1, self.t2) == (other.trial_id, other.imgsz, other.t1, other.t2)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form; `static_exit` and `heads` tell a static network from a gated profile."""
        doc: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("test", "trial_id")}
        doc.update(test=self.test.to_dict() if self.test is not None else None, static_exit=self.static_exit,
                   heads=self.heads, budget_latency_ms=self.budget_latency_ms)
        if self.trial_id is not None:
            doc["trial_id"] = self.trial_id
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FrontPoint:
        """A point back from its JSON form (points written before budget statistics compare the mean)."""
        p99, test, trial = doc.get("latency_p99_ms"), doc.get("test"), doc.get("trial_id")
        return cls(int(doc["imgsz"]), float(doc["t1"]), float(doc["t2"]), float(doc["ap50"]), float(doc["ap50_95"]),
                   float(doc["latency_ms"]), float(doc["latency_p90_ms"]), _triple(doc["exit_shares"]),
                   _pair(doc["gate_accuracy"]), _pair(doc["gate_recall"]), float(doc["mean_gmacs"]),
                   str(doc.get("source", "grid")), math.nan if p99 is None else float(p99),
                   str(doc.get("budget_stat", "mean")), HeldOut.from_dict(test) if test else None,
                   None if trial is None else str(trial))




class TrialStatus(str, enum.Enum):
    """How a model's result document stands (`str`-valued: written to JSON as the bare string)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    PRUNED = "pruned"
    DUPLICATE = "duplicate"
    INTERRUPTED = "interrupted"


ENDED = (TrialStatus.FINISHED, TrialStatus.FAILED, TrialStatus.PRUNED)
"""Statuses of a trial that counts towards the search's trials: its point is not drawn again."""


@dataclass(frozen=True)
class ReportedPoint:
    """The (AP, latency) a model reports to the sampler: its best profile within the first budget."""

    ap: float
    latency_ms: float
    feasible: float
    hv_ratio: float = math.nan

    @classmethod
    def nothing(cls, latency_ms: float = 0.0) -> ReportedPoint:
        """What a model without a scored front reports (duplicates, failures, stopped trials)."""
        return cls(0.0, latency_ms, 0.0, 0.0)

    def to_dict(self) -> dict[str, float]:
        return {"ap": self.ap, "latency_ms": self.latency_ms, "feasible": self.feasible, "hv_ratio": self.hv_ratio}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ReportedPoint:
        return cls(float(doc["ap"]), float(doc["latency_ms"]), float(doc["feasible"]),
                   float(doc.get("hv_ratio", math.nan)))


_POINT_LISTS = ("front", "static")
_RECORDS = {"point": ReportedPoint}


@dataclass
class TrialResult:
    """A trained (or reference) model's result document, OUT/trials/<id>/result.json or OUT/reference/<role>.

    Fields left None are not written; keys this code does not know are kept, verbatim, in `extra`.
    """

    trial_id: str
    params: dict[str, float]
    status: TrialStatus
    role: str | None = None  # base, static or checkpoint: a model the search did not sample
    started: float | None = None
    attempt: int | None = None
    pid: int | None = None
    duplicate_of: str | None = None
    resumed_from: str | None = None
    resumed_by: str | None = None
    key: dict[str, Any] | None = None  # what a reference model's result was computed from
    loss: dict[str, float] | None = None  # the whole train.loss section as search parameters
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    train_metrics: dict[str, Any] | None = None
    freeze: str | None = None
    source: dict[str, Any] | None = None
    mlflow_run_id: str | None = None
    cache_dir: str | None = None
    front: list[FrontPoint] | None = None
    static: list[FrontPoint] | None = None
    hv_ratio: float | None = None
    point: ReportedPoint | None = None
    evaluated: int | None = None
    holdout: dict[str, Any] | None = None
    stopped_epoch: int | None = None
    last: dict[str, float] | None = None
    error: str | None = None
    traceback: str | None = None
    ended: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status is TrialStatus.FINISHED

    @property
    def hyperparameters(self) -> dict[str, float]:
        """The model's whole gate-loss setting (its sampled values when it recorded no loss section)."""
        return self.loss or self.params

    def points(self) -> list[FrontPoint]:
        """Its front and its static networks, each once, named as this model's points."""
        seen, out = set(), []
        for c in (self.front or []) + (self.static or []):
            if (c.imgsz, c.t1, c.t2) not in seen:
                seen.add((c.imgsz, c.t1, c.t2))
                out.append(c.of_trial(self.trial_id))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; a trial's MLflow run id is written beside its checkpoint even when it has none."""
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                doc.update(value)
            elif f.name == "mlflow_run_id" and value is None and self.checkpoint is not None and self.role is None:
                doc[f.name] = None
            elif value is not None:
                doc[f.name] = _jsonable(f.name, value)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrialResult:
        """A result document back (ValueError, KeyError or TypeError for one that is not)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: _typed(k, v) for k, v in doc.items() if k in known}
        values["status"] = TrialStatus(doc["status"])
        values["params"] = {k: float(v) for k, v in doc["params"].items()}
        return cls(**values, extra={k: v for k, v in doc.items() if k not in known})

    def updated(self, **changes: Any) -> TrialResult:
        return replace(self, **changes)


def _jsonable(name: str, value: Any) -> Any:
    if name in _POINT_LISTS:
        return [p.to_dict() for p in value]
    if name in _RECORDS:
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _typed(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _POINT_LISTS:
        return [FrontPoint.from_dict(p) for p in value]
    if name in _RECORDS:
        return _RECORDS[name].from_dict(value)
    return value


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
    candidate: FrontPoint
    trial: TrialResult
    profile_path: Path | None = None


@dataclass
class SearchOutcome:
    """What a finished search returns: the global front, one result per budget, every trial, the index file."""

    out: Path
    front: list[FrontPoint]
    budgets: list[BudgetResult]
    trials: list[TrialResult]
    parent_run_id: str | None
    index_path: Path | None
    summary: str = ""  # the table the command prints
