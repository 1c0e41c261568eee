"""The console report of a finished search: device, trained models and the profile chosen for each budget."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..latency import LatencyTable
from .choose import BudgetChoice, Pooled
from .compare import ModelSummary
from .export import Exported
from .phases import PhaseClock
from .records import SearchRequest, TrialResult, TrialStatus
from .space import paper_setting


@dataclass
class FinishedSearch:
    """What a finished search reports (console and MLflow): its models, its choices and their profiles."""

    req: SearchRequest
    docs: list[TrialResult]  # every model's result, references and trials, as the search ended them
    pooled: Pooled
    choices: list[BudgetChoice]
    exported: list[Exported]
    models: list[ModelSummary]
    latency: dict[int, LatencyTable]
    hv: list[float]  # Optuna's share of the grid sweep's hypervolume, per finished model
    concurrency: dict[str, Any] | None
    clock: PhaseClock

    @property
    def metric(self) -> str:
        return self.req.pipeline.search.metric

    def count(self, status: TrialStatus) -> int:
        return sum(d.status is status for d in self.docs)


def trials_line(docs: list[TrialResult], concurrency: dict[str, Any] | None) -> str:
    """How the trials ended and how many ran at once (planned from the cluster, and seen)."""
    trials = [d for d in docs if d.role is None]
    count = {s: sum(d.status is s for d in trials) for s in (TrialStatus.FINISHED, TrialStatus.PRUNED,
                                                               TrialStatus.FAILED)}
    line = (f"Trials: {count[TrialStatus.FINISHED]} trained to the end, {count[TrialStatus.PRUNED]} stopped early, "
            f"{count[TrialStatus.FAILED]} failed")
    if concurrency:
        line += (f"; up to {concurrency['most_at_once']} ran at once (planned {concurrency['planned']}, set by "
                 f"{concurrency['limited_by']}: the cluster holds {concurrency['cluster_fits']} of "
                 f"{concurrency['trial']})")
    return line


def summary_text(f: FinishedSearch) -> str:
    """The table a finished search prints: device, trained models and the profile chosen for each budget."""
    table = next(iter(f.latency.values()))
    lines = [f"\nDevice: {table.device_name}   ({len(f.pooled.finished)} trained model(s), "
             f"{f.count(TrialStatus.FAILED)} failed; {len(f.pooled.front)} profiles on the Pareto front; "
             f"{(time.time() - f.clock.started) / 60:.1f} min)"]
    trials = trials_line(f.docs, f.concurrency)
    if trials:
        lines.append(trials)
    lines += imported_lines(f.req, f.models)
    if f.hv:
        lines.append(f"Optuna's threshold front reaches {100 * min(f.hv):.1f}% of the exact grid sweep's hypervolume")
    paper = {m.trial_id for m in f.models if m.paper_point}
    frozen = any(d.freeze == "detector" for d in f.docs if d.trial_id in paper)
    lines += model_lines(f.models, gates_only=f.req.imported is not None or frozen)
    lines += budget_header(f)
    for choice, e in zip(f.choices, f.exported):
        lines += budget_lines(f, choice, e.doc)
    lines.append(f.clock.line())
    return "\n".join(lines)


def model_lines(models: list[ModelSummary], gates_only: bool) -> list[str]:
    """One line per trained model: AP with all heads, gate accuracy, hypervolume, its hyperparameters."""
    lines = [f"{'model':>10} | {'AP50 all':>8} {'AP50:95':>7} | {'gate acc':>11} | {'hypervolume':>11} | "
             "hyperparameters"]
    for m in models:
        acc = "/".join(f"{a:.3f}" if a is not None else "-" for a in m.gate_accuracy)
        name = m.trial_id[-10:] + ("*" if m.paper_point else "")
        hp = ", ".join(f"{k} {v:.3g}" for k, v in m.params.items())
        lines.append(f"{name:>10} | {_fmt(m.ap50_all_heads):>8} {_fmt(m.ap50_95_all_heads):>7} | {acc:>11} | "
                     f"{m.hypervolume:11.3f} | {hp}")
    if any(m.paper_point for m in models):
        lines.append(f"{'':>10}   * the paper's setting ({paper_setting(gates_only)})")
    return lines


def budget_header(f: FinishedSearch) -> list[str]:
    """What the budgets bound and how profiles were chosen, and the budget table's column names."""
    sc = f.req.pipeline.search
    name = "AP50" if f.metric == "ap50" else "AP50:95"
    return [f"Budgets bound the predicted {sc.budget_stat} latency per image; profiles were chosen "
            f"({sc.select}) on calibration images and are reported on held-out test images, "
            f"with 95% bootstrap intervals",
            f"{'budget':>8} | {'imgsz':>5} | {'t1':>5} {'t2':>5} | {name + ' test [95% interval]':>27} "
            f"{'chosen on':>9} | {'mean ms':>7} {'p90 ms':>7} | heads 1/2/3 share"]


def budget_lines(f: FinishedSearch, choice: BudgetChoice, doc: dict[str, Any]) -> list[str]:
    """A budget's row (what its profile promises on the test images) and the notes beneath it."""
    metric, r, comp = f.metric, choice.result, choice.comparison
    c = r.candidate
    lines = []
    exp, seen = doc["expected"], doc.get("selection", doc["expected"])
    ci = (doc.get("intervals") or {}).get(metric)
    ap = f"{_fmt(exp.get(metric))} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else f"{_fmt(exp.get(metric))}"
    shares = "/".join(f"{s:.2f}" for s in exp["exit_shares"])
    flag = "" if r.feasible else "  (does not fit)"
    kind = f"  static: {c.heads}" if c.is_static else ""
    lines.append(f"{r.budget_ms:>6g}ms | {c.imgsz:>5} | {c.t1:5.2f} {c.t2:5.2f} | {ap:>27} "
                 f"{_fmt(seen.get(metric)):>9} | {_fmt(exp['latency_mean_ms'], 2):>7} "
                 f"{_fmt(exp['latency_p90_ms'], 2):>7} | {shares}{flag}{kind}")
    name = "AP50" if metric == "ap50" else "AP50:95"
    if "indistinguishable" in doc:
        lines.append(f"{'':>8}   {doc['indistinguishable']} of {doc['compared_with']} other front profile(s) "
                     f"within the budget are indistinguishable from it in {name} (overlapping intervals)")
    for part in table_unstable(f.latency, c.imgsz):
        lines.append(f"{'':>8}   warning: {part}")
    st = comp.best_static
    if st is not None:
        gain = f"{comp.dynamic_gain:+.4f}" if comp.dynamic_gain is not None else "n/a (no gated profile fits)"
        lines.append(f"{'':>8}   best static within budget: {st.heads} at {st.imgsz} px, {metric} "
                     f"{st.ap(metric):.4f}, {st.latency_ms:.2f} ms; dynamic gain {gain}")
    lines.append(f"{'':>8}   {r.reason}\n{'':>8}   -> {r.profile_path}")
    return lines


def imported_lines(req: SearchRequest, models: list[ModelSummary]) -> list[str]:
    """With --from-yolov5: the imported detector and its static AP with all heads, as dh-tune evaluates it."""
    if req.imported is None:
        return []
    src, size = req.imported.source, req.pipeline.data.imgsz
    static = next((m for m in models if m.role == "static"), None)
    ap50, ap50_95 = (static.ap50_all_heads, static.ap50_95_all_heads) if static is not None else (None, None)
    return [f"Imported YOLOv5: {src.get('file')} (sha256 {str(src.get('sha256'))[:12]}, {len(req.imported.names)} "
            f"classes, {src.get('weights')} weights); static, all heads at {size} px on the validation images: "
            f"AP50 {_fmt(ap50)} AP50:95 {_fmt(ap50_95)}"]


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table_unstable(latency: dict[int, LatencyTable], imgsz: int) -> list[str]:
    """A line for a latency table whose timings stayed unstable (the machine was busy while timing)."""
    table = latency.get(imgsz)
    parts = table.unstable_parts if table is not None else []
    if table is None or not parts:
        return []
    return [f"the {imgsz} px latency table of {table.device_name} has unstable timings ({', '.join(parts)}): "
            "the machine was busy while it was timed; re-run with --remeasure on a quiet machine"]
