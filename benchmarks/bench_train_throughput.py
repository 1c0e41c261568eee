"""Training throughput (images/s) and AP: today's training settings against the plain baseline, side by side.

`--compare` (the default) trains the pipeline's schedule twice in one run under Ray Train, once with the
baseline (`BASELINE`: fp32, contiguous tensors, no loader processes, the optimiser's per-tensor step, Ray's
workers at niceness 15) and once as the pipeline and `init_ray` say, and prints each one's median training
images/s over its epochs, its epoch time and AP50 / AP50:95 with all heads at the end; `--with-bf16` adds a third
run with bf16 autocast (`train.bf16: true`), which the defaults leave off.
`--workers 1 2` instead times one epoch per number of Ray Train CPU workers (threads split evenly).

    python benchmarks/bench_train_throughput.py [--pipeline pipelines/quickstart.yaml] [--epochs N] [--with-bf16]
                                                [--json F]
    python benchmarks/bench_train_throughput.py --workers 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

BASELINE = {"data": {"loader_workers": 0},
            "train": {"channels_last": False, "bf16": False, "fused_optimizer": False}}
"""The training every step ran before the throughput settings: decode, augment and collate between steps, NCHW
tensors, fp32, one optimiser kernel per tensor."""

BASELINE_ENV = {"RAY_worker_niceness": "15"}
"""Ray's own worker niceness, which init_ray replaces with 0 (read when Ray starts: the row gets its own Ray)."""

YOLOV5_IMAGES_PER_S = 70.0
"""YOLOv5's own train.py on the quickstart's data and settings (160 px, batch 16, AdamW, no mosaic, 2 loader
workers) on a 2-core AMD EPYC with AVX512: median epoch 29 s for 2,000 images (dh-tune's goal is 1.2x of it).
A machine of another CPU gives other numbers: the ratio is a guide, the baseline row the comparison."""


def train_row(pipeline, label: str, env: dict[str, str] | None = None) -> dict:
    """Train the pipeline once (Ray Train, no tracking; its own Ray, started with `env` set): median images/s over
    epochs, epoch time, final AP."""
    import ray

    from dh_tune.model.checkpoint import load_checkpoint
    from dh_tune.train.run import TrainOptions, run_training

    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run_training(pipeline, TrainOptions(run_dir=Path(tmp) / "run", track=False))
            history = load_checkpoint(outcome.last)["history"]
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    last = history[-1]
    return {"setting": label, "epochs": len(history),
            "images_per_s": statistics.median(m["images_per_s"] for m in history),
            "epoch_time_s": statistics.median(m["epoch_time_s"] for m in history),
            "ap50": last["ap50"], "ap50_95": last["ap50_95"]}


def compare(pipeline, epochs: int | None = None, bf16: bool = False) -> list[dict]:
    """The baseline and the pipeline's own settings (and with `bf16` the same with bf16 autocast), trained one after
    the other on the same schedule."""
    if epochs:
        pipeline = pipeline.with_overrides(train={"epochs": epochs})
    rows = [train_row(pipeline.with_overrides(**BASELINE), "baseline", BASELINE_ENV), train_row(pipeline, "default")]
    if bf16:
        rows.append(train_row(pipeline.with_overrides(train={"bf16": True}), "bf16"))
    for r in rows:
        r["ratio"] = r["images_per_s"] / rows[0]["images_per_s"]
        r["vs_yolov5"] = r["images_per_s"] / YOLOV5_IMAGES_PER_S
    return rows


def measure(pipeline, workers: list[int]) -> list[dict]:
    """One epoch per worker count (threads split evenly over the CPUs); images/s and ratio to the first."""
    from dh_tune.train.run import TrainOptions, run_training

    cpus = os.cpu_count() or 1
    rows = []
    for n in workers:
        p = pipeline.with_overrides(train={"epochs": 1, "precise_bn_batches": 0, "threads": max(cpus // n, 1)},
                                    ray={"workers": n, "cpus_per_worker": cpus / n})
        with tempfile.TemporaryDirectory() as tmp:
            m = run_training(p, TrainOptions(run_dir=Path(tmp) / "run", track=False)).metrics
        rows.append({"workers": n, "images_per_s": m["images_per_s"], "epoch_time_s": m["epoch_time_s"]})
    for r in rows:
        r["ratio"] = r["images_per_s"] / rows[0]["images_per_s"]
    return rows


def format_compare(rows: list[dict]) -> str:
    lines = [f"{'setting':>9} | {'images/s':>9} | {'epoch s':>8} | {'AP50':>6} | {'AP50:95':>7} | vs baseline | "
             f"vs YOLOv5 ({YOLOV5_IMAGES_PER_S:.0f}/s)"]
    lines += [f"{r['setting']:>9} | {r['images_per_s']:9.1f} | {r['epoch_time_s']:8.1f} | {r['ap50']:6.3f} | "
              f"{r['ap50_95']:7.3f} | {r['ratio']:10.2f}x | {r['vs_yolov5']:.2f}x" for r in rows]
    return "\n".join(lines)


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'workers':>8} | {'images/s':>9} | {'epoch s':>8} | vs {rows[0]['workers']} worker(s)"]
    lines += [f"{r['workers']:>8} | {r['images_per_s']:9.1f} | {r['epoch_time_s']:8.1f} | {r['ratio']:.2f}x"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="pipelines/quickstart.yaml")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="time one epoch per number of Ray Train workers instead of the side-by-side comparison")
    p.add_argument("--epochs", type=int, default=None, help="shorter schedule for the comparison (default: the "
                   "pipeline's)")
    p.add_argument("--with-bf16", action="store_true", help="also train the defaults with bf16 autocast")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    from dh_tune.pipeline import load_pipeline
    from dh_tune.resources import find_file

    pipeline = load_pipeline(find_file(args.pipeline, "pipelines"))
    if args.workers:
        rows = measure(pipeline, args.workers)
        print("\n" + format_rows(rows))
    else:
        rows = compare(pipeline, args.epochs, args.with_bf16)
        print("\n" + format_compare(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
