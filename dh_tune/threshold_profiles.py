"""Threshold profiles: the JSON a search exports per device and latency budget, with its schema.

A profile names the checkpoint it was made for (path relative to the profile and sha256);
loading it against any other checkpoint is refused, and so is a path leading out of the profile's folder.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import jsonschema

from . import __version__
from .fsio import UnreadableFile, read_text, write_json
from .gating import STATIC_NAMES, gates_computed, static_exit
from .messages import InputError, NonFiniteNumber, loads_finite

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KIND = "dh-tune-profile"

_NUM = {"type": "number"}
_RUNTIME = {"type": "object", "required": ["name", "version"], "additionalProperties": False,
            "properties": {"name": {"enum": ["torch", "onnxruntime", "openvino"]}, "version": {"type": "string"}}}
"""The runtime whose timings a profile was chosen with."""
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dh-tune threshold profile",
    "type": "object",
    "required": ["schema_version", "kind", "device", "budget_ms", "feasible", "thresholds", "imgsz", "metric",
                 "training", "expected", "model", "configuration", "dh_tune_version", "created_at"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "kind": {"const": KIND},
        "device": {"type": "object", "required": ["name", "table_digest", "runtime"], "additionalProperties": True,
                   "properties": {"name": {"type": "string", "minLength": 1},
                                  "table_digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                  "runtime": _RUNTIME}},
        "budget_ms": {"type": "number", "exclusiveMinimum": 0},
        "feasible": {"type": "boolean"},
        "note": {"type": "string"},
        "thresholds": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1},
                       "minItems": 2, "maxItems": 2},
        "imgsz": {"type": "integer", "minimum": 32, "multipleOf": 32},
        "metric": {"enum": ["ap50", "ap50_95"]},
        "training": {
            "type": "object", "required": ["hyperparameters", "checkpoint"], "additionalProperties": True,
            "properties": {
                "hyperparameters": {"type": "object", "additionalProperties": {"type": ["number", "array", "string"]}},
                "checkpoint": {"type": "object", "required": ["path", "sha256"], "additionalProperties": False,
                               "properties": {"path": {"type": "string", "minLength": 1},
                                              "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}},
            },
        },
        "expected": {
            "type": "object", "additionalProperties": True,
            "required": ["ap50", "ap50_95", "latency_mean_ms", "latency_p90_ms", "exit_shares"],
            "properties": {"ap50": _NUM, "ap50_95": _NUM, "latency_mean_ms": _NUM, "latency_p90_ms": _NUM,
                           "exit_shares": {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3}},
        },
        "model": {"type": "object", "required": ["scale", "nc"], "additionalProperties": True},
        "configuration": {
            "type": "object", "required": ["kind", "heads"], "additionalProperties": False,
            "properties": {"kind": {"enum": ["static", "dynamic"]}, "heads": {"type": "string"},
                           "gates_computed": {"type": "array", "items": {"type": "boolean"},
                                              "minItems": 2, "maxItems": 2}},
        },
        "comparison": {
            "type": "object", "required": ["metric", "best_static", "best_dynamic", "dynamic_gain"],
            "additionalProperties": False,
            "properties": {"metric": {"enum": ["ap50", "ap50_95"]}, "best_static": {"type": ["object", "null"]},
                           "best_dynamic": {"type": ["object", "null"]}, "dynamic_gain": {"type": ["number", "null"]},
                           "min_dynamic_gain": {"type": "number", "minimum": 0}, "static_wins": {"type": "boolean"}},
        },
        # Chosen on calibration images, reported ("expected") on held-out test images: what the choice saw.
        "selection": {"type": "object", "additionalProperties": True},
        "holdout": {"type": "object", "additionalProperties": True,
                    "properties": {"calibration_images": {"type": "integer", "minimum": 1},
                                   "test_images": {"type": "integer", "minimum": 1}, "seed": {"type": "integer"}}},
        "budget_stat": {"enum": ["mean", "p90", "p99"]},
        "select": {"enum": ["best", "safest"]},
        "intervals": {"type": ["object", "null"], "additionalProperties": True},
        "indistinguishable": {"type": "integer", "minimum": 0},
        "compared_with": {"type": "integer", "minimum": 0},
        "dh_tune_version": {"type": "string"},
        "created_at": {"type": "string", "minLength": 10},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class HeldOutNumbers(Protocol):
    """What a profile gives on held-out test images (the search's `HeldOut`)."""

    @property
    def ap50(self) -> float: ...
    @property
    def ap50_95(self) -> float: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def latency_p90_ms(self) -> float: ...
    @property
    def latency_p99_ms(self) -> float: ...
    @property
    def exit_shares(self) -> tuple[float, float, float]: ...


class ChosenPoint(HeldOutNumbers, Protocol):
    """The search point a profile is made from (the search's `FrontPoint`): what it gives on calibration
    images (the fields of `HeldOutNumbers`), its size and thresholds, and its held-out numbers."""

    @property
    def imgsz(self) -> int: ...
    @property
    def t1(self) -> float: ...
    @property
    def t2(self) -> float: ...
    @property
    def gate_accuracy(self) -> tuple[float, float]: ...
    @property
    def mean_gmacs(self) -> float: ...
    @property
    def test(self) -> HeldOutNumbers | None: ...


class ProfileError(InputError):
    """A profile that cannot be used (one line: the file and the reason)."""


@dataclass
class Profile:
    """A validated profile document and the file it came from."""

    doc: dict[str, Any]
    path: Path | None = None

    @property
    def thresholds(self) -> tuple[float, float]:
        t = self.doc["thresholds"]
        return float(t[0]), float(t[1])

    @property
    def imgsz(self) -> int:
        return int(self.doc["imgsz"])

    @property
    def runtime(self) -> str:
        """The runtime the profile's latency was measured in."""
        return str(self.doc["device"]["runtime"]["name"])

    @property
    def checkpoint_sha256(self) -> str:
        return self.doc["training"]["checkpoint"]["sha256"]

    def checkpoint_path(self) -> Path:
        """The checkpoint file, relative to the profile's folder; ProfileError for an absolute path or one
        leading out of that folder (through `..` or a symbolic link)."""
        rel = self.doc["training"]["checkpoint"]["path"]
        folder = self.path.parent if self.path is not None else Path(".")
        path = folder / rel
        if Path(rel).is_absolute() or not path.resolve().is_relative_to(folder.resolve()):
            raise ProfileError(f"{self.path or 'profile'}: its checkpoint path {rel!r} leads outside the profile's "
                               "folder (a profile names its checkpoint relative to itself; give the checkpoint "
                               "explicitly)")
        return path


def validate(doc: Any, source: str) -> None:
    """Raise ProfileError naming `source` and the first schema problem."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise ProfileError(f"{source}: invalid profile at {where}: {' '.join(error.message.split())[:200]}")


def make_profile(*, device_name: str, table_digest: str, runtime: dict[str, str], budget_ms: float, feasible: bool,
                 candidate: ChosenPoint,
                 metric: str, hyperparameters: dict, checkpoint_rel: str, checkpoint_sha256: str,
                 model: dict, note: str | None = None, extra_training: dict | None = None,
                 comparison: dict | None = None, confidence: dict | None = None, holdout: dict | None = None,
                 table_created_at: str | None = None) -> dict[str, Any]:
    """Assemble (and validate) a profile document from a chosen search candidate.

    `configuration` says whether the profile is a static network (no gate computed) or gated;
    `comparison` records the best static network and the best gated profile within the same budget. A candidate
    scored on held-out images (`candidate.test`) reports those as `expected` and keeps what the choice saw
    (calibration images) as `selection`; `confidence` adds the budget statistic, the selection rule, the
    bootstrap intervals and how many rivals are indistinguishable.
    """
    t1, t2 = float(candidate.t1), float(candidate.t2)
    level = static_exit(t1, t2)
    seen = {"ap50": candidate.ap50, "ap50_95": candidate.ap50_95, "latency_mean_ms": candidate.latency_ms,
            "latency_p90_ms": candidate.latency_p90_ms, "latency_p99_ms": candidate.latency_p99_ms,
            "exit_shares": list(candidate.exit_shares), "gate_accuracy": list(candidate.gate_accuracy),
            "mean_gmacs": candidate.mean_gmacs}
    test = candidate.test
    expected = seen if not test else {
        "ap50": test.ap50, "ap50_95": test.ap50_95, "latency_mean_ms": test.latency_ms,
        "latency_p90_ms": test.latency_p90_ms, "latency_p99_ms": test.latency_p99_ms,
        "exit_shares": list(test.exit_shares), "split": "test"}
    device = {"name": device_name, "table_digest": table_digest, "runtime": dict(runtime)}
    if table_created_at:
        device["table_created_at"] = table_created_at
    doc = {
        "schema_version": SCHEMA_VERSION, "kind": KIND,
        "device": device,
        "budget_ms": float(budget_ms), "feasible": bool(feasible),
        "thresholds": [t1, t2], "imgsz": int(candidate.imgsz),
        "metric": metric,
        "training": {"hyperparameters": hyperparameters, **(extra_training or {}),
                     "checkpoint": {"path": checkpoint_rel, "sha256": checkpoint_sha256}},
        "expected": expected,
        "model": model,
        "configuration": {"kind": "static" if level else "dynamic",
                          "heads": STATIC_NAMES[level] if level else "gated",
                          "gates_computed": list(gates_computed(t1, t2))},
        "dh_tune_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if note:
        doc["note"] = note
    if comparison is not None:
        doc["comparison"] = comparison
    if test:
        doc["selection"] = {**seen, "split": "calibration"}
    if holdout:
        doc["holdout"] = {k: v for k, v in holdout.items() if not k.endswith("_indices")}
    doc.update(confidence or {})
    doc = _finite_or_none(json.loads(json.dumps(doc, default=_jsonable)))
    validate(doc, "<new profile>")
    return doc


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _finite_or_none(v: Any) -> Any:
    """`v` with every NaN and infinity replaced by None (JSON has no such numbers; readers refuse them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_or_none(x) for x in v]
    return v


def save_profile(doc: dict[str, Any], path: str | Path) -> Path:
    """Write a profile atomically: an interrupted save leaves the previous file or none, never half a one."""
    return write_json(path, doc, indent=2, allow_nan=False)


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile (plain JSON, never unpickled)."""
    path = Path(path)
    try:
        doc = loads_finite(read_text(path, "profile"))
    except UnreadableFile as exc:
        raise ProfileError(str(exc)) from None
    except NonFiniteNumber as exc:
        raise ProfileError(f"{path}: {exc} (profiles hold finite numbers only)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not JSON ({exc})") from None
    validate(doc, str(path))
    return Profile(doc, path)


def check_feasible(profile: Profile, allow: bool = False) -> None:
    """Refuse a profile that no configuration met the budget of (ProfileError), unless `allow`: then warn
    on stderr in one line."""
    if profile.doc["feasible"]:
        return
    what = f"{profile.path}: infeasible, no configuration meets its budget of {profile.doc['budget_ms']:g} ms"
    if not allow:
        raise ProfileError(f"{what}; run it anyway with --allow-infeasible (allow_infeasible=True)")
    logger.warning("%s; running it anyway", what)


def check_checkpoint(profile: Profile, checkpoint: str | Path, checkpoint_sha256: str) -> None:
    """Refuse a checkpoint other than the one the profile was made for."""
    if checkpoint_sha256 != profile.checkpoint_sha256:
        raise ProfileError(
            f"{profile.path}: made for checkpoint sha256 {profile.checkpoint_sha256[:12]}…, but {checkpoint} has "
            f"sha256 {checkpoint_sha256[:12]}…; thresholds do not transfer between checkpoints, run the search "
            "for this checkpoint (python -m dh_tune.search --checkpoint ...)")
