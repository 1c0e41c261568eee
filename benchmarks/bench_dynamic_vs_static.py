"""Dynamic heads against static YOLOv5 on the same images, next to an oracle gate.

Four ways to run one trained checkpoint over the val images, timed image by image in turn so that
machine drift hits them alike:
  static   plain YOLOv5 (all heads, no gates): the baseline every ratio is taken against
  all      the DH-Net with both thresholds at 0 (all heads plus the two gates)
  profile  the DH-Net with the given thresholds (a profile chosen by the search)
  oracle   each image stops at the head its Eq. 3-7 labels ask for (the best any gate could do)
AP of each comes from the exit cache (same detections, validation NMS).

    python benchmarks/bench_dynamic_vs_static.py --checkpoint CKPT --imgsz 160 --thresholds 0.2 0.7
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

INF = float("inf")
LEVEL_THRESHOLDS = {1: (INF, INF), 2: (0.0, INF), 3: (0.0, 0.0)}  # thresholds that force an exit level


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", default=None, help="dataset (default: the checkpoint's)")
    p.add_argument("--imgsz", type=int, default=None, help="input size (default: the checkpoint's)")
    p.add_argument("--thresholds", type=float, nargs=2, default=(0.5, 0.5), metavar=("T1", "T2"))
    p.add_argument("--images", type=int, default=200, help="val images (default 200)")
    p.add_argument("--passes", type=int, default=3, help="timed passes over the images (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args(argv)


def measure(checkpoint: Path, thresholds: tuple[float, float], *, imgsz: int | None = None, data: str | None = None,
            images: int = 200, passes: int = 3, cache_dir: Path | None = None) -> dict:
    """Mean ms per image, AP and exit shares of static / all / profile / oracle, with ratios to static."""
    from dh_tune.data import dh_tune_home, load_dataset
    from dh_tune.data.images import read_image
    from dh_tune.evaluate.cache import cached_exit_table
    from dh_tune.latency.measure import preprocess
    from dh_tune.model import DEPLOY_NMS, postprocess
    from dh_tune.train.checkpoint import file_sha256, load_model

    model, ckpt = load_model(checkpoint)
    model.eval()
    cfg = ckpt["config"]
    size = imgsz or int(cfg["data"]["imgsz"])
    records = load_dataset(data or ckpt["dataset"]).splits[cfg["data"]["val_split"]][:images]
    table = cached_exit_table(model, file_sha256(checkpoint), records, size, eps=float(cfg["train"]["loss"]["eps"]),
                              cache_dir=cache_dir or dh_tune_home() / "cache" / "exit_tables", progress=False)
    pixels = [read_image(r.path) for r in records]
    oracle_levels = table.label_levels()
    levels = {"static": np.full(len(records), 3, np.int8), "all": table.exit_levels(0.0, 0.0),
              "profile": table.exit_levels(*thresholds), "oracle": oracle_levels}

    @torch.inference_mode()
    def run(name: str, i: int) -> float:
        t0 = time.perf_counter()
        x = preprocess(pixels[i], size, torch.device("cpu"))
        if name == "static":
            maps = model.forward_static(x)
        else:
            t = LEVEL_THRESHOLDS[int(oracle_levels[i])] if name == "oracle" else (
                thresholds if name == "profile" else (0.0, 0.0))
            maps = model.forward_dynamic(x, t).maps
        postprocess(maps, model.anchors_px, model.strides, DEPLOY_NMS)
        return (time.perf_counter() - t0) * 1000

    names = list(levels)
    for i in range(min(10, len(pixels))):  # warm-up
        for n in names:
            run(n, i)
    per_pass = {n: [] for n in names}
    for p in range(passes):
        sums = dict.fromkeys(names, 0.0)
        for i in range(len(pixels)):
            for n in names[p % len(names):] + names[:p % len(names)]:  # rotate who goes first
                sums[n] += run(n, i)
        for n in names:
            per_pass[n].append(sums[n] / len(pixels))
    rows = {}
    for n in names:
        ms = float(np.median(per_pass[n]))
        ap = table.ap_for_levels(levels[n])
        shares = np.bincount(levels[n], minlength=4)[1:] / len(records)
        rows[n] = {"ms": ms, "ap50": ap["ap50"], "ap50_95": ap["ap50_95"], "exit_shares": shares.tolist()}
    static_ms = rows["static"]["ms"]
    for r in rows.values():
        r["speedup"] = static_ms / r["ms"]
    saved = static_ms - rows["oracle"]["ms"]
    captured = (static_ms - rows["profile"]["ms"]) / saved if saved > 0 else float("nan")
    return {"imgsz": size, "thresholds": list(thresholds), "images": len(records), "passes": passes,
            "threads": torch.get_num_threads(), "rows": rows, "saving_captured": captured}


def format_rows(doc: dict) -> str:
    """The comparison as a plain-text table."""
    lines = [f"{doc['images']} val images at {doc['imgsz']} px, {doc['threads']} threads, "
             f"profile thresholds {tuple(doc['thresholds'])}",
             f"{'model':>8} | {'ms/img':>7} | {'vs static':>9} | {'AP50':>6} | {'AP50:95':>7} | exits h1/h2/h3"]
    for name, r in doc["rows"].items():
        shares = "/".join(f"{s:.2f}" for s in r["exit_shares"])
        lines.append(f"{name:>8} | {r['ms']:7.2f} | {r['speedup']:8.2f}x | {r['ap50']:6.3f} | {r['ap50_95']:7.3f} | {shares}")
    lines.append(f"share of the oracle's saving the learned gates capture: {100 * doc['saving_captured']:.0f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    doc = measure(args.checkpoint, tuple(args.thresholds), imgsz=args.imgsz, data=args.data, images=args.images,
                  passes=args.passes)
    print(format_rows(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
