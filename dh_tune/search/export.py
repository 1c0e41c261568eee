"""Export the chosen profiles: OUT/profiles/<device>/budget-<B>ms.json, an index, and the checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import fsio
from ..fsio import slug
from ..latency import LatencyTable
from ..model.checkpoint import file_sha256, load_checkpoint
from ..threshold_profiles import make_profile, save_profile
from .compare import ModelSummary
from .records import BudgetResult, FrontPoint


@dataclass
class Exported:
    """One budget's outcome: the profile file, its document and how it was chosen."""

    budget_ms: float
    path: Path
    doc: dict
    reason: str


def budget_name(budget_ms: float) -> str:
    return f"budget-{budget_ms:g}ms.json"


def export_profile(out_dir: Path, result: BudgetResult, *, metric: str, table: LatencyTable,
                   comparison: dict | None = None, confidence: dict | None = None) -> Exported:
    """Write one budget's profile, and copy its checkpoint beside it named by content (a copy that does not
    match the checkpoint's SHA-256, say truncated by a kill, is copied again)."""
    device_dir = out_dir / "profiles" / slug(table.device_name)
    trial, budget_ms = result.trial, result.budget_ms
    ckpt = Path(str(trial.checkpoint))
    sha = file_sha256(ckpt)
    rel = Path("checkpoints") / f"{sha[:16]}.pt"
    target = device_dir / rel
    fsio.copy_verified(ckpt, target, sha)
    meta = load_checkpoint(target)
    args = meta["model_args"]
    doc = make_profile(
        device_name=table.device_name, table_digest=table.digest(), runtime=table.runtime, budget_ms=budget_ms,
        feasible=result.feasible, candidate=result.candidate, metric=metric, hyperparameters=trial.params,
        checkpoint_rel=rel.as_posix(), checkpoint_sha256=sha,
        model={"scale": args["scale"], "nc": args["nc"], "names": meta.get("names", [])},
        note=result.reason, extra_training={"trial_id": trial.trial_id, **_source(meta)}, comparison=comparison,
        confidence=confidence, holdout=trial.holdout, table_created_at=table.created_at)
    path = save_profile(doc, device_dir / budget_name(budget_ms))
    return Exported(budget_ms, path, doc, result.reason)


def _source(ckpt: dict) -> dict:
    """The checkpoint's origin when it descends from an imported detector (file, sha256, class names)."""
    source = ckpt.get("source")
    return {"source": {**source, "names": list(ckpt.get("names", []))}} if source else {}


@dataclass(frozen=True)
class IndexSummary:
    """What index.json says of the models behind the profiles: counts, each model, the static networks."""

    trials: int
    failed_trials: int
    pruned_trials: int
    concurrency: dict[str, Any] | None
    optuna_vs_grid_hv_ratio: float | None
    models: list[ModelSummary]
    static_points: list[FrontPoint]
    hypervolume_ref_latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"trials": self.trials, "failed_trials": self.failed_trials, "pruned_trials": self.pruned_trials,
                "concurrency": self.concurrency, "optuna_vs_grid_hv_ratio": self.optuna_vs_grid_hv_ratio,
                "models": [m.to_dict() for m in self.models],
                "static_points": [p.to_dict() for p in self.static_points],
                "hypervolume_ref_latency_ms": self.hypervolume_ref_latency_ms}


def write_index(out_dir: Path, device_name: str, exported: list[Exported], front: list[FrontPoint], metric: str,
                summary: IndexSummary | None = None) -> Path:
    """index.json beside the profiles: every budget with its file, feasibility, AP and latency."""
    device_dir = out_dir / "profiles" / slug(device_name)
    doc = {
        "device": device_name, "metric": metric, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "budgets": [{"budget_ms": e.budget_ms, "file": e.path.name, "feasible": e.doc["feasible"],
                     "imgsz": e.doc["imgsz"], "thresholds": e.doc["thresholds"],
                     "configuration": e.doc["configuration"], "comparison": e.doc.get("comparison"),
                     "ap50": e.doc["expected"]["ap50"], "ap50_95": e.doc["expected"]["ap50_95"],
                     "latency_mean_ms": e.doc["expected"]["latency_mean_ms"], "reason": e.reason} for e in exported],
        "front": [p.to_dict() for p in front], **(summary.to_dict() if summary is not None else {}),
    }
    return fsio.write_json(device_dir / "index.json", doc)
