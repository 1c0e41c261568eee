"""What the exit cache buys, measured on a trained checkpoint, each number beside its baseline.

1. One threshold profile scored from the exit cache vs re-running the dynamic model over the val
   images for that profile (forward, NMS, AP): milliseconds of each and the ratio.
2. Expected latency of several profiles from this device's latency table vs the measured mean
   time of the dynamic model per image (pre-processing, heads that run, NMS): error in percent.

    python benchmarks/bench_search_cost.py --checkpoint runs/search/quickstart/base/weights/best.pt
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--images", type=int, default=200, help="val images to use (default 200)")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--profiles", default="0,0;0.3,0.5;0.5,0.5;0.7,0.7;1,1", help="t1,t2;t1,t2;...")
    p.add_argument("--repeats", type=int, default=2, help="timed passes over the images per profile")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def run_dynamic(predictor, images: list[np.ndarray]) -> tuple[list, list[int], float]:
    """Detections, exit levels and mean ms per image of the dynamic model over decoded images."""
    outs, levels = [], []
    t0 = time.perf_counter()
    for img in images:
        pred = predictor(img)
        outs.append(pred)
        levels.append(pred.exit_level)
    return outs, levels, (time.perf_counter() - t0) * 1000 / len(images)


def main(argv=None) -> int:
    args = parse_args(argv)
    from dh_tune.data import dh_tune_home, letterbox_info, load_dataset
    from dh_tune.data.images import read_image
    from dh_tune.evaluate import average_precision
    from dh_tune.evaluate.cache import cached_exit_table
    from dh_tune.latency import expected_latency
    from dh_tune.model import VAL_NMS
    from dh_tune.predict import Predictor
    from dh_tune.search.deploy import local_latency_tables
    from dh_tune.train.checkpoint import file_sha256, load_model

    model, ckpt = load_model(args.checkpoint)
    cfg = ckpt["config"]
    imgsz = args.imgsz or int(cfg["data"]["imgsz"])
    ds = load_dataset(args.data or ckpt["dataset"])
    records = ds.splits[cfg["data"]["val_split"]][: args.images]
    eps = float(cfg["train"]["loss"]["eps"])
    t0 = time.perf_counter()
    table = cached_exit_table(model, file_sha256(args.checkpoint), records, imgsz, eps=eps,
                              cache_dir=dh_tune_home() / "cache" / "exit_tables")
    build_s = time.perf_counter() - t0
    latency = local_latency_tables(model, [imgsz], dh_tune_home() / "devices", max_seconds=20)[imgsz]
    images = [read_image(r.path) for r in records]
    ground_truth = [(r.boxes, r.classes) for r in records]
    profiles = [tuple(float(v) for v in p.split(",")) for p in args.profiles.split(";")]
    torch.set_num_threads(int(latency.device["threads"]))

    print(f"{len(records)} val images at {imgsz} px on {latency.device_name}; exit table built/loaded in {build_s:.1f} s")
    print(f"{'profile':>11} | {'cache ms':>9} | {'re-run ms':>10} | {'ratio':>8} | {'AP50 cache':>10} {'re-run':>7} | "
          f"{'pred ms':>8} {'measured':>9} {'error':>7}")
    rows = []
    val_pred = Predictor(model, imgsz, (0.0, 0.0), nms=VAL_NMS)
    for t1, t2 in profiles:
        table.evaluate(t1, t2)  # warm the index once
        n = 50
        c0 = time.perf_counter()
        for _ in range(n):
            m = table.evaluate(t1, t2)
        cache_ms = (time.perf_counter() - c0) * 1000 / n
        val_pred.thresholds = (t1, t2)
        r0 = time.perf_counter()
        outs, levels, _ = run_dynamic(val_pred, images)
        ap = average_precision(ground_truth, [(o.detections.boxes, o.detections.scores, o.detections.classes)
                                              for o in outs], num_classes=model.nc)
        rerun_ms = (time.perf_counter() - r0) * 1000
        deploy = Predictor(model, imgsz, (t1, t2))
        run_dynamic(deploy, images[:10])  # warm-up
        measured = min(run_dynamic(deploy, images)[2] for _ in range(args.repeats))
        predicted = expected_latency(table.exit_levels(t1, t2), latency)[0]
        err = 100 * (predicted - measured) / measured
        rows.append({"t1": t1, "t2": t2, "cache_ms": cache_ms, "rerun_ms": rerun_ms, "ratio": rerun_ms / cache_ms,
                     "ap50_cache": m.ap50, "ap50_rerun": ap["ap50"], "predicted_ms": predicted,
                     "measured_ms": measured, "error_pct": err, "levels_agree": levels == table.exit_levels(t1, t2).tolist()})
        print(f"({t1:.2f},{t2:.2f}) | {cache_ms:9.3f} | {rerun_ms:10.0f} | {rerun_ms / cache_ms:7.0f}x | "
              f"{m.ap50:10.4f} {ap['ap50']:7.4f} | {predicted:8.2f} {measured:9.2f} {err:+6.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"device": latency.device_name, "imgsz": imgsz, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
