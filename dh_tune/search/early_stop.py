"""Early stopping of search trials: per-epoch reports into Tune, ASHA over the front hypervolume, and what
Optuna, the trial documents and MLflow record of a trial the scheduler stopped.

ASHA (asynchronous successive halving, Li et al. 2020) rather than the median stopping rule: it decides at
fixed rungs (grace, grace x eta, ...), so trials are compared at equal epochs and a hopeless one costs at most
the grace period; and it needs no minimum number of trials past each epoch, which the median rule waits for
and a first wave of concurrent trials never has. No rung lies at a trial's last epoch: its training is done.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..pipeline import SearchConfig
from .records import ReportedPoint, TrialResult, TrialStatus
from .trial_docs import read_result, write_result

logger = logging.getLogger(__name__)

EPOCH_KEYS = ("ap50", "ap50_95", "gate1_acc", "gate2_acc", "loss")
"""Validation numbers a per-epoch report carries besides the front hypervolume and its budget point."""
LAST_VALUES = ("epoch", "front_hv", "ap", "latency_ms", "ap50", "ap50_95", "gate1_acc", "gate2_acc")
"""What a stopped trial keeps of its last report (Optuna user attributes, its result document)."""


def epoch_result(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The Tune result of one epoch's training metrics, or None for an epoch without a front report.

    `ap` and `latency_ms` (the search's objectives) are the epoch front's best profile within the first budget.
    """
    if "front_hv" not in metrics:
        return None
    out = {"epoch": int(metrics["epoch"]), "front_hv": float(metrics["front_hv"]),
           "ap": float(metrics["budget_ap"]), "latency_ms": float(metrics["budget_latency_ms"]),
           "feasible": float(metrics["budget_feasible"]), "final": 0.0}
    out.update({k: float(metrics[k]) for k in EPOCH_KEYS if k in metrics})
    return out


def trial_outcome(result: dict[str, Any] | None, error: bool) -> str:
    """'complete', 'pruned' or 'failed': how a Tune trial ended, from its last result.

    A trial's own last report is final (it trained and was scored, or failed and said so); a trial that
    ended on a per-epoch report was stopped by the scheduler.
    """
    if error or not result:
        return "failed"
    if not result.get("final"):
        return "pruned"
    return "failed" if result.get("status") == "failed" else "complete"


def last_values(result: dict[str, Any]) -> dict[str, float]:
    """The numbers a stopped trial keeps of its last report."""
    return {f"last_{k}": float(result[k]) for k in LAST_VALUES if k in result}


def asha_scheduler(search: SearchConfig, trial_epochs: int):
    """ASHA over the front hypervolume at the pipeline's rungs, or None (no scheduler, or no rung before the
    last epoch). Returns (scheduler, one line saying what it does)."""
    es = search.early_stop
    if es.scheduler == "none":
        return None, "early stopping off (search.early_stop.scheduler: none)"
    if es.grace_epochs >= trial_epochs:
        return None, (f"early stopping off: trials train {trial_epochs} epoch(s), no rung before the last "
                      f"(search.early_stop.grace_epochs {es.grace_epochs})")
    from ray.tune.schedulers import ASHAScheduler

    max_t = trial_epochs - 1
    scheduler = ASHAScheduler(time_attr="epoch", metric="front_hv", mode="max", max_t=max_t,
                              grace_period=es.grace_epochs, reduction_factor=es.reduction_factor,
                              stop_last_trials=False)
    rungs = []
    t = es.grace_epochs
    while t <= max_t:
        rungs.append(t)
        t *= es.reduction_factor
    return scheduler, (f"ASHA early stopping on the front hypervolume: at epochs {', '.join(map(str, rungs))} a "
                       f"trial below the best 1/{es.reduction_factor} of those that reached the epoch stops")


def optuna_search_class():
    """Ray's OptunaSearch, telling Optuna how each trial ended: PRUNED when the scheduler stopped it (its last
    report kept as user attributes: multi-objective trials hold no intermediate values), FAIL when it failed."""
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class PruningOptunaSearch(OptunaSearch):
        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            outcome = trial_outcome(result, error)
            if outcome == "complete" or trial_id in self._completed_trials:
                super().on_trial_complete(trial_id, result, error)
                return
            ot_trial = self._ot_trials[trial_id]
            for key, value in (last_values(result) if result else {}).items():
                ot_trial.set_user_attr(key, value)
            if result and result.get("error"):
                ot_trial.set_user_attr("error", str(result["error"])[:500])
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED if outcome == "pruned" else TrialState.FAIL)
            self._completed_trials.add(trial_id)

    return PruningOptunaSearch


def report_epoch(metrics: dict[str, Any], _checkpoint_dir: Any = None) -> None:
    """The reporter of a trial training in its own process: each epoch with a front report goes to Tune."""
    import ray.tune

    result = epoch_result(metrics)
    if result is not None:
        ray.tune.report(result)


def epoch_report_callback():
    """A Ray Train callback (in a Tune trial) that sends each epoch with a front report to Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReports(TuneReportCallback):
        def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
            result = epoch_result(metrics[0])  # rank 0 validates and scores
            if result is not None:
                super().after_report(run_context, [result], None)

    return EpochReports()


def record_stopped(out_dir: Path, trial_id: str, result: dict[str, Any],
                   tracking_uri: str | None) -> TrialResult | None:
    """A trial the scheduler stopped: its document becomes `pruned` with its last report, and its MLflow run
    ends KILLED, tagged pruned. Returns the document (None when the trial wrote none).

    Called again once the trials' processes are gone: a trial stopped while it reported may have recorded
    itself as failed (and closed its run so) after the first call; the stop is what happened to it.
    """
    trial_dir = out_dir / "trials" / trial_id
    doc = read_result(trial_dir)
    if doc is None or doc.status not in (TrialStatus.RUNNING, TrialStatus.FAILED, TrialStatus.PRUNED):
        return doc
    values = last_values(result)
    doc.error = doc.traceback = None  # what the stop itself raised in the trial
    doc.ended = doc.ended if doc.status is TrialStatus.PRUNED else time.time()
    doc.status, doc.stopped_epoch, doc.last = TrialStatus.PRUNED, int(result.get("epoch", 0)), values
    doc.point = ReportedPoint.nothing(values.get("last_latency_ms", 0.0))
    write_result(trial_dir, doc)
    _close_run(trial_dir, tracking_uri, values)
    return doc


def record_lost(out_dir: Path, trial_id: str, reason: str) -> TrialResult | None:
    """A trial whose process was lost more often than ray.max_failures allows: `failed`, with the reason."""
    trial_dir = out_dir / "trials" / trial_id
    doc = read_result(trial_dir)
    if doc is None or doc.status is not TrialStatus.RUNNING:
        return doc
    doc.status, doc.ended, doc.error = TrialStatus.FAILED, time.time(), reason
    write_result(trial_dir, doc)
    return doc


def _close_run(trial_dir: Path, tracking_uri: str | None, values: dict[str, float]) -> None:
    """End a stopped trial's MLflow run as KILLED, tagged pruned with the epoch it stopped at."""
    import json

    run_file = trial_dir / "train" / "run.json"
    if tracking_uri is None or not run_file.is_file():
        return
    try:
        run_id = json.loads(run_file.read_text()).get("mlflow_run_id")
    except ValueError:
        return
    if not run_id:
        return
    from ..tracking import SafeLogger

    run = SafeLogger(tracking_uri, run_id)
    run.tags({"pruned": "true", "stopped_epoch": str(int(values.get("last_epoch", 0)))})
    run.end("KILLED")


def trial_end_callback(out_dir: Path, tracking_uri: str | None):
    """A Tune callback (in the search's process) that records trials the scheduler stopped and trials whose
    process Ray lost for good, which cannot record themselves."""
    from ray.tune import Callback

    class TrialEnds(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stopped: dict[str, dict[str, Any]] = {}  # trial id -> the report it was stopped on

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            if trial_outcome(trial.last_result, False) == "pruned":
                self.stopped[trial.trial_id] = dict(trial.last_result)
                record_stopped(out_dir, trial.trial_id, trial.last_result, tracking_uri)

        def settle(self) -> None:
            """Record the stopped trials once more, now that their processes are gone."""
            for trial_id, result in self.stopped.items():
                record_stopped(out_dir, trial_id, result, tracking_uri)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            record_lost(out_dir, trial.trial_id, f"the trial failed {trial.num_failures} time(s), the last: "
                                                 f"{_error_line(trial.error_file)}")

    return TrialEnds()


def _error_line(path: str | None) -> str:
    """The last line of a Tune trial's error file (text; the pickled error beside it is never read)."""
    try:
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1].strip()[:300] if lines else "no reason recorded"
