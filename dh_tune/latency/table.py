"""Device latency tables: measured cost of each part of DH-Net on one device, as versioned JSON.

A table measured on a Jetson or a server can be copied here and used like a local one: the
threshold search only needs the per-part times to price the heads each image runs.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from .. import fsio
from ..gating import GRAPH_KEYS, deepest_head, gates_computed, graph_key, plan_graphs
from ..messages import InputError

SCHEMA_VERSION = 1

PARTS: tuple[str, ...] = ("preprocess", "stage1", "gate1", "stage2", "gate2", "stage3", "nms")
"""The timed parts, in the order an image that runs every head passes through them."""

EXIT_PARTS: tuple[tuple[str, ...], ...] = (
    ("preprocess", "stage1", "gate1", "nms"),
    ("preprocess", "stage1", "gate1", "stage2", "gate2", "nms"),
    ("preprocess", "stage1", "gate1", "stage2", "gate2", "stage3", "nms"),
)
"""Parts an image runs when it leaves after head 1, 2 or 3 (gate k decides whether head k+1 runs).

A gate whose threshold decides alone (see `dh_tune.gating`) is not computed and not charged."""

GATE_PARTS = ("gate1", "gate2")

READ = "read"
"""Optional part: reading the frame from its file (timed when the table was timed on a frame's file, not on
noise). Every exit pays it: a deployment that reads frames from disk pays it before pre-processing."""

STATISTICS = ("median", "p90", "p99", "min")
"""Per-part statistics an exit's cost can be summed from."""

_PART_SCHEMA = {
    "type": "object",
    "required": ["median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "repeats"],
    "properties": {
        "median_ms": {"type": "number", "minimum": 0},
        "p90_ms": {"type": "number", "minimum": 0},
        "p99_ms": {"type": "number", "minimum": 0},
        "mean_ms": {"type": "number", "minimum": 0},
        "min_ms": {"type": "number", "minimum": 0},
        "repeats": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dh-tune device latency table",
    "type": "object",
    "required": ["schema_version", "device", "model", "parts", "exit_nms", "created_at"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "device": {
            "type": "object",
            "required": ["name", "kind", "threads", "torch", "runtime"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "kind": {"enum": ["cpu", "cuda"]},
                "threads": {"type": "integer", "minimum": 1},
                "interop_threads": {"type": "integer", "minimum": 1},
                "torch": {"type": "string", "minLength": 1},
                "cpu_model": {"type": "string"},
                "cuda_device": {"type": ["string", "null"]},
                "platform": {"type": "string"},
                "hostname": {"type": "string"},
                "runtime": {
                    "type": "object", "required": ["name", "version"], "additionalProperties": False,
                    "properties": {"name": {"enum": ["torch", "onnxruntime", "openvino"]},
                                   "version": {"type": "string", "minLength": 1}},
                },
            },
            "additionalProperties": True,  # descriptive; further facts about the device are welcome
        },
        "model": {
            "type": "object",
            "required": ["scale", "nc", "imgsz", "batch", "checkpoint_sha256"],
            "properties": {
                "scale": {
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                         "minItems": 2, "maxItems": 2},
                    ]
                },
                "nc": {"type": "integer", "minimum": 1},
                "imgsz": {"type": "integer", "minimum": 32, "multipleOf": 32},
                "batch": {"type": "integer", "minimum": 1},
                "checkpoint_sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            },
            "additionalProperties": False,
        },
        "parts": {
            "type": "object",
            "required": list(PARTS),
            "properties": {p: _PART_SCHEMA for p in (*PARTS, READ)},
            "additionalProperties": False,
        },
        # Decode and NMS of an image that leaves after head 1 or 2 (only its heads' maps); head 3 is parts/nms.
        "exit_nms": {
            "type": "object",
            "required": ["1", "2"],
            "properties": {k: _PART_SCHEMA for k in ("1", "2")},
            "additionalProperties": False,
        },
        # Deployment runtimes: each graph a profile can deploy (see dh_tune.gating.plan_graphs), timed as deployed.
        "graphs": {
            "type": "object",
            "required": list(GRAPH_KEYS),
            "properties": {g: _PART_SCHEMA for g in GRAPH_KEYS},
            "additionalProperties": False,
        },
        "measurement": {
            "type": "object",
            "properties": {
                "warmup": {"type": "integer", "minimum": 0},
                "interleaved": {"type": "boolean"},
                "synchronized": {"type": "boolean"},
                "dh_tune": {"type": "string"},
                "seconds": {"type": "number", "minimum": 0},
                # Steps whose repeats stayed spread out (a disturbed machine) after the re-timing retries.
                "unstable_parts": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": True,
        },
        "created_at": {"type": "string", "minLength": 10},
    },
    "additionalProperties": False,
}
"""JSON schema (draft 2020-12) of a latency table document."""

_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class LatencyTableError(InputError):
    """A latency table that is not valid JSON or does not follow the schema.

    The message is one line naming the file and the first problem found.
    """


@dataclass(frozen=True)
class PartTiming:
    """Median, 90th and 99th percentile, mean and minimum wall time of one part over ``repeats`` timed runs."""

    median_ms: float
    p90_ms: float
    repeats: int
    mean_ms: float
    min_ms: float
    p99_ms: float

    def __post_init__(self) -> None:
        # Plain floats and ints, so the canonical JSON (and the digest) survives a save/load trip.
        for name in ("median_ms", "p90_ms", "mean_ms", "min_ms", "p99_ms"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "repeats", int(self.repeats))

    def to_dict(self) -> dict[str, Any]:
        """JSON form of one part's timing."""
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "repeats": self.repeats,
                "mean_ms": self.mean_ms, "min_ms": self.min_ms, "p99_ms": self.p99_ms}


def _problem(error: jsonschema.ValidationError) -> str:
    """One-line description of a schema violation with the JSON path where it occurred."""
    where = "/".join(str(p) for p in error.absolute_path) or "top level"
    message = " ".join(error.message.split())
    return f"{where}: {message[:200]}"


def _check(doc: Any, source: str) -> None:
    """Validate a document against SCHEMA plus the rules a schema cannot express.

    Raises LatencyTableError naming ``source`` and the most relevant problem.
    """
    if isinstance(doc, dict) and doc.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise LatencyTableError(
            f"{source}: latency table schema_version {doc['schema_version']!r} is not supported "
            f"(this version of dh-tune reads {SCHEMA_VERSION}); re-measure the device"
        )
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(doc))
    if error is not None:
        raise LatencyTableError(f"{source}: invalid latency table at {_problem(error)}")
    for name, part in [*doc["parts"].items(), *doc.get("graphs", {}).items(), *doc["exit_nms"].items()]:
        if not all(math.isfinite(v) for k, v in part.items() if k.endswith("_ms")):
            raise LatencyTableError(f"{source}: invalid latency table at parts/{name}: times must be finite")
        if part["p90_ms"] < part["median_ms"]:
            raise LatencyTableError(f"{source}: invalid latency table at parts/{name}: p90_ms is below median_ms")
        if part["p99_ms"] < part["p90_ms"]:
            raise LatencyTableError(f"{source}: invalid latency table at parts/{name}: p99_ms is below p90_ms")
    try:
        datetime.fromisoformat(doc["created_at"])
    except ValueError:
        raise LatencyTableError(
            f"{source}: invalid latency table at created_at: {doc['created_at']!r} is not an ISO 8601 time"
        ) from None


@dataclass
class LatencyTable:
    """Per-part timings of DH-Net on one device, with the device and model they were measured for.

    ``exit_cost_ms`` turns them into the cost of an image leaving after each head. Tables of a deployment
    runtime also time every graph a profile can deploy (``graphs``): a profile is priced by the graphs it
    runs, which cost less than their parts timed apart (fewer runtime calls, fewer tensors handed on).
    """

    device: dict[str, Any]
    model: dict[str, Any]
    parts: dict[str, PartTiming]
    created_at: str
    measurement: dict[str, Any] = field(default_factory=dict)
    graphs: dict[str, PartTiming] = field(default_factory=dict)
    exit_nms: dict[str, PartTiming] = field(default_factory=dict)

    @property
    def device_name(self) -> str:
        """The device's display name, e.g. the CPU model and thread count or the CUDA device.

        Profiles are filed under it, so a table measured elsewhere keeps its own name.
        """
        return str(self.device["name"])

    @property
    def runtime(self) -> dict[str, str]:
        """Name and version of the runtime the parts were timed in."""
        return dict(self.device["runtime"])

    @property
    def unstable_parts(self) -> list[str]:
        """Timed steps whose repeats stayed spread out after re-timing (a disturbed machine); empty when all
        were steady or the table predates the check."""
        return [str(p) for p in self.measurement.get("unstable_parts", [])]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this table (schema version included).

        ``from_dict(table.to_dict())`` gives back an equal table.
        """
        doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "device": dict(self.device),
            "model": dict(self.model),
            "parts": {name: self.parts[name].to_dict() for name in (*PARTS, READ) if name in self.parts},
            "created_at": self.created_at,
        }
        if self.graphs:
            doc["graphs"] = {name: self.graphs[name].to_dict() for name in GRAPH_KEYS if name in self.graphs}
        doc["exit_nms"] = {k: v.to_dict() for k, v in sorted(self.exit_nms.items())}
        if self.measurement:
            doc["measurement"] = dict(self.measurement)
        return doc

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<latency table>") -> LatencyTable:
        """Build a table from a parsed JSON document, validating it first.

        ``source`` names the document in error messages (the file path when loading).
        """
        _check(doc, source)
        parts = {name: PartTiming(**p) for name, p in doc["parts"].items()}
        graphs = {name: PartTiming(**p) for name, p in doc.get("graphs", {}).items()}
        exit_nms = {k: PartTiming(**p) for k, p in doc["exit_nms"].items()}
        return cls(device=dict(doc["device"]), model=dict(doc["model"]), parts=parts,
                   created_at=doc["created_at"], measurement=dict(doc.get("measurement", {})), graphs=graphs,
                   exit_nms=exit_nms)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read and validate a table from a JSON file.

        Raises LatencyTableError (one line, naming the file) for unreadable, non-JSON or invalid files.
        """
        path = Path(path)
        try:
            text = fsio.read_text(path, "latency table")
        except fsio.UnreadableFile as exc:
            raise LatencyTableError(str(exc)) from None
        except OSError as exc:
            raise LatencyTableError(f"{path}: cannot read latency table ({exc.__class__.__name__}: {exc})") from None
        try:
            doc = json.loads(text)  # non-finite times are refused by _check, which names the part
        except json.JSONDecodeError as exc:
            raise LatencyTableError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        return cls.from_dict(doc, source=str(path))

    def save(self, path: str | Path) -> None:
        """Validate and write the table as indented JSON, atomically (never a half-written table).

        An invalid table raises LatencyTableError before anything is written.
        """
        path = Path(path)
        doc = self.to_dict()
        _check(doc, str(path))
        fsio.write_json(path, doc, indent=2, sort_keys=True, allow_nan=False)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON (sorted keys, no whitespace) of the table.

        Identifies the exact measurements a profile was priced with; unchanged by a save/load trip.
        """
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def exit_cost_ms(self, statistic: str = "median", thresholds: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
        """Cost (3,) in ms of an image leaving after head 1, 2 and 3 under gate `thresholds`, from one statistic.

        Every exit starts with the frame's read from its file where the table timed it (``read``), then
        with ``graphs`` timed: pre-processing + the deployed graphs the image runs + NMS. Otherwise from the
        parts: head 1 is preprocess + stage1 + gate1 + nms; head 2 adds stage2 + gate2; head 3 adds stage3,
        and a gate left out (its threshold decides alone, `dh_tune.gating`) costs nothing. NMS is the
        exit's own (``exit_nms``: decode and NMS of the maps of the heads that ran).
        """
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        return self.exit_costs(lambda t: float(getattr(t, f"{statistic}_ms")), thresholds)

    def exit_costs(self, value: Callable[[PartTiming], float],
                   thresholds: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
        """Cost (3,) of each exit summed from `value` of each part or graph it runs (see `exit_cost_ms`)."""
        if len(thresholds) != 2 or any(isinstance(t, bool) for t in thresholds):
            raise TypeError(f"thresholds must be two numbers (t1, t2), got {thresholds!r}")
        missing = [p for p in PARTS if p not in self.parts]
        if missing:
            raise LatencyTableError(f"latency table of {self.device_name} lacks parts {missing}")

        def ms(timing: PartTiming) -> float:
            return float(value(timing))

        t1, t2 = float(thresholds[0]), float(thresholds[1])
        nms = ms(self.parts["nms"])
        # Decode and NMS see only the maps of the heads an image ran.
        post = np.array([ms(self.exit_nms[k]) for k in ("1", "2")] + [nms])
        post += ms(self.parts[READ]) if READ in self.parts else 0.0  # tables timed on noise read no file
        if self.graphs:
            pre = ms(self.parts["preprocess"])
            last = deepest_head(t1, t2)
            graphs = [(g[0][0], ms(self.graphs[graph_key(g, last)])) for g in plan_graphs(t1, t2)]
            return pre + post + np.array([sum(v for first, v in graphs if first <= level) for level in (1, 2, 3)])
        skipped = {g for g, on in zip(GATE_PARTS, gates_computed(t1, t2)) if not on} | {"nms"}
        return post + np.array([sum(ms(self.parts[p]) for p in parts if p not in skipped) for parts in EXIT_PARTS])
