"""Every dh-tune benchmark in one run: the paper's tables and figures and each speed ratio, measured here.

Writes benchmarks/RESULTS.md and its PNGs (benchmarks/results/) and refreshes the results table in
README.md. Each section's numbers are kept in OUT/results.json as soon as they exist, so a stopped run
picks up where it was; --fresh measures everything again.

    python benchmarks/run_all.py --quick      # about 16 minutes on 2 cores, a smaller model and dataset
    python benchmarks/run_all.py              # the quickstart pipeline itself (about 30 minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling bench_* scripts

import bench_dynamic_vs_static  # noqa: E402
import bench_gate_parity  # noqa: E402
import bench_profile_eval  # noqa: E402
import bench_train_throughput  # noqa: E402
import gpu_page  # noqa: E402
import results_page  # noqa: E402

# --quick: the same pipeline on a smaller synthetic set with a short schedule (numbers labelled as such).
QUICK = {"data": {"imgsz": 128, "synth": {"train": 600, "val": 150}},
         "train": {"epochs": 20},
         "search": {"trials": 2, "deploy_imgsz": [96, 128, 160]}}
ESTIMATE_MIN = {True: 16, False: 55}
SECTIONS = ("table2", "table1", "search", "static", "gate_parity", "throughput", "accuracy", "dynamic",
            "runtimes", "search_cost", "budget_stat")
# Input sizes of the dynamic-vs-static section and epochs of the gate-parity trainings, per mode.
DYNAMIC_SIZES = {True: [128, 224], False: [224, 320, 640]}
# Sizes and rounds of the runtimes section, and the runtimes whose latency prediction is checked, per mode.
RUNTIME_SIZES = {True: [128], False: [224, 320, 640]}
RUNTIME_ROUNDS = {True: 10, False: 40}
# Turns each runtime's timing process takes (every turn starts a process per runtime), per mode.
RUNTIME_BLOCKS = {True: 2, False: 4}
PARITY_EPOCHS = {True: 4, False: 8}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller dataset and schedule: about 16 minutes on 2 cores")
    p.add_argument("--pipeline", default=str(HERE.parent / "pipelines" / "quickstart.yaml"),
                   help="pipeline the model is trained and searched with (default: quickstart)")
    p.add_argument("--data", default=None, help="also tabulate this dataset in Table 1 (YOLO YAML, COCO JSON, TT100K root)")
    p.add_argument("--budget-ms", type=float, action="append", dest="budgets", default=None,
                   help="latency budgets of the search (default: 3, 4, 6 and 10 ms: where gates and static networks compete "
                        "on 2 cores under ONNX Runtime, the default runtime)")
    p.add_argument("--out", type=Path, default=None, help="working folder (default: runs/benchmarks/<quick|full>)")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="results page to write")
    p.add_argument("--readme", default=str(HERE.parent / "README.md"),
                   help="README whose results table is refreshed ('' to leave it alone)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs of every model trained here (default: the pipeline's, or 20 with --quick); "
                        "fewer gives a smoke run whose numbers mean little")
    p.add_argument("--fresh", action="store_true", help="measure every section again")
    p.add_argument("--redo", nargs="+", default=[], choices=SECTIONS, metavar="SECTION",
                   help=f"measure these sections again, keep the others ({', '.join(SECTIONS)})")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(f"[benchmarks] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    """What the numbers were measured on."""
    import platform

    import torch

    from dh_tune.latency.measure import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# --- sections ---------------------------------------------------------------------------------
def table2() -> dict:
    """Parameters and GMACs saved with one and two heads for n/s/m at nc=33, 1024 px (paper Table 2)."""
    from dh_tune.model import DHNet
    from dh_tune.model.summary import summarize

    rows = {}
    for scale in ("n", "s", "m"):
        doc = summarize(DHNet(scale, nc=33), 1024)
        rows[scale] = {"one": doc["exit"]["1"], "two": doc["exit"]["2"], "gates": doc["gates"]}
    return {"imgsz": 1024, "nc": 33, "rows": rows}


def table1(pipeline, data: str | None) -> dict:
    """Images needing each head per split, for the embedded dataset (and --data, at 1024 px like the paper)."""
    from dh_tune.data import load_dataset
    from dh_tune.data.stats import dataset_stats
    from dh_tune.train.data_setup import resolve_dataset

    eps = pipeline.train.loss.eps
    out = {"embedded": {"imgsz": pipeline.data.imgsz, "splits": {
        k: v.as_dict() for k, v in dataset_stats(load_dataset(resolve_dataset(pipeline)), pipeline.data.imgsz, eps).items()}}}
    if data:
        out[str(data)] = {"imgsz": 1024, "splits": {k: v.as_dict() for k, v in dataset_stats(load_dataset(data), 1024, eps).items()}}
    return out


def search(pipeline, out: Path, budgets: list[float]) -> dict:
    """The main job (train, search, export) on this machine; resumes in `out` like the command does."""
    from dh_tune.search.driver import run_search
    from dh_tune.search.records import SearchRequest

    t0 = time.time()
    outcome = run_search(SearchRequest(pipeline=pipeline, budgets=budgets, out=out, track=False))
    print(outcome.summary)
    budgets_doc = []
    for b in outcome.budgets:
        budgets_doc.append({"budget_ms": b.budget_ms, "feasible": b.feasible, "reason": b.reason,
                            "profile": str(b.profile_path), "candidate": b.candidate.to_dict(),
                            "trust": trust(json.loads(Path(b.profile_path).read_text()), pipeline.search.metric)})
    hv = [t.hv_ratio for t in outcome.trials if t.finished]
    hv = [h for h in hv if h == h and h is not None]
    base = out / "base" / "weights" / "best.pt"
    index = json.loads(outcome.index_path.read_text()) if outcome.index_path else {}
    for b, row in zip(budgets_doc, index.get("budgets", [])):
        b.update(comparison=row.get("comparison"), configuration=row.get("configuration"))
    return {"seconds": time.time() - t0, "budgets": budgets_doc, "front": [p.to_dict() for p in outcome.front],
            "models": index.get("models", []), "static_points": index.get("static_points", []),
            "trials": len([t for t in outcome.trials if t.finished and t.role is None]),
            "hv_ratio_min": min(hv) if hv else None, "base_checkpoint": str(base) if base.is_file() else None,
            "front_png": str(next((out / "profiles").glob("*/pareto_front.png"), "")) or None}


def trust(profile: dict, metric: str) -> dict:
    """What a profile promises on held-out images against what the images that chose it said (the optimism
    of reporting on the selection images), with its 95% interval and how many rivals it cannot be told from."""
    seen, held = profile.get("selection", profile["expected"]), profile["expected"]
    optimism = seen[metric] - held[metric] if seen.get(metric) is not None and held.get(metric) is not None else None
    return {"metric": metric, "selection_ap": seen.get(metric), "test_ap": held.get(metric), "optimism": optimism,
            "interval": (profile.get("intervals") or {}).get(metric), "indistinguishable": profile.get("indistinguishable"),
            "compared_with": profile.get("compared_with"), "budget_stat": profile.get("budget_stat", "mean"),
            "holdout": profile.get("holdout"), "latency_p90_ms": held.get("latency_p90_ms"),
            "latency_p90_interval": ((profile.get("intervals") or {}).get("latency_ms") or {}).get("p90")}


def static(pipeline, out: Path) -> dict:
    """YOLOv5 trained the same way but with no gate supervision (lambda = 0), evaluated with all heads."""
    from dh_tune.train.run import TrainOptions, run_training

    p = pipeline.with_overrides(train={"loss": {"gate_lambda": 0.0}})
    run_dir = out / "static"
    resume = run_dir if (run_dir / "run.json").is_file() else None
    t0 = time.time()
    outcome = run_training(p, TrainOptions(run_dir=run_dir, resume=resume, track=False))
    import torch

    best = torch.load(outcome.best, map_location="cpu", weights_only=True)["metrics"]
    return {"seconds": time.time() - t0, "epochs": p.train.epochs, "ap50": best["ap50"], "ap50_95": best["ap50_95"]}


def accuracy(search_doc: dict, static_doc: dict, figures: Path) -> dict:
    """All heads vs static vs each profile, gate accuracy/recall (Figure 5) and Figure 7 for the base model."""
    import torch

    from dh_tune.data import dh_tune_home, load_dataset
    from dh_tune.evaluate.exit_cache import cached_exit_table
    from dh_tune.evaluate.figures import write_plots
    from dh_tune.latency.table_sources import local_latency_tables
    from dh_tune.model.checkpoint import CheckpointPipeline, file_sha256, load_model

    ckpt_path = Path(search_doc["base_checkpoint"])
    model, ckpt = load_model(ckpt_path)
    trained = CheckpointPipeline.of(ckpt)
    imgsz = trained.imgsz
    records = load_dataset(ckpt["dataset"]).splits[trained.val_split]
    table = cached_exit_table(model, file_sha256(ckpt_path), records, imgsz, eps=trained.eps,
                              cache_dir=dh_tune_home() / "cache" / "exit_tables", progress=False)
    latency = local_latency_tables(model, [imgsz], dh_tune_home() / "devices", progress=False)[imgsz]
    full = table.evaluate(0.5, 0.5)
    all_heads = table.evaluate(0.0, 0.0)
    write_plots(table, latency, figures, 0.5, 0.5)
    history = torch.load(ckpt_path.with_name("last.pt"), map_location="cpu", weights_only=True)["history"]
    profiles = [{"budget_ms": b["budget_ms"], "feasible": b["feasible"], **{k: b["candidate"][k] for k in (
        "imgsz", "t1", "t2", "ap50", "ap50_95", "latency_ms")}} for b in search_doc["budgets"]]
    return {"imgsz": imgsz, "images": len(records), "epochs": trained.epochs,
            "train_seconds": sum(h["epoch_time_s"] for h in history), "dhnet": {"ap50": all_heads.ap50, "ap50_95": all_heads.ap50_95},
            "static": {"ap50": static_doc["ap50"], "ap50_95": static_doc["ap50_95"]},
            "gates": {"accuracy": list(full.gate_accuracy), "recall": list(full.gate_recall)},
            "profiles": profiles, "figure5": str(figures / "figure5_gates.png"),
            "figure7": str(figures / "figure7_thresholds.png")}


def middle_profile(search_doc: dict) -> dict:
    """The feasible profile of the budget nearest the geometric middle of the budgets, else the first budget's."""
    feasible = [b for b in search_doc["budgets"] if b["feasible"]] or search_doc["budgets"]
    budgets = [b["budget_ms"] for b in search_doc["budgets"]]
    middle = (min(budgets) * max(budgets)) ** 0.5
    return min(feasible, key=lambda b: abs(b["budget_ms"] - middle))


def dynamic(search_doc: dict, images: int, sizes: list[int]) -> dict:
    """Dynamic vs static vs oracle latency at several sizes, for the best gated profile of the middle budget
    (its thresholds and its model; the base model's gates at 0.5 when no gated profile fits)."""
    b = middle_profile(search_doc)
    best = (b.get("comparison") or {}).get("best_dynamic")
    checkpoint = Path(search_doc["base_checkpoint"])
    thresholds = (0.5, 0.5)
    if best is not None:
        thresholds = (best["t1"], best["t2"])
        checkpoint = Path(next((m["checkpoint"] for m in search_doc.get("models", [])
                                if m["trial_id"] == best["trial_id"] and m.get("checkpoint")), checkpoint))
    by_size = {str(s): bench_dynamic_vs_static.measure(checkpoint, thresholds, imgsz=s, images=images)
               for s in sizes}
    return {"budget_ms": b["budget_ms"], "thresholds": list(thresholds), "checkpoint": str(checkpoint),
            "sizes": by_size}


def gate_parity(pipeline, out: Path, epochs: int) -> dict:
    """Four ways of training the gates against the detector, side by side (benchmarks/bench_gate_parity.py)."""
    rows = bench_gate_parity.measure(pipeline, out / "gate_parity", epochs, store=out / "gate_parity.json")
    return {"epochs": epochs, "rows": rows}


def search_cost(search_doc: dict, images: int, quick: bool, out: Path) -> dict:
    """Cached profile evaluation vs re-running the model, predicted vs measured latency, Optuna vs grid."""
    from dh_tune.threshold_profiles import load_profile

    b = middle_profile(search_doc)
    prof = load_profile(b["profile"])
    profiles = [prof.thresholds, (0.0, 0.0), (0.5, 0.5), (0.3, 0.7), (1.0, 1.0)]
    from dh_tune.runtimes import fastest_installed, installed

    runtimes = ("torch", fastest_installed()) if quick else tuple(installed())
    cost = _in_own_process("bench_search_cost.py", out / "search_cost.json", "--checkpoint", str(prof.checkpoint_path()),
                           "--profiles", ";".join(f"{t1},{t2}" for t1, t2 in profiles), "--images", str(images),
                           "--imgsz", str(prof.imgsz), "--repeats", "3" if quick else "7",
                           "--runtimes", *dict.fromkeys(runtimes))
    return {"cache": cost, "synthetic_1000": bench_profile_eval.measure(images=1000),
            "hv_ratio_min": search_doc["hv_ratio_min"]}


def runtimes(search_doc: dict, out: Path, sizes: list[int], rounds: int, blocks: int) -> dict:
    """Each runtime against eager PyTorch and YOLOv5's static graph (benchmarks/bench_runtimes.py), run in a
    process of its own: its thread settings (OMP_WAIT_POLICY, ONNX Runtime's pool) are per process."""
    return _in_own_process("bench_runtimes.py", out / "runtimes.json", "--checkpoint", search_doc["base_checkpoint"],
                           "--sizes", *map(str, sizes), "--rounds", str(rounds), "--blocks", str(blocks))


def _in_own_process(script: str, store: Path, *args: str) -> dict:
    """Run a timing script in a fresh process (thread-pool settings are per process) and read its JSON."""
    import subprocess

    cmd = [sys.executable, str(HERE / script), *args, "--json", str(store)]
    if subprocess.run(cmd).returncode != 0:
        raise ValueError(f"benchmarks/{script} failed (its error is printed above)")
    return json.loads(store.read_text())


# --- driver -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    from dh_tune.pipeline import PipelineError, load_pipeline

    try:
        pipeline = load_pipeline(args.pipeline)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    if args.quick:
        pipeline = pipeline.with_overrides(**QUICK)
    if args.epochs is not None:
        if args.epochs < 1:
            print(f"error: --epochs {args.epochs}: train at least one epoch", file=sys.stderr)
            return 2
        pipeline = pipeline.with_overrides(train={"epochs": args.epochs})
    budgets = sorted(set(args.budgets or [3.0, 4.0, 6.0, 10.0]))
    out = (args.out or Path("runs/benchmarks") / mode).resolve()
    figures = args.results.parent / "results"
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    for name in args.redo:
        results.pop(name, None)
    started = time.time()
    _log(f"{mode} run: {pipeline.name} pipeline, budgets {budgets} ms, working folder {out}; "
         f"expect about {ESTIMATE_MIN[args.quick]} minutes on 2 cores"
         + (f" ({len(results)} section(s) already measured)" if results else ""))
    images = 120 if args.quick else 300
    steps = {
        "table2": table2,
        "table1": lambda: table1(pipeline, args.data),
        "search": lambda: search(pipeline, out / "search", budgets),
        "static": lambda: static(pipeline, out),
        "throughput": lambda: {"rows": bench_train_throughput.measure(pipeline, [1, 2])},
        "accuracy": lambda: accuracy(results["search"], results["static"], figures),
        "gate_parity": lambda: gate_parity(pipeline, out, args.epochs or PARITY_EPOCHS[args.quick]),
        "dynamic": lambda: dynamic(results["search"], images, DYNAMIC_SIZES[args.quick]),
        "runtimes": lambda: runtimes(results["search"], out, RUNTIME_SIZES[args.quick], RUNTIME_ROUNDS[args.quick],
                                     RUNTIME_BLOCKS[args.quick]),
        "search_cost": lambda: search_cost(results["search"], min(images, 150), args.quick, out),
        "budget_stat": lambda: _in_own_process("bench_budget_stat.py", out / "budget_stat.json", "--out",
                                               str(out / "search")),
    }
    from dh_tune.data import DataError
    from dh_tune.model.checkpoint import CheckpointError

    for name in SECTIONS:
        if name in results:
            continue
        if name == "accuracy":
            _stop_ray()  # timings below must not share the cores with Ray's background processes
        t0 = time.time()
        _log(f"{name} ...")
        try:
            results[name] = steps[name]()
        except (DataError, CheckpointError, PipelineError, ValueError) as exc:
            print(f"error: {name}: {exc} (sections measured so far are kept in {store})", file=sys.stderr)
            return 2
        results.setdefault("section_seconds", {})[name] = time.time() - t0
        store.write_text(json.dumps(results, indent=1, default=float))
    results["meta"] = {"mode": mode, "pipeline": pipeline.name, "budgets": budgets, "machine": machine(),
                       "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                       "seconds": results.get("meta", {}).get("seconds", 0) + time.time() - started}
    store.write_text(json.dumps(results, indent=1, default=float))
    shown = {**results, "gpu": gpu_page.load()}  # measured on a GPU machine, kept in benchmarks/gpu/
    page = results_page.write(shown, args.results, figures)
    if args.readme:
        results_page.update_readme(shown, Path(args.readme), args.results)
    _log(f"done in {(time.time() - started) / 60:.1f} min: {page}")
    return 0


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
