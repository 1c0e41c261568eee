"""The end of a search: the pooled front, one exported profile per budget, the index, plots, MLflow, the report."""
from __future__ import annotations

import logging
import math
from typing import Any

from ..evaluate.profile_comparison import write_comparison
from ..fsio import slug
from ..latency import LatencyTable
from ..tracking import SafeLogger
from .choose import BudgetChoice, choose_budget, pool
from .compare import model_summaries
from .confidence import ConfidenceBook, TrialTables
from .export import Exported, IndexSummary, export_profile, write_index
from .phases import PhaseClock
from .plots import plot_front
from .records import SearchOutcome, SearchRequest, TrialResult, TrialStatus
from .report import FinishedSearch, summary_text
from .tracking_runs import log_search

logger = logging.getLogger(__name__)


class SearchFailed(RuntimeError):
    """The search ran but produced nothing to export (every trial failed)."""


def finish(req: SearchRequest, docs: list[TrialResult], latency: dict[int, LatencyTable], parent: SafeLogger | None,
           clock: PhaseClock, concurrency: dict[str, Any] | None = None) -> SearchOutcome:
    """The search's result from every model's documents: the global front, one exported profile per budget,
    the index, MLflow runs and the summary to print (ending with `clock`'s time per phase). `concurrency` says
    how many trials ran at once."""
    out, sc = req.out, req.pipeline.search
    finished = [d for d in docs if d.finished]
    for d in docs:
        if d.status is TrialStatus.FAILED:
            logger.warning("trial %s failed: %s", d.trial_id, d.error or "unknown error")
    if not finished:
        failed = sum(d.status is TrialStatus.FAILED for d in docs)
        raise SearchFailed(f"every trial failed ({failed}); see {out}/trials/*/result.json")
    pooled = pool(finished, sc.metric)
    table = next(iter(latency.values()))
    device_dir = out / "profiles" / slug(table.device_name)
    device_dir.mkdir(parents=True, exist_ok=True)
    tables = TrialTables(out, pooled.by_trial)
    book = ConfidenceBook(tables, latency, resamples=sc.bootstrap_resamples, seed=sc.seed)
    choices, exported = [], []
    for b in req.budgets:
        choice = choose_budget(pooled, b, book, sc)
        exported.append(_export(req, choice, latency))
        choices.append(choice)
    hv = [float(d.hv_ratio) for d in finished if d.hv_ratio is not None and not math.isnan(d.hv_ratio) and d.hv_ratio]
    report = FinishedSearch(req, docs, pooled, choices, exported, model_summaries(finished, sc.metric,
                            pooled.ref_latency_ms), latency, hv, concurrency, clock)
    front_png = plot_front(pooled.points, pooled.front, {c.result.budget_ms: c.chosen for c in choices}, sc.metric,
                           device_dir / "pareto_front.png",
                           f"{table.device_name}: {len(finished)} trained model(s), {len(pooled.points)} points",
                           intervals={c.result.budget_ms: c.intervals for c in choices}, budget_stat=sc.budget_stat)
    index = write_index(out, table.device_name, exported, pooled.front, sc.metric, _index_summary(report))
    comparison_table = write_comparison(device_dir, [e.path for e in exported])
    log_search(parent, report, tables, [front_png, index, comparison_table])
    return SearchOutcome(out, pooled.front, [c.result for c in choices], docs, parent.run_id if parent else None,
                         index, summary_text(report))


def _export(req: SearchRequest, choice: BudgetChoice, latency: dict[int, LatencyTable]) -> Exported:
    """Write the budget's profile (and its checkpoint) and note where it went."""
    sc, r = req.pipeline.search, choice.result
    e = export_profile(req.out, r, metric=sc.metric, table=latency[r.candidate.imgsz],
                       comparison=choice.comparison.to_dict(), confidence=choice.confidence(sc))
    r.profile_path = e.path
    return e


def _index_summary(f: FinishedSearch) -> IndexSummary:
    finished = f.pooled.finished
    return IndexSummary(trials=sum(d.role is None for d in finished), failed_trials=f.count(TrialStatus.FAILED),
                        pruned_trials=f.count(TrialStatus.PRUNED), concurrency=f.concurrency,
                        optuna_vs_grid_hv_ratio=min(f.hv) if f.hv else None, models=f.models,
                        static_points=[p for p in f.pooled.points if p.is_static],
                        hypervolume_ref_latency_ms=f.pooled.ref_latency_ms)

