"""Training throughput (images/s) with 1 and 2 Ray Train CPU workers, printed side by side.

Runs one epoch of the pipeline (default: quickstart on the embedded synthetic data) per worker
count and reads the epoch's own timing, so Ray's start-up is not counted.

    python benchmarks/bench_train_throughput.py [--pipeline pipelines/quickstart.yaml] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


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


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'workers':>8} | {'images/s':>9} | {'epoch s':>8} | vs {rows[0]['workers']} worker(s)"]
    lines += [f"{r['workers']:>8} | {r['images_per_s']:9.1f} | {r['epoch_time_s']:8.1f} | {r['ratio']:.2f}x"
              for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="pipelines/quickstart.yaml")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    from dh_tune.pipeline import load_pipeline
    from dh_tune.resources import find_file

    rows = measure(load_pipeline(find_file(args.pipeline, "pipelines")), args.workers)
    print("\n" + format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
