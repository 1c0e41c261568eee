"""What a finished search logs to MLflow: the parent run's artifacts and numbers, a run per exported profile
and a run per static network of the static reference. The MLflow queries themselves are dh_tune.tracking's.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..evaluate.profile_comparison import profile_metrics
from ..fsio import slug
from ..tracking import SafeLogger, delete_child_runs, flatten, start_run
from .choose import BudgetChoice
from .confidence import TrialTables
from .export import Exported
from .imported import source_tags
from .plots import figure7
from .records import FrontPoint, TrialStatus
from .report import FinishedSearch

logger = logging.getLogger(__name__)

REPLACED_ROLES = ("profile", "static")
"""Child runs a resumed search logs afresh (the earlier invocation's are deleted, not duplicated)."""


def log_search(parent: SafeLogger | None, f: FinishedSearch, tables: TrialTables, artifacts: list[Path]) -> None:
    """Log the finished search into its parent run (`artifacts[0]` is the front plot every profile run gets)."""
    if parent is None:
        if f.req.track:
            logger.warning("MLflow logging failed; profiles are in %s", f.req.out / "profiles")
        return
    for path in artifacts:
        parent.artifact(path)
    _log_parent(parent, f)
    delete_child_runs(parent.uri, parent.run_id, "search_role", REPLACED_ROLES)
    for choice, e in zip(f.choices, f.exported):
        _log_profile(parent, f, choice, e, tables, artifacts[0])
    for pt in static_reference(f.pooled.points):
        _log_static(parent, f, pt)
    parent.end()
    if parent.failed:
        logger.warning("MLflow logging failed; profiles are in %s", f.req.out / "profiles")


def _log_parent(parent: SafeLogger, f: FinishedSearch) -> None:
    if f.hv:
        parent.metrics({"optuna_vs_grid_hv_ratio": min(f.hv)}, step=0)
    parent.metrics({"pruned_trials": f.count(TrialStatus.PRUNED)}, step=0)
    if f.concurrency:
        parent.tags({"concurrent_trials_planned": str(f.concurrency["planned"]),
                     "concurrency_limited_by": f.concurrency["limited_by"],
                     "trial_resources": f.concurrency["trial"]})
        parent.metrics({"concurrent_trials_seen": f.concurrency["most_at_once"]}, step=0)


def _log_profile(parent: SafeLogger, f: FinishedSearch, choice: BudgetChoice, e: Exported, tables: TrialTables,
                 front_png: Path) -> None:
    """A run for one exported profile: its thresholds, expected numbers, the profile and its Figure 7."""
    r, comp, metric = choice.result, choice.comparison, f.metric
    device, c = e.doc["device"]["name"], r.candidate
    run = start_run(parent.uri, f.req.pipeline.name, f"profile-{slug(device)[:40]}-{r.budget_ms:g}ms",
                    parent_run_id=parent.run_id,
                    tags={"device": device, "runtime": e.doc["device"]["runtime"]["name"],
                          "budget_ms": f"{r.budget_ms:g}", "pareto": "true",
                          "feasible": str(r.feasible).lower(), "search_role": "profile",
                          "configuration": "static" if c.is_static else "dynamic", "heads": c.heads,
                          **source_tags(e.doc["training"].get("source"))})
    if run is None:
        return
    run.params({"t1": f"{c.t1:.4f}", "t2": f"{c.t2:.4f}", "imgsz": str(c.imgsz),
                "trial_id": str(c.trial_id), **flatten(r.trial.params, "hp.")})
    extra = {}
    if comp.best_static is not None:
        extra["best_static_" + metric] = comp.best_static.ap(metric)
    if comp.dynamic_gain is not None:
        extra["dynamic_gain"] = comp.dynamic_gain
    run.metrics({**profile_metrics(e.doc), **extra}, step=0)
    run.artifact(e.path)
    run.artifact(front_png)
    fig = figure7(tables, c, f.latency[c.imgsz], metric, e.path.with_suffix(".figure7.png"))
    if fig is not None:
        run.artifact(fig)
    run.end()
    if run.failed:
        parent.failed = True


def _log_static(parent: SafeLogger, f: FinishedSearch, pt: FrontPoint) -> None:
    """A run for one static network of the static reference: its size, heads and expected numbers."""
    imported = f.req.imported
    run = start_run(parent.uri, f.req.pipeline.name, f"static-{pt.heads.replace(' ', '-')}-{pt.imgsz}",
                    parent_run_id=parent.run_id,
                    tags={"search_role": "static", "static": "true", "heads": pt.heads,
                          "model": str(pt.trial_id), "device": f.latency[pt.imgsz].device_name,
                          **source_tags(imported.source if imported is not None else None)})
    if run is None:
        return
    run.params({"imgsz": str(pt.imgsz), "heads": pt.heads, "exit_level": str(pt.static_exit)})
    run.metrics({"expected_ap50": pt.ap50, "expected_ap50_95": pt.ap50_95,
                 "latency_mean_ms": pt.latency_ms, "latency_p90_ms": pt.latency_p90_ms}, step=0)
    run.end()


def static_reference(points: list[FrontPoint]) -> list[FrontPoint]:
    """Static networks of the static YOLOv5 (the `static` model if one was trained, else the base)."""
    for role in ("static", "base", "checkpoint"):
        pts = [p for p in points if p.is_static and p.trial_id == role]
        if pts:
            return pts
    return []
