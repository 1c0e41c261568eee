"""Gates-only training (train.freeze: detector) against training the whole DH-Net: time per epoch side by side.

Both start from the same trained detector: --checkpoint (a dh-tune checkpoint, e.g. one imported from YOLOv5), or
else a plain detector (gate weight 0) trained here first for --detector-epochs on the same pipeline (default:
quickstart, 160 px, batch 16, the embedded synthetic signs). Prints the two modes' epoch times and their ratio
(goal: gates-only at least 5x faster per epoch), then each gates-only epoch's gate accuracy with the cumulative
gate-training time (goal: >= 0.90 on each gate within 3 minutes on 2 cores), and writes the numbers to --out.
Epoch times are the loop's own (training, PreciseBN and validation), so start-up and image caching are not counted.

    python benchmarks/bench_gates_only.py [--checkpoint C] [--epochs 8] [--full-epochs 2] [--quick]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOAL_RATIO = 5.0
GOAL_ACC = 0.90
GOAL_SECONDS = 180.0
# --quick: a smoke run on a tiny synthetic set and model (seconds); its numbers mean little.
QUICK = {"data": {"imgsz": 128, "synth": {"train": 32, "val": 16}}, "model": {"scale": [0.33, 0.125]},
         "train": {"batch_size": 8, "precise_bn_batches": 2}}
QUICK_EPOCHS = {"detector": 1, "full": 1, "gates": 2}


def _log(msg: str) -> None:
    print(f"[gates-only] {msg}", file=sys.stderr, flush=True)


def plain_detector(pipeline, work: Path, epochs: int) -> Path:
    """A detector trained without gate supervision (gate_lambda 0) for `epochs`: its last checkpoint (kept in `work`
    and reused by a later run with the same epochs)."""
    from dh_tune.model.checkpoint import load_checkpoint
    from dh_tune.train.run import TrainOptions, run_training

    last = work / "detector" / "weights" / "last.pt"
    if last.is_file() and load_checkpoint(last)["epoch"] + 1 == epochs:
        _log(f"reusing the plain detector in {last.parent.parent}")
        return last
    _log(f"no --checkpoint: training a plain detector (gate weight 0) for {epochs} epoch(s) first")
    shutil.rmtree(work / "detector", ignore_errors=True)
    p = pipeline.with_overrides(train={"epochs": epochs, "freeze": "none", "loss": {"gate_lambda": 0.0}})
    return run_training(p, TrainOptions(run_dir=work / "detector", use_ray=False, track=False)).last


def timed_run(pipeline, detector: Path, run_dir: Path, train: dict) -> dict:
    """Train from the detector with these train overrides; every epoch's times and gate accuracies."""
    from dh_tune.model.checkpoint import load_checkpoint
    from dh_tune.train.run import TrainOptions, run_training

    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    outcome = run_training(pipeline.with_overrides(train=train),
                           TrainOptions(run_dir=run_dir, use_ray=False, track=False, init_checkpoint=str(detector)))
    wall = time.time() - t0
    keys = ("epoch_time_s", "train_time_s", "gate1_acc", "gate2_acc", "ap50", "ap50_95")
    epochs = [{k: float(h[k]) for k in keys} for h in load_checkpoint(outcome.last)["history"]]
    times = [e["epoch_time_s"] for e in epochs]
    return {"epochs": epochs, "first_s": times[0], "later_s": sum(times[1:]) / max(len(times) - 1, 1) if
            len(times) > 1 else None, "mean_s": sum(times) / len(times), "wall_s": wall}


def measure(pipeline, detector: Path, work: Path, epochs: int, full_epochs: int) -> dict:
    """Whole-model and gates-only training from the same detector, their epoch-time ratios and the gate goal."""
    _log(f"whole model: {full_epochs} epoch(s)")
    whole = timed_run(pipeline, detector, work / "whole", {"epochs": full_epochs, "freeze": "none"})
    _log(f"gates only: {epochs} epoch(s)")
    gates = timed_run(pipeline, detector, work / "gates", {"epochs": epochs, "freeze": "detector"})
    elapsed = 0.0
    for e in gates["epochs"]:
        elapsed += e["epoch_time_s"]
        e["cumulative_s"] = elapsed
    reached = next((i for i, e in enumerate(gates["epochs"])
                    if e["gate1_acc"] >= GOAL_ACC and e["gate2_acc"] >= GOAL_ACC), None)
    ratio = {"mean": whole["mean_s"] / gates["mean_s"], "first": whole["first_s"] / gates["first_s"]}
    if gates["later_s"]:
        ratio["later"] = whole["mean_s"] / gates["later_s"]
    return {"whole": whole, "gates_only": gates, "ratio": ratio, "goals": {
        "ratio": {"goal": GOAL_RATIO, "measured": ratio["mean"], "met": ratio["mean"] >= GOAL_RATIO},
        "gate_accuracy": {"goal": GOAL_ACC, "within_s": GOAL_SECONDS,
                          "epoch": None if reached is None else reached + 1,
                          "seconds": None if reached is None else gates["epochs"][reached]["cumulative_s"],
                          "met": reached is not None and gates["epochs"][reached]["cumulative_s"] <= GOAL_SECONDS}}}


def format_doc(doc: dict) -> str:
    """The side-by-side table, the ratio, and the gates-only epochs."""
    def row(name: str, r: dict) -> str:
        later = f"{r['later_s']:8.1f}" if r["later_s"] is not None else f"{'-':>8}"
        return f"{name:>11} | {len(r['epochs']):>6} | {r['first_s']:8.1f} | {later} | {r['mean_s']:8.1f}"

    ratio, goals = doc["ratio"], doc["goals"]
    lines = ["--quick: a smoke run on a tiny model and dataset; its numbers do not judge the goals"] \
        if doc.get("mode") == "quick" else []
    lines += [f"{'mode':>11} | {'epochs':>6} | {'first s':>8} | {'later s':>8} | {'mean s':>8}",
             row("whole", doc["whole"]), row("gates only", doc["gates_only"]),
             f"whole / gates-only per epoch: {ratio['mean']:.1f}x mean, {ratio['first']:.1f}x first epoch"
             + (f", {ratio['later']:.1f}x later epochs" if "later" in ratio else "")
             + f"  (goal >= {GOAL_RATIO:g}x: {'met' if goals['ratio']['met'] else 'NOT met'})",
             "", f"{'epoch':>5} | {'gate 1 acc':>10} | {'gate 2 acc':>10} | {'cumulative s':>12}"]
    lines += [f"{i + 1:>5} | {e['gate1_acc']:10.3f} | {e['gate2_acc']:10.3f} | {e['cumulative_s']:12.1f}"
              for i, e in enumerate(doc["gates_only"]["epochs"])]
    g = goals["gate_accuracy"]
    lines.append(f"both gates >= {GOAL_ACC:.2f}: " + (f"epoch {g['epoch']} after {g['seconds']:.1f} s" if g["epoch"]
                 else "not reached") + f"  (goal within {GOAL_SECONDS:.0f} s: {'met' if g['met'] else 'NOT met'})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="pipelines/quickstart.yaml",
                   help="pipeline of every run (default: quickstart)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="trained detector (dh-tune checkpoint, e.g. imported from YOLOv5) to start from; "
                        "default: train a plain one here first")
    p.add_argument("--detector-epochs", type=int, default=None,
                   help="epochs of that plain detector (default 3; 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="gates-only epochs (default 8; 2 with --quick)")
    p.add_argument("--full-epochs", type=int, default=None,
                   help="whole-model epochs timed (default 2; 1 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every run (default 0)")
    p.add_argument("--quick", action="store_true", help="a smoke run on a tiny model and dataset (seconds)")
    p.add_argument("--work", type=Path, default=None,
                   help="run folders (default: runs/benchmarks/gates_only/<quick|full>)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON of the numbers (default: benchmarks/results/gates_only.json; "
                        "runs/benchmarks/gates_only/quick.json with --quick)")
    return p.parse_args(argv)


def _pipeline(args: argparse.Namespace):
    from dh_tune.model.checkpoint import load_checkpoint
    from dh_tune.pipeline import load_pipeline
    from dh_tune.resources import find_file

    pipeline = load_pipeline(find_file(args.pipeline, "pipelines"))
    if args.quick:
        pipeline = pipeline.with_overrides(**QUICK)
    pipeline = pipeline.with_overrides(train={"seed": args.seed})
    if args.checkpoint is not None:  # the architecture is the checkpoint's
        scale = list(load_checkpoint(args.checkpoint)["model_args"]["scale"])
        pipeline = pipeline.with_overrides(model={"scale": scale, "init_from": None})
    return pipeline


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    epochs = {"detector": args.detector_epochs, "full": args.full_epochs, "gates": args.epochs}
    defaults = QUICK_EPOCHS if args.quick else {"detector": 3, "full": 2, "gates": 8}
    epochs = {k: v if v is not None else defaults[k] for k, v in epochs.items()}
    work = args.work or Path("runs/benchmarks/gates_only") / mode
    out = args.out or (work.parent / "quick.json" if args.quick else HERE / "results" / "gates_only.json")
    pipeline = _pipeline(args)
    detector = args.checkpoint or plain_detector(pipeline, work, epochs["detector"])
    doc = measure(pipeline, detector, work, epochs["gates"], epochs["full"])
    doc.update(mode=mode, pipeline=pipeline.name, imgsz=pipeline.data.imgsz, batch_size=pipeline.train.batch_size,
               seed=args.seed, checkpoint=str(detector), detector_trained_here=args.checkpoint is None,
               detector_epochs=epochs["detector"] if args.checkpoint is None else None)
    print("\n" + format_doc(doc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"\nnumbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
