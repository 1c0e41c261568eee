"""The end of a search: global front, one profile per budget, plots, MLflow runs, console summary."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..evaluate.exit_table import ExitTable
from ..latency import LatencyTable, expected_latency
from ..latency.measure import slug
from ..tracking import SafeLogger, flatten, start_run
from .export import export_profile, write_index
from .pareto import pareto_front, select_for_budget
from .plots import plot_front, plot_threshold_sweep


def _global_points(docs: list[dict]) -> list[dict]:
    return [{**c, "trial_id": d["trial_id"]} for d in docs if d.get("status") == "finished" for c in d["front"]]


def _sweep_table(out: Path, trial: dict, imgsz: int) -> ExitTable | None:
    """The cached exit table behind a chosen profile (for the Figure-7 sweep)."""
    roots = [out / "trials" / trial["trial_id"] / "cache", out / "cache"]
    for root in roots:
        for f in sorted(root.glob(f"exit-*-{imgsz}.npz")):
            t = ExitTable.load(f)
            if t is not None:
                return t
    return None


def figure7(out: Path, trial: dict, cand: dict, table: LatencyTable, metric: str, path: Path) -> Path | None:
    """AP and latency as gate 1's threshold moves, gate 2 fixed at the chosen value."""
    et = _sweep_table(out, trial, cand["imgsz"])
    if et is None:
        return None
    ts = np.linspace(0, 1, 41)
    ap, lat, share = [], [], []
    for t in ts:
        m = et.evaluate(t, cand["t2"])
        ap.append(m.ap50 if metric == "ap50" else m.ap50_95)
        lat.append(expected_latency(et.exit_levels(t, cand["t2"]), table)[0])
        share.append(m.exit_shares[0])
    return plot_threshold_sweep(ts, np.array(ap), np.array(lat), np.array(share), 1, cand["t2"], path,
                                f"{metric} and latency vs gate-1 threshold (imgsz {cand['imgsz']})")


def finish(req, docs: list[dict], latency: dict[int, LatencyTable], parent: SafeLogger | None, started: float):
    from .driver import BudgetResult, SearchOutcome

    out, metric = req.out, req.pipeline.search.metric
    finished = [d for d in docs if d.get("status") == "finished"]
    failed = [d for d in docs if d.get("status") == "failed"]
    for d in failed:
        print(f"[search] trial {d['trial_id']} failed: {d.get('error', 'unknown error')}", file=sys.stderr)
    if not finished:
        raise RuntimeError(f"every trial failed ({len(failed)}); see {out}/trials/*/result.json")
    points = _global_points(finished)
    ap = np.array([p[metric] for p in points])
    lat = np.array([p["latency_ms"] for p in points])
    front = [points[i] for i in pareto_front(ap, lat)]
    by_trial = {d["trial_id"]: d for d in finished}
    table = next(iter(latency.values()))
    device_dir = out / "profiles" / slug(table.device_name)
    device_dir.mkdir(parents=True, exist_ok=True)

    results, exported, chosen = [], [], {}
    for b in req.budgets:
        choice = select_for_budget(ap, lat, b)
        idx = choice.index if choice.index is not None else int(np.argmin(lat))
        cand = points[idx]
        reason = choice.reason
        if choice.all_feasible and cand["t1"] == 0.0 and cand["t2"] == 0.0:
            reason += "; all heads run"
        trial = by_trial[cand["trial_id"]]
        e = export_profile(out, budget_ms=b, feasible=choice.feasible, reason=reason, candidate=cand, trial=trial,
                           metric=metric, table=latency[cand["imgsz"]])
        exported.append(e)
        chosen[b] = cand if choice.feasible else None
        results.append(BudgetResult(b, choice.feasible, reason, cand, trial, e.path))

    hv = [d.get("hv_ratio") for d in finished if d.get("hv_ratio") == d.get("hv_ratio")]
    front_png = plot_front(points, front, chosen, metric, device_dir / "pareto_front.png",
                           f"{table.device_name}: {len(finished)} trained model(s), {len(points)} front points")
    index = write_index(out, table.device_name, exported, front, metric,
                        extra={"trials": len(finished), "failed_trials": len(failed),
                               "optuna_vs_grid_hv_ratio": min(hv) if hv else None})
    _log_mlflow(req, parent, results, exported, front_png, index, out, metric, latency, hv)
    _print_summary(req, results, front, table, started, hv, len(finished), len(failed))
    return SearchOutcome(out, front, results, docs, parent.run_id if parent else None, index)


def _log_mlflow(req, parent, results, exported, front_png, index, out, metric, latency, hv) -> None:
    if parent is None:
        if req.track:
            print(f"warning: MLflow logging failed; profiles are in {out / 'profiles'}", file=sys.stderr)
        return
    parent.artifact(front_png)
    parent.artifact(index)
    if hv:
        parent.metrics({"optuna_vs_grid_hv_ratio": min(hv)}, step=0)
    p = req.pipeline
    _retire_old_profile_runs(parent)
    for r, e in zip(results, exported):
        device = e.doc["device"]["name"]
        run = start_run(parent.uri, p.name, f"profile-{slug(device)[:40]}-{r.budget_ms:g}ms",
                        parent_run_id=parent.run_id,
                        tags={"device": device, "budget_ms": f"{r.budget_ms:g}", "pareto": "true",
                              "feasible": str(r.feasible).lower(), "search_role": "profile"})
        if run is None:
            continue
        c = r.candidate
        run.params({"t1": f"{c['t1']:.4f}", "t2": f"{c['t2']:.4f}", "imgsz": str(c["imgsz"]),
                    "trial_id": c["trial_id"], **flatten(r.trial.get("params", {}), "hp.")})
        run.metrics({"expected_ap50": c["ap50"], "expected_ap50_95": c["ap50_95"], "latency_mean_ms": c["latency_ms"],
                     "latency_p90_ms": c["latency_p90_ms"], "share_exit1": c["exit_shares"][0],
                     "share_exit2": c["exit_shares"][1], "share_exit3": c["exit_shares"][2]}, step=0)
        run.artifact(e.path)
        run.artifact(front_png)
        fig = figure7(out, r.trial, c, latency[c["imgsz"]], metric, e.path.with_suffix(".figure7.png"))
        if fig is not None:
            run.artifact(fig)
        run.end()
        if run.failed:
            parent.failed = True
    parent.end()
    if parent.failed:
        print(f"warning: MLflow logging failed; profiles are in {out / 'profiles'}", file=sys.stderr)


def _retire_old_profile_runs(parent: SafeLogger) -> None:
    """A resumed search replaces the profile runs of its earlier invocation (deleted, not duplicated)."""
    try:
        from ..tracking import client

        c = client(parent.uri)
        exp = c.get_run(parent.run_id).info.experiment_id
        old = c.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}' "
                                                 "and tags.search_role = 'profile'")
        for run in old:
            c.delete_run(run.info.run_id)
    except Exception:  # noqa: BLE001 - the new runs are logged regardless
        pass


def _print_summary(req, results, front, table, started, hv, n_ok, n_failed) -> None:
    metric = req.pipeline.search.metric
    print(f"\nDevice: {table.device_name}   ({n_ok} trained model(s), {n_failed} failed; "
          f"{len(front)} profiles on the Pareto front; {(time.time() - started) / 60:.1f} min)")
    if hv:
        print(f"Optuna's threshold front reaches {100 * min(hv):.1f}% of the exact grid sweep's hypervolume")
    print(f"{'budget':>8} | {'imgsz':>5} | {'t1':>5} {'t2':>5} | {'AP50':>6} {'AP50:95':>7} | {'mean ms':>8} "
          f"{'p90 ms':>7} | heads 1/2/3 share")
    for r in results:
        c = r.candidate
        shares = "/".join(f"{s:.2f}" for s in c["exit_shares"])
        flag = "" if r.feasible else "  (does not fit)"
        print(f"{r.budget_ms:>6g}ms | {c['imgsz']:>5} | {c['t1']:5.2f} {c['t2']:5.2f} | {c['ap50']:6.3f} "
              f"{c['ap50_95']:7.3f} | {c['latency_ms']:8.2f} {c['latency_p90_ms']:7.2f} | {shares}{flag}")
        print(f"{'':>8}   {r.reason}\n{'':>8}   -> {r.profile_path}")
