"""The end of a search: global front, one profile per budget, plots, MLflow runs, console summary."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..evaluate.profile_table import profile_metrics, write_comparison
from ..fsio import slug
from ..latency import LatencyTable, expected_latency
from ..tracking import SafeLogger, flatten, start_run
from .compare import BudgetComparison, compare_budget, is_static, model_summaries
from .confidence import ConfidenceBook, TrialTables, indistinguishable, safest
from .export import export_profile, write_index
from .imported import source_tags
from .inner import budget_latency
from .pareto import pareto_front, select_for_budget
from .plots import plot_front, plot_threshold_sweep
from .records import BudgetResult, SearchOutcome, SearchRequest

logger = logging.getLogger(__name__)


def _global_points(docs: list[dict]) -> list[dict]:
    """Every front point and every static network of every finished model, tagged with its model."""
    out = []
    for d in docs:
        if d.get("status") != "finished":
            continue
        seen = set()
        for c in d["front"] + d.get("static", []):
            key = (c["imgsz"], c["t1"], c["t2"])
            if key not in seen:
                seen.add(key)
                out.append({**c, "trial_id": d["trial_id"]})
    return out


def figure7(tables: TrialTables, cand: dict, table: LatencyTable, metric: str, path: Path) -> Path | None:
    """AP and latency as gate 1's threshold moves, gate 2 fixed at the chosen value (calibration images)."""
    et = tables.table(cand["trial_id"], cand["imgsz"], "calibration")
    if et is None:
        return None
    ts = np.linspace(0, 1, 41)
    ap, lat, share = [], [], []
    for t in ts:
        m = et.evaluate(t, cand["t2"])
        ap.append(m.ap50 if metric == "ap50" else m.ap50_95)
        lat.append(expected_latency(et.exit_levels(t, cand["t2"]), table, (t, cand["t2"]))[0])
        share.append(m.exit_shares[0])
    return plot_threshold_sweep(ts, np.array(ap), np.array(lat), np.array(share), 1, cand["t2"], path,
                                f"{metric} and latency vs gate-1 threshold (imgsz {cand['imgsz']})")


def _budget_reason(choice_reason: str, cand: dict, comparison: BudgetComparison, metric: str) -> str:
    """Why this profile: the budget rule, and how it stands against the best static network."""
    reason = choice_reason
    if comparison.static_wins and is_static(cand):
        dyn = comparison.best_dynamic
        versus = (f" vs {dyn[metric]:.4g} for the best gated profile (gain {comparison.dynamic_gain:+.4f} <= "
                  f"{comparison.min_gain:g})" if dyn else " (no gated profile fits)")
        reason = (f"a static network wins the {comparison.budget_ms:g} ms budget ({cand['heads']} at {cand['imgsz']} px, "
                  f"no gate computed: {metric} {cand[metric]:.4g} at {cand['latency_ms']:.3g} ms{versus}), so the "
                  "profile is that static network")
    elif comparison.dynamic_gain is not None:
        reason += f"; dynamic gain over the best static network {comparison.dynamic_gain:+.4f} {metric}"
    return reason


class SearchFailed(RuntimeError):
    """The search ran but produced nothing to export (every trial failed)."""


def trials_line(docs: list[dict], concurrency: dict | None) -> str:
    """How the trials ended and how many ran at once (planned from the cluster, and seen)."""
    trials = [d for d in docs if d.get("role") is None]
    count = {s: sum(d.get("status") == s for d in trials) for s in ("finished", "pruned", "failed")}
    line = (f"Trials: {count['finished']} trained to the end, {count['pruned']} stopped early, "
            f"{count['failed']} failed")
    if concurrency:
        line += (f"; up to {concurrency['most_at_once']} ran at once (planned {concurrency['planned']}, set by "
                 f"{concurrency['limited_by']}: the cluster holds {concurrency['cluster_fits']} of "
                 f"{concurrency['trial']})")
    return line


def finish(req: SearchRequest, docs: list[dict], latency: dict[int, LatencyTable], parent: SafeLogger | None,
           started: float, concurrency: dict | None = None) -> SearchOutcome:
    """The search's result from every model's documents: the global front, one exported profile per budget,
    the index, MLflow runs and the summary to print. `concurrency` says how many trials ran at once."""
    out, metric = req.out, req.pipeline.search.metric
    finished = [d for d in docs if d.get("status") == "finished"]
    failed = [d for d in docs if d.get("status") == "failed"]
    pruned = [d for d in docs if d.get("status") == "pruned"]
    for d in failed:
        logger.warning("[search] trial %s failed: %s", d["trial_id"], d.get("error", "unknown error"))
    if not finished:
        raise SearchFailed(f"every trial failed ({len(failed)}); see {out}/trials/*/result.json")
    points = _global_points(finished)
    ap = np.array([p[metric] for p in points])
    lat = np.array([budget_latency(p) for p in points])
    front = [points[i] for i in pareto_front(ap, lat)]
    by_trial = {d["trial_id"]: d for d in finished}
    table = next(iter(latency.values()))
    device_dir = out / "profiles" / slug(table.device_name)
    device_dir.mkdir(parents=True, exist_ok=True)

    sc = req.pipeline.search
    tables = TrialTables(out, by_trial)
    book = ConfidenceBook(tables, latency, resamples=sc.bootstrap_resamples, seed=sc.seed)
    results, exported, chosen, comparisons, intervals = [], [], {}, [], {}
    for b in req.budgets:
        choice = select_for_budget(ap, lat, b)
        idx = choice.index if choice.index is not None else int(np.argmin(lat))
        comparison = compare_budget(points, b, metric, sc.min_dynamic_gain)
        cand = comparison.choice(points[idx]) if choice.feasible else points[idx]
        reason = choice.reason
        if choice.all_feasible and cand["t1"] == 0.0 and cand["t2"] == 0.0:
            reason += "; all heads run"
        reason = _budget_reason(reason, cand, comparison, metric) if choice.feasible else reason
        rivals = [p for p in front if budget_latency(p) <= b] if choice.feasible else []
        if sc.select == "safest" and rivals:
            safe = safest(cand, rivals, book, metric)
            if safe is not cand:
                reason += (f"; --select safest: {safe[metric]:.4g} at {budget_latency(safe):.3g} ms, the fastest "
                           "profile whose AP interval overlaps the best one's")
                cand = safe
        same = indistinguishable(cand, rivals, book, metric)
        trial = by_trial[cand["trial_id"]]
        ci = book.intervals(cand, "test")
        intervals[b] = ci
        e = export_profile(out, budget_ms=b, feasible=choice.feasible, reason=reason, candidate=cand, trial=trial,
                           metric=metric, table=latency[cand["imgsz"]], comparison=comparison.to_dict(),
                           confidence={"budget_stat": sc.budget_stat, "select": sc.select,
                                       "intervals": ci.to_dict() if ci is not None else None,
                                       "indistinguishable": len(same), "compared_with": len(rivals)})
        exported.append(e)
        comparisons.append(comparison)
        chosen[b] = cand if choice.feasible else None
        results.append(BudgetResult(b, choice.feasible, reason, cand, trial, e.path))

    hv = [float(d["hv_ratio"]) for d in finished if d.get("hv_ratio") == d.get("hv_ratio") and d.get("hv_ratio")]
    models = model_summaries(finished, metric, float(lat.max()) * 1.05)
    front_png = plot_front(points, front, chosen, metric, device_dir / "pareto_front.png",
                           f"{table.device_name}: {len(finished)} trained model(s), {len(points)} points",
                           intervals=intervals, budget_stat=sc.budget_stat)
    index = write_index(out, table.device_name, exported, front, metric,
                        extra={"trials": sum(d.get("role") is None for d in finished), "failed_trials": len(failed),
                               "pruned_trials": len(pruned), "concurrency": concurrency,
                               "optuna_vs_grid_hv_ratio": min(hv) if hv else None, "models": models,
                               "static_points": [p for p in points if is_static(p)],
                               "hypervolume_ref_latency_ms": float(lat.max()) * 1.05})
    comparison_table = write_comparison(device_dir, [e.path for e in exported])
    _log_mlflow(req, parent, results, exported, comparisons, points, [front_png, index, comparison_table], tables,
                metric, latency, hv, concurrency, len(pruned))
    summary = summary_text(req, results, comparisons, exported, models, front, table, latency, started, hv,
                           len(finished), len(failed), trials_line(docs, concurrency))
    return SearchOutcome(out, front, results, docs, parent.run_id if parent else None, index, summary)


def _static_reference(points: list[dict]) -> list[dict]:
    """Static networks of the static YOLOv5 (the `static` model if one was trained, else the base)."""
    for role in ("static", "base", "checkpoint"):
        pts = [p for p in points if is_static(p) and p["trial_id"] == role]
        if pts:
            return pts
    return []


def _log_mlflow(req, parent, results, exported, comparisons, points, artifacts, tables, metric, latency,
                hv, concurrency: dict | None, pruned: int) -> None:
    if parent is None:
        if req.track:
            logger.warning("warning: MLflow logging failed; profiles are in %s", req.out / "profiles")
        return
    for path in artifacts:
        parent.artifact(path)
    front_png = artifacts[0]
    if hv:
        parent.metrics({"optuna_vs_grid_hv_ratio": min(hv)}, step=0)
    parent.metrics({"pruned_trials": pruned}, step=0)
    if concurrency:
        parent.tags({"concurrent_trials_planned": str(concurrency["planned"]),
                       "concurrency_limited_by": concurrency["limited_by"], "trial_resources": concurrency["trial"]})
        parent.metrics({"concurrent_trials_seen": concurrency["most_at_once"]}, step=0)
    p = req.pipeline
    _retire_old_runs(parent)
    for r, e, comp in zip(results, exported, comparisons):
        device = e.doc["device"]["name"]
        c = r.candidate
        run = start_run(parent.uri, p.name, f"profile-{slug(device)[:40]}-{r.budget_ms:g}ms",
                        parent_run_id=parent.run_id,
                        tags={"device": device, "runtime": e.doc["device"]["runtime"]["name"],
                              "budget_ms": f"{r.budget_ms:g}", "pareto": "true",
                              "feasible": str(r.feasible).lower(), "search_role": "profile",
                              "configuration": "static" if is_static(c) else "dynamic", "heads": c["heads"],
                              **source_tags(e.doc["training"].get("source"))})
        if run is None:
            continue
        run.params({"t1": f"{c['t1']:.4f}", "t2": f"{c['t2']:.4f}", "imgsz": str(c["imgsz"]),
                    "trial_id": c["trial_id"], **flatten(r.trial.get("params", {}), "hp.")})
        extra = {}
        if comp.best_static is not None:
            extra["best_static_" + metric] = comp.best_static[metric]
        if comp.dynamic_gain is not None:
            extra["dynamic_gain"] = comp.dynamic_gain
        run.metrics({**profile_metrics(e.doc), **extra}, step=0)
        run.artifact(e.path)
        run.artifact(front_png)
        fig = figure7(tables, c, latency[c["imgsz"]], metric, e.path.with_suffix(".figure7.png"))
        if fig is not None:
            run.artifact(fig)
        run.end()
        if run.failed:
            parent.failed = True
    for pt in _static_reference(points):
        run = start_run(parent.uri, p.name, f"static-{pt['heads'].replace(' ', '-')}-{pt['imgsz']}",
                        parent_run_id=parent.run_id,
                        tags={"search_role": "static", "static": "true", "heads": pt["heads"],
                              "model": pt["trial_id"], "device": latency[pt["imgsz"]].device_name,
                              **source_tags(req.imported.source if req.imported is not None else None)})
        if run is None:
            continue
        run.params({"imgsz": str(pt["imgsz"]), "heads": pt["heads"], "exit_level": str(pt["static_exit"])})
        run.metrics({"expected_ap50": pt["ap50"], "expected_ap50_95": pt["ap50_95"],
                     "latency_mean_ms": pt["latency_ms"], "latency_p90_ms": pt["latency_p90_ms"]}, step=0)
        run.end()
    parent.end()
    if parent.failed:
        logger.warning("warning: MLflow logging failed; profiles are in %s", req.out / "profiles")


def _retire_old_runs(parent: SafeLogger) -> None:
    """A resumed search replaces the profile and static runs of its earlier invocation (deleted, not duplicated)."""
    try:
        from ..tracking import client

        c = client(parent.uri)
        exp = c.get_run(parent.run_id).info.experiment_id
        for role in ("profile", "static"):
            old = c.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' "
                                                     f"and tags.search_role = '{role}'")
            for run in old:
                c.delete_run(run.info.run_id)
    except Exception:  # noqa: BLE001 - the new runs are logged regardless
        pass


def summary_text(req, results, comparisons, exported, models, front, table, latency, started, hv, n_ok,
                 n_failed, trials: str = "") -> str:
    """The table a finished search prints: device, trained models and the profile chosen for each budget."""
    metric = req.pipeline.search.metric
    lines = [f"\nDevice: {table.device_name}   ({n_ok} trained model(s), {n_failed} failed; "
             f"{len(front)} profiles on the Pareto front; {(time.time() - started) / 60:.1f} min)"]
    if trials:
        lines.append(trials)
    lines += imported_lines(req, models, metric)
    if hv:
        lines.append(f"Optuna's threshold front reaches {100 * min(hv):.1f}% of the exact grid sweep's hypervolume")
    lines.append(f"{'model':>10} | {'AP50 all':>8} {'AP50:95':>7} | {'gate acc':>11} | {'hypervolume':>11} | hyperparameters")
    for m in models:
        acc = "/".join(f"{a:.3f}" if a is not None else "-" for a in m["gate_accuracy"])
        name = m["trial_id"][-10:] + ("*" if m["paper_point"] else "")
        hp = ", ".join(f"{k} {v:.3g}" for k, v in m["params"].items())
        lines.append(f"{name:>10} | {_fmt(m['ap50_all_heads']):>8} {_fmt(m['ap50_95_all_heads']):>7} | {acc:>11} | "
                     f"{m['hypervolume']:11.3f} | {hp}")
    if any(m["paper_point"] for m in models):
        setting = ("lambda_pos 0.28/2.0, eps 4, gates trained on the frozen detector" if req.imported is not None
                   else "lambda 0.2, lambda_pos 0.28/2.0, eps 4, end to end")
        lines.append(f"{'':>10}   * the paper's setting ({setting})")
    sc = req.pipeline.search
    name = "AP50" if metric == "ap50" else "AP50:95"
    lines.append(f"Budgets bound the predicted {sc.budget_stat} latency per image; profiles were chosen "
                 f"({sc.select}) on calibration images and are reported on held-out test images, "
                 f"with 95% bootstrap intervals")
    lines.append(f"{'budget':>8} | {'imgsz':>5} | {'t1':>5} {'t2':>5} | {name + ' test [95% interval]':>27} "
                 f"{'chosen on':>9} | {'mean ms':>7} {'p90 ms':>7} | heads 1/2/3 share")
    for r, comp, e in zip(results, comparisons, exported):
        c, doc = r.candidate, e.doc
        exp, seen = doc["expected"], doc.get("selection", doc["expected"])
        ci = (doc.get("intervals") or {}).get(metric)
        ap = f"{_fmt(exp.get(metric))} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else f"{_fmt(exp.get(metric))}"
        shares = "/".join(f"{s:.2f}" for s in exp["exit_shares"])
        flag = "" if r.feasible else "  (does not fit)"
        kind = f"  static: {c['heads']}" if is_static(c) else ""
        lines.append(f"{r.budget_ms:>6g}ms | {c['imgsz']:>5} | {c['t1']:5.2f} {c['t2']:5.2f} | {ap:>27} "
                     f"{_fmt(seen.get(metric)):>9} | {_fmt(exp['latency_mean_ms'], 2):>7} "
                     f"{_fmt(exp['latency_p90_ms'], 2):>7} | {shares}{flag}{kind}")
        if "indistinguishable" in doc:
            lines.append(f"{'':>8}   {doc['indistinguishable']} of {doc['compared_with']} other front profile(s) "
                         f"within the budget are indistinguishable from it in {name} (overlapping intervals)")
        for part in table_unstable(latency, c["imgsz"]):
            lines.append(f"{'':>8}   warning: {part}")
        st = comp.best_static
        if st is not None:
            gain = f"{comp.dynamic_gain:+.4f}" if comp.dynamic_gain is not None else "n/a (no gated profile fits)"
            lines.append(f"{'':>8}   best static within budget: {st['heads']} at {st['imgsz']} px, {metric} {st[metric]:.4f}, "
                         f"{st['latency_ms']:.2f} ms; dynamic gain {gain}")
        lines.append(f"{'':>8}   {r.reason}\n{'':>8}   -> {r.profile_path}")
    return "\n".join(lines)


def imported_lines(req, models: list[dict], metric: str) -> list[str]:
    """With --from-yolov5: the imported detector and its static AP with all heads, as dh-tune evaluates it."""
    if req.imported is None:
        return []
    src, size = req.imported.source, req.pipeline.data.imgsz
    static = next((m for m in models if m["role"] == "static"), {})
    return [f"Imported YOLOv5: {src.get('file')} (sha256 {str(src.get('sha256'))[:12]}, {len(req.imported.names)} "
            f"classes, {src.get('weights')} weights); static, all heads at {size} px on the validation images: "
            f"AP50 {_fmt(static.get('ap50_all_heads'))} AP50:95 {_fmt(static.get('ap50_95_all_heads'))}"]


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table_unstable(latency: dict[int, LatencyTable], imgsz: int) -> list[str]:
    """A line for a latency table whose timings stayed unstable (the machine was busy while timing)."""
    table = latency.get(imgsz)
    parts = table.unstable_parts if table is not None else []
    if table is None or not parts:
        return []
    return [f"the {imgsz} px latency table of {table.device_name} has unstable timings ({', '.join(parts)}): "
            "the machine was busy while it was timed; re-run with --remeasure on a quiet machine"]
