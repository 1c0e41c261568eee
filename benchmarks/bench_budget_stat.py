"""Budgets on the mean latency or on its p90 (the default): what a user's frames see.

For every budget of a finished search folder, each rule picks a profile from the same candidates (the search's
global front and the static networks); each pick then runs as a user runs it (every frame read from disk,
letterboxed, the heads its gates choose, decode and NMS, in the search's runtime) over the held-out test
images. Printed side by side: predicted and measured mean and p90 per frame, the share of frames over the
budget, and the held-out AP. Usage:

    python benchmarks/bench_budget_stat.py --out runs/search/quickstart [--budgets 8 12 20] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

RULES = {"mean": "latency_ms", "p90": "latency_p90_ms"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="a finished search folder (python -m dh_tune.search --out)")
    p.add_argument("--budgets", type=float, nargs="+", default=None, help="budgets in ms (default: the search's)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def choose(points: list[dict], budget_ms: float, rule: str, metric: str) -> dict | None:
    """The highest-AP point whose `rule` latency (mean or p90) fits the budget, or None."""
    from dh_tune.search.pareto import select_for_budget

    if not points:
        return None
    choice = select_for_budget(np.array([p[metric] for p in points]), np.array([p[RULES[rule]] for p in points]),
                               budget_ms)
    return points[choice.index] if choice.index is not None else None


def _search_inputs(out: Path) -> tuple[dict, list[dict], dict[str, str], list[Path], str]:
    """The search's state, candidate points, checkpoints by trial, held-out test image files and runtime."""
    from dh_tune.data import load_dataset
    from dh_tune.evaluate.holdout import holdout_records
    from dh_tune.pipeline import Pipeline
    from dh_tune.threshold_profiles import load_profile

    state = json.loads((out / "search.json").read_text())
    (device_dir,) = [d for d in (out / "profiles").iterdir() if (d / "index.json").is_file()]
    index = json.loads((device_dir / "index.json").read_text())
    points = index["front"] + [p for p in index.get("static_points", []) if p not in index["front"]]
    checkpoints = {m["trial_id"]: m["checkpoint"] for m in index.get("models", []) if m.get("checkpoint")}
    pipeline = Pipeline.model_validate(state["pipeline"])
    base = json.loads((out / "reference" / "base" / "result.json").read_text())
    from dh_tune.model.checkpoint import CheckpointPipeline, load_checkpoint

    ckpt = load_checkpoint(base["checkpoint"])
    sc, dc = pipeline.search, pipeline.data
    records, holdout = holdout_records(load_dataset(ckpt["dataset"]), val_split=dc.val_split, test_split=dc.test_split,
                                       val_limit=dc.val_limit, imgsz=dc.imgsz, eps=CheckpointPipeline.of(ckpt).eps,
                                       test_fraction=sc.holdout_fraction, seed=sc.holdout_seed)
    runtime = load_profile(device_dir / index["budgets"][0]["file"]).runtime
    return state, points, checkpoints, [records[i].path for i in holdout.test], runtime


def measure(out: Path, budgets: list[float] | None = None) -> dict:
    """Per budget and rule: the pick, its predicted and measured latency per frame, frames over budget, AP."""
    from bench_search_cost import run_from_disk, runtime_predictors

    from dh_tune.model.checkpoint import load_model

    state, points, checkpoints, paths, runtime = _search_inputs(out)
    metric = state["pipeline"]["search"]["metric"]
    budgets = budgets or state["budgets"]
    measured: dict[tuple, dict] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in budgets:
            for rule in RULES:
                pick = choose(points, b, rule, metric)
                if pick is None:
                    rows.append({"budget_ms": b, "rule": rule, "pick": None})
                    continue
                key = (pick["trial_id"], pick["imgsz"], pick["t1"], pick["t2"])
                if key not in measured:
                    model, _ = load_model(checkpoints[pick["trial_id"]])
                    (predictor,) = runtime_predictors(model, pick["imgsz"], [(pick["t1"], pick["t2"])], runtime,
                                                      Path(tmp) / str(len(measured)))
                    run_from_disk(predictor, paths[:10])  # warm-up
                    measured[key] = {"ms": run_from_disk(predictor, paths)[1]}
                ms = measured[key]["ms"]
                test = pick.get("test") or {}
                rows.append({"budget_ms": b, "rule": rule, "pick": {k: pick[k] for k in ("trial_id", "imgsz", "t1", "t2")},
                             "predicted_mean_ms": test.get("latency_ms", pick["latency_ms"]),
                             "predicted_p90_ms": test.get("latency_p90_ms", pick["latency_p90_ms"]),
                             "measured_mean_ms": float(ms.mean()), "measured_p90_ms": float(np.percentile(ms, 90)),
                             "frames_over_budget": float((ms > b).mean()), "test_ap": test.get(metric),
                             "metric": metric})
    return {"runtime": runtime, "test_images": len(paths), "rows": rows}


def format_rows(doc: dict) -> str:
    lines = [f"{doc['test_images']} held-out images, {doc['runtime']}; each frame read from disk",
             f"{'budget':>7} {'rule':>5} | {'imgsz':>5} {'t1':>5} {'t2':>5} | {'pred mean':>9} {'meas mean':>9} | "
             f"{'pred p90':>8} {'meas p90':>8} | {'over budget':>11} | {'test AP':>7}"]
    for r in doc["rows"]:
        if r["pick"] is None:
            lines.append(f"{r['budget_ms']:>5g}ms {r['rule']:>5} | nothing fits")
            continue
        p = r["pick"]
        ap = f"{r['test_ap']:.3f}" if r["test_ap"] is not None else "-"
        lines.append(f"{r['budget_ms']:>5g}ms {r['rule']:>5} | {p['imgsz']:>5} {p['t1']:5.2f} {p['t2']:5.2f} | "
                     f"{r['predicted_mean_ms']:9.2f} {r['measured_mean_ms']:9.2f} | {r['predicted_p90_ms']:8.2f} "
                     f"{r['measured_p90_ms']:8.2f} | {r['frames_over_budget']:11.1%} | {ap:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc = measure(args.out, args.budgets)
    print(format_rows(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
